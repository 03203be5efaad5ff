"""Standardisation of each backbone's pooled features, part of the model.

A linear head on raw features fits slowly and regularises unevenly across backbones (their
features differ in scale by orders of magnitude, an own VAE encoder's most of all). Each backbone's
features are centred on the training part's mean and divided by one number, their root mean
variance: every backbone then counts alike and one C suits them all, while the relative scale of a
backbone's own features, which carries information (a near-constant feature is mostly noise), is
kept. Dividing each feature by its own deviation lost 0.2-3 points of test accuracy against this on
Fashion-MNIST and Animal-MNIST features (bench/QUALITY.md). The statistics are stored as buffers,
so the bundle, predict, evaluate, the exports and `--init` all apply them. Until fitted they are the
identity: a bundle made before they existed loads as it was.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_STD = 1e-6  # a constant feature is left unscaled, never divided by zero
CHUNK = 2048  # rows summed at once (a 20 MB float64 block at 1,280 wide)


class FeatureScale(nn.Module):
    def __init__(self, widths: list[int]):
        super().__init__()
        for i, w in enumerate(widths):
            self.register_buffer(f"mean{i}", torch.zeros(w))
            self.register_buffer(f"std{i}", torch.ones(w))
        self.count = len(widths)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(f - getattr(self, f"mean{i}")) / getattr(self, f"std{i}") for i, f in enumerate(feats)]

    @torch.no_grad()
    def fit(self, feats: list[torch.Tensor]) -> None:
        """Statistics from these (training) features: per backbone, the mean and one scale. Summed
        in float64 a block at a time: no float32 copy of all the features is ever made."""
        for i, f in enumerate(feats):
            total = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
            squares = torch.zeros_like(total)
            for block in f.split(CHUNK):
                block = block.double()
                total += block.sum(0)
                squares += (block * block).sum(0)
            mean = total / max(len(f), 1)
            rms = (squares / max(len(f), 1) - mean * mean).clamp_min(0).mean().sqrt()
            getattr(self, f"mean{i}").copy_(mean)
            getattr(self, f"std{i}").fill_(rms.item() if rms > MIN_STD else 1.0)

    @property
    def fitted(self) -> bool:
        return any(bool((getattr(self, f"std{i}") != 1).any() or (getattr(self, f"mean{i}") != 0).any())
                   for i in range(self.count))


def identity_entries(model: nn.Module, state: dict) -> dict:
    """`state` with the identity statistics added where an older bundle has none."""
    missing = {k: v for k, v in model.state_dict().items() if k.startswith("scale.") and k not in state}
    return {**state, **missing}
