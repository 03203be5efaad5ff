"""Every registered backbone builds as its record says; a family and a fusion mode added at run
time through the registry and the fusion table train from the command line; bundles name each
backbone's family and reload by it, older bundles without it too, and a bundle the previous
release wrote predicts as it did then."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import realdata
import torch
from torch import nn

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.nets import fusion
from tlgui.nets.backbones import FAMILIES, BackboneInfo, Family, all_backbones, build_backbone
from tlgui.nets.backbones.registry import family_of
from tlgui.nets.backbones.torchvision import on_meta
from tlgui.outputs.bundle import load_bundle
from tlgui.training.train import train

ROOT = Path(__file__).resolve().parents[1]
RELEASE = Path(__file__).parent / "data" / "release-0.1.0"  # model.zip and its predictions, as 0.1.0 wrote them
INFOS = all_backbones()
# built with its random initialisation and no pretrained weights, vit_h_14 is torchvision's
# 224-pixel network, while its record (from the weights) says 518
WRONG_SIZE = {"vit_h_14"}


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    images, _, _ = realdata.fashion_mnist(2, classes=[0, 7])
    x = torch.from_numpy(np.stack(images)).float().div(255)
    return x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def clothes(tmp_path_factory):
    images, labels, names = realdata.fashion_mnist(10, classes=[0, 1, 7, 8])
    return realdata.write_class_zip(tmp_path_factory.mktemp("data") / "clothes.zip", images, labels, names)


def _check(backbone, info: BackboneInfo, feats: torch.Tensor, n: int) -> None:
    assert feats.shape == (n, backbone.out_dim) and backbone.out_dim == info.feature_dim
    assert len(backbone.stages) == info.stages


@pytest.mark.parametrize("name", [n for n, i in INFOS.items() if i.offline])
def test_offline_backbone_builds_with_its_weights(name, pictures):
    """Pretrained weights on real inputs: 32-pixel pictures, or real reviews."""
    info = INFOS[name]
    backbone = build_backbone(name, image_size=32).eval()
    inputs = list(realdata.movie_reviews(2, max_chars=300)["text"]) if info.task == "text" else pictures
    with torch.no_grad():
        feats = backbone(inputs)
    _check(backbone, info, feats, len(inputs))
    assert torch.isfinite(feats).all() and feats.std() > 0


@pytest.mark.filterwarnings("ignore:The default weight initialization")  # googlenet, inception_v3
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(n in WRONG_SIZE, reason="no weights: "
                                                                          "another input size", strict=True))
                                  for n, i in INFOS.items() if not i.offline])
def test_zoo_backbone_architecture_matches_its_record(name):
    """Weights that would need a download: the architecture alone, on the meta device (shapes
    without memory or arithmetic, so that the 600M-parameter networks take a second too)."""
    info = INFOS[name]
    with on_meta():
        backbone = build_backbone(name, pretrained=False).to("meta")
    _check(backbone, info, backbone(torch.zeros(2, 3, 64, 64, device="meta")), 2)


# -- a family and a fusion mode added at run time ------------------------------------------------
class TinyConv(nn.Sequential):
    def __init__(self, width: int):
        super().__init__(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def _tiny(name: str, width: int) -> BackboneInfo:
    return BackboneInfo(name=name, task="image", params=0, input_size=32, stages=2, feature_dim=width, offline=True,
                        source="tests", build=lambda pretrained: TinyConv(width))


class MaxFusion(fusion.Projected):
    def combine(self, z: torch.Tensor) -> torch.Tensor:
        return z.amax(1)


def test_a_family_and_a_fusion_mode_added_at_run_time_train_from_the_cli(clothes, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(FAMILIES, "tiny", Family("tiny", lambda: [_tiny("tiny_a", 16), _tiny("tiny_b", 24)]))
    monkeypatch.setitem(fusion.MODES, "max", MaxFusion)
    assert main(["backbones", "--json"]) == 0
    assert {"tiny_a", "tiny_b"} <= {b["name"] for b in json.loads(capsys.readouterr().out)}

    out = tmp_path / "run"
    assert main(["train", str(clothes), "--out", str(out), "--backbone", "tiny_a", "--backbone", "tiny_b",
                 "--fusion", "max", "--freeze", "all", "--epochs", "1", "--image-size", "32", "--batch-size", "8"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"done: {out / 'model.zip'}"
    loaded = load_bundle(out / "model.zip")
    assert loaded.meta["fusion"] == "max" and isinstance(loaded.model.fusion, MaxFusion)
    assert [b["family"] for b in loaded.meta["backbones"]] == ["tiny", "tiny"]
    assert [b.out_dim for b in loaded.model.backbones] == [16, 24]
    assert loaded.probabilities([np.zeros((32, 32, 3), np.uint8)]).shape == (1, 4)


# -- the family in the bundle ----------------------------------------------------------------
def _rewrite(bundle, out, change) -> None:
    """A copy of `bundle` whose tlgui.json went through `change`."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "tlgui.json":
                meta = json.loads(data)
                change(meta)
                data = json.dumps(meta).encode()
            dst.writestr(item, data)


def test_bundle_records_the_family_and_older_bundles_still_load(clothes, tmp_path):
    result = train(RunConfig(backbones=["efficientnet_lite0"], freeze="all", epochs=1, image_size=32, batch_size=16),
                   read_dataset(clothes), tmp_path / "run")
    loaded = load_bundle(result.bundle)
    assert loaded.meta["backbones"][0]["family"] == "efficientnet_lite"

    older = tmp_path / "older.zip"
    _rewrite(result.bundle, older, lambda meta: [b.pop("family") for b in meta["backbones"]])
    old = load_bundle(older)
    assert "family" not in old.meta["backbones"][0] and old.model.backbones[0].family == "efficientnet_lite"
    ds = read_dataset(clothes)
    images = [ds.load_image(i) for i in range(0, len(ds), 5)]
    np.testing.assert_allclose(old.probabilities(images), loaded.probabilities(images), atol=1e-6)

    unknown = tmp_path / "unknown.zip"
    _rewrite(result.bundle, unknown, lambda meta: meta["backbones"][0].update(family="nonesuch"))
    with pytest.raises(TlguiError, match="does not know.*update tlgui"):
        load_bundle(unknown)


def test_a_bundle_of_the_previous_release_predicts_as_it_did():
    """Release 0.1.0's model.zip (an own autoencoder's features, `weighted` fusion, a frozen head) and
    what its `predict` printed for the first picture of each built-in class: the same, in a fresh process."""
    then = [json.loads(line) for line in (RELEASE / "predictions.jsonl").read_text().splitlines()]
    p = subprocess.run([sys.executable, "-m", "tlgui", "predict", str(RELEASE / "model.zip"), *(r["input"] for r in then),
                        "--top-k", "10"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    now = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["label"] for r in now] == [r["label"] for r in then] and len(now) == 10
    for a, b in zip(now, then):
        a, b = dict(a["top_k"]), dict(b["top_k"])
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in b], list(b.values()), atol=1e-5)
    assert load_bundle(RELEASE / "model.zip").meta["fusion"] == "weighted"


def test_older_entries_are_routed_as_before():
    assert family_of({"name": "runs/encoder.zip", "task": "image", "kind": "encoder"}) == "encoder"
    assert family_of({"name": "glove_bilstm", "task": "text", "kind": "registry"}) == "text"
    assert family_of({"name": "mobilenet_v2", "task": "image", "kind": "registry"}) == "torchvision"
    assert family_of({"name": "efficientnet_lite0", "task": "image", "kind": "registry"}) == "efficientnet_lite"
