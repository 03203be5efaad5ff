"""Runs on disk: one folder per run under the runs root, owned by one browser.

Besides the engine's files (config.json, metrics.jsonl, results.json, model.zip; encoder.zip for
pretraining) each folder holds `run.json`: who owns it (a hash of the browser's secret, never the
secret itself), its kind, a label, and its state. Everything the app shows about a finished run
is read back from here, so runs survive a restart of the server.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import time
from pathlib import Path

from ..runs import atomic_write

META = "run.json"
TERMINAL = ("finished", "stopped", "failed", "interrupted")  # no thread of this server trains them


def owner_hash(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()


def new_run_id() -> str:
    """Unguessable: the id alone is never enough to reach someone else's run, but it names the folder."""
    return secrets.token_urlsafe(12)


def create(root: Path, owner: str, meta: dict) -> tuple[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id()
    folder = root / run_id
    folder.mkdir()
    write_meta(folder, {**meta, "id": run_id, "owner": owner_hash(owner), "created": time.time(), "state": "queued"})
    return run_id, folder


def read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "owner" in meta else None


def write_meta(folder: Path, meta: dict) -> None:
    atomic_write(folder / META, json.dumps(meta, indent=1))


def update_meta(folder: Path, **changes) -> None:
    meta = read_meta(folder)
    if meta is not None:
        write_meta(folder, {**meta, **changes})


def folder_of(root: Path, run_id: str | None, owner: str) -> Path | None:
    """The run's folder if `owner` owns it; None for a missing run and for anyone else's."""
    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        return None
    folder = root / run_id
    meta = read_meta(folder)
    if meta is None or not secrets.compare_digest(meta["owner"], owner_hash(owner)):
        return None
    return folder


def list_runs(root: Path, owner: str, kind: str = "train") -> list[dict]:
    """The owner's runs of one kind (`train`: classifiers, `pretrain`: own encoders), newest first."""
    if not root.is_dir():
        return []
    mine = owner_hash(owner)
    runs = [m for f in root.iterdir()
            if f.is_dir() and (m := read_meta(f)) and m["owner"] == mine and m.get("kind", "train") == kind]
    return sorted(runs, key=lambda m: -m.get("created", 0))


def all_runs(root: Path) -> list[tuple[Path, dict]]:
    if not root.is_dir():
        return []
    return [(f, m) for f in root.iterdir() if f.is_dir() and (m := read_meta(f))]


def results(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return None


def history(folder: Path) -> list[dict]:
    """Epoch rows (`epoch`, `train_loss`, `val_loss`, `train_accuracy`, `val_accuracy`) from
    `metrics.jsonl`, which the engine appends to as each epoch ends."""
    rows: dict[int, dict] = {}
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            point = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        row = rows.setdefault(int(point["epoch"]), {"epoch": int(point["epoch"])})
        row[f"{point['split']}_loss"] = point["loss"]
        row[f"{point['split']}_accuracy"] = point.get("accuracy")  # pretraining has none
        row["elapsed"] = point.get("elapsed")
    return [rows[k] for k in sorted(rows)]


def delete(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
