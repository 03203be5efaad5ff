"""How many deliberately flipped labels the label audit finds, against a random ranking.

Fashion-MNIST training pictures, all 10 classes, 5% of the labels moved to another class at
random. For each image size and seed: the share of flipped pictures among the audit's first
2x-flipped entries (recall@2x), how many of its first five are flipped, how many it flags in all,
and the seconds it took (features from an empty cache, then again from the cache). A random
ranking finds 2x-flipped / N of them on average: the ratio to it is printed too.

    python bench/audit_recall.py [--per-class 60] [--sizes 64 128] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import realdata  # noqa: E402

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.training.audit import audit  # noqa: E402


def one(per_class: int, size: int, seed: int, backbone: str) -> dict:
    images, labels, names = realdata.fashion_mnist(per_class, seed=seed)
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(round(0.05 * len(labels))), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, len(names), len(flipped))) % len(names)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLGUI_CACHE_DIR"] = str(Path(tmp) / "features")
        ds = read_dataset(realdata.write_class_folders(Path(tmp) / "data", images, labels, names))
        wrong = {f"{names[labels[i]]}/{i}.png" for i in flipped}
        config = RunConfig(backbones=[backbone], image_size=size, seed=seed)
        t = time.perf_counter()
        issues = audit(config, ds)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        audit(config, ds)
        warm = time.perf_counter() - t
    top = {it["path"] for it in issues[: 2 * len(wrong)]}
    recall = len(top & wrong) / len(wrong)
    return {"size": size, "seed": seed, "n": len(labels), "flipped": len(wrong), "recall": recall,
            "random": 2 * len(wrong) / len(labels), "top5": sum(it["path"] in wrong for it in issues[:5]),
            "flagged": len(issues), "cold": cold, "warm": warm}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    print("| px | seed | pictures | flipped | recall@2x | x random | flipped in top 5 | flagged | s cold | s cached |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for seed in args.seeds:
            r = one(args.per_class, size, seed, args.backbone)
            print(f"| {r['size']} | {r['seed']} | {r['n']} | {r['flipped']} | {r['recall']:.2f} | "
                  f"{r['recall'] / r['random']:.1f} | {r['top5']}/5 | {r['flagged']} | {r['cold']:.1f} | "
                  f"{r['warm']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
