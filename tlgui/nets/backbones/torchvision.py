"""torchvision's classification zoo as backbones: a table read at start-up, built on demand.

Building 80 networks to learn their shapes takes seconds, so `zoo.json` records each model's
feature width and stage count; `python -m tlgui.nets.backbones.torchvision` writes it again for a
new torchvision. MobileNetV2's weights ship in a pip package and are put in torch's cache.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ...errors import TlguiError
from . import offline_weights
from .base import BackboneInfo, Family
from .stages import split_stages

TABLE = Path(__file__).with_name("zoo.json")


@cache
def table() -> dict[str, dict]:
    return json.loads(TABLE.read_text())


def strip_head(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace the classifier's last linear layer with Identity; return the model and its width."""
    if hasattr(model, "aux_logits"):  # googlenet, inception_v3: only the main output
        model.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, aux):
                setattr(model, aux, None)
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    if last is None:  # squeezenet: a convolutional classifier
        width = model.classifier[1].in_channels
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return model, width
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    width = getattr(parent, attr).in_features
    setattr(parent, attr, nn.Identity())
    return model, width


def checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def local_weights(name: str) -> str | None:
    """The first of the model's weight sets (best first) whose file is already in torch's cache."""
    return next((w for w, url in table()[name]["weights"] if checkpoint_path(url).exists()), None)


def build(name: str, pretrained: bool) -> nn.Module:
    """The headless network, with ImageNet weights from torchvision's cache or its download.

    A weight set already on disk wins over a better one that would need a download: the
    MobileNetV2 file that ships offline is IMAGENET1K_V1, while torchvision's default is V2.
    """
    import torchvision

    weights = None
    if pretrained:
        enum = torchvision.models.get_model_weights(name)
        weights = enum[local_weights(name) or enum.DEFAULT.name]
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # URLError, socket errors, a partial file...
        if weights is not None and not checkpoint_path(weights.url).exists():
            raise TlguiError(f"the weights of {name} are not on this machine and could not be downloaded "
                             f"({type(e).__name__}); connect to the internet once, or pick an offline backbone") from None
        raise
    return strip_head(model)[0]


def _describe(name: str) -> dict:
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    weights = enum.DEFAULT
    t = weights.transforms()
    with on_meta():
        model, width = strip_head(torchvision.models.get_model(name, weights=None))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "feature_dim": width,
        "stages": len(split_stages(model)),
        "input_size": int(t.crop_size[0]),
        "mean": list(t.mean),
        "std": list(t.std),
        "gflops": float(weights.meta.get("_ops", 0.0)),
        "weights": [[w.name, w.url] for w in sorted(enum, key=lambda w: w != weights)],
        "accuracy": weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
    }


class on_meta:
    """Create parameters on the meta device (no memory, no init), even for models whose
    constructors compute with tensors (regnet), by moving each parameter as it is registered."""

    def __enter__(self):
        self._orig = nn.Module.register_parameter

        def register(module, name, param):
            self._orig(module, name, param)
            if param is not None:
                module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

        nn.Module.register_parameter = register
        return self

    def __exit__(self, *exc):
        nn.Module.register_parameter = self._orig


@cache
def infos() -> list[BackboneInfo]:
    offline_weights.ensure_mobilenet_v2_checkpoint()
    return [
        BackboneInfo(
            name=name, task="image", params=row["params"], input_size=row["input_size"], stages=row["stages"],
            feature_dim=row["feature_dim"], offline=local_weights(name) is not None, gflops=row["gflops"],
            mean=tuple(row["mean"]), std=tuple(row["std"]), source="torchvision",
            description=f"torchvision {name}" + (f", ImageNet top-1 {row['accuracy']:.1f}%" if row.get("accuracy") else ""),
            build=lambda pretrained, n=name: build(n, pretrained),
        )
        for name, row in table().items()
    ]


FAMILY = Family("torchvision", infos, downloads=True)


def main() -> None:
    import warnings

    import torchvision

    warnings.simplefilter("ignore")
    names = torchvision.models.list_models(module=torchvision.models)
    TABLE.write_text(json.dumps({n: _describe(n) for n in names}, indent=1) + "\n")
    print(f"wrote {len(names)} models to {TABLE}")


if __name__ == "__main__":
    main()
