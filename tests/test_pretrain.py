"""Unsupervised pretraining on real Fashion-MNIST pictures, and its encoders used as backbones."""

from __future__ import annotations

import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from realdata import encode_image, fashion_mnist, movie_reviews, write_class_zip, write_text_table

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.nets.backbones import get_info
from tlgui.nets.backbones.encoder import list_encoders, load_encoder, read_encoder_meta
from tlgui.outputs.bundle import load_bundle
from tlgui.training.pretrain import PretrainConfig, pretrain, read_images
from tlgui.training.train import train

CLASSES = [0, 1, 7, 8]  # t-shirt, trouser, sneaker, bag
SMALL = dict(image_size=32, batch_size=32, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread", "own_feature_cache")


def _loose_zip(path: Path, per_class: int) -> Path:
    """Unlabelled: pictures of all ten classes loose in one folder of a zip, beside a note."""
    images, _, _ = fashion_mnist(per_class, seed=5)
    with zipfile.ZipFile(path, "w") as z:
        for i in np.random.default_rng(0).permutation(len(images)):
            z.writestr(f"shots/{i}.png", encode_image(images[i]))
        z.writestr("shots/notes.txt", "taken in the shop")
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    return _loose_zip(tmp_path_factory.mktemp("unlabelled") / "pictures.zip", 25)


@pytest.fixture(scope="module")
def few_pictures(tmp_path_factory) -> Path:
    return _loose_zip(tmp_path_factory.mktemp("few") / "few.zip", 5)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    images, labels, names = fashion_mnist(30, split="test", classes=CLASSES)
    return write_class_zip(tmp_path_factory.mktemp("labelled") / "clothes.zip", images, labels, names)


def _pretrain(method: str, data: Path, out: Path, epochs: int = 3):
    events: list[dict] = []
    config = PretrainConfig(method=method, epochs=epochs, **{**SMALL, "batch_size": 16})
    result = pretrain(config, read_images(data), out, [events.append])
    return result, events, out


@pytest.fixture(scope="module")
def ae(pictures, tmp_path_factory):
    return _pretrain("autoencoder", pictures, tmp_path_factory.mktemp("ae"))


@pytest.fixture(scope="module")
def vae(pictures, tmp_path_factory):
    return _pretrain("vae", pictures, tmp_path_factory.mktemp("vae"))


def test_reads_pictures_in_any_layout(pictures, labelled, tmp_path):
    ds = read_images(pictures)
    assert len(ds) == 250 and [r for _, r in ds.skipped] == ["not an image file"]
    assert len(read_images(labelled)) == 120  # class folders: the labels are simply not used
    table = write_text_table(tmp_path / "reviews.csv", movie_reviews(5))
    with pytest.raises(TlguiError, match="texts"):
        read_images(table)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no pictures")
    with pytest.raises(TlguiError, match="no image files"):
        read_images(empty)


def test_autoencoder_reconstruction_loss_falls(ae):
    result, events, out = ae
    assert result.status == "finished"
    losses = [h["val_loss"] for h in result.history]
    assert min(losses[1:]) < 0.8 * losses[0]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("epoch") == 3
    assert "preparing" in kinds and "batch" in kinds
    assert {"config.json", "metrics.jsonl", "encoder.zip", "reconstructions.png"} == {p.name for p in out.iterdir()}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in rows[:2]] == [(1, "train"), (1, "val")] and len(rows) == 6
    assert json.loads((out / "config.json").read_text())["method"] == "autoencoder"


def test_vae_loss_has_reconstruction_and_kl_parts_and_falls(vae):
    result, events, _ = vae
    epochs = [e for e in events if e["event"] == "epoch"]
    recon = [e["val_recon"] for e in epochs]
    assert min(recon[1:]) < recon[0]
    for e in epochs:
        assert e["train_kl"] > 0 and e["val_loss"] == pytest.approx(e["val_recon"] + e["val_kl"], rel=1e-4)


def test_reconstruction_sheet_shows_inputs_beside_outputs(ae, vae):
    sheet_ae = Image.open(ae[2] / "reconstructions.png")
    sheet_vae = Image.open(vae[2] / "reconstructions.png")
    assert sheet_ae.width == sheet_vae.width and sheet_ae.width > 8 * 64
    assert sheet_vae.height > sheet_ae.height  # the VAE adds a row of samples from its prior
    px = np.asarray(sheet_ae.convert("L"), dtype=np.float32)
    size, gap = 64, 8  # the sheet's layout: pairs of 64-px tiles, 8 px apart

    def tile(r: int, c: int) -> np.ndarray:
        x, y = gap + c * size + (c // 2) * gap, gap + r * (size + gap)
        return px[y : y + size, x : x + size].ravel()

    pairs = [(tile(r, 2 * k), tile(r, 2 * k + 1)) for r in range(4) for k in range(4)]
    same = np.mean([np.corrcoef(a, b)[0, 1] for a, b in pairs])
    other = np.mean([np.corrcoef(a, pairs[(i + 1) % 16][1])[0, 1] for i, (a, _) in enumerate(pairs)])
    assert same > other + 0.05  # each reconstruction looks more like its own input than like the next one


def test_encoder_bundle_is_self_describing_and_holds_the_trained_weights(ae):
    result, _, out = ae
    names = set(zipfile.ZipFile(out / "encoder.zip").namelist())
    assert names == {"encoder.safetensors", "encoder.json", "README.md"}
    meta = read_encoder_meta(out / "encoder.zip")
    assert meta["method"] == "autoencoder" and meta["image_size"] == 32 and meta["feature_dim"] == 256
    assert meta["arch"]["widths"] == [32, 64, 128, 256] and len(meta["mean"]) == 3
    assert meta["losses"]["val_loss"] == min(h["val_loss"] for h in result.history)
    info = get_info(str(out / "encoder.zip"))
    assert (info.stages, info.feature_dim, info.input_size, info.source) == (4, 256, 32, "own encoder")
    backbone = load_encoder(out / "encoder.zip").eval()
    x = torch.rand(5, 3, 32, 32)
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1), torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(backbone(x), result.model.encoder((x - mean) / std), atol=1e-5)
    assert not torch.allclose(load_encoder(out / "encoder.zip", pretrained=False).eval()(x), backbone(x))


@pytest.mark.parametrize("which", ["ae", "vae"])
def test_frozen_encoder_trains_a_classifier_above_chance(which, request, labelled, tmp_path):
    encoder = request.getfixturevalue(which)[2] / "encoder.zip"
    result = train(RunConfig(backbones=[str(encoder)], freeze="all", epochs=8, lr=3e-3, patience=0, **SMALL),
                   read_dataset(labelled), tmp_path)
    assert result.metrics["accuracy"] > 0.5  # chance is 0.25
    assert "own encoder pretrained without labels, feature extraction" in load_bundle(result.bundle).meta["transfer"]


def test_partly_frozen_encoder_keeps_its_first_blocks(ae, labelled, tmp_path):
    encoder = ae[2] / "encoder.zip"
    # without LP-FT's probe, which is its epoch 0 and may stay: here the trained blocks must move
    result = train(RunConfig(backbones=[str(encoder)], freeze="2", epochs=2, patience=0, lp_ft=False, **SMALL),
                   read_dataset(labelled), tmp_path)
    before = load_encoder(encoder).body.blocks
    after = result.model.backbones[0].body.blocks
    assert torch.equal(before[0][0].weight, after[0][0].weight) and torch.equal(before[1][0].weight, after[1][0].weight)
    assert not torch.equal(before[3][0].weight, after[3][0].weight)
    assert "partial fine-tuning (first 2 stages frozen)" in load_bundle(result.bundle).meta["transfer"]


def test_fused_with_imagenet_and_reloads_without_the_encoder_file(ae, labelled, tmp_path):
    copy = tmp_path / "mine" / "encoder.zip"
    copy.parent.mkdir()
    shutil.copy(ae[2] / "encoder.zip", copy)
    result = train(RunConfig(backbones=["efficientnet_lite0", str(copy)], freeze="all", fusion="concat", epochs=1,
                             **SMALL), read_dataset(labelled), tmp_path / "run")
    copy.unlink()
    loaded = load_bundle(result.bundle)  # the architecture comes from the bundle's entry, the weights too
    entry = loaded.meta["backbones"][1]
    assert entry["kind"] == "encoder" and entry["arch"]["widths"] == [32, 64, 128, 256]
    assert "fused with pretrained backbones" in loaded.meta["transfer"]
    x = torch.rand(4, 3, 32, 32)
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), result.model(x), atol=1e-5)


def test_list_encoders_finds_mine_newest_first(ae, vae, tmp_path):
    root = tmp_path / "runs"
    for name, run in (("a", ae), ("b", vae)):
        (root / name).mkdir(parents=True)
        shutil.copy(run[2] / "encoder.zip", root / name / "encoder.zip")
    os.utime(root / "a" / "encoder.zip", (1e9, 1e9))
    (root / "junk").mkdir()
    (root / "junk" / "encoder.zip").write_bytes(b"not a zip")
    infos = list_encoders(root)
    assert [Path(i.name).parent.name for i in infos] == ["b", "a"]
    assert "vae" in infos[0].description and list_encoders(tmp_path / "nowhere") == []


def test_a_classifier_bundle_is_not_an_encoder(tmp_path, labelled):
    with pytest.raises(TlguiError, match="not found"):
        get_info(str(tmp_path / "missing.zip"))
    with pytest.raises(TlguiError, match="not an encoder"):
        get_info(str(labelled))


def test_stop_keeps_the_best_encoder_so_far(few_pictures, tmp_path):
    stop = threading.Event()

    def after_first_epoch(e):
        if e["event"] == "epoch":
            stop.set()

    pictures = read_images(few_pictures)
    result = pretrain(PretrainConfig(epochs=5, **SMALL), pictures, tmp_path / "a", [after_first_epoch], stop)
    assert result.status == "stopped" and len(result.history) == 1 and result.bundle.exists()
    early = threading.Event()
    early.set()
    result = pretrain(PretrainConfig(epochs=5, **SMALL), pictures, tmp_path / "b", [], early)
    assert result.status == "stopped" and result.bundle is None and not (tmp_path / "b" / "encoder.zip").exists()


def test_pretrain_cli(few_pictures, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["pretrain", str(few_pictures), "--method", "vae", "--out", str(out), "--epochs", "2",
                 "--image-size", "32", "--batch-size", "16"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1] == f"done: {out / 'encoder.zip'}"
    assert lines[0].startswith("few: 50 images used for pretraining, 1 skipped")
    assert sum(line.startswith("epoch ") and "kl" in line for line in lines) == 2
    assert read_encoder_meta(out / "encoder.zip")["method"] == "vae"


@pytest.mark.parametrize("args, words", [
    (["missing.zip"], "not found"),
    (["{pictures}", "--image-size", "30"], "multiple of 16"),
    (["{pictures}", "--epochs", "0"], "at least 1"),
    (["{pictures}", "--method", "gan"], "invalid choice"),
])
def test_pretrain_cli_bad_input_is_one_line_and_exit_2(args, words, pictures, tmp_path, capsys):
    argv = ["pretrain", *[a.format(pictures=pictures) for a in args], "--out", str(tmp_path / "run")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1
