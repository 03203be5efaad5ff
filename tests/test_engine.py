"""The engine on real Fashion-MNIST images and the real offline backbones, at a small image size."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from realdata import fashion_mnist, write_class_zip

from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.nets.backbones import all_backbones, build_backbone
from tlgui.nets.fusion import MODES
from tlgui.outputs.bundle import LoadedModel, load_bundle
from tlgui.outputs.evaluate import evaluate
from tlgui.training.train import train

CLASSES = [0, 1, 7, 8]  # t-shirt, trouser, sneaker, bag: four classes a small model tells apart at 32 px
SMALL = dict(backbones=["efficientnet_lite0"], image_size=32, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def data_zip(tmp_path_factory):
    images, labels, names = fashion_mnist(30, classes=CLASSES)
    return write_class_zip(tmp_path_factory.mktemp("data") / "clothes.zip", images, labels, names)


@pytest.fixture(scope="module")
def test_zip(tmp_path_factory):
    images, labels, names = fashion_mnist(25, split="test", classes=CLASSES)
    return write_class_zip(tmp_path_factory.mktemp("test") / "held-out.zip", images, labels, names)


@pytest.fixture(scope="module")
def frozen_run(data_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(RunConfig(freeze="all", epochs=8, **SMALL), read_dataset(data_zip), out), out


def _falls(history: list[dict]) -> bool:
    return min(h["val_loss"] for h in history[1:]) < history[0]["val_loss"]


def test_registry_has_two_offline_image_backbones():
    offline = [i for i in all_backbones().values() if i.offline and i.task == "image"]
    assert {"efficientnet_lite0", "mobilenet_v2"} <= {i.name for i in offline}
    for info in offline:
        assert info.stages >= 3 and info.feature_dim > 0 and info.params > 1e6


def test_frozen_run_learns_and_writes_the_run_folder(frozen_run):
    result, out = frozen_run
    assert result.status == "finished"
    assert _falls(result.history)
    assert result.metrics["accuracy"] > 0.7  # chance is 0.25
    assert {"config.json", "metrics.jsonl", "model.zip", "results.json"} <= {p.name for p in out.iterdir()}
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 * len(result.history)


def test_held_out_accuracy_far_above_chance(frozen_run, test_zip):
    result, _ = frozen_run
    m = evaluate(load_bundle(result.bundle), read_dataset(test_zip))
    assert m["accuracy"] > 0.7 and m["count"] == 100
    assert np.array(m["confusion"]).sum() == 100


def test_bundle_round_trip_predicts_like_the_trained_model(frozen_run, test_zip):
    result, _ = frozen_run
    loaded = load_bundle(result.bundle)
    ds = read_dataset(test_zip)
    images = [ds.load_image(i) for i in range(0, len(ds), 7)]
    in_memory = LoadedModel(result.model.eval(), loaded.meta).probabilities(images)
    np.testing.assert_allclose(loaded.probabilities(images), in_memory, atol=1e-5)
    assert loaded.meta["classes"] == ["bag", "sneaker", "t-shirt", "trouser"]  # the class folders, sorted


@pytest.mark.parametrize("freeze", ["none", "3"])
def test_fine_tuning_modes_learn(freeze, data_zip, tmp_path):
    result = train(RunConfig(freeze=freeze, epochs=4, lr=3e-3, patience=0, **SMALL), read_dataset(data_zip), tmp_path)
    # LP-FT starts from a fitted head: the training loss falls from there (validation may already be at its best)
    assert min(h["train_loss"] for h in result.history[1:]) < result.history[0]["train_loss"]
    assert result.metrics["accuracy"] > 0.4  # chance is 0.25; fine-tuning at 32 px on 96 images starts slowly


@pytest.mark.parametrize("fusion", list(MODES))
def test_every_fusion_learns(fusion, data_zip, tmp_path):
    config = RunConfig(**{**SMALL, "backbones": ["efficientnet_lite0", "mobilenet_v2"]}, freeze="all", fusion=fusion,
                       epochs=4, lr=3e-3, patience=0)
    result = train(config, read_dataset(data_zip), tmp_path)
    assert _falls(result.history)
    assert result.metrics["accuracy"] > 0.5
    if fusion == "weighted":
        weights = result.metrics["fusion_weights"]
        assert set(weights) == {"efficientnet_lite0", "mobilenet_v2"} and abs(sum(weights.values()) - 1) < 1e-5


def test_partial_freeze_keeps_frozen_batchnorm_statistics(data_zip, tmp_path):
    b = build_backbone("efficientnet_lite0", image_size=32)
    b.freeze("2")
    frozen_bn = [m for m in b.stages[0][0].modules() if isinstance(m, torch.nn.BatchNorm2d)] + \
                [m for m in b.stages[0][1:] if isinstance(m, torch.nn.BatchNorm2d)]
    trained_bn = [m for s in b.stages[2:] for mod in s for m in mod.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in frozen_bn + trained_bn[-1:]]
    b.train()
    b(torch.rand(4, 3, 32, 32))
    after = [m.running_mean for m in frozen_bn + trained_bn[-1:]]
    assert all(torch.equal(x, y) for x, y in zip(before[:-1], after[:-1]))
    assert not torch.equal(before[-1], after[-1])
    assert not any(p.requires_grad for s in b.stages[:2] for m in s for p in m.parameters())
    assert all(p.requires_grad for s in b.stages[2:] for m in s for p in m.parameters())


def test_frozen_features_are_computed_once(data_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("TLGUI_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    from tlgui.nets import model as model_module

    original = model_module.Classifier.features
    monkeypatch.setattr(model_module.Classifier, "features", lambda self, x: calls.append(1) or original(self, x))
    train(RunConfig(freeze="all", epochs=6, patience=0, **SMALL), read_dataset(data_zip), tmp_path / "run")
    assert 0 < len(calls) <= 8  # 96 train + 24 val images in batches of 16, whatever the number of epochs


def test_same_seed_same_run(data_zip, tmp_path):
    config = RunConfig(epochs=2, freeze="none", **SMALL)
    a = train(config, read_dataset(data_zip), tmp_path / "a")
    b = train(config, read_dataset(data_zip), tmp_path / "b")
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_stop_keeps_the_best_model_so_far(data_zip, tmp_path):
    stop = threading.Event()

    def after_first_epoch(e):
        if e["event"] == "epoch":
            stop.set()

    result = train(RunConfig(epochs=20, freeze="none", **SMALL), read_dataset(data_zip), tmp_path, [after_first_epoch], stop)
    assert result.status == "stopped" and len(result.history) == 1
    assert load_bundle(result.bundle).classes


def test_one_class_is_refused(tmp_path):
    images, labels, names = fashion_mnist(5, classes=[0])
    ds = read_dataset(write_class_zip(tmp_path / "one.zip", images, labels, names))
    assert any("one class" in w for w in ds.report()["warnings"])
    with pytest.raises(TlguiError, match="only one class"):
        train(RunConfig(freeze="all", epochs=1, **SMALL), ds, tmp_path / "run")


def test_split_folders_and_stratified_split(tmp_path):
    images, labels, names = fashion_mnist(10, classes=[0, 1])
    ds = read_dataset(write_class_zip(tmp_path / "s.zip", images, labels, names, wrap="data", splits={"train": 0.7, "test": 0.3}))
    assert set(ds.splits) == {"train", "test"}
    ds.assign_splits(0.25, seed=0)
    val = ds.indices("val")
    assert len(val) == 4 and sorted(ds.labels[val].tolist()) == [0, 0, 1, 1]
    assert len(ds.indices("test")) == 6


@pytest.mark.parametrize("csv_name,columns,wrap", [("labels.csv", ("image", "label"), None),
                                                   ("data.tsv", ("filename", "category"), "export")])
def test_image_table_in_a_zip(tmp_path, csv_name, columns, wrap):
    from realdata import write_image_csv_zip

    images, labels, names = fashion_mnist(6, classes=[0, 1])
    ds = read_dataset(write_image_csv_zip(tmp_path / "t.zip", images, labels, names, csv_name=csv_name,
                                          columns=columns, wrap=wrap))
    assert ds.task == "image" and len(ds) == 12 and ds.classes == ["t-shirt", "trouser"]
    assert ds.load_image(0).size == (28, 28)


def test_image_table_on_disk_beside_its_images(tmp_path):
    from realdata import encode_image

    images, labels, names = fashion_mnist(3, classes=[0, 1])
    (tmp_path / "pics").mkdir()
    rows = ["path;target"]
    for i, (img, y) in enumerate(zip(images, labels)):
        (tmp_path / "pics" / f"{i}.png").write_bytes(encode_image(img))
        rows.append(f"pics/{i}.png;{names[y]}")
    rows += ["../outside.png;t-shirt", "pics/missing.png;trouser"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    ds = read_dataset(tmp_path / "list.csv")
    assert len(ds) == 6
    report = ds.report()
    assert report["skipped"] == 2 and report["skipped_reasons"]["image path leaves the dataset folder"] == 1
    assert any(f["file"].endswith("missing.png") or "missing.png" in f["reason"] for f in report["skipped_files"])
