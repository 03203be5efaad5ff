"""Limits that hold before the expensive work: huge tables, zips of many entries, lying zips,
thousands of labels, forged bundle numbers; no server path in a bundle; a run's time limit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import hostile_files as hostile
import numpy as np
import pytest
import realdata

from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.outputs.bundle import init_settings, load_bundle
from tlgui.public import Policy
from tlgui.runs import atomic_write
from tlgui.training.train import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(backbones=["efficientnet_lite0"],
             freeze="all", image_size=32, batch_size=8, epochs=1, patience=0, seed=0)
pytestmark = pytest.mark.usefixtures("one_thread", "own_feature_cache")


def peak_cli(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run `python -m tlgui ARGS`; returns the result, seconds taken, and the process's peak
    memory (VmHWM, sampled until it exits: it only grows)."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "tlgui", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.02)
        assert time.monotonic() - t0 < timeout
    out, err = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), time.monotonic() - t0, peak


def one_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_200_mb_table_of_20_million_rows_is_refused_before_parsing(tmp_path):
    big = hostile.big_table(tmp_path / "big.csv", 20_000_000, b"a text,xy\n")
    assert big.stat().st_size > 200 * 1000**2
    p, seconds, peak = peak_cli("inspect", big)
    assert "big.csv is 191 MB, above the 64 MB limit for a table" in one_line(p)
    assert seconds < 20 and peak < 300 * 1024**2, (seconds, peak)


def test_rows_are_counted_before_the_parser_sees_them(tmp_path, monkeypatch):
    table = hostile.big_table(tmp_path / "rows.csv", 210_000, b"hi,a\n")  # 1 MB: under the byte limit
    with pytest.raises(TlguiError, match=r"rows.csv has 210,001 lines, above the limit of 200,000 rows"):
        read_dataset(table)
    monkeypatch.setenv("TLGUI_MAX_ROWS", "300000")  # an operator raises it
    assert len(read_dataset(table)) == 210_000


def test_zip_of_200000_entries_is_refused_from_its_end_record(tmp_path, monkeypatch):
    many = hostile.many_entry_zip(tmp_path / "many.zip", 200_000)
    p, seconds, peak = peak_cli("inspect", many)
    assert one_line(p) == "error: many.zip holds 200000 files, above the limit of 100000: use a smaller one"
    assert seconds < 20 and peak < 300 * 1024**2, (seconds, peak)
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: pytest.fail("directory parsed"))
    with pytest.raises(TlguiError, match="200000 files"):
        read_dataset(many)  # refused from the last bytes alone: zipfile never parsed a single entry


def _lying_zip(path: Path, declared: int) -> Path:
    images, labels, names = realdata.fashion_mnist(4, classes=[0, 1])
    realdata.write_class_zip(path, images, labels, names)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{names[0]}/bomb.png", bytes(64 * 1024**2))  # 64 MB of zeros: 64 KB packed
    hostile.declare_size(path, f"{names[0]}/bomb.png", declared)
    return path


def test_zip_whose_sizes_lie_is_caught_by_the_bytes_read(tmp_path, monkeypatch):
    liar = _lying_zip(tmp_path / "liar.zip", 1000)  # says 1000 bytes; its stream unpacks to 64 MB
    tracemalloc.start()
    try:
        ds = read_dataset(liar)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ds) == 8 and dict(ds.skipped)[f"{ds.classes[0]}/bomb.png"].startswith("unreadable file")
    assert peak < 16 * 1024**2, peak  # never unpacked past what it declared
    # honest sizes, but more bytes than an upload may unpack: the read ends on the bytes counted
    honest = tmp_path / "honest.zip"
    images, labels, names = realdata.fashion_mnist(4, classes=[0, 1])
    realdata.write_class_zip(honest, images, labels, names)
    with zipfile.ZipFile(honest, "a", zipfile.ZIP_STORED) as z:
        for i in range(3):
            z.writestr(f"{names[0]}/noise{i}.png", np.random.default_rng(i).bytes(600_000))
    monkeypatch.setenv("TLGUI_MAX_READ_MB", "1")
    with pytest.raises(TlguiError, match=r"^honest unpacks to more than 1 MB"):
        read_dataset(honest)


def test_20000_labels_are_refused_and_splitting_is_linear(tmp_path, monkeypatch):
    rows = "".join(f"text number {i},label{i // 2}\n" for i in range(40_000))
    table = tmp_path / "labels.csv"
    table.write_text("text,label\n" + rows)
    t0 = time.monotonic()
    with pytest.raises(TlguiError, match=r"20,000 different labels, above the limit of 1,000 classes"):
        read_dataset(table)
    assert time.monotonic() - t0 < 5
    monkeypatch.setenv("TLGUI_MAX_CLASSES", "50000")
    ds = read_dataset(table)
    t0 = time.monotonic()
    ds.assign_splits(0.5, seed=0)  # grouping once: the old loop over rows per class took minutes here
    assert time.monotonic() - t0 < 5
    assert ds.splits.count("val") == 20_000  # one of the two texts of every label


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    images, labels, names = realdata.fashion_mnist(6, classes=[1, 7])
    data = realdata.write_class_zip(tmp_path_factory.mktemp("data") / "two.zip", images, labels, names)
    out = tmp_path_factory.mktemp("run")
    train(RunConfig(**SMALL), read_dataset(data), out)
    return out / "model.zip"


def _with_meta(src: Path, dst: Path, **changes) -> Path:
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "tlgui.json":
                data = json.dumps({**json.loads(data), **changes}).encode()
            new.writestr(info, data)
    return dst


def test_forged_fusion_dim_is_refused_in_one_line(small_bundle, tmp_path, fashion_pictures, monkeypatch):
    forged = _with_meta(small_bundle, tmp_path / "model.zip", fusion_dim=3_000_000)
    p, seconds, peak = peak_cli("predict", forged, fashion_pictures[0])
    assert one_line(p) == ("error: model.zip: fusion_dim 3,000,000 is outside the accepted range (0 to 8,192); "
                           "the file is damaged or not made by tlgui")
    with pytest.raises(TlguiError, match="fusion_dim 3,000,000"):
        init_settings(forged)
    import tlgui.outputs.bundle

    monkeypatch.setattr(tlgui.outputs.bundle, "load_safetensors", lambda *a: pytest.fail("weights read"))
    assert init_settings(small_bundle)["backbones"] == ["efficientnet_lite0"]  # settings alone, weights unread


def test_bundle_names_earlier_models_and_own_encoders_by_id(small_bundle, tmp_path):
    from tlgui.training.pretrain import PretrainConfig, pretrain

    images, labels, names = realdata.fashion_mnist(6, classes=[1, 7], seed=3)
    data = read_dataset(realdata.write_class_zip(tmp_path / "more.zip", images, labels, names))
    enc_dir = tmp_path / "Xk3run" / "secret-folder"
    pretrain(PretrainConfig(epochs=1, image_size=32, widths=[8, 16], batch_size=8), data, enc_dir)
    out = tmp_path / "second"
    config = RunConfig(**{**SMALL, "backbones": ["efficientnet_lite0", str(enc_dir / "encoder.zip")]})
    train(config, read_dataset(tmp_path / "more.zip"), out)
    out2 = tmp_path / "third"
    train(RunConfig(**{**SMALL, "init": str(small_bundle.resolve())}), read_dataset(tmp_path / "more.zip"), out2)
    for bundle in (out / "model.zip", out2 / "model.zip"):
        with zipfile.ZipFile(bundle) as z:
            text = z.read("tlgui.json").decode() + z.read("README.md").decode()
        assert str(tmp_path) not in text and "/tmp" not in text and str(ROOT) not in text
    meta = load_bundle(out / "model.zip").meta
    assert meta["config"]["backbones"] == ["efficientnet_lite0", "encoder:secret-folder"]
    assert load_bundle(out2 / "model.zip").meta["config"]["init"] == f"model:{small_bundle.parent.name}"


def test_atomic_writes_of_two_writers_never_collide(tmp_path):
    target, errors = tmp_path / "state.json", []

    def writer(k: int) -> None:
        try:
            for i in range(200):
                atomic_write(target, json.dumps({"writer": k, "i": i}))
        except Exception as e:  # a shared temporary name fails here: one writer renames the other's file
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and json.loads(target.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_public_mode_limits_say_no_in_a_sentence(monkeypatch):
    monkeypatch.delenv("TLGUI_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    free = Policy.from_env()
    free.check_run(["vit_h_14", "efficientnet_lite0", "mobilenet_v2", "resnet18"], 1000)  # private: today's freedom
    free.check_queue(5, 100)
    monkeypatch.setenv("SPACE_ID", "someone/tlgui")  # a Hugging Face Space is public by default
    public = Policy.from_env()
    with pytest.raises(TlguiError, match=r"^vit_h_14 has 631M parameters, more than this server offers"):
        public.check_run(["vit_h_14"], 5)
    with pytest.raises(TlguiError, match=r"^this server trains at most 3 backbones in one run: choose fewer$"):
        public.check_run(["efficientnet_lite0", "mobilenet_v2", "efficientnet_lite1", "resnet18"], 5)
    with pytest.raises(TlguiError, match=r"^this server trains at most 30 epochs"):
        public.check_run(["efficientnet_lite0"], 31)
    with pytest.raises(TlguiError, match=r"^you already have 1 run\(s\) queued or training"):
        public.check_queue(1, 1)
    monkeypatch.setenv("TLGUI_PUBLIC", "0")
    assert not Policy.from_env().public


def test_a_run_past_the_time_limit_stops_and_keeps_its_best_model(tmp_path, tiny_zip):
    from tlgui.ui import run_folders as app_runs
    from tlgui.ui.jobs import JobManager

    policy = Policy(True, None, None, None, 15.0, None, None)
    jobs = JobManager(tmp_path / "runs", 1, policy)
    config = RunConfig(**{**SMALL, "epochs": 500, "freeze": "none"})  # far more than 15 s of fine-tuning
    run_id = jobs.submit("a-browser-key-0123456789", config, read_dataset(tiny_zip), {"label": "long"})
    folder = tmp_path / "runs" / run_id
    deadline = time.monotonic() + 240
    while not jobs.progress(run_id, folder).done:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    p = jobs.progress(run_id, folder)
    assert p.state == "stopped" and p.has_model and 1 <= len(p.history) < 500
    assert "stops every run after 15 s; the best epoch so far was kept" in app_runs.read_meta(folder)["note"]
    assert load_bundle(folder / "model.zip").classes == read_dataset(tiny_zip).classes


def test_old_and_oversized_runs_go_oldest_first_never_a_running_one(tmp_path, monkeypatch):
    from tlgui.ui import retention
    from tlgui.ui import run_folders as app_runs

    root, owner, now, ids = tmp_path / "runs", "owner-key-0123456789abc", time.time(), {}
    for name, hours, state, size in (("old", 72, "finished", 10), ("busy", 100, "running", 10),
                                     ("mid", 10, "stopped", 600_000), ("new", 1, "finished", 600_000)):
        run_id, folder = app_runs.create(root, owner, {"label": name})
        app_runs.update_meta(folder, state=state, created=now - hours * 3600)
        (folder / "model.zip").write_bytes(bytes(size))
        ids[name] = run_id
    monkeypatch.setenv("TLGUI_RUN_MAX_AGE_HOURS", "48")
    monkeypatch.setenv("TLGUI_RUNS_MAX_GB", str(1e6 / 1024**3))  # about 1 MB
    removed = retention.sweep_runs(root, active=lambda run_id: run_id == ids["busy"])
    assert [e["label"] for e in removed] == ["old", "mid"]
    assert {f.name for f in root.iterdir() if f.is_dir()} == {ids["busy"], ids["new"]}
    note = retention.removed_notice(root, owner)
    assert "old was removed on" in note and "older than 48 h, the longest this server keeps a run" in note
    assert "mid was removed on" in note and "the oldest ones make room" in note
    assert retention.removed_notice(root, "someone-else-0123456789") == ""


def test_uploads_no_run_needs_go_after_their_hours(tmp_path, monkeypatch):
    from tlgui.ui import retention
    from tlgui.ui import run_folders as app_runs

    root, now = tmp_path / "runs", time.time()
    used, spare = root / retention.UPLOADS / "aaa" / "data.zip", root / retention.UPLOADS / "bbb" / "other.zip"
    for path in (used, spare):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"PK")
    app_runs.create(root, "owner-key-0123456789abc", {"label": "r", "source": str(used)})
    monkeypatch.setenv("TLGUI_UPLOAD_MAX_HOURS", "1")
    assert retention.sweep_uploads(root, now=now) == 0  # younger than an hour: both stay
    assert retention.sweep_uploads(root, now=now + 7200) == 1  # the one no run started from goes
    assert used.exists() and not spare.exists()
