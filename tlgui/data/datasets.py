"""Reading labelled datasets in every format of the contract, and reporting what was read."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import TlguiError
from . import checking
from .images import IMAGE_EXTS, open_rgb
from .limits import ReadBudget, check_classes, check_table_rows, check_table_size
from .sources import DirSource, Source, check_dataset_file, is_hidden, open_source
from .tables import PARQUET_EXTS, read_parquet

csv.field_size_limit(1 << 26)  # long documents in a text column are fine; the default stops at 128 KB
TABLE_EXTS = {".csv", ".tsv"}
SEPARATORS = ",;\t|"
IMAGE_COLUMNS = ("image", "path", "file", "filename", "filepath", "image_path", "img")
TEXT_COLUMNS = ("text", "sentence", "review", "document", "message", "content")
LABEL_COLUMNS = ("label", "class", "target", "category", "sentiment")
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test"}
FEW_EXAMPLES = 5
IMBALANCE = 10


@dataclass
class Dataset:
    """Inputs (image names inside `source`, or texts) with integer labels and a split each."""

    task: str  # "image" or "text"
    name: str
    classes: list[str]
    inputs: list[str]
    labels: np.ndarray
    splits: list[str]  # "train", "val", "test", or "" until `assign_splits`
    digests: list[str]  # a content hash per input: the key of cached features
    source: Source | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: list[int] | None = None  # texts: each one's row number in its table, as a spreadsheet shows it
    check: object | None = None  # a big set's file-by-file check, running in the background (`checking.py`)

    def wait_checked(self) -> None:
        """Wait for the background check of a big set, then drop the files that failed."""
        if self.check is not None:
            self.check.apply(self)

    def __post_init__(self) -> None:
        self.folder_splits = list(self.splits)  # as the files came; `assign_splits` starts from these

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=12)
        for d, y, s in zip(self.digests, self.labels.tolist(), self.splits):
            h.update(f"{d}:{self.classes[y]}:{s};".encode())
        return h.hexdigest()

    def load_image(self, i: int, draft: int | None = None):
        return open_rgb(self.source.read(self.inputs[i]), draft=draft)

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def assign_splits(self, val_split: float, seed: int) -> None:
        """Give every sample without a split folder a stratified, seeded train/val split.

        A dataset that brings its own `val/` folder keeps it; one with `test/` only still gets a
        validation share carved from its training part.
        """
        self.splits = list(self.folder_splits)
        if "val" in self.splits and "" not in self.splits:
            return
        rng = np.random.default_rng(seed)
        pool = np.array([i for i, s in enumerate(self.splits) if s in ("", "train")], dtype=np.int64)
        # grouped by class once (a stable sort keeps each class's files in order): O(n log n), not n x classes
        by_class = pool[np.argsort(self.labels[pool], kind="stable")] if len(pool) else pool
        ends = np.searchsorted(self.labels[by_class], np.arange(len(self.classes) + 1)) if len(pool) else None
        for c in range(len(self.classes)):
            idx = by_class[ends[c]:ends[c + 1]].copy() if len(pool) else np.array([], dtype=np.int64)
            rng.shuffle(idx)
            n_val = int(round(len(idx) * val_split)) if len(idx) >= 2 else 0
            n_val = min(max(n_val, 1 if val_split > 0 and len(idx) >= 2 else 0), len(idx) - 1) if len(idx) else 0
            for k, i in enumerate(idx):
                self.splits[i] = "val" if k < n_val else "train"

    def report(self) -> dict:
        counts = {c: Counter() for c in self.classes}
        for y, s in zip(self.labels.tolist(), self.splits):
            counts[self.classes[y]][s or "all"] += 1
        classes = []
        for c in self.classes:
            row = {"name": c, "count": sum(counts[c].values())}
            row.update({s: counts[c][s] for s in ("train", "val", "test") if any(counts[k][s] for k in counts)})
            classes.append(row)
        reasons = Counter(r for _, r in self.skipped)
        return {
            "name": self.name,
            "task": self.task,
            "classes": classes,
            "used": len(self.inputs),
            "skipped": len(self.skipped),
            "skipped_reasons": dict(reasons),
            "skipped_files": [{"file": f, "reason": r} for f, r in self.skipped[:200]],
            "warnings": list(self.warnings) + ([self.check.note()] if self.check is not None else []),
        }

    def summary(self) -> str:
        """The report as a few plain lines, for the terminal."""
        r = self.report()
        kind = "images" if self.task == "image" else "texts"
        lines = [f"{r['name']}: {self.task} classification, {len(self.classes)} classes, {r['used']} {kind} used, {r['skipped']} skipped"]
        for c in r["classes"]:
            parts = ", ".join(f"{k} {c[k]}" for k in ("train", "val", "test") if k in c)
            lines.append(f"  {c['name']}: {c['count']}" + (f" ({parts})" if parts else ""))
        for reason, n in r["skipped_reasons"].items():
            lines.append(f"  skipped {n}: {reason}")
        lines += [f"  warning: {w}" for w in r["warnings"]]
        return "\n".join(lines)


def read_dataset(path: str | Path, *, image_column: str | None = None, text_column: str | None = None,
                 label_column: str | None = None) -> Dataset:
    """Read a folder, a `.zip`, or a `.csv`/`.tsv` file into a `Dataset` (raises `TlguiError`).

    Every file (or table row) is either used or listed in `skipped` with the reason.
    """
    path = Path(path)
    if not path.exists():
        raise TlguiError(f"dataset not found: {path}")
    if path.is_file():
        check_dataset_file(path)
    if path.is_file() and path.suffix.lower() in TABLE_EXTS | PARQUET_EXTS:
        check_table_size(path.name, path.stat().st_size)  # before a byte of it is read
        source = DirSource(path.parent, label=path.stem, walk=False)  # its images lie beside it
        return _read_with_budget(source, lambda: _from_table(
            source, path.name, read_parquet(path) if path.suffix.lower() in PARQUET_EXTS else path.read_bytes(), [],
            image_column, text_column, label_column))
    if path.is_file() and path.suffix.lower() != ".zip":
        raise TlguiError(f"{path.name}: unsupported file type; upload a .zip of class folders, or a .csv/.tsv table")
    source = open_source(path)
    return _read_with_budget(source, lambda: _from_source(source, image_column, text_column, label_column))


def _read_with_budget(source: Source, read):
    """Bytes and pixels of one read-in counted as they are read, then the counter taken away
    (training reads the same files again, and that is not new work)."""
    source.budget = ReadBudget(source.label)
    try:
        return read()
    finally:
        source.budget = None


def _from_source(source: Source, image_column, text_column, label_column) -> Dataset:
    skipped = list(source.skipped)
    names = [n for n in source.names if not is_hidden(n)]
    skipped += [(n, "hidden or system file") for n in source.names if is_hidden(n)]
    prefix = _wrapping_prefix(names)
    tables = [n for n in names if PurePosixPath(n).suffix.lower() in TABLE_EXTS and n.count("/") == prefix.count("/")]
    if tables:
        table = sorted(tables, key=lambda n: (not PurePosixPath(n).stem.lower().startswith(("label", "data", "train")), n))[0]
        if hasattr(source, "_infos"):
            check_table_size(table, source._infos[table].file_size)
        return _from_table(source, table, source.read(table), list(source.skipped), image_column, text_column, label_column)
    ds = _from_folders(source, names, prefix, skipped)
    if source.empty_dirs:
        ds.warnings.append(f"empty folders ignored: {', '.join(source.empty_dirs[:10])}")
    return ds


def _wrapping_prefix(names: list[str]) -> str:
    """The folders that wrap all pictures and tables (`data/images/cat/1.jpg` -> `data/images/`), if any.
    Other files (a README beside the wrapper) do not count."""
    rest = [n for n in names if PurePosixPath(n).suffix.lower() in IMAGE_EXTS | TABLE_EXTS]
    prefix = ""
    while rest and all("/" in r for r in rest):
        top = rest[0].split("/", 1)[0]
        inner = [r.split("/", 1)[1] for r in rest]
        if any(r.split("/", 1)[0] != top for r in rest) or all("/" not in r for r in inner):
            break  # several folders, or `cat/1.jpg` only: that single folder is a class, not a wrapper
        if top.lower() in SPLIT_FOLDERS:
            break
        prefix, rest = prefix + top + "/", inner
    return prefix


def _class_name(raw: str) -> str:
    """Folder names and labels as people see them: macOS writes accents decomposed (NFD)."""
    return unicodedata.normalize("NFC", raw.strip())


def _from_folders(source: Source, names: list[str], prefix: str, skipped: list[tuple[str, str]]) -> Dataset:
    entries: list[tuple[str, str, str]] = []  # (name, class, split)
    for n in names:
        parts = n[len(prefix):].split("/")
        if PurePosixPath(n).suffix.lower() not in IMAGE_EXTS:
            skipped.append((n, "not an image file"))
            continue
        split = SPLIT_FOLDERS.get(parts[0].lower(), "") if len(parts) >= 3 else ""
        if split:
            parts = parts[1:]
        if len(parts) < 2 or not _class_name(parts[0]):
            skipped.append((n, "not inside a class folder"))
            continue
        entries.append((n, _class_name(parts[0]), split))
    if not entries:
        raise TlguiError("no images found in class folders: put each class's images in a folder named after the class (cat/1.jpg, dog/2.jpg)")
    return _build_images(source, entries, skipped)


def _build_images(source: Source, entries: list[tuple[str, str, str]], skipped: list[tuple[str, str]]) -> Dataset:
    if len(entries) > checking.quick_from():  # counted now, every file checked in the background
        entries = checking.sample_check(source, entries, skipped)
        names = [e[0] for e in entries]
        ds = _finish("image", source, names, [e[1] for e in entries], [e[2] for e in entries],
                     [f"unchecked:{n}" for n in names], skipped)
        ds.check = checking.BackgroundCheck(source, names)
        return ds
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda entry: checking.check_file(source, entry[0], source.budget), entries))
    kept, digests = [], []
    for entry, (digest, reason) in zip(entries, results):
        if reason:
            skipped.append((entry[0], reason))
        else:
            kept.append(entry)
            digests.append(digest)
    if not kept:
        reasons = Counter(r for _, r in skipped).most_common(1)
        why = f" (most common reason: {reasons[0][0]})" if reasons else ""
        raise TlguiError(f"none of the images could be read{why}: check that the files are JPEG or PNG pictures")
    return _finish("image", source, [e[0] for e in kept], [e[1] for e in kept], [e[2] for e in kept], digests, skipped)


def _decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252 / Latin-1 (old Excel exports)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _read_table(name: str, data: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank rows, each with its row number as a spreadsheet shows it."""
    check_table_size(name, len(data))
    check_table_rows(name, data)
    text = _decode_text(data).replace("\x00", "")
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if name.lower().endswith(".tsv"):
        sep = "\t"
    else:  # the candidate that splits the header most; `;` is Excel's choice where `,` is the decimal mark
        sep = max(SEPARATORS, key=first.count) if any(c in first for c in SEPARATORS) else ","
    rows = []
    try:
        for number, fields in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=sep), start=1):
            if any(f.strip() for f in fields):
                rows.append((number, fields))
    except csv.Error as e:
        raise TlguiError(f"{name} could not be read as a table ({e}): save it as CSV with a header row") from None
    if not rows:
        raise TlguiError(f"{name} is empty: it needs a header row and one row per example")
    return [h.strip() for h in rows[0][1]], rows[1:]


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> int | None:
    lower = {}
    for i, c in enumerate(columns):
        lower.setdefault(c.lower(), i)
    if wanted:
        if wanted.strip().lower() in lower:
            return lower[wanted.strip().lower()]
        raise TlguiError(f"the table has no column {wanted!r} for the {what}; its columns are: {', '.join(columns)}")
    return next((lower[c] for c in candidates if c in lower), None)


def _from_table(source: Source, table: str, data: bytes, skipped: list[tuple[str, str]], image_column, text_column,
                label_column) -> Dataset:
    cols, rows = _read_table(table, data) if isinstance(data, bytes) else data  # bytes, or a Parquet's rows
    label = _pick(cols, label_column, LABEL_COLUMNS, "labels")
    image = None if text_column else _pick(cols, image_column, IMAGE_COLUMNS, "image paths")
    text = None if image is not None else _pick(cols, text_column, TEXT_COLUMNS, "texts")
    data_col = image if image is not None else text
    if label is None and len(cols) == 2 and data_col is not None:
        label = 1 - data_col
    if label is None or data_col is None:
        raise TlguiError(f"{table}: cannot tell which columns hold the {'labels' if label is None else 'images or texts'}; "
                         f"name them image (or text) and label. Columns found: {', '.join(cols) or 'none'}")
    pairs = []  # (where, value, label)
    for number, fields in rows:
        where = f"{table} row {number}"
        if len(fields) > len(cols) and any(f.strip() for f in fields[len(cols):]):
            skipped.append((where, "more fields than the header has columns (quote values that contain the separator)"))
            continue
        value = fields[data_col].strip() if data_col < len(fields) else ""
        y = _class_name(fields[label]) if label < len(fields) else ""
        if not value or not y:
            skipped.append((where, f"missing {'image path' if image is not None else 'text'} or label"))
        else:
            pairs.append((where, value, y))
    if image is None:
        if not pairs:
            raise TlguiError(f"{table}: no usable rows; each row needs a text and a label")
        texts = [v for _, v, _ in pairs]
        digests = [hashlib.blake2b(t.encode(), digest_size=12).hexdigest() for t in texts]
        ds = _finish("text", None, texts, [y for *_, y in pairs], [""] * len(texts), digests, skipped,
                     name=Path(table).stem)
        ds.rows = [int(where.rsplit(" ", 1)[1]) for where, _, _ in pairs]
        return ds
    base = PurePosixPath(table).parent
    entries = []
    for where, p, y in pairs:
        rel = PurePosixPath(p.replace("\\", "/"))
        member = (base / rel).as_posix()
        if rel.is_absolute() or ".." in rel.parts or ":" in p.split("/")[0]:
            skipped.append((where, "image path leaves the dataset folder"))
        elif not source.has(member):
            skipped.append((where, f"image not found: {member}"))
        else:
            entries.append((member, y, ""))
    if not entries:
        raise TlguiError(f"{table}: no usable rows; each row needs an image path (relative to the table) and a label")
    return _build_images(source, entries, skipped)


def _natural(s: str):
    """`class 10` after `class 9`: odd parts of the split are the runs of digits."""
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(re.split(r"(\d+)", s))]


def _finish(task, source, inputs, names, splits, digests, skipped, name=None) -> Dataset:
    distinct = set(names)
    check_classes(len(distinct))
    classes = sorted(distinct, key=lambda c: (_natural(c), c))  # ties (Cat, cat) in a fixed order
    index = {c: i for i, c in enumerate(classes)}
    ds = Dataset(task=task, name=name or (source.label if source else "dataset"), classes=classes, inputs=list(inputs),
                 labels=np.array([index[n] for n in names], dtype=np.int64), splits=list(splits),
                 digests=list(digests), source=source, skipped=skipped)
    counts = Counter(names)
    if len(classes) < 2:
        ds.warnings.append(f"only one class ({classes[0]}): a classifier needs at least two")
    few = [c for c in classes if counts[c] < FEW_EXAMPLES]
    if few:
        ds.warnings.append(f"fewer than {FEW_EXAMPLES} examples in: {', '.join(few)}; add more for a reliable model")
    if len(classes) >= 2 and max(counts.values()) >= IMBALANCE * min(counts.values()):
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        ds.warnings.append(f"classes are imbalanced ({big}: {counts[big]} vs {small}: {counts[small]}); accuracy may flatter the model")
    lowered = Counter(c.lower() for c in classes)
    clashes = [c for c in classes if lowered[c.lower()] > 1]
    if clashes:
        ds.warnings.append(f"class names differ only in case: {', '.join(clashes)}; rename them if they are the same class")
    return ds
