"""Big data sets without an upload: Parquet tables of paths and labels, and the server folders an
operator allows (TLGUI_DATA_DIRS), all read in place."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TlguiError

PARQUET_EXTS = {".parquet", ".pq"}


def is_public() -> bool:
    """A public server (TLGUI_PUBLIC=1, or a Hugging Face Space): no server folders there."""
    return os.environ.get("TLGUI_PUBLIC", "").strip() not in ("", "0") or bool(os.environ.get("SPACE_ID"))


def data_dirs() -> list[Path]:
    """The folders TLGUI_DATA_DIRS allows (separated like PATH), resolved; none on a public server."""
    if is_public():
        return []
    raw = os.environ.get("TLGUI_DATA_DIRS", "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def check_allowed(path: str | Path) -> Path:
    """`path` resolved, if it lies in one of the allowed folders; else one line saying what to do."""
    dirs = data_dirs()
    if not dirs:
        raise TlguiError("server folders are off on this server: upload a .zip or .csv dataset instead"
                         if is_public() else "no server folders are allowed: set TLGUI_DATA_DIRS to the folders "
                         "that hold datasets, or upload a .zip or .csv dataset")
    resolved = Path(path).expanduser().resolve()
    if not any(resolved == d or d in resolved.parents for d in dirs):
        raise TlguiError(f"{path} is outside the folders TLGUI_DATA_DIRS allows "
                         f"({', '.join(str(d) for d in dirs)}): move the data there or choose a folder inside them")
    if not resolved.exists():
        raise TlguiError(f"dataset not found: {path}")
    return resolved


def server_datasets(limit: int = 200) -> list[str]:
    """The datasets an operator offers: each allowed folder's subfolders and tables (not walked deeper)."""
    found: list[str] = []
    for d in data_dirs():
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        found += [str(p) for p in entries if not p.name.startswith(".")
                  and (p.is_dir() or p.suffix.lower() in {".csv", ".tsv", ".zip"} | PARQUET_EXTS)]
    return found[:limit]


def read_parquet(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A Parquet table as the CSV reader gives one: the header, and each row's values as text with
    its row number (counted from 2, as a spreadsheet of the same table would)."""
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError:
        raise TlguiError("reading Parquet needs pyarrow: pip install pyarrow, or save the table as CSV") from None
    except Exception as e:  # pyarrow raises several types for a damaged or foreign file
        raise TlguiError(f"{path.name} could not be read as Parquet ({type(e).__name__}): save it again, or as CSV") from None
    cols = [str(c) for c in table.column_names]
    values = [["" if v is None else str(v) for v in table.column(c).to_pylist()] for c in table.column_names]
    rows = [(number, list(fields)) for number, fields in enumerate(zip(*values), start=2)]
    return cols, rows
