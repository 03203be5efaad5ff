"""`train --export` and `export`: ONNX and TorchScript files that run with onnxruntime or plain torch,
giving the same probabilities as tlgui's own prediction."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from realdata import fashion_mnist, movie_reviews, write_class_zip, write_text_table
from test_cli import _one_line_error, tlgui

from tlgui.config import RunConfig
from tlgui.errors import TlguiError
from tlgui.outputs.bundle import load_bundle

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real tiny model, trained with `--export torchscript`, then given ONNX by `export`."""
    root = tmp_path_factory.mktemp("export")
    data = write_class_zip(root / "train.zip", *fashion_mnist(12, classes=[1, 8, 9]))
    p = tlgui("train", data, "--backbone", "efficientnet_lite0", "--freeze", "all", "--epochs", "1",
              "--image-size", SIZE, "--export", "torchscript", "--out", root / "run")
    bundle = root / "run" / "model.zip"
    assert p.stdout.strip().splitlines()[-1] == f"done: {bundle}"
    with zipfile.ZipFile(bundle) as z:
        assert "model.torchscript.pt" in z.namelist() and "model.onnx" not in z.namelist()
        weights = z.read("model.safetensors")
    assert tlgui("export", bundle, "--format", "onnx").stdout.strip() == f"done: {bundle}"
    with zipfile.ZipFile(bundle) as z:
        assert z.read("model.safetensors") == weights
    return bundle


@pytest.fixture(scope="module")
def pictures():
    """Unseen test pictures as RGB arrays already at the model's size, so both paths see the same pixels."""
    images, _, _ = fashion_mnist(3, split="test", classes=[1, 8, 9])
    return [np.asarray(Image.fromarray(i).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for i in images]


def _pixels(pictures) -> np.ndarray:
    return (np.stack(pictures).astype(np.float32) / 255).transpose(0, 3, 1, 2).copy()


def _onnx_probabilities(model: bytes | str, x: np.ndarray) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": x})[0]


def _torchscript_probabilities(model, x: np.ndarray) -> np.ndarray:
    return torch.jit.load(model)(torch.from_numpy(x)).numpy()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load's deprecation notice
def test_bundle_exports_match_tlgui(run, pictures):
    expected = load_bundle(run).probabilities(pictures)
    with zipfile.ZipFile(run) as z:
        meta = json.loads(z.read("tlgui.json"))
        card = z.read("README.md").decode()
        onnx_file, script_file = z.read("model.onnx"), z.read("model.torchscript.pt")
    x = _pixels(pictures)
    for part in (slice(None), slice(0, 1), slice(4, None)):  # any batch size, one included
        np.testing.assert_allclose(_onnx_probabilities(onnx_file, x[part]), expected[part], atol=1e-4)
        np.testing.assert_allclose(_torchscript_probabilities(io.BytesIO(script_file), x[part]), expected[part], atol=1e-4)
    assert set(meta["exports"]) == {"onnx", "torchscript"} and meta["config"]["export"] == ["torchscript"]
    for entry in meta["exports"].values():
        assert entry["input"]["shape"] == ["batch", 3, SIZE, SIZE] and entry["input"]["range"] == [0.0, 1.0]
        assert entry["output"]["name"] == "probabilities" and entry["classes"] == meta["classes"]
    assert "## Use it without tlgui" in card and "onnxruntime.InferenceSession('model.onnx')" in card
    assert "torch.jit.load('model.torchscript.pt')" in card


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_export_beside_the_bundle(run, pictures, tmp_path):
    copy = shutil.copy(run, tmp_path / "model.zip")
    out = tmp_path / "classifier.pt"
    assert tlgui("export", copy, "--format", "torchscript", "--out", out).stdout.strip() == f"done: {out}"
    assert (tmp_path / "model.zip").read_bytes() == run.read_bytes()  # --out leaves the bundle as it was
    np.testing.assert_allclose(_torchscript_probabilities(str(out), _pixels(pictures)),
                               load_bundle(run).probabilities(pictures), atol=1e-4)


def test_text_torchscript_and_unknown_formats_are_refused(tmp_path):
    reviews = write_text_table(tmp_path / "reviews.csv", movie_reviews(6))
    refused = _one_line_error(tlgui("train", reviews, "--backbone", "glove_bilstm", "--export", "torchscript",
                                    "--out", tmp_path / "refused", check=False))
    assert "text model cannot be exported to TorchScript" in refused and not (tmp_path / "refused" / "model.zip").exists()
    tlgui("train", reviews, "--backbone", "glove_bilstm", "--freeze", "all", "--epochs", "1", "--out", tmp_path / "text")
    refused = _one_line_error(tlgui("export", tmp_path / "text", "--format", "torchscript", check=False))
    assert "tokenizer is not part of" in refused
    assert "invalid choice: 'tflite'" in _one_line_error(tlgui("export", tmp_path / "text", "--format", "tflite",
                                                               check=False))
    with pytest.raises(TlguiError, match="unknown export format 'tflite': use onnx, onnx-int8 or torchscript"):
        RunConfig.from_dict({"export": ["tflite"]})  # as a config.json given to --config would say
