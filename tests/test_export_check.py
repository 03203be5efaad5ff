"""Exports that give the model's answers: ONNX (float and int8) and TorchScript of an image model
and ONNX of a text model, run in a fresh Python process without tlgui, agree with the bundle's
own predictions on real held-out data; a file that does not is refused with one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from realdata import fashion_mnist, movie_reviews, write_class_zip, write_text_table
from test_cli import _one_line_error, tlgui

from tlgui.errors import TlguiError
from tlgui.outputs.bundle import add_export, load_bundle

SIZE = 48
CLASSES = [1, 8, 9]  # trouser, bag, ankle boot

pytestmark = pytest.mark.usefixtures("one_thread")

# Runs in a fresh interpreter: only onnxruntime, torch and tokenizers, never tlgui.
OUTSIDE = r"""
import json, sys
import numpy as np
folder, kind = sys.argv[1], sys.argv[2]
meta = json.load(open(f"{folder}/tlgui.json"))
out = {}
if kind == "image":
    import onnxruntime, torch
    x = np.load(f"{folder}/pixels.npy")
    for fmt in ("onnx", "onnx-int8"):
        session = onnxruntime.InferenceSession(f"{folder}/{meta['exports'][fmt]['file']}", providers=["CPUExecutionProvider"])
        out[fmt] = session.run(["probabilities"], {"pixels": x})[0].tolist()
    net = torch.jit.load(f"{folder}/{meta['exports']['torchscript']['file']}")
    out["torchscript"] = net(torch.from_numpy(x)).detach().numpy().tolist()
else:
    import onnxruntime
    from tokenizers import Tokenizer
    entry = meta["exports"]["onnx"]
    texts = json.load(open(f"{folder}/texts.json"))
    feeds = {}
    for i in entry["inputs"]:
        enc = Tokenizer.from_file(f"{folder}/{i['tokenizer']}").encode_batch(texts)
        feeds[i["name"]] = np.array([e.ids for e in enc], dtype=np.int64)
        feeds[i["mask"]] = np.array([e.attention_mask for e in enc], dtype=np.int64)
    out["onnx"] = onnxruntime.InferenceSession(f"{folder}/{entry['file']}").run(None, feeds)[0].tolist()
assert "tlgui" not in sys.modules
json.dump(out, open(f"{folder}/out.json", "w"))
"""


def _outside(bundle, folder, kind: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(bundle) as z:
        z.extractall(folder)
    p = subprocess.run([sys.executable, "-c", OUTSIDE, str(folder), kind], capture_output=True, text=True, timeout=300,
                       cwd=folder)  # not the repository: `import tlgui` would fail there
    assert p.returncode == 0, p.stderr
    return {k: np.asarray(v) for k, v in json.loads((folder / "out.json").read_text()).items()}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    data = write_class_zip(root / "train.zip", *fashion_mnist(30, classes=CLASSES))
    tlgui("train", data, "--backbone", "efficientnet_lite0", "--freeze", "all", "--epochs", "6", "--lr", "0.003",
          "--image-size", SIZE, "--export", "onnx", "--export", "onnx-int8", "--export", "torchscript", "--out", root / "run")
    return root, data, root / "run" / "model.zip"


@pytest.fixture(scope="module")
def held_out():
    """Unseen test pictures, as uint8 RGB arrays at the model's size, so both sides see the same pixels."""
    images, _, _ = fashion_mnist(50, split="test", classes=CLASSES)
    return [np.asarray(Image.fromarray(i).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for i in images]


def test_image_exports_agree_outside_tlgui(image_run, held_out, tmp_path):
    _, _, bundle = image_run
    expected = load_bundle(bundle).probabilities(held_out)
    folder = tmp_path / "unpacked"
    folder.mkdir()
    np.save(folder / "pixels.npy", (np.stack(held_out).astype(np.float32) / 255).transpose(0, 3, 1, 2).copy())
    got = _outside(bundle, folder, "image")
    for fmt in ("onnx", "torchscript"):
        assert (got[fmt].argmax(1) == expected.argmax(1)).all(), fmt
        np.testing.assert_allclose(got[fmt], expected, atol=1e-4)
    int8 = float((got["onnx-int8"].argmax(1) == expected.argmax(1)).mean())
    assert int8 >= 0.97, f"int8 top-1 agreement {int8:.3f} on {len(held_out)} test pictures"

    meta = json.loads((folder / "tlgui.json").read_text())
    exports = meta["exports"]
    assert set(exports) == {"onnx", "onnx-int8", "torchscript"}
    for fmt, entry in exports.items():  # the check at save time, on the validation pictures
        assert entry["checked_on"] == "validation pictures" and entry["checked"] == meta["metrics"]["count"]
        assert entry["agreement"] >= (0.97 if fmt == "onnx-int8" else 1.0)
        assert 0 <= entry["max_abs_diff"] <= (1.0 if fmt == "onnx-int8" else 1e-3)
    q = exports["onnx-int8"]
    assert q["size_bytes"] == (folder / "model.int8.onnx").stat().st_size
    assert q["size_ratio"] < 0.4 and q["size_bytes"] < 0.4 * (folder / "model.onnx").stat().st_size
    assert q["ms_per_input"] > 0 and q["fp32_ms_per_input"] > 0 and "static" in q["quantization"]


def test_model_card_is_hub_ready(image_run, tmp_path):
    from huggingface_hub import ModelCard

    _, _, bundle = image_run
    with zipfile.ZipFile(bundle) as z:
        card_text, meta = z.read("README.md").decode(), json.loads(z.read("tlgui.json"))
    assert card_text.startswith("---\n")
    card = ModelCard(card_text)
    assert card.data.library_name == "tlgui" and card.data.pipeline_tag == "image-classification"
    assert "efficientnet_lite0" in card.data.tags and card.data.datasets == ["train"]
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == round(meta["metrics"]["accuracy"], 4)
    assert results["f1"].metric_value == round(meta["metrics"]["macro_f1"], 4)
    assert results["accuracy"].task_type == "image-classification" and results["accuracy"].dataset_name == "train"
    assert "| `model.int8.onnx` | " in card_text and "## Use it without tlgui" in card_text


def test_a_mismatching_export_is_refused(image_run, tmp_path, monkeypatch, capsys):
    """A file that does not give the model's answers (forced here: the classes come out reversed) fails."""
    import shutil

    from tlgui import cli
    from tlgui.outputs import export

    _, data, bundle = image_run
    copy = shutil.copy(bundle, tmp_path / "model.zip")
    before = open(copy, "rb").read()
    monkeypatch.setattr(export._Probabilities, "forward", lambda self, pixels: self.model(pixels).softmax(1).flip(1))
    with pytest.raises(TlguiError, match=r"the torchscript export does not give the model's answers: the top class "
                                         r"agrees on \d+\.\d% of \d+ validation pictures"):
        add_export(copy, "torchscript", data_path=data)
    assert cli.main(["export", str(copy), "--format", "onnx", "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the onnx export does not give the model's answers" in err[0]
    assert open(copy, "rb").read() == before  # the bundle is left as it was


def test_text_model_exports_with_its_tokenizer(tmp_path):
    reviews = movie_reviews(40)
    data = write_text_table(tmp_path / "reviews.csv", reviews)
    tlgui("train", data, "--backbone", "glove_bilstm", "--freeze", "all", "--epochs", "2", "--export", "onnx",
          "--out", tmp_path / "run")
    bundle = tmp_path / "run" / "model.zip"
    texts = movie_reviews(60, seed=1)["text"].tolist()[:80] + ["", "Don't!  It's GREAT..."]
    folder = tmp_path / "unpacked"
    folder.mkdir()
    (folder / "texts.json").write_text(json.dumps(texts))
    got = _outside(bundle, folder, "text")["onnx"]
    expected = load_bundle(bundle).probabilities(texts)
    assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    entry = json.loads((folder / "tlgui.json").read_text())["exports"]["onnx"]
    assert entry["agreement"] == 1.0 and entry["checked_on"] == "validation texts" and entry["tokenizers"] == ["tokenizer.json"]
    refused = _one_line_error(tlgui("export", bundle, "--format", "onnx-int8", check=False))
    assert "needs --data DATA" in refused
