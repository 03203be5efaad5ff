"""The networks: backbones by family (`backbones/`), the fusion of their features, the features'
scaling, and the classifier they make with its head. Knows the data's pictures and texts, never
how a run trains them."""

from .model import Classifier

__all__ = ["Classifier"]
