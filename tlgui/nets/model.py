"""The classifier: one or more backbones, a fusion of their features, and a linear head."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import FeatureExtractor
from .fusion import build_fusion
from .standardise import FeatureScale


class Classifier(nn.Module):
    def __init__(self, backbones: list[FeatureExtractor], fusion: str, num_classes: int, fusion_dim: int = 256,
                 dropout: float = 0.2):
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.scale = FeatureScale([b.out_dim for b in backbones])  # the training part's statistics, once fitted
        self.fusion = build_fusion(fusion, [b.out_dim for b in backbones], fusion_dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.fusion.out_dim, num_classes))

    @property
    def task(self) -> str:
        return self.backbones[0].task

    def features(self, x) -> list[torch.Tensor]:
        return [b(x) for b in self.backbones]

    def classify(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits from precomputed backbone features: the part that trains when backbones are frozen."""
        return self.head(self.fusion(self.scale(feats)))

    def forward(self, x) -> torch.Tensor:
        return self.classify(self.features(x))

    def freeze(self, freeze: str) -> None:
        freeze = "all" if freeze == "auto" else freeze  # auto starts as a linear probe on frozen features
        for b in self.backbones:
            b.freeze(freeze)

    @property
    def backbones_frozen(self) -> bool:
        return all(b.fully_frozen for b in self.backbones)
