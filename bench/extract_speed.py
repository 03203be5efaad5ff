"""Frozen features: milliseconds per input of tlgui's extraction, a bare onnxruntime session and
PyTorch eager, side by side in one process on the same inputs, for each offline backbone.

- tlgui: what a frozen run does per batch: uint8 pictures to floats, the backbone's
  forward, whose core runs in onnxruntime (`training/onnx_features.py`); texts tokenised by the backbone.
- bare: an onnxruntime session of the same ONNX file, fed ready float arrays (token ids for texts),
  with onnxruntime's default threads: the speed to match.
- PyTorch: the backbone's forward with no runtime set (what every frozen run did before).

Rounds alternate the three; the best round of each is kept. Pictures: the built-in example's,
decoded at the backbone's size. Texts: movie reviews.

    python bench/extract_speed.py [--rounds 3] [--n 64] [--backbones efficientnet_lite0 ...] [--accuracy SEEDS]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tlgui.data import read_dataset  # noqa: E402
from tlgui.data.batches import decode_images, extract_batch, image_batch  # noqa: E402
from tlgui.nets.backbones import build_backbone  # noqa: E402
from tlgui.training.onnx_features import onnx_bytes, onnxruntime_features  # noqa: E402

BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "mobilenet_v2", "minilm_l6"]
CPU = torch.device("cpu")


def inputs(backbone, n: int):
    if backbone.task == "text":
        sys.path.insert(0, str(ROOT / "tests"))
        from realdata import movie_reviews

        return list(movie_reviews(n // 2 + 1, max_chars=600)["text"])[:n]
    ds = read_dataset(ROOT / "assets/examples/fashion-mnist")
    return decode_images(ds, np.arange(n), backbone.input_size)


def batches(data, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)]


@torch.inference_mode()
def tlgui_way(backbone, data, batch: int) -> None:
    for part in batches(data, batch):
        # as the trainer lays pictures out: plain for onnxruntime, channels-last for PyTorch
        backbone(image_batch(part, CPU, False, channels_last=backbone.runtime is None)
                 if backbone.task == "image" else part)


def bare_feeds(backbone, data, batch: int) -> list[dict]:
    """What a bare session is fed: float arrays at the backbone's size, or padded token ids."""
    names = [f"input{k}" for k in range(2 if backbone.task == "text" else 1)]
    feeds = []
    for part in batches(data, batch):
        if backbone.task == "image":
            feeds.append({names[0]: part.float().div(255).numpy()})
            continue
        encoded = backbone.tokenizer.encode_batch(part)
        ids = [e.ids[:backbone.max_length] for e in encoded]
        width = max(len(i) for i in ids)
        x, mask = np.zeros((len(ids), width), np.int64), np.zeros((len(ids), width), np.int64)
        for row, i in enumerate(ids):
            x[row, :len(i)], mask[row, :len(i)] = i, 1
        feeds.append(dict(zip(names, (x, mask))))
    return feeds


def alternated(fns: dict, rounds: int) -> dict[str, float]:
    """Each call's best seconds over `rounds`, the calls taking turns (a shared machine's load falls on all)."""
    for fn in fns.values():
        fn()  # warm: kernels, allocator, the session's first run
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def measure(name: str, n: int, rounds: int) -> dict:
    backbone = build_backbone(name, True).eval()
    data = inputs(backbone, n)
    batch = extract_batch(32, CPU)
    session = ort.InferenceSession(onnx_bytes(backbone), providers=["CPUExecutionProvider"])
    feeds = bare_feeds(backbone, data, batch)
    with onnxruntime_features([backbone], CPU, n, print, {}):
        runtime = backbone.runtime

        def pytorch():
            backbone.runtime = None
            try:
                tlgui_way(backbone, data, batch)
            finally:
                backbone.runtime = runtime

        seconds = alternated({"tlgui": lambda: tlgui_way(backbone, data, batch),
                              "bare": lambda: [session.run(None, f) for f in feeds], "pytorch": pytorch}, rounds)
    return {k: 1000 * v / n for k, v in seconds.items()}


def accuracy_table(seeds: int) -> None:
    """Validation accuracy of frozen runs whose features came from onnxruntime against PyTorch's, on
    three real sets (each 400 labelled, 80/20), each seed its own split."""
    import os
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from realdata import animal_mnist, fashion_mnist, movie_reviews, write_class_folders, write_text_table

    from tlgui.config import RunConfig
    from tlgui.training import train

    work = Path(tempfile.mkdtemp(prefix="tlgui-onnx-accuracy-"))
    sets = {"Fashion-MNIST": ("efficientnet_lite0", write_class_folders(work / "fashion", *fashion_mnist(40))),
            "Animal-MNIST": ("efficientnet_lite0", write_class_folders(work / "animal", *animal_mnist(40))),
            "movie reviews": ("minilm_l6", write_text_table(work / "reviews.csv", movie_reviews(200)))}
    os.environ["TLGUI_CACHE_MB"] = "0"  # every run computes its features
    print("| data | backbone | seed | onnxruntime | PyTorch | difference (points) |")
    print("|---|---|---|---|---|---|")
    for name, (backbone, path) in sets.items():
        for seed in range(seeds):
            acc = {}
            for flag in ("1", "0"):
                os.environ["TLGUI_ONNX"] = flag
                config = RunConfig(backbones=[backbone], freeze="all", seed=seed)
                acc[flag] = train(config, read_dataset(path), work / f"{name}-{seed}-{flag}").metrics["accuracy"]
            print(f"| {name} | {backbone} | {seed} | {acc['1']:.4f} | {acc['0']:.4f} | "
                  f"{100 * (acc['1'] - acc['0']):+.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--backbones", nargs="*", default=BACKBONES)
    ap.add_argument("--accuracy", type=int, default=0, metavar="SEEDS",
                    help="also compare validation accuracy, onnxruntime against PyTorch features, over SEEDS seeds")
    args = ap.parse_args()
    if args.accuracy:
        accuracy_table(args.accuracy)
    print(f"{torch.get_num_threads()} threads, {args.n} inputs, batches of {extract_batch(32, CPU)}, "
          f"best of {args.rounds}; milliseconds per input")
    print("| backbone | tlgui | bare onnxruntime | PyTorch eager | tlgui / bare speed | tlgui / PyTorch speed |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones:
        ms = measure(name, args.n, args.rounds)
        print(f"| {name} | {ms['tlgui']:.1f} | {ms['bare']:.1f} | {ms['pytorch']:.1f} | "
              f"{ms['bare'] / ms['tlgui']:.2f}x | {ms['pytorch'] / ms['tlgui']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
