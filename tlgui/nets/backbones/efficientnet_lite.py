"""EfficientNet-Lite0/1/2 with the ImageNet weights that ship in pip packages (usable offline)."""

from __future__ import annotations

from . import offline_weights
from .base import BackboneInfo, Family

SIZES = {0: (224, 4_652_008, 0.41), 1: (240, 5_416_680, 0.61), 2: (260, 6_092_072, 0.90)}  # input, params, GFLOPs


def info(variant: int) -> BackboneInfo:
    size, params, gflops = SIZES[variant]
    return BackboneInfo(
        name=f"efficientnet_lite{variant}", task="image", params=params - 1_281_000, input_size=size, stages=9,
        feature_dim=1280, offline=offline_weights.lite_weights_path(variant) is not None, gflops=gflops,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="efficientnet-lite package",
        description="EfficientNet-Lite: mobile-friendly, ImageNet weights shipped with the package",
        build=lambda pretrained, v=variant: offline_weights.build_efficientnet_lite(v, pretrained),
    )


def infos() -> list[BackboneInfo]:
    """Only the installed variants: an absent package cannot be fetched."""
    return [i for i in map(info, SIZES) if i.offline]


FAMILY = Family("efficientnet_lite", infos)
