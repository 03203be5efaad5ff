"""Training on every GPU of the server: the command line's `train --gpus N` (torchrun) in child
processes, followed through the run folder, the way the page follows any run after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ..errors import TlguiError
from ..training.distributed import PEER_LOST
from . import run_folders
from .text import t

POLL_S = 1.0


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def all_gpus_work(job) -> str:
    """A job's `work` on all GPUs: Stop sends Ctrl-C to every process, which stop at the same batch."""
    source = (run_folders.read_meta(job.folder) or {}).get("source")
    if not source:
        raise TlguiError(t("gpus_dataset_unknown"))
    launch = job.folder / "launch-config.json"
    job.config.save(launch)
    cmd = [sys.executable, "-m", "tlgui", "train", source, "--out", str(job.folder), "--config", str(launch),
           "--gpus", str(gpu_count())] + (["--resume"] if job.resume else [])
    with (job.folder / "launch.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stopping = False
        while proc.poll() is None:
            if job.stop.is_set() and not stopping:
                os.killpg(proc.pid, signal.SIGINT)
                stopping = True
            job.history[:] = run_folders.history(job.folder)
            time.sleep(POLL_S)
    job.history[:] = run_folders.history(job.folder)
    res = run_folders.results(job.folder) or {}
    job.has_model = (job.folder / "model.zip").exists()
    if proc.returncode and res.get("status") not in ("finished", "stopped"):
        lines = (job.folder / "launch.log").read_text(errors="replace").splitlines()
        line = next((x for x in reversed(lines) if x.startswith("error: ")), f"error: {PEER_LOST}")
        raise TlguiError(line[len("error: "):])
    job.metrics, job.elapsed = res.get("metrics", {}), res.get("elapsed")
    return res.get("status", "failed")
