"""Files given to a browser: copied out of the runs folder after the owner check, never served from it.

Gradio's file route serves only its upload and cache folders (the runs folder is not among its
allowed paths). A handler that already checked the caller owns a run hands one of its files to
`copy_out`: a hard link (or a copy) in a folder of its own under the system's temp folder, named
as the user should see it. Gradio then moves that copy into its cache; nothing under the runs
folder, and no other file of the run, becomes reachable.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

KEEP_S = 3600  # an hour: Gradio has long since copied the file into its cache


def outbox() -> Path:
    return Path(tempfile.gettempdir()) / "tlgui-out"


def copy_out(path: str | Path | None) -> str | None:
    """A fresh copy of `path` that Gradio may move to its cache; None for a missing file."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    box = outbox()
    _sweep(box)
    folder = box / secrets.token_hex(8)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    try:
        os.link(path, target)  # same disk: no bytes copied
    except OSError:
        shutil.copyfile(path, target)
    return str(target)


def _sweep(box: Path) -> None:
    """Drop copies older than KEEP_S."""
    if not box.is_dir():
        return
    cutoff = time.time() - KEEP_S
    for folder in box.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
