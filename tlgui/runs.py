"""Run folders: their state, the per-epoch checkpoint that makes a run resumable, and safe writes.

A run folder holds `config.json` and `metrics.jsonl` from the start, `running.json` while a
process trains in it, `checkpoint.safetensors` + `checkpoint.json` after each epoch (no pickle:
tensors in safetensors, everything else JSON), and `model.zip` + `results.json` (+ `mistakes/` for pictures) at the end.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from .errors import TlguiError

RUNNING, RESULTS = "running.json", "results.json"
MISTAKES = "mistakes"  # a folder of small pictures of misclassified validation inputs
CHECKPOINT, CHECKPOINT_JSON = "checkpoint.safetensors", "checkpoint.json"
STATES = ("running", "finished", "stopped", "failed", "interrupted")
_TOKEN = uuid.uuid4().hex  # tells this process's runs from an earlier process that had the same pid


def disk_full(e: BaseException, where: Path) -> TlguiError | None:
    """The user-facing error for a write that failed because the disk (or quota) is full, else None."""
    if not isinstance(e, OSError) or e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return None
    try:
        free = f" ({shutil.disk_usage(where).free / 1024**2:,.0f} MB free)"
    except OSError:
        free = ""
    return TlguiError(f"the disk is full: could not write in {where}{free}; free some space, then resume the run "
                      "(train ... --resume)")


def temp_name(path: Path) -> Path:
    """`.NAME.<random>.tmp` beside `path`: hidden, unique, and swept by `remove_partial_writes`."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def fsync(path: Path) -> None:
    """Flush a written file to the disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write under a temporary name of this writer's own, flush it to disk, then rename: readers
    see the old file or the new one, never half of one, and two writers never share a temporary."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full(e, path.parent)
        if full:
            raise full from None
        raise


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- state -------------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """When process `pid` started (Linux): a pid reused by another process then does not count."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def mark_running(out_dir: Path) -> None:
    pid = os.getpid()
    atomic_write(Path(out_dir) / RUNNING, json.dumps({"pid": pid, "token": _TOKEN, "start": _start_time(pid),
                                                       "since": time.time()}))


def clear_running(out_dir: Path) -> None:
    (Path(out_dir) / RUNNING).unlink(missing_ok=True)


def _alive(marker: dict) -> bool:
    pid = int(marker.get("pid", -1))
    if pid == os.getpid():
        return marker.get("token") == _TOKEN
    if Path("/proc/self/stat").exists():
        return _start_time(pid) is not None and _start_time(pid) == marker.get("start")
    if os.name == "posix":
        try:
            os.kill(pid, 0)  # signal 0 only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True  # elsewhere a killed run reads as running until its folder is resumed or removed


def run_state(out_dir: str | Path) -> str:
    """One of STATES: `running` while a live process trains in the folder; else the status that
    `results.json` records (finished, stopped, failed); else `interrupted` (killed mid-run:
    `train ... --resume` continues from the last epoch's checkpoint, if there is one)."""
    out_dir = Path(out_dir)
    marker = _read_json(out_dir / RUNNING)
    if marker and _alive(marker):
        return "running"
    results = _read_json(out_dir / RESULTS)
    if results and results.get("status") in ("finished", "stopped", "failed"):
        return results["status"]
    return "interrupted"


# -- checkpoint --------------------------------------------------------------------------------
def save_checkpoint(out_dir: Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """The tensors file carries the JSON state in its header too, so a kill between the two
    writes cannot pair one epoch's weights with another's state; checkpoint.json is for reading."""
    text = json.dumps(state)
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(out_dir / CHECKPOINT, save_safetensors(data, metadata={"tlgui_checkpoint": text}))
    atomic_write(out_dir / CHECKPOINT_JSON, json.dumps(state, indent=1))


def load_checkpoint(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The last epoch's tensors and state, or None when the folder has no checkpoint."""
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {})["tlgui_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # safetensors raises its own types for a damaged file
        raise TlguiError(f"the checkpoint in {out_dir} is damaged: train again without --resume (or into a new --out folder)") from None
    return tensors, state


def checkpoint_epoch(out_dir: Path) -> int | None:
    """The last epoch whose checkpoint is in the folder, or None when there is none."""
    state = _read_json(Path(out_dir) / CHECKPOINT_JSON) or {}
    return state.get("epoch") if isinstance(state.get("epoch"), int) else None


def remove_partial_writes(out_dir: Path) -> None:
    """Drop what a killed process left half-written (`.NAME.tmp`): the real files are whole."""
    for tmp in Path(out_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def remove_checkpoint(out_dir: Path) -> None:
    for name in (CHECKPOINT, CHECKPOINT_JSON):
        (Path(out_dir) / name).unlink(missing_ok=True)


def optimizer_to_checkpoint(opt: torch.optim.Optimizer, prefix: str = "optimizer.") -> tuple[dict, dict]:
    """An optimizer's state as (tensors, JSON): its per-parameter tensors apart from its settings."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in sd["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_checkpoint(opt: torch.optim.Optimizer, tensors: dict, saved: dict, prefix: str = "optimizer.") -> None:
    state: dict[int, dict] = {int(i): dict(v) for i, v in saved["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
