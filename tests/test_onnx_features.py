"""Frozen features through onnxruntime on a CPU: the same features as PyTorch's, the export kept
for the next run, and PyTorch where the export or its check fails."""

from __future__ import annotations

import pytest
import torch

from tests.realdata import fashion_mnist, movie_reviews, write_class_folders
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.nets.backbones import build_backbone
from tlgui.training import onnx_features
from tlgui.training.train import train

SIZE = 64  # small pictures: the export and the runs take seconds


@pytest.fixture
def onnx_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TLGUI_ONNX_DIR", str(tmp_path / "onnx"))
    monkeypatch.setenv("TLGUI_CACHE_MB", "0")  # every run computes its features
    return tmp_path / "onnx"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    images, labels, names = fashion_mnist(25, classes=[0, 1, 2, 3, 5, 7, 8, 9])  # 200: an export pays off
    return read_dataset(write_class_folders(tmp_path_factory.mktemp("data"), images, labels, names))


def _config(**kw) -> RunConfig:
    return RunConfig(**{"backbones": ["efficientnet_lite0"], "freeze": "all", "image_size": SIZE, "epochs": 1, **kw})


def test_onnxruntime_gives_pytorchs_features_and_keeps_the_export(onnx_dir, monkeypatch):
    b = build_backbone("efficientnet_lite0", True, SIZE).eval()
    x = torch.rand(5, 3, SIZE, SIZE)
    record: dict = {}
    with torch.inference_mode():
        reference = b(x)
        with onnx_features.onnxruntime_features([b], torch.device("cpu"), 1000, print, record):
            assert b.runtime is not None
            fast = b(x)
            again = b(x[:2])  # the batch axis is free
        assert b.runtime is None  # PyTorch again after the block
    assert record["efficientnet_lite0"]["runtime"] == "onnxruntime"
    assert record["efficientnet_lite0"]["max_abs_diff"] < 1e-3
    assert (fast - reference).abs().max() < 1e-3 and again.shape == (2, b.out_dim)
    files = list(onnx_dir.glob("*.onnx"))
    assert len(files) == 1
    # a second run reads the file; a few inputs never pay for a new export
    monkeypatch.setattr(onnx_features, "export", None)  # called, it would fail the test
    assert onnx_features.onnx_bytes(b) == files[0].read_bytes()
    other = build_backbone("efficientnet_lite0", False, SIZE)  # other weights: another file
    assert onnx_features.onnx_bytes(other, export_new=False) is None


def test_a_frozen_run_uses_onnxruntime_and_scores_as_pytorch(onnx_dir, pictures, tmp_path, monkeypatch):
    fast = train(_config(), pictures, tmp_path / "fast")
    monkeypatch.setenv("TLGUI_ONNX", "0")
    slow = train(_config(), pictures, tmp_path / "slow")
    assert fast.metrics["extraction"]["efficientnet_lite0"]["runtime"] == "onnxruntime"
    assert "extraction" not in slow.metrics
    n_val = len(pictures.indices("val"))
    assert abs(fast.metrics["accuracy"] - slow.metrics["accuracy"]) <= 1 / n_val + 1e-9


def test_text_features_from_onnxruntime_match(onnx_dir):
    b = build_backbone("minilm_l6", True).eval()
    texts = list(movie_reviews(3, max_chars=300)["text"]) + ["", "short"]
    record: dict = {}
    with torch.inference_mode():
        reference = b._encode(texts)
        with onnx_features.onnxruntime_features([b], torch.device("cpu"), 1000, print, record):
            fast = b._encode(texts)
    assert record["minilm_l6"]["runtime"] == "onnxruntime"
    assert (fast - reference).abs().max() < 1e-3


def test_a_backbone_that_does_not_export_trains_as_before(onnx_dir, pictures, tmp_path, monkeypatch):
    notes: list[str] = []

    def listen(e):
        if e["event"] == "note":
            notes.append(e["message"])

    def refuse(backbone):
        raise torch.onnx.errors.UnsupportedOperatorError("aten::odd_op", 17, 18)

    monkeypatch.setattr(onnx_features, "export", refuse)
    failed = train(_config(), pictures, tmp_path / "failed", [listen])
    monkeypatch.setenv("TLGUI_ONNX", "0")
    plain = train(_config(), pictures, tmp_path / "plain")
    assert failed.status == "finished"
    assert failed.metrics["extraction"]["efficientnet_lite0"]["runtime"] == "pytorch"
    assert notes == ["efficientnet_lite0: no ONNX export (UnsupportedOperatorError); PyTorch computes its features"]
    assert [h["train_loss"] for h in failed.history] == [h["train_loss"] for h in plain.history]


def test_features_that_differ_from_pytorchs_are_not_used(onnx_dir, pictures, tmp_path, monkeypatch):
    notes: list[str] = []
    monkeypatch.setattr(onnx_features, "TOLERANCE", 0.0)  # onnxruntime's last digits differ from PyTorch's
    checked = train(_config(), pictures, tmp_path / "checked",
                    [lambda e: notes.append(e["message"]) if e["event"] == "note" else None])
    monkeypatch.setenv("TLGUI_ONNX", "0")
    plain = train(_config(), pictures, tmp_path / "plain")
    assert checked.metrics["extraction"]["efficientnet_lite0"]["runtime"] == "pytorch"
    assert any("differ from PyTorch's" in n for n in notes)
    assert [h["train_loss"] for h in checked.history] == [h["train_loss"] for h in plain.history]
