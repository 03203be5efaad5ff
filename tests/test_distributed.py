"""Training in several processes through torchrun, on the CPU (gloo): the same model as one
process, one bundle; a process killed mid-run fails the run in one line and leaves a checkpoint
that `--resume` finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import realdata

from tlgui.data.datasets import read_dataset
from tlgui.outputs.bundle import load_bundle
from tlgui.outputs.evaluate import evaluate
from tlgui.training.distributed import PEER_LOST

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    images, labels, names = realdata.fashion_mnist(40, classes=[0, 1, 5, 8])
    train = realdata.write_class_folders(base / "train", images, labels, names)
    images, labels, names = realdata.fashion_mnist(50, split="test", classes=[0, 1, 5, 8])
    test = realdata.write_class_folders(base / "test", images, labels, names)
    return train, test, base


def env(base: Path) -> dict:
    return {**os.environ, "TLGUI_CACHE_DIR": str(base / "features"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tlgui(*args, base: Path, launcher: list[str] | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, "-m"]) + ["tlgui", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(base), capture_output=True, text=True, timeout=600, **kw)


def test_two_processes_train_like_one(data):
    train, test, base = data
    flags = ["--backbone", "mobilenet_v2", "--freeze", "all", "--image-size", "48", "--epochs", "8", "--batch-size", "16",
             "--patience", "0", "--device", "cpu", "--seed", "3"]
    one = tlgui("train", str(train), "--out", str(base / "one"), *flags, base=base)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    two = tlgui("train", str(train), "--out", str(base / "two"), *flags, base=base, launcher=torchrun)
    assert two.returncode == 0, two.stderr[-3000:]
    # frozen: features computed in shares and gathered, the head fitted alike on each rank; rank 0 alone prints
    assert two.stdout.count("done: ") == 1 and two.stdout.count("fit step") == one.stdout.count("fit step") > 0
    assert (base / "two" / "model.zip").exists() and not (base / "two" / "running.json").exists()
    test_set = read_dataset(test)
    scores = [evaluate(load_bundle(base / run / "model.zip"), test_set)["accuracy"] for run in ("one", "two")]
    assert scores[0] > 0.7
    assert abs(scores[0] - scores[1]) <= 0.02, scores


def _rank_pid(out: Path, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmdline and b"torch.distributed.run" not in cmdline and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_a_killed_process_fails_the_run_in_one_line_and_it_resumes(data):
    train, _, base = data
    out = base / "killed"
    flags = ["--backbone", "mobilenet_v2", "--freeze", "none", "--image-size", "32", "--epochs", "3",
             "--batch-size", "16", "--patience", "0", "--device", "cpu", "--gpus", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "tlgui", "train", str(train), "--out", str(out), *flags], cwd=ROOT,
                            env=env(base), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    pid = _rank_pid(out, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [f"error: {PEER_LOST}"]
    assert not (out / "model.zip").exists() and (out / "checkpoint.safetensors").exists()
    again = tlgui("train", str(train), "--out", str(out), *flags, "--resume", base=base)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "model.zip").exists()
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()][-1] == 3
