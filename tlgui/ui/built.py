"""Datasets people build in the page: class folders of pictures, kept per browser under the runs root.

Layout: `<runs root>/.datasets/<owner hash>/<id>/<name>/<class>/<picture>`, so a built dataset
is an ordinary folder of class folders (read like any other), named after `<name>`, and its
zip lies beside it as `<id>/<name>.zip`. Pictures are checked with the project's own reader
before they are kept, under a name made from their content, so the same picture dropped twice
is kept once. A dataset loaded from an example or an upload is never changed: adding to it
first copies it here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import unicodedata
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from PIL import Image

from ..data.datasets import SPLIT_FOLDERS, Dataset
from ..data.images import FORMATS, BadImage, open_rgb
from ..data.limits import max_files
from ..data.sources import is_hidden
from ..errors import TlguiError
from . import run_folders
from .text import t

FOLDER = ".datasets"
MAX_NAME = 60
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif",
              "PPM": ".ppm"}


def owner_root(root: Path, owner: str) -> Path:
    return root / FOLDER / run_folders.owner_hash(owner)[:32]


def is_mine(root: Path, owner: str, path: str | Path) -> bool:
    """Whether `path` is a dataset folder this owner built (a page state is never trusted blindly)."""
    try:
        p = Path(path).resolve()
        return p.parent.parent == owner_root(root, owner).resolve() and p.is_dir()
    except (OSError, ValueError):
        return False


def slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name.strip(), flags=re.UNICODE).strip("-.")[:MAX_NAME] or "my-pictures"


def create(root: Path, owner: str, name: str) -> Path:
    """A new, empty dataset folder of this owner's."""
    folder = owner_root(root, owner) / secrets.token_urlsafe(9) / slug(name)
    folder.mkdir(parents=True)
    return folder


def mine(root: Path, owner: str) -> list[Path]:
    """This owner's dataset folders, newest first."""
    base = owner_root(root, owner)
    if not base.is_dir():
        return []
    found = [d for holder in base.iterdir() if holder.is_dir() for d in holder.iterdir() if d.is_dir()]
    return sorted(found, key=lambda d: -d.stat().st_mtime)


def class_name(raw: str | None) -> str:
    """The name as a folder can hold it, or a TlguiError that says what to change."""
    name = unicodedata.normalize("NFC", (raw or "").strip())
    if not name:
        raise TlguiError(t("class_empty_name"))
    if "/" in name or "\\" in name or ".." in name:
        raise TlguiError(t("class_bad_chars", name=name))
    if is_hidden(name) or any(ord(c) < 32 for c in name) or name.lower() in SPLIT_FOLDERS:
        raise TlguiError(t("class_bad_name", name=name))
    if len(name) > MAX_NAME:
        raise TlguiError(t("class_too_long", n=MAX_NAME))
    return name


def classes(folder: Path) -> dict[str, int]:
    """Each class folder with its number of pictures, in name order."""
    out = {}
    for d in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not is_hidden(p.name)):
        out[d.name] = sum(1 for f in d.iterdir() if f.is_file() and not is_hidden(f.name))
    return out


def add_class(folder: Path, raw: str) -> str:
    name = class_name(raw)
    existing = {c.lower(): c for c in classes(folder)}
    if name.lower() in existing:
        raise TlguiError(t("class_exists", name=existing[name.lower()]))
    (Path(folder) / name).mkdir()
    touch(folder)
    return name


def checked_picture(data: bytes) -> str:
    """The file extension of a picture the project's reader decodes; BadImage otherwise."""
    open_rgb(data)  # refuses non-pictures and pixel bombs before anything is kept
    with Image.open(io.BytesIO(data), formats=FORMATS) as img:
        return EXTENSIONS.get(img.format, ".png")


def add_pictures(folder: Path, cls: str, files: Iterable[tuple[str, bytes]]) -> tuple[int, list[tuple[str, str]]]:
    """Keep each picture in class `cls`: (how many were added, [(file, why it was skipped)]). `files`
    may be a generator: one picture is held in memory at a time."""
    target = Path(folder) / cls
    if not cls or not target.is_dir() or target.parent != Path(folder):
        raise TlguiError(t("class_pick_first"))
    room = max_files() - sum(classes(folder).values())
    added, skipped = 0, []
    for name, data in files:
        try:
            ext = checked_picture(data)
        except BadImage as e:
            skipped.append((name, str(e)))
            continue
        if added >= room:
            skipped.append((name, t("dataset_full")))
            continue
        stem = slug(PurePosixPath(name).stem)[:40]
        path = target / f"{stem}-{hashlib.blake2b(data, digest_size=6).hexdigest()}{ext}"
        if not path.exists():
            _write(path, data)
            added += 1
    touch(folder)
    return added, skipped


def copy_dataset(ds: Dataset, folder: Path, changes: dict[int, str | None] | None = None) -> int:
    """Write an image dataset's pictures into class folders of `folder`; `changes` maps an example's
    index to its new class, or to None to leave it out. Returns how many pictures were written."""
    if ds.task != "image" or ds.source is None:
        raise TlguiError(t("builder_text_data"))
    changes = changes or {}
    written = 0
    for c in ds.classes:
        (Path(folder) / _folder_name(c)).mkdir(exist_ok=True)
    for i, name in enumerate(ds.inputs):
        cls = changes.get(i, ds.classes[ds.labels[i]])
        if cls is None:
            continue
        p = PurePosixPath(name)
        _write(Path(folder) / _folder_name(cls) / f"{slug(p.stem)[:40]}-{ds.digests[i][:12]}{p.suffix.lower()}",
               ds.source.read(name))
        written += 1
    touch(folder)
    return written


def copy_as_new(root: Path, owner: str, ds: Dataset, name: str,
                changes: dict[int, str | None] | None = None) -> tuple[Path, int]:
    """A new dataset of this owner's holding a copy of `ds` (see `copy_dataset`); nothing is left
    behind when the copy fails half-way."""
    folder = create(root, owner, name)
    try:
        if ds.task == "text":  # a table beside the (unused) folder: texts need no class folders
            folder.rmdir()
            table = folder.parent / f"{folder.name}.csv"
            return table, write_texts(ds, table, changes)
        return folder, copy_dataset(ds, folder, changes)
    except BaseException:
        shutil.rmtree(folder.parent, ignore_errors=True)
        raise


def write_texts(ds: Dataset, path: Path, changes: dict[int, str | None] | None = None) -> int:
    """A text dataset as a CSV table (text, label), with `changes` applied as in `copy_dataset`."""
    changes = changes or {}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    written = 0
    for i, text in enumerate(ds.inputs):
        cls = changes.get(i, ds.classes[ds.labels[i]])
        if cls is not None:
            writer.writerow([text, cls])
            written += 1
    _write(path, out.getvalue().encode("utf-8"))
    return written


def _folder_name(cls: str) -> str:
    """A label from a table may hold characters a folder cannot."""
    return cls.replace("/", "-").replace("\\", "-").replace("..", "-").lstrip(".") or "unnamed"


def check_ready(folder: Path) -> None:
    """Refuse to train on a built dataset with fewer than two classes or an empty class."""
    if not Path(folder).is_dir():
        return  # a corrected table of texts: read and checked like any table
    counts = classes(folder)
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise TlguiError(t("class_no_pictures", name=empty[0]))
    if len(counts) < 2:
        raise TlguiError(t("need_two_classes"))


def write_zip(folder: Path) -> Path:
    """The dataset as one zip of class folders, beside its folder (replaced atomically)."""
    folder = Path(folder)
    out = folder.parent / f"{folder.name}.zip"
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:  # pictures are compressed already
        for cls, n in classes(folder).items():
            if n == 0:
                zf.writestr(f"{folder.name}/{cls}/", b"")  # an empty class stays visible in the zip
            for f in sorted((folder / cls).iterdir()):
                if f.is_file() and not is_hidden(f.name):
                    zf.write(f, f"{folder.name}/{cls}/{f.name}")
    os.replace(tmp, out)
    return out


def touch(folder: Path) -> None:
    """Mark the dataset changed: the dataset store keys a folder by its own modification time."""
    os.utime(folder)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
