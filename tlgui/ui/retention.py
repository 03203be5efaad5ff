"""Disk the server keeps bounded: runs by age and total size, the weights download caches by size.

Runs older than `TLGUI_RUN_MAX_AGE_HOURS`, then the oldest runs while all of them take more than
`TLGUI_RUNS_MAX_GB`, are removed; a run that is queued or training never is. Each removal is
written to `.removed.jsonl` beside the runs (owner hash, label, when, why), so that the owner's
page can say what went and why. Off on a private server unless a variable is set; on in public
mode with the defaults below.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..data.limits import env_limit
from ..public import is_public
from . import run_folders
from .text import t

log = logging.getLogger("tlgui.ui")
REMOVED = ".removed.jsonl"
UPLOADS = ".uploads"  # uploaded datasets, moved out of Gradio's served folder once read
PUBLIC_UPLOAD_HOURS, PRIVATE_UPLOAD_HOURS = 3, 48
PUBLIC_MAX_AGE_HOURS = 48
PUBLIC_RUNS_MAX_GB = 20
PUBLIC_WEIGHTS_CACHE_GB = 5
SWEEP_S = 600
NOTICE_DAYS = 7  # how long a page still says that a run was removed


def _setting(name: str, public_default: float) -> float | None:
    if os.environ.get(name, "").strip():
        value = env_limit(name, 0)
        return value if value > 0 else None
    return public_default if is_public() else None


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total


def sweep_runs(root: Path, active: Callable[[str], bool], now: float | None = None) -> list[dict]:
    """Remove expired runs, then the oldest while over the size budget; returns what was removed."""
    max_age, max_gb = _setting("TLGUI_RUN_MAX_AGE_HOURS", PUBLIC_MAX_AGE_HOURS), _setting("TLGUI_RUNS_MAX_GB",
                                                                                          PUBLIC_RUNS_MAX_GB)
    if max_age is None and max_gb is None:
        return []
    now = time.time() if now is None else now
    kept = sorted(((m.get("created", 0), f, m) for f, m in run_folders.all_runs(root)
                   if not active(m["id"]) and m.get("state") in run_folders.TERMINAL), key=lambda x: x[0])
    removed = []
    if max_age is not None:
        for created, folder, meta in list(kept):
            if now - created > max_age * 3600:
                removed.append(_remove(root, folder, meta, t("removed_age", hours=max_age)))
                kept.remove((created, folder, meta))
    if max_gb is not None:
        sizes = {f: folder_bytes(f) for _, f, _ in kept}
        busy = sum(folder_bytes(f) for f, m in run_folders.all_runs(root) if f not in sizes)  # running ones count, stay
        total = busy + sum(sizes.values())
        for _, folder, meta in kept:
            if total <= max_gb * 1024**3:
                break
            total -= sizes[folder]
            removed.append(_remove(root, folder, meta, t("removed_space", gb=max_gb)))
    return removed


def _remove(root: Path, folder: Path, meta: dict, reason: str) -> dict:
    entry = {"owner": meta["owner"], "id": meta["id"], "label": meta.get("label", meta["id"]), "when": time.time(),
             "reason": reason}
    run_folders.delete(folder)
    with (root / REMOVED).open("a") as f:
        f.write(json.dumps(entry) + "\n")
    log.info("removed run %s: %s", meta["id"], reason)
    return entry


def removed_notice(root: Path, owner: str) -> str:
    """Lines for the owner's page about their runs removed lately, newest first ('' when none)."""
    try:
        lines = (root / REMOVED).read_text().splitlines()
    except OSError:
        return ""
    mine, cutoff = run_folders.owner_hash(owner), time.time() - NOTICE_DAYS * 86400
    notes = []
    for line in reversed(lines):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("owner") == mine and e.get("when", 0) > cutoff:
            when = time.strftime("%b %d %H:%M", time.localtime(e["when"]))
            notes.append(t("run_removed", label=e.get("label", e.get("id")), when=when, reason=e.get("reason", "")))
    return "\n\n".join(notes[:5])


def sweep_uploads(root: Path, now: float | None = None) -> int:
    """Remove uploads older than `TLGUI_UPLOAD_MAX_HOURS` that no run was started from (those go
    with their runs: Resume needs them). Returns how many went."""
    folder = root / UPLOADS
    if not folder.is_dir():
        return 0
    hours = _setting("TLGUI_UPLOAD_MAX_HOURS", PUBLIC_UPLOAD_HOURS) or PRIVATE_UPLOAD_HOURS
    used = {Path(m["source"]).parent.name for _, m in run_folders.all_runs(root) if isinstance(m.get("source"), str)}
    cutoff, gone = (time.time() if now is None else now) - hours * 3600, 0
    for upload in folder.iterdir():
        try:
            if upload.name not in used and upload.stat().st_mtime < cutoff:
                shutil.rmtree(upload, ignore_errors=True)
                gone += 1
        except OSError:
            continue
    return gone


def sweep_weights_cache() -> None:
    """Downloaded backbone weights beyond the budget go, least recently used first (they download again):
    torchvision's checkpoints and the Hugging Face cache's model repositories, as one budget."""
    max_gb = _setting("TLGUI_WEIGHTS_CACHE_GB", PUBLIC_WEIGHTS_CACHE_GB)
    if max_gb is None:
        return
    entries = sorted(_checkpoints() + _hub_repos(), key=lambda e: e[0])
    total = sum(size for _, size, _ in entries)
    for _, size, remove in entries:
        if total <= max_gb * 1024**3:
            break
        total -= size
        remove()


def _checkpoints() -> list[tuple[float, int, Callable[[], None]]]:
    """torchvision's downloaded weights: (last used, bytes, how to remove)."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    if not folder.is_dir():
        return []
    files = [(p, p.stat()) for p in folder.iterdir() if p.is_file()]
    return [(st.st_atime, st.st_size, lambda p=p: p.unlink(missing_ok=True)) for p, st in files]


def _hub_repos() -> list[tuple[float, int, Callable[[], None]]]:
    """The Hugging Face cache's model repositories (`hf:` backbones): (last used, bytes, how to remove)."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir().repos
    except Exception:  # no cache yet, or one being written: nothing to sweep this time
        return []
    return [(r.last_accessed, r.size_on_disk, lambda r=r: shutil.rmtree(r.repo_path, ignore_errors=True))
            for r in repos if r.repo_type == "model"]


def start_sweeper(root: Path, active: Callable[[str], bool]) -> threading.Thread:
    """Sweep now and every SWEEP_S seconds, in a daemon thread."""

    def loop() -> None:
        while True:
            try:
                sweep_runs(root, active)
                sweep_uploads(root)
                sweep_weights_cache()
            except Exception:  # a sweep that failed is tried again next time; it never ends the server
                log.exception("disk sweep failed")
            time.sleep(SWEEP_S)

    thread = threading.Thread(target=loop, name="disk-sweep", daemon=True)
    thread.start()
    return thread
