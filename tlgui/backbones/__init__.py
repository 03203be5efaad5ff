"""Backbones: the pretrained networks a classifier stands on, one file per family.

`base.py` holds what every backbone answers, `registry.py` the families and the lookup by name;
`efficientnet_lite.py`, `torchvision.py`, `text.py` and `encoder.py` are the families.
Here `registry` is the listing function; its module is reached as `from .registry import ...`.
"""

from .base import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, Family, FeatureExtractor, ImageBackbone
from .encoder import is_own_encoder
from .registry import FAMILIES, build_backbone, get_info, registry, restore_backbone

__all__ = ["FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "BackboneInfo", "Family", "FeatureExtractor",
           "ImageBackbone", "build_backbone", "get_info", "is_own_encoder", "registry", "restore_backbone"]
