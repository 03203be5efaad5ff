"""Limits on what one dataset, picture or bundle may cost, checked before the expensive work.

Every limit has a default that is safe on a public server and an environment variable that
raises (or lowers) it. They are read on each use, so a test or an operator can change them
without a restart. Numbers here are counted from what was actually read (bytes from a zip
member, pixels from a header), never taken from what a file says about itself.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

from ..errors import TlguiError

# Defaults of the limits; a server tightens or relaxes them with these environment variables.
MAX_FILES = 100_000  # TLGUI_MAX_FILES: members of a zip, files of a folder
MAX_TOTAL_BYTES = 4 * 1024**3  # TLGUI_MAX_UNPACKED_MB: a zip's members added up, unpacked
MAX_RATIO = 100  # TLGUI_MAX_ZIP_RATIO: unpacked / packed size of one member; pictures and text stay far below
MAX_DATASET_BYTES = 2 * 1024**3  # TLGUI_MAX_DATASET_MB: the uploaded .zip/.csv file itself
RATIO_FLOOR = 1024**2  # members smaller than this unpack to little whatever their ratio

MAX_TABLE_MB = 64  # TLGUI_MAX_TABLE_MB: a .csv/.tsv file, or a table inside a zip
MAX_ROWS = 200_000  # TLGUI_MAX_ROWS: lines of a table
MAX_CLASSES = 1_000  # TLGUI_MAX_CLASSES: distinct labels of a dataset
MAX_MEMBER_MB = 64  # TLGUI_MAX_MEMBER_MB: bytes read from one zip member
MAX_READ_MB = 4096  # TLGUI_MAX_READ_MB: bytes read from one upload while it is read in
MAX_DATASET_MEGAPIXELS = 4_000  # TLGUI_MAX_DATASET_MEGAPIXELS: decoded pixels of all pictures of one read
MAX_CENTRAL_DIRECTORY_MB = 64  # a zip's directory; 100,000 entries with long names stay far below
EOCD = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_EOCD = b"PK\x06\x06"


def env_limit(name: str, default: float, scale: float = 1) -> float:
    """A limit from the environment (in its unit, times `scale`), else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise TlguiError(f"{name}={raw!r} is not a number: fix or unset that environment variable") from None
    return value * scale


def max_files() -> int:
    return int(env_limit("TLGUI_MAX_FILES", MAX_FILES))


def max_total_bytes() -> int:
    return int(env_limit("TLGUI_MAX_UNPACKED_MB", MAX_TOTAL_BYTES, 1024**2))


def max_ratio() -> float:
    return env_limit("TLGUI_MAX_ZIP_RATIO", MAX_RATIO)


def max_dataset_bytes() -> int:
    return int(env_limit("TLGUI_MAX_DATASET_MB", MAX_DATASET_BYTES, 1024**2))




def _mb_limit(name: str, default_mb: float) -> int:
    return int(env_limit(name, default_mb * 1024**2, 1024**2))


def table_bytes() -> int:
    return _mb_limit("TLGUI_MAX_TABLE_MB", MAX_TABLE_MB)


def max_rows() -> int:
    return int(env_limit("TLGUI_MAX_ROWS", MAX_ROWS))


def max_classes() -> int:
    return int(env_limit("TLGUI_MAX_CLASSES", MAX_CLASSES))


def member_bytes() -> int:
    return _mb_limit("TLGUI_MAX_MEMBER_MB", MAX_MEMBER_MB)


def read_bytes() -> int:
    return _mb_limit("TLGUI_MAX_READ_MB", MAX_READ_MB)


def dataset_pixels() -> int:
    return int(env_limit("TLGUI_MAX_DATASET_MEGAPIXELS", MAX_DATASET_MEGAPIXELS * 1_000_000, 1_000_000))


# -- tables -----------------------------------------------------------------------------------
def check_table_size(label: str, size: int) -> None:
    limit = table_bytes()
    if size > limit:
        raise TlguiError(f"{label} is {size / 1024**2:,.0f} MB, above the {limit / 1024**2:,.0f} MB limit for a table: "
                         "use a smaller table (or raise TLGUI_MAX_TABLE_MB)")


def check_table_rows(label: str, data: bytes) -> None:
    """Count lines (a fast byte scan) before the parser builds a row object for each."""
    rows, limit = data.count(b"\n"), max_rows()
    if rows > limit:
        raise TlguiError(f"{label} has {rows:,} lines, above the limit of {limit:,} rows: use a smaller table "
                         "(or raise TLGUI_MAX_ROWS)")


def check_classes(n: int) -> None:
    limit = max_classes()
    if n > limit:
        raise TlguiError(f"the dataset has {n:,} different labels, above the limit of {limit:,} classes: "
                         "check the label column (or raise TLGUI_MAX_CLASSES)")


# -- zips -------------------------------------------------------------------------------------
def zip_directory(path: Path) -> tuple[int, int]:
    """(entries, directory bytes) from the end-of-central-directory record (zip64 too), read from
    the file's last bytes before Python's zipfile parses a single entry. (0, 0) when there is none:
    zipfile then says the file is not a zip."""
    size = path.stat().st_size
    with path.open("rb") as f:
        tail_len = min(size, 22 + 65535)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(EOCD)
        if at < 0 or len(tail) - at < 22:
            return 0, 0
        entries, cd_size = struct.unpack("<HL", tail[at + 10: at + 16])
        loc = at - 20
        if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and loc >= 0 and tail[loc: loc + 4] == ZIP64_LOCATOR:
            offset = struct.unpack("<Q", tail[loc + 8: loc + 16])[0]
            if offset + 56 <= size:
                f.seek(offset)
                rec = f.read(56)
                if rec[:4] == ZIP64_EOCD:
                    entries, cd_size = struct.unpack("<QQ", rec[32:48])
        return entries, cd_size


def check_zip_directory(path: Path, label: str) -> None:
    entries, cd_size = zip_directory(path)
    n_max = max_files()
    if entries > n_max:
        raise TlguiError(f"{label} holds {entries} files, above the limit of {n_max}: use a smaller one")
    if cd_size > MAX_CENTRAL_DIRECTORY_MB * 1024**2:
        raise TlguiError(f"{label} has a {cd_size / 1024**2:,.0f} MB directory of files: use a smaller zip")


class ReadBudget:
    """Bytes actually read and pixels actually decoded while one upload is read in; the first
    read past either limit ends the reading with a clear line."""

    def __init__(self, label: str):
        self.label, self.bytes, self.pixels = label, 0, 0
        self.byte_limit, self.pixel_limit = read_bytes(), dataset_pixels()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Refuse at once once a limit has been passed: the reads queued behind it then cost nothing."""
        self.add_bytes(0)
        self.add_pixels(0)

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            over = self.bytes > self.byte_limit
        if over:
            raise TlguiError(f"{self.label} unpacks to more than {self.byte_limit / 1024**2:,.0f} MB: use a smaller "
                             "dataset (or raise TLGUI_MAX_READ_MB)")

    def add_pixels(self, n: int) -> None:
        with self._lock:
            self.pixels += n
            over = self.pixels > self.pixel_limit
        if over:
            raise TlguiError(f"the pictures of {self.label} add up to more than {self.pixel_limit / 1e6:,.0f} "
                             "megapixels: use fewer or smaller pictures (or raise TLGUI_MAX_DATASET_MEGAPIXELS)")


# -- numbers read from a bundle ----------------------------------------------------------------
# Every size that a model bundle (or an encoder) describes builds tensors of that size before any
# weight is checked: each one is bounded, so a forged number is refused rather than allocated.
ARCH_BOUNDS = {
    "fusion_dim": 8192, "image_size": 1024, "input_size": 1024, "max_length": 4096, "out_dim": 16384,
    "feature_dim": 16384, "embedding_dim": 4096, "hidden": 4096, "vocab_size": 250_000, "latent_dim": 4096,
    "convs_per_block": 8, "in_channels": 4, "widths": 2048, "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 48, "num_attention_heads": 64, "max_position_embeddings": 8192, "type_vocab_size": 16,
}
MAX_BACKBONES = 8


def check_numbers(obj, label: str, key: str = "") -> None:
    """Refuse an architecture number above its bound anywhere in `obj` (nested dicts and lists)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_numbers(v, label, str(k))
    elif isinstance(obj, list):
        for v in obj:
            check_numbers(v, label, key)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and key in ARCH_BOUNDS:
        if not 0 <= obj <= ARCH_BOUNDS[key]:
            raise TlguiError(f"{label}: {key} {obj:,} is outside the accepted range (0 to {ARCH_BOUNDS[key]:,}); "
                             "the file is damaged or not made by tlgui")


def check_bundle_meta(meta: dict, label: str) -> None:
    """The shape a bundle's tlgui.json asks for, before any tensor is made."""
    backbones, classes = meta.get("backbones"), meta.get("classes")
    if not isinstance(backbones, list) or not 1 <= len(backbones) <= MAX_BACKBONES:
        raise TlguiError(f"{label}: a model needs 1 to {MAX_BACKBONES} backbones; the file is damaged or not made by tlgui")
    if not isinstance(classes, list) or not 2 <= len(classes) <= max_classes():
        raise TlguiError(f"{label}: a model needs 2 to {max_classes():,} classes; the file is damaged or not made by tlgui")
    for part in ("backbones", "config", "preprocessing"):
        check_numbers(meta.get(part), label)
    check_numbers({"fusion_dim": meta.get("fusion_dim", 0)}, label)
