"""How should frozen features be scaled before the linear head? Writes its section of bench/QUALITY.md.

Same frozen features, scikit-learn LogisticRegression, C tuned on a 20% validation part (or by
5-fold cross-validation) from a decade grid, then refitted on every labelled example; test accuracy
on examples never seen. Scalings: raw; per feature (StandardScaler); global (centred, divided by
one number, the root mean variance: what tlgui's FeatureScale does).

    python bench/feature_scaling.py [--seeds 11 12] [--labelled 400] [--size 96]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import report  # noqa: E402
from quality import features  # noqa: E402
from realdata import animal_mnist, fashion_mnist, movie_reviews, write_class_zip, write_text_table  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from tlgui.data.datasets import read_dataset  # noqa: E402

GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
SCALINGS = ("raw", "per feature", "global")


def scaled(kind: str, fit_on: np.ndarray, *xs: np.ndarray) -> list[np.ndarray]:
    if kind == "raw":
        return list(xs)
    mean = fit_on.mean(0)
    std = fit_on.std(0) if kind == "per feature" else np.sqrt(fit_on.var(0).mean())
    return [(x - mean) / np.where(std > 1e-6, std, 1.0) for x in xs]


def accuracy(c, xtr, ytr, xte, yte) -> float:
    return float((LogisticRegression(C=c, max_iter=500).fit(xtr, ytr).predict(xte) == yte).mean())


def chosen_c(kind: str, x, y, how: str, seed: int) -> float:
    if how == "validation":
        idx = np.random.RandomState(seed).permutation(len(x))
        splits = [(idx[: int(0.8 * len(x))], idx[int(0.8 * len(x)):])]
    else:
        splits = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y))
    score = np.zeros(len(GRID))
    for tr, va in splits:
        a, b = scaled(kind, x[tr], x[tr], x[va])
        score += [accuracy(c, a, y[tr], b, y[va]) for c in GRID]
    return GRID[int(np.argmax(score))]


def sets(work: Path, seed: int, labelled: int, size: int):
    for name, make in (("Fashion-MNIST", fashion_mnist), ("Animal-MNIST", animal_mnist)):
        tr = read_dataset(write_class_zip(work / f"{name}-tr.zip", *make(labelled // 10, seed=seed)))
        te = read_dataset(write_class_zip(work / f"{name}-te.zip", *make(50, split="test", seed=seed)))
        yield name, features("efficientnet_lite0", tr, size), tr.labels, features("efficientnet_lite0", te, size), te.labels
    reviews = movie_reviews((labelled + 100) // 2, seed=seed)
    tr = read_dataset(write_text_table(work / "tr.csv", reviews.iloc[:labelled]))
    te = read_dataset(write_text_table(work / "te.csv", reviews.iloc[labelled:]))
    yield "movie reviews", features("minilm_l6", tr), tr.labels, features("minilm_l6", te), te.labels


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    p.add_argument("--labelled", type=int, default=400)
    p.add_argument("--size", type=int, default=96)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            for name, xtr, ytr, xte, yte in sets(Path(work), seed, args.labelled, args.size):
                ytr, yte = np.asarray(ytr), np.asarray(yte)
                row = {"set": f"{name}, seed {seed}", "LR C=1, raw": accuracy(1.0, xtr, ytr, xte, yte)}
                for kind in SCALINGS:
                    a, b = scaled(kind, xtr, xtr, xte)
                    for how in ("validation", "5 folds"):
                        row[f"{kind}, C by {how}"] = accuracy(chosen_c(kind, xtr, ytr, how, seed), a, ytr, b, yte)
                rows.append(row)
                print(row, flush=True)
    cols = list(rows[0])[1:]
    lines = [f"{args.labelled} labelled examples (pictures at {args.size} px), test accuracy, scikit-learn's "
             "LogisticRegression refitted on every labelled example.", "",
             "| set | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {r['set']} | " + " | ".join(f"{100 * r[c]:.1f}" for c in cols) + " |" for r in rows]
    lines.append("| mean | " + " | ".join(f"{100 * np.mean([r[c] for r in rows]):.1f}" for c in cols) + " |")
    report.put(ROOT / "bench" / "QUALITY.md", "## Scaling the frozen features (`bench/feature_scaling.py`)",
               "\n".join(lines))


if __name__ == "__main__":
    main()
