"""GPU throughput of the engine, each row two variants side by side in one run (bench/gpu.sh runs it).

    python bench/gpu.py --data PATH --out DIR [--n 4096] [--steps 30] [--size 224] [--device cuda]

1. fine-tuning pictures/s: tlgui's trainer against a plain PyTorch loop on the same model, pictures,
   batch size, optimizer and mixed precision;
2. frozen feature extraction pictures/s (pictures decoded batch by batch);
3. mixed precision on against off (TLGUI_AMP=0), fine-tuning and extraction;
4. pictures decoded per batch in DataLoader workers: 0 against N;
Rows are appended to DIR/GPU.md as they finish. PATH is a dataset tlgui reads (folder, zip, table),
or a folder holding Fashion-MNIST's `*-idx3-ubyte.gz` files (written out as PNG class folders).
`--device cpu --n 64 --steps 3 --size 32` runs the same code on a CPU in a minute.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.batches import decode_images  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.training.inputs import build_classifier  # noqa: E402
from tlgui.training.train import Trainer  # noqa: E402

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
BATCH = 128
WARMUP = 3


def dataset_path(data: Path, work: Path, n: int) -> Path:
    """A dataset tlgui reads: `data` itself, or Fashion-MNIST's gz files written as PNG class folders."""
    gz = data / "train-images-idx3-ubyte.gz"
    if not gz.exists():
        return data
    from PIL import Image

    folder = work / f"fashion-{n}"
    if folder.exists():
        return folder
    with gzip.open(gz) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(data / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    for i in range(min(n, len(images))):
        path = folder / CLASSES[labels[i]] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path)
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tlgui_rate(ds, args, freeze: str, env: dict | None = None) -> float:
    """Pictures/s of tlgui's trainer: training steps after a warm-up (fine-tuning), or the whole
    feature extraction (frozen), from its own progress events."""
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        epochs = 1 if freeze == "all" else 1000  # fine-tuning: stopped after the timed steps
        cfg = RunConfig(backbones=[args.backbone], freeze=freeze, epochs=epochs, batch_size=BATCH, image_size=args.size,
                        val_split=0.02, device=args.device, augment=False, patience=0)
        stop, times, marks = threading.Event(), [], {}

        def listen(e: dict) -> None:
            now = time.perf_counter()
            if e["event"] == "batch":
                times.append(now)
                if freeze != "all" and len(times) >= args.steps + WARMUP:
                    stop.set()
            elif e["event"] == "preparing" and e.get("what") == "computing features":
                marks.setdefault("first", (now, e["done"]))
                marks["last"] = (now, e["done"])

        out = Path(args.out) / "runs" / f"{freeze}-{len(os.listdir(Path(args.out) / 'runs'))}"
        Trainer(cfg, ds, out, [listen], stop).run()
        if freeze == "all":
            (t0, d0), (t1, d1) = marks["first"], marks["last"]
            return (d1 - d0) / (t1 - t0)
        return (len(times) - 1 - WARMUP) * BATCH / (times[-1] - times[WARMUP])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plain_rate(ds, args) -> float:
    """Pictures/s of a plain PyTorch loop: same model, pictures decoded once, same AMP and optimizer."""
    device = torch.device(args.device)
    cfg = RunConfig(backbones=[args.backbone], freeze="none", image_size=args.size, device=args.device)
    model = build_classifier(cfg, len(ds.classes)).to(device).to(memory_format=torch.channels_last).train()
    pixels = decode_images(ds, np.arange(len(ds)), args.size)
    pixels = pixels.pin_memory() if device.type == "cuda" else pixels
    labels = torch.as_tensor(ds.labels)
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for step in range(args.steps + WARMUP):
        idx = torch.randint(len(pixels), (BATCH,))
        x = pixels[idx].to(device, non_blocking=True).float().div_(255).contiguous(memory_format=torch.channels_last)
        y = labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # tlgui reads the loss every step too
        sync(device)
        times.append(time.perf_counter())
    return (len(times) - 1 - WARMUP) * BATCH / (times[-1] - times[WARMUP])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 2) - 1))
    p.add_argument("--only", default="finetune,plain,frozen,amp,workers")
    args = p.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TLGUI_CACHE_MB", "0")  # every extraction computed, none read back
    ds = read_dataset(dataset_path(Path(args.data), out / "data", args.n))
    ds.wait_checked()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    report = out / "GPU.md"
    with report.open("a") as f:
        f.write(f"\n## {name}, torch {torch.__version__}: {args.backbone} at {args.size} px, batch {BATCH}, "
                f"{len(ds)} pictures, {args.steps} timed steps after {WARMUP} warm-up\n\n| measure | pictures/s | ratio |\n|---|---:|---:|\n")

    def row(label: str, a: float, b: float | None = None, b_label: str = "") -> None:
        text = f"| {label} | {a:,.0f} vs {b:,.0f} ({b_label}) | {a / b:.2f} |\n" if b else f"| {label} | {a:,.0f} | |\n"
        print(text, end="", flush=True)
        with report.open("a") as f:
            f.write(text)

    only = args.only.split(",")
    tuned = tlgui_rate(ds, args, "none") if {"finetune", "plain", "amp"} & set(only) else None
    if "plain" in only:
        row("fine-tuning: tlgui vs a plain PyTorch loop (same AMP)", tuned, plain_rate(ds, args), "plain")
    elif "finetune" in only:
        row("fine-tuning: tlgui", tuned)
    frozen = tlgui_rate(ds, args, "all") if {"frozen", "amp"} & set(only) else None
    if "frozen" in only:
        row("frozen extraction (decoded batch by batch)", frozen)
    if "amp" in only and args.device == "cuda":
        row("fine-tuning: mixed precision on vs off", tuned, tlgui_rate(ds, args, "none", {"TLGUI_AMP": "0"}), "fp32")
        row("frozen extraction: mixed precision on vs off", frozen, tlgui_rate(ds, args, "all", {"TLGUI_AMP": "0"}), "fp32")
    if "workers" in only:
        env = {"TLGUI_PICTURES": "stream"}
        many = tlgui_rate(ds, args, "none", {**env, "TLGUI_LOADER_WORKERS": str(args.workers)})
        none = tlgui_rate(ds, args, "none", {**env, "TLGUI_LOADER_WORKERS": "0"})
        row(f"fine-tuning, pictures decoded per batch: {args.workers} DataLoader workers vs 0", many, none, "0 workers")


if __name__ == "__main__":
    main()
