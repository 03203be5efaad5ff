"""The engine against logistic regression on the same frozen features, on data it has never seen.

Trains `python -m tlgui train ... --freeze all` (native 224 px) on Fashion-MNIST images that are
not in the built-in example, scores the bundle with `evaluate` on the official test images,
and fits scikit-learn's LogisticRegression on the same backbone's features of the same images.
Also times `--epochs 10` against `--epochs 1` (each with an empty feature cache).

    python bench/engine_accuracy.py [--per-class 60] [--backbone efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from realdata import fashion_mnist, write_class_zip  # noqa: E402

from tlgui.data.batches import decode_images  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.nets.backbones import build_backbone  # noqa: E402


def cli(*args, env) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tlgui", *map(str, args)], check=True, cwd=ROOT, env=env, capture_output=True)
    return time.perf_counter() - t


@torch.inference_mode()
def features(backbone, ds) -> np.ndarray:
    pixels = decode_images(ds, np.arange(len(ds)), backbone.input_size)
    return torch.cat([backbone(pixels[i : i + 64].float() / 255) for i in range(0, len(ds), 64)]).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    work = Path(tempfile.mkdtemp(prefix="tlgui-bench-"))
    # seed 1: a different draw from the built-in example's
    train_zip = write_class_zip(work / "train.zip", *fashion_mnist(args.per_class, seed=1))
    test_zip = write_class_zip(work / "test.zip", *fashion_mnist(args.test_per_class, split="test", seed=1))
    times = {}
    for epochs in (1, 10):
        env = {**os.environ, "TLGUI_CACHE_DIR": str(work / f"cache{epochs}")}
        times[epochs] = cli("train", train_zip, "--backbone", args.backbone, "--freeze", "all", "--epochs", epochs,
                            "--patience", "0", "--out", work / f"run{epochs}", env=env)
    out = subprocess.run([sys.executable, "-m", "tlgui", "evaluate", work / "run10" / "model.zip", test_zip, "--json"],
                         check=True, cwd=ROOT, capture_output=True, text=True).stdout
    tlgui_acc = json.loads(out)["accuracy"]

    backbone = build_backbone(args.backbone).eval()
    train_ds, test_ds = read_dataset(train_zip), read_dataset(test_zip)
    t = time.perf_counter()
    xtr, xte = features(backbone, train_ds), features(backbone, test_ds)
    lr = LogisticRegression(max_iter=3000).fit(xtr, train_ds.labels)
    lr_acc = float((lr.predict(xte) == test_ds.labels).mean())
    lr_time = time.perf_counter() - t

    n_train, n_test = len(train_ds), len(test_ds)
    print("| measure | value |\n|---|---|")
    print(f"| data | Fashion-MNIST, {n_train} training images (80% train / 20% val), {n_test} test images |")
    print(f"| backbone | {args.backbone} frozen, native size |")
    print(f"| tlgui `train --epochs 10` test accuracy | {tlgui_acc:.4f} |")
    print(f"| logistic regression on the same frozen features (all {n_train} images) | {lr_acc:.4f} |")
    print(f"| difference | {100 * (tlgui_acc - lr_acc):+.1f} points |")
    print(f"| `train --epochs 1` wall time (CLI, start-up included) | {times[1]:.1f} s |")
    print(f"| `train --epochs 10` wall time | {times[10]:.1f} s |")
    print(f"| ratio 10 epochs / 1 epoch | {times[10] / times[1]:.2f} |")
    print(f"| logistic regression: features + fit | {lr_time:.1f} s |")


if __name__ == "__main__":
    main()
