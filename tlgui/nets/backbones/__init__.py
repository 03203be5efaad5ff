"""Backbones: the pretrained networks a classifier stands on, one file per family.

`base.py` holds what every backbone answers, `registry.py` the families and the lookup by name;
`efficientnet_lite.py`, `torchvision.py`, `text.py`, `encoder.py` and `hub.py` (any model of the
Hugging Face Hub, `hf:OWNER/NAME`) are the families.
"""

from .base import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, Family, FeatureExtractor, ImageBackbone
from .encoder import is_own_encoder
from .registry import FAMILIES, all_backbones, build_backbone, get_info, restore_backbone

__all__ = ["FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "BackboneInfo", "Family", "FeatureExtractor",
           "ImageBackbone", "build_backbone", "get_info", "is_own_encoder", "all_backbones", "restore_backbone"]
