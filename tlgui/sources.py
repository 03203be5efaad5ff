"""Read-only access to the files of a dataset, in a folder or inside a zip, by relative name.

Nothing is ever extracted: images are read from the zip when needed, so an upload cannot
write anywhere.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from .errors import TlguiError

MAX_FILES = 200_000
MAX_TOTAL_BYTES = 8 * 1024**3  # unpacked
MAX_RATIO = 200  # unpacked / packed, per member: beyond that a zip is a bomb


def is_hidden(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(p.startswith(".") or p == "__MACOSX" or p == "Thumbs.db" for p in parts)


class Source:
    """A dataset's files: `names` (posix paths relative to the root) and `read(name)`."""

    label: str
    names: list[str]

    def read(self, name: str) -> bytes:
        raise NotImplementedError


class DirSource(Source):
    def __init__(self, root: Path, label: str | None = None, walk: bool = True):
        self.root = Path(root).resolve()
        self.label = label or self.root.name
        self.names = []
        if walk:
            self.names = self._walk()

    def _walk(self) -> list[str]:
        names = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                p = Path(dirpath, f)
                if p.is_symlink():
                    continue  # a link could point anywhere on the server
                names.append(p.relative_to(self.root).as_posix())
                if len(names) > MAX_FILES:
                    raise TlguiError(f"the folder holds more than {MAX_FILES} files: use a smaller dataset")
        return sorted(names)

    def read(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise ValueError("path outside the dataset")
        return path.read_bytes()


class ZipSource(Source):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.label = self.path.stem
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
        try:
            infos = self._open().infolist()
        except (zipfile.BadZipFile, OSError):
            raise TlguiError(f"{self.path.name} is not a readable zip file: re-create the zip and upload it again") from None
        if len(infos) > MAX_FILES:
            raise TlguiError(f"the zip holds more than {MAX_FILES} files: use a smaller dataset")
        total = 0
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.is_dir() or _is_symlink(info):
                continue
            name = info.filename.replace("\\", "/")
            if name.startswith("/") or ".." in PurePosixPath(name).parts or ":" in name.split("/")[0]:
                continue  # never follow a path that leaves the dataset
            total += info.file_size
            if info.file_size > 1_000_000 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise TlguiError(f"{self.path.name} looks like a zip bomb (a member expands {MAX_RATIO}x or more): refused")
            self._infos[name] = info
        if total > MAX_TOTAL_BYTES:
            raise TlguiError(f"the zip unpacks to more than {MAX_TOTAL_BYTES // 1024**3} GB: use a smaller dataset")
        self.names = sorted(self._infos)

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():  # one handle per process (DataLoader workers)
            self._zip = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zip

    def read(self, name: str) -> bytes:
        info = self._infos[name]
        with self._open().open(info) as f:
            return f.read(info.file_size + 1)[: info.file_size]

    def __getstate__(self):
        return {**self.__dict__, "_zip": None, "_pid": -1}


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def open_source(path: Path) -> Source:
    if path.is_dir():
        return DirSource(path)
    return ZipSource(path)
