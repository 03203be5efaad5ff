"""Read-only access to the files of a dataset, in a folder or inside a zip, by relative name.

Nothing is ever extracted: images are read from the zip when needed, so an upload cannot
write anywhere. Members that could reach outside the dataset (`../`, absolute paths, links)
or that cannot be read (encrypted, unknown compression) are never exposed: they are listed
in `skipped` with the reason. Zip bombs are refused from the zip's directory, before any
member is decompressed.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import TlguiError
from .limits import (RATIO_FLOOR, check_zip_directory, max_dataset_bytes, max_files, max_ratio, max_total_bytes,
                     member_bytes)

ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _mb(n: float) -> str:
    mb = n / 1024**2
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


def check_dataset_file(path: Path) -> None:
    """Refuse an uploaded dataset file above the size limit, before anything reads it."""
    size, limit = path.stat().st_size, max_dataset_bytes()
    if size > limit:
        raise TlguiError(f"{path.name} is {_mb(size)}, above the {_mb(limit)} limit for a dataset: "
                         "upload a smaller subset (or raise TLGUI_MAX_DATASET_MB)")


def check_zip_bomb(infos: list[zipfile.ZipInfo], label: str) -> None:
    """Refuse a zip whose directory promises too many files, too many bytes, or a member that
    expands like a bomb: all read from the directory, before anything is decompressed."""
    n_max, total_max, ratio_max = max_files(), max_total_bytes(), max_ratio()
    if len(infos) > n_max:
        raise TlguiError(f"{label} holds {len(infos)} files, above the limit of {n_max}: use a smaller one")
    total = sum(i.file_size for i in infos)
    if total > total_max:
        raise TlguiError(f"{label} unpacks to {_mb(total)}, above the {_mb(total_max)} limit: use a smaller one")
    for i in infos:
        if i.file_size > RATIO_FLOOR and i.file_size > ratio_max * max(i.compress_size, 1):
            raise TlguiError(f"{label} looks like a zip bomb ({i.filename} would expand "
                             f"{i.file_size / max(i.compress_size, 1):,.0f}x): refused")


def is_hidden(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(p.startswith(".") or p == "__MACOSX" or p == "Thumbs.db" for p in parts)


class Source:
    """A dataset's files: `names` (posix paths relative to the root), `read(name)`, `has(name)`;
    `skipped` lists (name, reason) for files that are there but never exposed."""

    label: str
    names: list[str]
    skipped: list[tuple[str, str]]
    empty_dirs: list[str]

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        raise NotImplementedError


class DirSource(Source):
    def __init__(self, root: Path, label: str | None = None, walk: bool = True):
        self.root = Path(root).resolve()
        self.label = label or self.root.name
        self.budget = None  # a limits.ReadBudget while the dataset is read in
        self.names, self.skipped, self.empty_dirs = [], [], []
        if walk:
            self._walk()

    def _walk(self) -> None:
        limit = max_files()
        for dirpath, dirs, files in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root)
            if not files and not dirs and rel_dir != Path("."):
                self.empty_dirs.append(rel_dir.as_posix())
            for d in dirs:
                if Path(dirpath, d).is_symlink():  # os.walk does not enter it: say so
                    self.skipped.append(((rel_dir / d).as_posix(), "symbolic link (not followed)"))
            for f in files:
                p, rel = Path(dirpath, f), (rel_dir / f).as_posix()
                mode = p.lstat().st_mode
                if stat.S_ISLNK(mode):
                    self.skipped.append((rel, "symbolic link (not followed)"))  # it could point anywhere
                elif not stat.S_ISREG(mode):
                    self.skipped.append((rel, "not a regular file"))  # a pipe would block a read forever
                else:
                    self.names.append(rel)
                if len(self.names) > limit:
                    raise TlguiError(f"the folder holds more than {limit} files: use a smaller dataset")
        self.names.sort()

    def _path(self, name: str) -> Path | None:
        path = (self.root / name).resolve()
        return path if self.root in path.parents else None

    def has(self, name: str) -> bool:
        path = self._path(name)
        return path is not None and path.is_file()

    def read(self, name: str) -> bytes:
        path = self._path(name)
        if path is None:
            raise ValueError("path outside the dataset")

        cap = member_bytes()
        with path.open("rb") as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise OSError(f"larger than the {cap // 1024**2} MB limit for one file (TLGUI_MAX_MEMBER_MB)")
        if getattr(self, "budget", None) is not None:
            self.budget.add_bytes(len(data))
        return data


class ZipSource(Source):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.label = self.path.stem
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
        self.budget = None  # a limits.ReadBudget while the upload is read in
        check_dataset_file(self.path)

        try:
            check_zip_directory(self.path, self.path.name)  # before zipfile parses every entry
            infos = self._open().infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise TlguiError(f"{self.path.name} is not a readable zip file: re-create the zip and upload it again") from None
        check_zip_bomb(infos, self.path.name)
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self.skipped, dirs = [], set()
        for info in infos:
            name = _member_name(info)
            if info.is_dir():
                dirs.add(name.rstrip("/"))
                continue
            reason = _unsafe(info, name)
            if reason is None and name in self._infos:
                reason = "duplicate name in the zip"
            if reason:
                self.skipped.append((name, reason))
            else:
                self._infos[name] = info
        self.names = sorted(self._infos)
        used = {str(p) for n in self._infos for p in PurePosixPath(n).parents}
        self.empty_dirs = sorted(d for d in dirs if d and d not in used and not is_hidden(d))

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():  # one handle per process (DataLoader workers)
            self._zip = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zip

    def has(self, name: str) -> bool:
        return name in self._infos

    def read(self, name: str) -> bytes:

        info, cap = self._infos[name], member_bytes()
        if info.file_size > cap:
            raise OSError(f"larger than the {cap // 1024**2} MB limit for one file (TLGUI_MAX_MEMBER_MB)")
        try:
            with self._open().open(info) as f:
                data = f.read(min(info.file_size, cap) + 1)[: info.file_size]  # never more than declared, nor the cap
        except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:  # CRC, truncation, ...
            raise OSError(f"damaged zip member ({type(e).__name__})") from None
        if self.budget is not None:
            self.budget.add_bytes(len(data))  # counted as read, not as the directory declares
        return data

    def __getstate__(self):
        return {**self.__dict__, "_zip": None, "_pid": -1, "budget": None}


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as its author saw it: zips made without the UTF-8 flag (older Windows
    and macOS tools) often hold UTF-8 anyway, which Python decodes as cp437."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name.replace("\\", "/")


def _unsafe(info: zipfile.ZipInfo, name: str) -> str | None:
    """Why a member must not be read, or None."""
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return "unsafe path (it points outside the dataset)"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "symbolic link (not followed)"
    if info.flag_bits & 0x1:
        return "encrypted (zip it again without a password)"
    if info.compress_type not in ZIP_METHODS:
        return "compressed with an unsupported method (zip it again with standard compression)"
    return None


def open_source(path: Path) -> Source:
    if path.is_dir():
        return DirSource(path)
    return ZipSource(path)
