"""Big data sets: pictures held in memory, on disk or streamed give the same pixels and train;
Parquet tables and allowed server folders read in place; a big folder's report comes at once,
its full check in the background; bad input is one line and exit status 2."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import realdata
import torch

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data import loader
from tlgui.data.datasets import read_dataset
from tlgui.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread", "own_feature_cache")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    images, labels, names = realdata.fashion_mnist(12, classes=[0, 1, 7, 9])
    return realdata.write_class_folders(tmp_path_factory.mktemp("fm") / "fm", images, labels, names)


def test_stores_hand_out_the_same_pixels(folder, tmp_path):
    ds = read_dataset(folder)
    idx = np.arange(len(ds))
    memory = loader.pictures(ds, idx, 40, "memory", tmp_path, torch.device("cpu"))
    disk = loader.pictures(ds, idx, 40, "disk", tmp_path, torch.device("cpu"))
    streamed = loader.StreamedPictures(ds, idx, 40, workers=2, pin=False)  # decoded in worker processes
    batches = [torch.tensor([5, 1, 30]), torch.tensor([7, 0])]
    streamed.plan(batches)
    for b in batches:
        assert torch.equal(streamed.take(b), memory[b])
        assert torch.equal(disk.take(b), memory[b])
    assert torch.equal(streamed.take(torch.tensor([0])), memory[[0]])  # a piece of the batch at hand
    assert torch.equal(streamed.take(torch.tensor([44, 2])), memory[[44, 2]])  # off the plan: decoded here
    disk.close()
    assert not disk.path.exists()


def test_choice_by_size(tmp_path, monkeypatch):
    monkeypatch.delenv("TLGUI_PICTURES", raising=False)
    monkeypatch.setenv("TLGUI_DECODE_MB", "1")  # 1 MB: 20 pictures of 128 px fit, 100 do not
    assert loader.choose_kind(20, 128, tmp_path) == "memory"
    assert loader.choose_kind(100, 128, tmp_path) == "disk"


@pytest.mark.parametrize("kind", ["disk", "stream"])
def test_fine_tuning_from_disk_or_streamed_learns(kind, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TLGUI_PICTURES", kind)
    cfg = RunConfig(backbones=["mobilenet_v2"], freeze="none", epochs=2, image_size=32, batch_size=8, lr=3e-3,
                    device="cpu", patience=0)
    result = train(cfg, read_dataset(folder), tmp_path / "run")
    assert result.status == "finished" and result.bundle.exists()
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] * 1.2
    assert not list((tmp_path / "run").glob("pictures/*.u8"))  # the decode-once file is scratch


def test_parquet_table_read_in_place(folder, tmp_path, capsys):
    rows = [(p.relative_to(folder).as_posix(), p.parent.name) for p in sorted(folder.rglob("*.png"))]
    table = folder / "pictures.parquet"
    pd.DataFrame(rows, columns=["path", "species"]).to_parquet(table)
    try:
        assert main(["inspect", str(table), "--label-column", "species", "--json"]) == 0
        assert '"used": 48' in capsys.readouterr().out
        pd.DataFrame({"path": [r[0] for r in rows], "width": 28, "height": 28}).to_parquet(table)
        assert main(["inspect", str(table)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot tell which columns hold the labels" in err[0]
    finally:
        table.unlink()


def test_gpus_beyond_the_machine_is_one_line(folder, tmp_path, capsys):
    assert main(["train", str(folder), "--out", str(tmp_path / "r"), "--gpus", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --gpus 4 asks for 4 GPUs but this machine has 0: leave out --gpus to train on the CPU"]
    assert not (tmp_path / "r").exists()


def test_folder_outside_the_allowed_ones_is_one_line(folder, tmp_path, capsys, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("TLGUI_DATA_DIRS", str(allowed))
    monkeypatch.delenv("TLGUI_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder} is outside the folders TLGUI_DATA_DIRS allows")
    monkeypatch.setenv("TLGUI_PUBLIC", "1")  # a public server offers no server folders at all
    from tlgui.data.tables import data_dirs

    assert data_dirs() == []


def test_big_folder_reports_at_once_and_checks_every_file_later(big_folder):
    t = time.perf_counter()
    ds = read_dataset(big_folder)
    seconds = time.perf_counter() - t
    assert seconds < 10, f"reading 20,001 files took {seconds:.1f} s"
    report = ds.report()
    assert report["used"] == 20001 and any("checking every file" in w for w in report["warnings"])
    ds.wait_checked()
    report = ds.report()
    assert report["used"] == 20000 and report["skipped"] == 1
    assert report["skipped_files"][0]["file"] == "bag/broken.png"
    assert len(set(ds.digests)) > 19000 and not any(d.startswith("unchecked:") for d in ds.digests)
