"""Faults during a run: Stop at any moment, a killed process, CUDA out of memory, a full disk.

Each test asserts what the run reports and what its folder holds afterwards: the best model so
far or a clear `stopped`/`failed`, never a half-written file; a killed run resumes where it was.
Out-of-memory and full-disk faults are injected (a forward hook raising CUDA's error, writes
failing with ENOSPC); one test fills a real, tiny tmpfs where the system allows it.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import answers, free_port
from realdata import fashion_mnist, write_class_zip

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.outputs.bundle import load_bundle
from tlgui.runs import run_state
from tlgui.training.train import Trainer, train

ROOT = Path(__file__).resolve().parents[1]
FROZEN = dict(backbones=["efficientnet_lite0"],
              freeze="all", image_size=32, batch_size=8, epochs=2, patience=0, seed=0)
# A frozen backbone with augmentation trains its head by epochs (batches, checkpoints): the loop whose faults these
# tests are about. Without augmentation a frozen head is one converged fit of a second, with no epochs.
LOOP = dict(FROZEN, augment=True)


def half_written(names: set[str]) -> set[str]:
    """Temporary files of an unfinished write (`.NAME.<random>.tmp`)."""
    return {n for n in names if n.startswith(".") and n.endswith(".tmp")}


@pytest.fixture(autouse=True)
def no_feature_cache(monkeypatch):
    monkeypatch.setenv("TLGUI_CACHE_MB", "0")  # every run decodes and extracts for real


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    images, labels, names = fashion_mnist(12, classes=[0, 1])
    return write_class_zip(tmp_path_factory.mktemp("small") / "small.zip", images, labels, names)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    images, labels, names = fashion_mnist(40, classes=[0, 1])  # 64 train + 16 val: decoding reports at 64
    return write_class_zip(tmp_path_factory.mktemp("data") / "clothes.zip", images, labels, names)


def files(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()} - {"tensorboard", "mistakes"}  # event files (tests/test_tracking.py), pictures


def stopper(event: str, what: str | None = None, epoch: int | None = None):
    """A listener and its stop flag: Stop is pressed at the first matching event."""
    stop = threading.Event()

    def listen(e):
        if e["event"] == event and (what is None or e.get("what") == what) and (epoch is None or e.get("epoch") == epoch):
            stop.set()

    return listen, stop


# -- Stop ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("event,what", [("preparing", "decoding images"), ("preparing", "computing features"),
                                        ("batch", None)])
def test_stop_before_the_first_epoch_leaves_a_clear_stopped_run(data, tmp_path, event, what):
    seen = []
    listen, stop = stopper(event, what)
    # a frozen run decodes as it embeds: pictures decoded up front are a fine-tuning run's
    config = RunConfig(**(FROZEN if what == "computing features" else LOOP))
    result = train(config, read_dataset(data), tmp_path, [listen, seen.append], stop)
    assert result.status == "stopped" and result.bundle is None
    if what == "decoding images":
        assert [e["done"] for e in seen if e.get("what") == what] == [64]  # stopped half-way through 80
        assert not any(e.get("what") == "computing features" for e in seen)
    assert seen[-1]["event"] == "stopped"
    assert files(tmp_path) == {"config.json", "metrics.jsonl", "results.json"}
    assert json.loads((tmp_path / "results.json").read_text()) == {"status": "stopped"}
    assert run_state(tmp_path) == "stopped"


def test_stop_after_an_epoch_keeps_the_best_model_and_resumes(data, tmp_path):
    listen, stop = stopper("batch", epoch=2)
    result = train(RunConfig(**{**LOOP, "epochs": 3}), read_dataset(data), tmp_path, [listen], stop)
    assert result.status == "stopped" and len(result.history) == 1
    assert files(tmp_path) == {"config.json", "metrics.jsonl", "model.zip", "results.json", "checkpoint.safetensors",
                               "checkpoint.json"}
    assert load_bundle(tmp_path / "model.zip").classes == ["t-shirt", "trouser"]
    assert run_state(tmp_path) == "stopped"
    with pytest.raises(TlguiError, match=r"was made with other settings \(lr\): resume with the same ones"):
        train(RunConfig(**{**LOOP, "epochs": 3, "lr": 0.01}), read_dataset(data), tmp_path, resume=True)
    resumed = train(RunConfig(**{**LOOP, "epochs": 3}), read_dataset(data), tmp_path, resume=True)
    assert resumed.status == "finished" and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert run_state(tmp_path) == "finished" and "checkpoint.safetensors" not in files(tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["split"]) for x in lines] == [(e, s) for e in (1, 2, 3) for s in ("train", "val")]


def test_a_running_folder_says_so_and_refuses_a_second_run(data, tmp_path):
    seen = {}

    def listen(e):
        if e["event"] == "batch" and not seen:
            seen["state"] = run_state(tmp_path)
            try:
                Trainer(RunConfig(**FROZEN), read_dataset(data), tmp_path)
            except TlguiError as err:
                seen["second"] = str(err)

    train(RunConfig(**LOOP), read_dataset(data), tmp_path, [listen])
    assert seen["state"] == "running"
    assert seen["second"].startswith(f"a run is already training in {tmp_path}")
    assert run_state(tmp_path) == "finished" and "running.json" not in files(tmp_path)
    with pytest.raises(TlguiError, match="has finished: nothing to resume"):
        Trainer(RunConfig(**FROZEN), read_dataset(data), tmp_path, resume=True)


# -- a killed process ------------------------------------------------------------------------------
def test_killed_run_is_interrupted_and_resumes_to_the_same_result(small_data, tmp_path, capsys):
    data, out = small_data, tmp_path / "run"
    flags = ["--epochs", "3", "--image-size", "32", "--batch-size", "8", "--freeze", "none", "--patience", "0"]
    env = {**os.environ, "TLGUI_CACHE_MB": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tlgui", "train", str(data), "--out", str(out), *flags],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/3"):
            proc.send_signal(signal.SIGKILL)  # no chance to clean up: as a crash or an OOM kill would
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert {"checkpoint.safetensors", "checkpoint.json", "running.json"} <= files(out)
    assert "model.zip" not in files(out) and "results.json" not in files(out)
    assert run_state(out) == "interrupted"
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1

    handler = signal.getsignal(signal.SIGINT)
    try:  # the CLI in this process: settings come from the run's config.json
        assert main(["train", str(data), "--out", str(out), "--resume"]) == 0
    finally:
        signal.signal(signal.SIGINT, handler)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"done: {out / 'model.zip'}"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 1, 2, 2, 3, 3]  # epoch 1 written again, from the checkpoint
    assert run_state(out) == "finished"
    history = json.loads((out / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    reference = train(RunConfig(epochs=3, image_size=32, batch_size=8, freeze="none", patience=0),
                      read_dataset(data), tmp_path / "reference")
    for a, b in zip(history, reference.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


# -- CUDA out of memory -----------------------------------------------------------------------------
def inject_oom(when, times: int = 1):
    """Raise CUDA's out-of-memory error from the forward of the first `times` modules matching `when`."""
    left = [times]

    def hook(module, args):
        if left[0] and when(module, args):
            left[0] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return torch.nn.modules.module.register_module_forward_pre_hook(hook)


def _training_head(module, args) -> bool:
    return isinstance(module, torch.nn.Linear) and torch.is_grad_enabled() and args[0].shape[0] > 0


def test_out_of_memory_in_training_halves_the_batch_and_goes_on(data, tmp_path):
    sizes: list[int] = []
    record = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, a: sizes.append(a[0].shape[0]) if _training_head(m, a) else None)
    handle = inject_oom(_training_head)
    events = []
    try:
        result = train(RunConfig(**LOOP), read_dataset(data), tmp_path, [events.append])
    finally:
        handle.remove()
        record.remove()
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert warnings == ["the GPU ran out of memory: batch size halved to 4, going on"]
    assert result.status == "finished" and len(result.history) == 2 and (tmp_path / "model.zip").exists()
    assert sizes[0] == 8 and max(sizes[1:]) == 4  # every batch after the fault went through in halves
    assert sum(e["event"] == "batch" for e in events) == 2 * 8  # still 8 steps of 8 per epoch


def test_out_of_memory_while_extracting_features_goes_on(data, tmp_path):
    def extracting(module, args):
        return isinstance(module, torch.nn.Conv2d) and torch.is_inference_mode_enabled()

    handle = inject_oom(extracting)
    events = []
    try:
        result = train(RunConfig(**FROZEN), read_dataset(data), tmp_path, [events.append])
    finally:
        handle.remove()
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("the GPU ran out of memory: batch size halved to ")
    assert result.status == "finished" and result.metrics["count"] == 16


def test_out_of_memory_with_one_example_fails_clearly(data, tmp_path):
    handle = inject_oom(_training_head, times=100)
    events = []
    try:
        with pytest.raises(TlguiError, match="^the GPU ran out of memory even for one example at a time"):
            train(RunConfig(**LOOP), read_dataset(data), tmp_path, [events.append])
    finally:
        handle.remove()
    assert [e["message"].split("halved to ")[1] for e in events if e["event"] == "warning"] == [
        "4, going on", "2, going on", "1, going on"]
    assert run_state(tmp_path) == "failed" and "model.zip" not in files(tmp_path)
    assert "even for one example" in json.loads((tmp_path / "results.json").read_text())["error"]


# -- a full disk ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_run(data, tmp_path_factory):
    """A finished run elsewhere on the disk: a full disk must leave it as it was."""
    out = tmp_path_factory.mktemp("other")
    train(RunConfig(**FROZEN), read_dataset(data), out)
    return out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_writing_the_bundle_fails_clearly_then_resumes(data, tmp_path, monkeypatch, other_run):
    monkeypatch.setattr(zipfile.ZipFile, "writestr", _enospc)
    with pytest.raises(TlguiError, match=rf"^the disk is full: could not write in {tmp_path} \([\d,]+ MB free\); "
                                         r"free some space, then resume the run"):
        train(RunConfig(**LOOP), read_dataset(data), tmp_path)
    assert files(tmp_path) == {"config.json", "metrics.jsonl", "results.json", "checkpoint.safetensors", "checkpoint.json"}
    assert run_state(tmp_path) == "failed"
    assert {p.name: p.read_bytes() for p in other_run[0].iterdir() if p.is_file()} == other_run[1]
    monkeypatch.undo()  # space freed
    monkeypatch.setenv("TLGUI_CACHE_MB", "0")
    result = train(RunConfig(**LOOP), read_dataset(data), tmp_path, resume=True)
    assert result.status == "finished" and load_bundle(tmp_path / "model.zip").classes == ["t-shirt", "trouser"]


def test_full_disk_while_writing_the_checkpoint_leaves_nothing_half_written(data, tmp_path, monkeypatch, other_run):
    original = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.name.startswith(".checkpoint"):
            with open(self, "wb") as f:
                f.write(data[: len(data) // 2])  # half of it fits, then the disk is full
            _enospc()
        return original(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    events = []
    with pytest.raises(TlguiError, match="^the disk is full"):
        train(RunConfig(**LOOP), read_dataset(data), tmp_path, [events.append])
    assert events[-1]["event"] == "failed" and events[-1]["error"].startswith("the disk is full")
    assert files(tmp_path) == {"config.json", "metrics.jsonl", "results.json"}  # no checkpoint, no temporary file
    assert {p.name: p.read_bytes() for p in other_run[0].iterdir() if p.is_file()} == other_run[1]


def _can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {where}"], capture_output=True)
    return probe.returncode == 0


def test_real_full_disk_on_a_tiny_tmpfs(data, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("no user namespaces here to mount a small tmpfs")
    out = disk / "run"
    script = (f"mount -t tmpfs -o size=3m tmpfs {disk} && TLGUI_CACHE_MB=0 OMP_NUM_THREADS=1 {sys.executable} -m tlgui train {data} "
              f"--out {out} --epochs 2 --image-size 32 --patience 0; echo rc=$?; ls -a {out}")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    listing = set(done.stdout.split("rc=")[1].split()[1:])
    assert done.stdout.split("rc=")[1].split()[0] == "2"
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: the disk is full: could not write in {out}")
    assert not half_written(listing) and "model.zip" not in listing
    assert {"config.json", "results.json"} <= listing


# -- the web app's server: two users at once, a kill and a restart in the middle of a run -------------
APP_START_S = 300  # importing gradio and torch takes 15 s on an idle 2-core machine, far more on a busy one
APP_RUN_S = 300


class AppServer:
    """`python app.py` on a free port, with its runs, uploads and temporary files in the test's folder."""

    def __init__(self, base: Path):
        self.base, self.runs = base, base / "runs"
        for name in ("runs", "gradio", "tmp"):
            (base / name).mkdir(exist_ok=True)
        self.env = {**os.environ, "TLGUI_RUNS_DIR": str(self.runs), "GRADIO_TEMP_DIR": str(base / "gradio"),
                    "TMPDIR": str(base / "tmp"), "TLGUI_CACHE_MB": "0", "TLGUI_MAX_JOBS": "1", "OMP_NUM_THREADS": "1",
                    "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        """Start on a free port, or on the same one again: a browser keeps its runs per address."""
        port = self.port = getattr(self, "port", None) or free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = (self.base / "app.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + APP_START_S
        while not answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"the app did not start:\n{(self.base / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        return self.url

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    pytest.importorskip("gradio_client")
    if not (ROOT / "app.py").exists():
        pytest.skip("the web app is not there")
    server = AppServer(tmp_path_factory.mktemp("app"))
    server.start()
    yield server
    server.close()


def _client(url: str, downloads: Path):
    from gradio_client import Client

    return Client(url, download_files=str(downloads), verbose=False)


def _wait_status(client, words: tuple[str, ...], timeout: float = APP_RUN_S) -> str:
    deadline = time.monotonic() + timeout
    status = client.predict(api_name="/status")
    while not any(w in status for w in words):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
        status = client.predict(api_name="/status")
    return status


def test_two_users_at_once_each_get_their_own_run(app, data, small_data, tmp_path):
    """Two clients upload, train and stop at the same time: neither sees nor disturbs the other's run."""
    from gradio_client import handle_file

    ann, bob = _client(app.url, tmp_path / "ann"), _client(app.url, tmp_path / "bob")
    results: dict[str, object] = {}

    def ann_trains():  # a frozen run that must finish
        ann.predict(handle_file(str(data)), api_name="/load_dataset")
        results["ann_start"] = ann.predict(backbones=["efficientnet_lite0"], epochs=3, image_size="32", api_name="/train")
        results["ann"] = _wait_status(ann, ("Finished", "Stopped", "Error"))

    def bob_trains_then_stops():  # a long run, stopped as soon as it is queued or training
        bob.predict(handle_file(str(small_data)), api_name="/load_dataset")
        results["bob_start"] = bob.predict(backbones=["efficientnet_lite0"], freeze="none", epochs=50, patience=0,
                                           image_size="32", api_name="/train")
        _wait_status(bob, ("Queued", "Training", "Preparing", "Starting"))
        bob.predict(api_name="/stop")
        results["bob"] = _wait_status(bob, ("Finished", "Stopped", "Error"))

    threads = [threading.Thread(target=ann_trains), threading.Thread(target=bob_trains_then_stops)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=2 * APP_RUN_S)
    assert "Error" not in results["ann_start"] and "Error" not in results["bob_start"]
    assert results["ann"].startswith("**Finished**"), results["ann"]
    assert results["bob"].startswith("**Stopped**"), results["bob"]
    assert load_bundle(Path(ann.predict(api_name="/download"))).classes == ["t-shirt", "trouser"]
    owners = {json.loads((f / "run.json").read_text())["owner"] for f in app.runs.iterdir() if (f / "run.json").exists()}
    assert len(owners) == 2  # one owner per client
    metas = {json.loads((f / "run.json").read_text())["state"]: f for f in app.runs.iterdir() if (f / "run.json").exists()}
    assert sorted(metas) == ["finished", "stopped"] and run_state(metas["finished"]) == "finished"
    stopped = metas["stopped"]
    assert not half_written(files(stopped))
    if (stopped / "model.zip").exists():  # stopped after an epoch: the best model so far
        assert load_bundle(stopped / "model.zip").classes == ["t-shirt", "trouser"]


def test_server_killed_mid_run_is_resumed_from_the_page(app, page, small_data):
    """SIGKILL the server while a browser's run trains: the folder holds a whole checkpoint and no
    model; after a restart the same browser sees the run as interrupted, and Resume goes on from
    the epoch after its checkpoint, not from the start."""
    import re

    from test_app_browser import open_app, small_settings, upload, wait_ready, wait_status

    open_app(page, app.url)
    upload(page, small_data)
    wait_ready(page, small_data.name)
    small_settings(page, epochs=300, freeze="none", patience=0)
    before = set(app.runs.iterdir())
    page.click("#train-btn")
    wait_status(page, "Training")
    (folder,) = set(app.runs.iterdir()) - before
    deadline = time.monotonic() + APP_RUN_S
    while not (folder / "checkpoint.json").exists():  # an epoch ended: its checkpoint is on disk
        assert time.monotonic() < deadline, page.inner_text("#status")
        time.sleep(0.1)
    app.kill()
    # the tab leaves the dead server's page: its own reconnect must not reload it under the goto below
    page.goto("about:blank")
    assert run_state(folder) == "interrupted"
    left = files(folder)  # a `.NAME.tmp` may be there (killed mid-write), the real names are whole
    assert {"checkpoint.safetensors", "checkpoint.json", "config.json", "metrics.jsonl", "running.json"} <= left
    assert "model.zip" not in left and "results.json" not in left
    done = json.loads((folder / "checkpoint.json").read_text())["epoch"]
    assert done >= 1

    app.start()  # the same address and runs folder, a fresh process
    assert not half_written(files(folder))
    page.goto(app.url)
    assert f"go on from epoch {done}" in wait_status(page, "Interrupted")
    page.click("#resume-btn")
    status = wait_status(page, "Training")
    assert int(re.search(r"epoch (\d+)/300", status)[1]) > done, status
    page.click("#stop-btn")
    assert "best model" in wait_status(page, "Stopped", timeout=60_000)
    history = json.loads((folder / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1)) and len(history) > done
    assert load_bundle(folder / "model.zip").classes == ["t-shirt", "trouser"]
