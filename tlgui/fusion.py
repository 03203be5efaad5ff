"""Combining the pooled features of several backbones into one vector for the head."""

from __future__ import annotations

import torch
from torch import nn


class Fusion(nn.Module):
    """`concat` keeps every feature as it is; the other modes first project each backbone's
    features (normalised, since backbones differ in scale) to a common width `dim`:
    `mean` averages them, `weighted` learns a softmax weight per backbone, `product`
    multiplies them element-wise, `conv` slides a learned 1-D convolution across the stack.
    With a single backbone every mode passes its features through unchanged.
    """

    def __init__(self, mode: str, widths: list[int], dim: int = 256):
        super().__init__()
        self.mode = mode if len(widths) > 1 else "concat"
        self.requested = mode
        k = len(widths)
        if self.mode == "concat":
            self.out_dim = sum(widths)
            return
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(w), nn.Linear(w, dim)) for w in widths)
        self.out_dim = dim
        if self.mode == "weighted":
            self.logits = nn.Parameter(torch.zeros(k))
        elif self.mode == "conv":
            self.conv = nn.Conv1d(k, 1, kernel_size=3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "concat":
            return torch.cat(feats, dim=1) if len(feats) > 1 else feats[0]
        z = torch.stack([p(f) for p, f in zip(self.proj, feats)], dim=1)  # (B, K, dim)
        if self.mode == "mean":
            return z.mean(1)
        if self.mode == "weighted":
            return (z * self.logits.softmax(0).view(1, -1, 1)).sum(1)
        if self.mode == "product":
            return z.prod(1)
        return self.conv(z).squeeze(1)

    def weights(self) -> list[float] | None:
        """How much each backbone counts (only `weighted` learns this)."""
        if self.mode != "weighted":
            return None
        return self.logits.detach().softmax(0).tolist()
