"""Combining the pooled features of several backbones into one vector for the head.

`MODES` maps each fusion's name to its module. The settings, the command line, the page and the
tests all read it: adding a mode is a `Fusion` subclass and its line there (and, for the page,
its `fusion_<name>` sentence in `ui/text.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TlguiError


class Fusion(nn.Module):
    """Takes each backbone's features, a list of (B, width) tensors; gives (B, out_dim).

    `build_fusion` sets `mode`, the name it was built under.
    """

    mode: str
    out_dim: int

    def weights(self) -> list[float] | None:
        """How much each backbone counts, where the mode learns this."""
        return None


class Concat(Fusion):
    """Every feature kept as it is, side by side."""

    def __init__(self, widths: list[int], dim: int = 256):
        super().__init__()
        self.out_dim = sum(widths)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(feats, dim=1) if len(feats) > 1 else feats[0]


class Projected(Fusion):
    """Each backbone's features normalised (backbones differ in scale) and projected to a
    common width `dim`, stacked to (B, K, dim), then combined across the K backbones."""

    def __init__(self, widths: list[int], dim: int = 256):
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(w), nn.Linear(w, dim)) for w in widths)
        self.out_dim = dim

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.combine(torch.stack([p(f) for p, f in zip(self.proj, feats)], dim=1))

    def combine(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Mean(Projected):
    def combine(self, z: torch.Tensor) -> torch.Tensor:
        return z.mean(1)


class Weighted(Projected):
    """A learned softmax weight per backbone."""

    def __init__(self, widths: list[int], dim: int = 256):
        super().__init__(widths, dim)
        self.logits = nn.Parameter(torch.zeros(len(widths)))

    def combine(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.logits.softmax(0).view(1, -1, 1)).sum(1)

    def weights(self) -> list[float]:
        return self.logits.detach().softmax(0).tolist()


class Product(Projected):
    """Element-wise product: backbones gate each other."""

    def combine(self, z: torch.Tensor) -> torch.Tensor:
        return z.prod(1)


class Conv(Projected):
    """A learned 1-D convolution slid across the stack."""

    def __init__(self, widths: list[int], dim: int = 256):
        super().__init__(widths, dim)
        self.conv = nn.Conv1d(len(widths), 1, kernel_size=3, padding=1)

    def combine(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(z).squeeze(1)


MODES: dict[str, type[Fusion]] = {"concat": Concat, "mean": Mean, "weighted": Weighted, "product": Product,
                                  "conv": Conv}


def check_mode(mode) -> None:
    if not isinstance(mode, str) or mode not in MODES:
        raise TlguiError(f"unknown fusion {mode!r}: use one of {', '.join(MODES)}")


def build_fusion(mode: str, widths: list[int], dim: int = 256) -> Fusion:
    """The fusion `mode` over backbones of these feature widths; with a single backbone every
    mode passes its features through unchanged."""
    mode = mode if len(widths) > 1 else "concat"
    check_mode(mode)  # a bundle from elsewhere may name any
    fusion = MODES[mode](widths, dim)
    fusion.mode = mode
    return fusion
