"""What every backbone is and answers: the feature extractor, its record, and the family that makes it.

A family (one file in this package) offers records of the backbones it knows, builds them,
and rebuilds one from a bundle's entry without a network. `registry.py` lists the families.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .stages import split_stages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Reader = Callable[[str], bytes]  # a bundle's file of this backbone, by name


class FeatureExtractor(nn.Module):
    """A network that maps a batch of inputs to pooled features of width `out_dim`.

    `freeze(n)` stops gradients in the first n stages and keeps their BatchNorm statistics
    fixed (their layers stay in eval mode even while the model trains). With `keep_norm_stats`
    (pretrained weights) every BatchNorm layer keeps its statistics while its scale and shift
    still train: on small batches of small pictures, batch statistics stray far from the
    pretrained ones and fine-tuning would start by wrecking the features it came for.
    """

    task = "image"
    family: str | None = None  # set by the registry that built it; recorded in the bundle
    # `core`, the part of the network an ONNX file can hold, run by onnxruntime instead of PyTorch while
    # frozen features are computed on a CPU (`training/onnx_features.py` sets it, then clears it)
    runtime: Callable[..., torch.Tensor] | None = None
    exporter = "torchscript"  # how `core` exports: torch.onnx's tracing exporter (fast) or "dynamo"

    def __init__(self, name: str, body: nn.Module, out_dim: int, stages: list[list[nn.Module]] | None = None):
        super().__init__()
        self.name = name
        self.body = body
        self.out_dim = out_dim
        self.stages = stages if stages is not None else split_stages(body)
        self.frozen = 0
        self.keep_norm_stats = False

    def freeze(self, freeze: str | int) -> None:
        n = {"all": len(self.stages), "none": 0}.get(str(freeze))
        n = min(int(freeze), len(self.stages)) if n is None else n
        self.frozen = n
        staged = {id(p) for stage in self.stages for m in stage for p in m.parameters()}
        frozen = {id(p) for stage in self.stages[:n] for m in stage for p in m.parameters()}
        for p in self.parameters():  # loose parameters (a ViT's position embedding) go with the stem
            p.requires_grad = not (id(p) in frozen or (n > 0 and id(p) not in staged))

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in self.stages[: self.frozen]:
            for m in stage:
                m.eval()
        if self.keep_norm_stats:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    @property
    def fully_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    def fit_text(self, texts: list[str], max_length: int | None) -> None:
        """Called with the training texts before training (text backbones set their tokens kept
        per text and, where they have one, their vocabulary); nothing to do for pictures."""

    def scratch_parameters(self) -> list[nn.Parameter]:
        """Parameters with nothing pretrained in them: they learn at the head's rate."""
        return []

    def describe(self) -> dict:
        """What the bundle records to rebuild this backbone without a network."""
        entry = {"name": self.name, "task": self.task, "kind": "registry", "out_dim": self.out_dim}
        return entry if self.family is None else {**entry, "family": self.family}

    def bundle_files(self) -> dict[str, bytes]:
        """Extra files the bundle must carry (a vocabulary, a tokenizer)."""
        return {}

    def core(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Features from tensors alone (no resizing, no tokenising): what an ONNX export holds."""
        raise NotImplementedError

    def core_example(self) -> tuple[tuple[torch.Tensor, ...], list[dict[int, str]]] | None:
        """Inputs to export `core` with and each one's dynamic axes; None where it has no core."""
        return None

    def run_core(self, *tensors: torch.Tensor) -> torch.Tensor:
        if self.runtime is not None and not torch.is_grad_enabled():
            return self.runtime(*tensors)
        return self.core(*tensors)


class ImageBackbone(FeatureExtractor):
    """Takes RGB batches scaled to [0, 1]; resizes and normalises them its own way."""

    interpolation = "bilinear"  # how pictures reach `input_size` (a Hub model's data config may ask for bicubic)

    def __init__(self, name, body, out_dim, mean, std, input_size: int):
        super().__init__(name, body, out_dim)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def describe(self) -> dict:
        return {**super().describe(), "input_size": self.input_size,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode=self.interpolation, align_corners=False,
                              antialias=x.shape[-1] > s)
        return self.run_core(x)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std).flatten(1)

    def core_example(self):
        return (torch.rand(2, 3, self.input_size, self.input_size),), [{0: "batch"}]


@dataclass
class BackboneInfo:
    name: str
    task: str
    params: int
    input_size: int
    stages: int
    feature_dim: int
    offline: bool
    gflops: float = 0.0
    trains_when_frozen: bool = False  # a part trained from scratch (glove_bilstm's LSTM) trains at every freeze
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    source: str = "torchvision"
    description: str = ""
    # the network: a FeatureExtractor, or a headless image network that ImageBackbone wraps
    build: Callable[[bool], nn.Module] | None = field(default=None, repr=False)
    family: str = field(default="", repr=False)  # the registry fills it in

    def to_json(self) -> dict:
        d = asdict(self)
        for inner in ("build", "family"):
            d.pop(inner)
        return d


@dataclass(frozen=True)
class Family:
    """A kind of backbone, as the registry sees it.

    `infos`: the records `python -m tlgui backbones` lists. `lookup`: the record of a name
    outside that list (an own encoder's path), or None where the name is not this family's.
    `restore`: the backbone rebuilt from its bundle entry and files, with no download (the
    bundle's weights follow); None: the listed architecture, built without pretrained weights.
    `downloads`: its pretrained weights may be fetched when not on this machine.
    """

    name: str
    infos: Callable[[], list[BackboneInfo]]
    restore: Callable[[dict, Reader], FeatureExtractor] | None = None
    lookup: Callable[[str], BackboneInfo | None] = lambda name: None
    downloads: bool = False
