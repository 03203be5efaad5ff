"""Splitting a dataset with many labels: grouping by class once against the loop over every row per class.

    python bench/splits.py   (under a minute)

For 1,000 to 8,000 distinct labels (two texts each) it times `Dataset.assign_splits` and the
per-class loop it replaced, in one run, and prints each time and their ratio. The loop grows
with rows x classes (doubling the labels takes about four times longer); grouping grows with rows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlgui.data.datasets import Dataset  # noqa: E402


def per_class_loop(ds: Dataset, val_split: float, seed: int) -> list[str]:
    """The earlier split: for every class, a pass over every row."""
    splits = list(ds.folder_splits)
    rng = np.random.default_rng(seed)
    pool = [i for i, s in enumerate(splits) if s in ("", "train")]
    for c in range(len(ds.classes)):
        idx = np.array([i for i in pool if ds.labels[i] == c])
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_split)) if len(idx) >= 2 else 0
        n_val = min(max(n_val, 1 if val_split > 0 and len(idx) >= 2 else 0), len(idx) - 1) if len(idx) else 0
        for k, i in enumerate(idx):
            splits[i] = "val" if k < n_val else "train"
    return splits


def dataset(n_classes: int) -> Dataset:
    labels = np.repeat(np.arange(n_classes), 2)
    n = len(labels)
    return Dataset("text", "bench", [f"c{i}" for i in range(n_classes)], [f"t{i}" for i in range(n)], labels,
                   [""] * n, [str(i) for i in range(n)])


def main() -> None:
    print("labels  grouped_s  loop_s  loop/grouped")
    for n_classes in (1000, 2000, 4000, 8000):
        ds = dataset(n_classes)
        t0 = time.perf_counter()
        ds.assign_splits(0.5, seed=0)
        grouped = time.perf_counter() - t0
        t0 = time.perf_counter()
        old = per_class_loop(ds, 0.5, seed=0)
        loop = time.perf_counter() - t0
        assert old == ds.splits  # the same split, seed for seed
        print(f"{n_classes:6d}  {grouped:9.3f}  {loop:6.2f}  {loop / grouped:8.0f}x")


if __name__ == "__main__":
    main()
