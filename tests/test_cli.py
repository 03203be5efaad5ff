"""Every call of `python -m tlgui` in the contract, as a user runs it, and its bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from realdata import fashion_mnist, write_class_zip

ROOT = Path(__file__).resolve().parents[1]


def tlgui(*args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "tlgui", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    images, labels, names = fashion_mnist(20, classes=[1, 8, 9])
    test_images, test_labels, _ = fashion_mnist(10, split="test", classes=[1, 8, 9])
    return (write_class_zip(root / "train.zip", images, labels, names),
            write_class_zip(root / "test.zip", test_images, test_labels, names), root)


@pytest.fixture(scope="module")
def run(data):
    train_zip, _, root = data
    p = tlgui("train", train_zip, "--backbone", "efficientnet_lite0", "--freeze", "all", "--epochs", "6",
              "--image-size", "32", "--patience", "0", "--out", root / "run")
    return p, root / "run"


def test_backbones_json():
    rows = json.loads(tlgui("backbones", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    for key in ("name", "task", "params", "input_size", "stages", "offline"):
        assert key in by_name["efficientnet_lite0"]
    assert by_name["efficientnet_lite0"]["offline"] is True
    assert "resnet50" in by_name and by_name["resnet50"]["task"] == "image"


def test_inspect(data):
    report = json.loads(tlgui("inspect", data[0], "--json").stdout)
    assert report["task"] == "image" and report["used"] == 60
    assert [c["count"] for c in report["classes"]] == [20, 20, 20]
    assert "trouser" in tlgui("inspect", data[0]).stdout


def test_train_prints_epochs_and_done(run):
    p, out = run
    lines = p.stdout.strip().splitlines()
    # a frozen head is fitted to convergence: one line per group of fit steps, no epochs
    assert any(line.startswith("fit step ") for line in lines) and not any(line.startswith("epoch ") for line in lines)
    assert lines[-1] == f"done: {out / 'model.zip'}"
    with zipfile.ZipFile(out / "model.zip") as z:
        assert {"model.safetensors", "tlgui.json", "README.md"} <= set(z.namelist())
        meta = json.loads(z.read("tlgui.json"))
    assert meta["classes"] == ["ankle-boot", "bag", "trouser"]
    assert meta["preprocessing"]["image_size"] == 32
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"epoch", "split", "loss", "accuracy"} <= set(rows[0])
    mistakes = json.loads((out / "results.json").read_text())["mistakes"]  # drawn small by the engine, as the page shows them
    assert len(list((out / "mistakes").glob("*.png"))) == min(24, len(mistakes))


def test_predict_and_evaluate(run, data, tmp_path):
    _, out = run
    image = tmp_path / "bag.png"
    with zipfile.ZipFile(data[1]) as z:
        image.write_bytes(z.read(next(n for n in z.namelist() if "/bag/" in f"/{n}")))
    rows = [json.loads(x) for x in tlgui("predict", out / "model.zip", image, "--top-k", "2").stdout.splitlines()]
    assert rows[0]["input"] == str(image) and len(rows[0]["top_k"]) == 2
    assert rows[0]["label"] in ("trouser", "bag", "ankle-boot")
    assert rows == [json.loads(x) for x in tlgui("predict", out, image, "--top-k", "2").stdout.splitlines()]
    m = json.loads(tlgui("evaluate", out / "model.zip", data[1], "--json").stdout)
    assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(m)
    assert m["accuracy"] > 0.6  # chance is 0.33


def test_the_cards_python_code_runs(run, data, tmp_path):
    """The model card's "How to use" code as a user copies it, beside model.zip and a picture."""
    _, out = run
    card = zipfile.ZipFile(out / "model.zip").read("README.md").decode()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copy(out / "model.zip", tmp_path / "model.zip")
    with zipfile.ZipFile(data[1]) as z:
        (tmp_path / "picture.jpg").write_bytes(z.read(next(n for n in z.namelist() if "/bag/" in f"/{n}")))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert "'label'" in p.stdout and "'top_k'" in p.stdout


def test_config_repeats_a_run(run, data):
    _, out = run
    again = data[2] / "again"
    tlgui("train", data[1], "--config", out / "config.json", "--epochs", "1", "--out", again)
    first, second = (json.loads((d / "config.json").read_text()) for d in (out, again))
    assert second == {**first, "epochs": 1}


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(data, tmp_path):
    train_zip = data[0]
    not_zip = tmp_path / "photos.zip"
    not_zip.write_text("not a zip")
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    one = write_class_zip(tmp_path / "one.zip", *fashion_mnist(5, classes=[3]))
    fake_model = tmp_path / "model.zip"
    with zipfile.ZipFile(fake_model, "w") as z:
        z.writestr("weights.pt", b"\x80\x04not a model")
    cases = {
        "not found": ("train", tmp_path / "missing.zip", "--out", tmp_path / "r1"),
        "not a readable zip": ("train", not_zip, "--out", tmp_path / "r2"),
        "no images": ("inspect", empty),
        "only one class": ("train", one, "--out", tmp_path / "r3", "--image-size", "32"),
        "unknown backbone": ("train", train_zip, "--backbone", "resnet9000", "--out", tmp_path / "r4"),
        # argparse finds a wrong flag at the top: the hint still names the command's own help
        "unrecognized arguments: --colour blue (see `python -m tlgui train --help`)":
            ("train", train_zip, "--out", tmp_path / "r5", "--colour", "blue"),
        "invalid choice: 'trian'": ("trian", train_zip),
        "--freeze must be": ("train", train_zip, "--freeze", "some", "--out", tmp_path / "r6"),
        "not a tlgui model bundle": ("predict", fake_model, train_zip),
    }
    for expected, args in cases.items():
        assert expected in _one_line_error(tlgui(*args, check=False))
    assert not any((tmp_path / f"r{i}" / "model.zip").exists() for i in range(1, 7))


def test_text_backbone_on_pictures_exits_2_with_one_line(data, tmp_path):
    """The engine checks that each backbone reads what the dataset holds: the page's sentence, on the CLI too."""
    p = tlgui("train", data[0], "--backbone", "minilm_l6", "--image-size", "32", "--out", tmp_path / "run", check=False)
    assert _one_line_error(p) == ("error: minilm_l6 works on texts, but the dataset holds images: "
                                  "choose a backbone for images")
    assert not (tmp_path / "run" / "model.zip").exists()
