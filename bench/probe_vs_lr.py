"""tlgui's frozen head against scikit-learn's tuned LogisticRegression on the very same features,
over many draws of a small labelled set. Appends a section to bench/QUALITY.md.

Features of a pool are computed once per set (EfficientNet-Lite0 at 64 px for Fashion-MNIST and
Animal-MNIST, MiniLM-L6 for the movie reviews); each draw takes `--labelled` examples from the pool
(balanced), holds out 20% of them for validation, and scores on a fixed test part never drawn.

- `LR tuned`: LogisticRegression on the raw features, C from a decade grid (1e-4 .. 100) chosen on
  the validation part, refitted on train + validation: what a careful user does in a notebook.
- `tlgui`: `probe.run_probe`, the frozen run's own fit (global scaling, half-decade C walk on
  validation, refit on all).
- `tlgui, 5 folds`: the same with `--folds 5`.

    python bench/probe_vs_lr.py [--draws 8] [--labelled 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import report  # noqa: E402
from quality import features  # noqa: E402
from realdata import animal_mnist, fashion_mnist, movie_reviews, write_class_zip, write_text_table  # noqa: E402

from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.nets.fusion import build_fusion  # noqa: E402
from tlgui.nets.standardise import FeatureScale  # noqa: E402
from tlgui.training.probe import run_probe  # noqa: E402

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100]


class Head(nn.Module):
    """A classifier's scale, fusion and head, without the backbone: what a frozen run fits."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.scale = FeatureScale([width])
        self.fusion = build_fusion("concat", [width])
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(width, classes))


def pools(work: Path):
    for name, make in (("Fashion-MNIST", fashion_mnist), ("Animal-MNIST", animal_mnist)):
        tr = read_dataset(write_class_zip(work / f"{name}-pool.zip", *make(120, seed=7)))
        te = read_dataset(write_class_zip(work / f"{name}-test.zip", *make(80, split="test", seed=7)))
        yield name, features("efficientnet_lite0", tr, 64), tr.labels, features("efficientnet_lite0", te, 64), te.labels
    reviews = movie_reviews(700, seed=7)
    tr = read_dataset(write_text_table(work / "pool.csv", reviews.iloc[:1000]))
    te = read_dataset(write_text_table(work / "test.csv", reviews.iloc[1000:]))
    yield "movie reviews", features("minilm_l6", tr), tr.labels, features("minilm_l6", te), te.labels


def lr_tuned(x, y, tr, va, xte, yte) -> float:
    from sklearn.linear_model import LogisticRegression

    val = [(LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr]).predict(x[va]) == y[va]).mean() for c in GRID]
    both = np.concatenate([tr, va])
    best = LogisticRegression(C=GRID[int(np.argmax(val))], max_iter=3000).fit(x[both], y[both])
    return float((best.predict(xte) == yte).mean())


def tlgui_probe(x, y, tr, va, xte, yte, folds: int = 0) -> float:
    model = Head(x.shape[1], int(y.max()) + 1)
    order = np.concatenate([tr, va])
    run_probe(model, [torch.from_numpy(x[order]).float()], torch.from_numpy(y[order]).long(), len(tr), "off", folds,
              0, lambda *a, **k: None, lambda: None, 0.0)
    model.eval()
    with torch.no_grad():
        logits = model.head(model.fusion(model.scale([torch.from_numpy(xte).float()])))
    return float((logits.argmax(1).numpy() == yte).mean())


METHODS = {"LR tuned": lr_tuned, "tlgui": tlgui_probe, "tlgui, 5 folds": lambda *a: tlgui_probe(*a, folds=5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--labelled", type=int, default=200)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, x_pool, y_pool, xte, yte in pools(Path(work)):
            y_pool, yte = np.asarray(y_pool), np.asarray(yte)
            scores = {m: [] for m in METHODS}
            classes = np.unique(y_pool)
            per = args.labelled // len(classes)
            for draw in range(args.draws):
                rng = np.random.default_rng(100 + draw)
                idx = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), per, replace=False) for c in classes])
                x, y = x_pool[idx], y_pool[idx]
                va = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: per // 5] for c in classes])
                tr = np.setdiff1d(np.arange(len(y)), va)
                for m, fn in METHODS.items():
                    scores[m].append(fn(x, y, tr, va, xte, yte))
                print(name, draw, {m: round(s[-1], 4) for m, s in scores.items()}, flush=True)
            rows.append((name, scores))
    lines = [f"Same frozen features; {args.draws} draws of {args.labelled} labelled examples (80% train, 20% "
             f"validation) from a pool, test accuracy on a fixed test part; mean ± standard error over draws. "
             f"{(time.perf_counter() - t0) / 60:.0f} min on a shared 2-core CPU.", "",
             "| set | " + " | ".join(METHODS) + " | tlgui - LR tuned |", "|---" * (len(METHODS) + 2) + "|"]
    for name, scores in rows:
        cells = [f"{100 * np.mean(s):.1f} ± {100 * np.std(s) / np.sqrt(len(s)):.1f}" for s in scores.values()]
        diff = 100 * (np.array(scores["tlgui"]) - np.array(scores["LR tuned"]))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff.mean():+.1f} ± {diff.std() / np.sqrt(len(diff)):.1f} |")
    report.put(ROOT / "bench" / "QUALITY.md",
               "## tlgui's frozen head against tuned logistic regression, many draws (`bench/probe_vs_lr.py`)", "\n".join(lines))


if __name__ == "__main__":
    main()
