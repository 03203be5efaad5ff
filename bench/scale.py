"""Memory and speed as the data set grows: frozen feature extraction and a fixed-step fine-tuning
epoch at several sizes, each in a fresh process (its peak RSS is its own), side by side in one run.

    python bench/scale.py [--sizes 1000,4000,16000,64000] [--image-size 32] [--steps 20] [--write]

Data: Debian's Fashion-MNIST (/usr/share/datasets/fashion-mnist, 70,000 pictures), written once
as PNG class folders under --work, with a CSV table per size read in place; the 28 px pictures
are upscaled to --image-size in the loader. On a 2-core shared CPU a 224 px run of 64,000
pictures takes hours, so the default is 32 px; the in-memory budget (TLGUI_DECODE_MB) is scaled
by (size/224)^2 so that each size lands in the regime it would at 224 px.
`--write` writes bench/SCALE.md.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
MEMORY_MB_AT_224 = 1024


# -- data ----------------------------------------------------------------------------------------
def fashion_arrays(source: Path) -> tuple[np.ndarray, np.ndarray]:
    imgs, labs = [], []
    for prefix in ("train", "t10k"):
        with gzip.open(source / f"{prefix}-images-idx3-ubyte.gz") as f:
            imgs.append(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28))
        with gzip.open(source / f"{prefix}-labels-idx1-ubyte.gz") as f:
            labs.append(np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
    return np.concatenate(imgs), np.concatenate(labs)


def write_pictures(work: Path, source: Path, n: int) -> Path:
    """`n` pictures as PNG class folders under work/pictures (kept between runs), and a table of
    them in a seeded order; a size's table is its first rows."""
    from PIL import Image

    folder, table = work / "pictures", work / "all.csv"
    if table.exists() and sum(1 for _ in table.open()) - 1 >= n:
        return table
    images, labels = fashion_arrays(source)
    order = np.random.default_rng(0).permutation(len(images))[:n]
    rows = []
    for k, i in enumerate(order):
        rel = f"pictures/{CLASSES[labels[i]]}/{k:05d}.png"
        path = work / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
        rows.append((rel, CLASSES[labels[i]]))
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        w.writerows(rows)
    return table


def subset_table(work: Path, n: int) -> Path:
    path = work / f"subset-{n}.csv"
    if not path.exists():
        with (work / "all.csv").open() as f:
            lines = f.readlines()[: n + 1]
        path.write_text("".join(lines))
    return path


# -- one measurement, in a process of its own ----------------------------------------------------
def child(args) -> dict:
    import torch

    from tlgui.config import RunConfig
    from tlgui.data.datasets import read_dataset
    from tlgui.training.train import Trainer

    torch.set_num_threads(args.threads)
    ds = read_dataset(args.table)
    ds.wait_checked()
    frozen = args.what.startswith("frozen")
    cfg = RunConfig(backbones=[args.backbone], freeze="all" if frozen else "none", epochs=args.epochs,
                    batch_size=32, image_size=args.image_size, val_split=0.2 if frozen else 0.05, seed=0,
                    device=args.device, augment=False if frozen else None, patience=0)
    marks: dict[str, float] = {}
    stop = threading.Event()
    batches = []

    def resident_mb() -> float:  # now, not the peak: where in the run memory grows
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def listen(e: dict) -> None:
        now = time.process_time() if args.clock == "cpu" else time.perf_counter()
        kind = e["event"]
        if kind == "started":
            marks["started"] = now
            marks["rss_started"] = resident_mb()
        elif kind == "preparing" and e.get("what") == "computing features" and e.get("done") == e.get("total"):
            marks["features"] = now  # extraction done: what follows is the head's fit
            marks["rss_features"] = resident_mb()
        elif kind == "batch":
            batches.append(now)
            if not frozen and len(batches) >= args.steps:
                stop.set()
        elif kind == "epoch" and "epoch" not in marks:
            marks["epoch"] = now
            marks["val_accuracy"] = e.get("val_accuracy")
            marks["rss_fit"] = resident_mb()  # the fit's first point: its problem is built

    out = Path(args.out)
    t0 = time.perf_counter()
    result = Trainer(cfg, ds, out, [listen], stop).run()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(ds)
    row = {"what": args.what, "n": n, "peak_rss_mb": round(rss), "kind": os.environ.get("TLGUI_PICTURES") or "auto",
           "total_s": round(time.perf_counter() - t0, 1), "status": result.status}
    if frozen:  # from "started" to the last picture's features (the head's fit after it is timed apart)
        row["s_per_picture"] = (marks["features"] - marks["started"]) / n
        row["fit_s"] = round(marks["epoch"] - marks["features"], 2)  # to the fit's first reported point
        row["val_accuracy"] = marks.get("val_accuracy")
        row.update({k: round(v) for k, v in marks.items() if k.startswith("rss_")})
    else:
        steps = len(batches) - 1
        row["prepare_s_per_picture"] = (batches[0] - marks["started"]) / n  # decode-once store, if any
        row["step_s_per_picture"] = (batches[-1] - batches[0]) / max(steps * 32, 1)
        row["steps"] = steps
    return row


def measure(what: str, table: Path, args, env: dict | None = None, tag: str = "") -> dict:
    out = Path(args.work) / "runs" / f"{what}-{table.stem}{tag}"
    cmd = [sys.executable, __file__, "--child", what, "--table", str(table), "--out", str(out),
           "--image-size", str(args.image_size), "--steps", str(args.steps), "--backbone", args.backbone,
           "--threads", str(args.threads), "--epochs", "1", "--clock", args.clock, "--device", args.device]
    scaled = MEMORY_MB_AT_224 * (args.image_size / 224) ** 2
    full_env = {**os.environ, "TLGUI_CACHE_MB": "0", "TLGUI_DECODE_MB": f"{scaled:.3f}", **(env or {})}
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["tag"] = tag
    print(f"{what:>10} n={row['n']:>6} {tag:<14} {json.dumps(row)}  ({time.perf_counter() - t:.0f}s)", flush=True)
    return row


def write_markdown(rows: list[dict], args, path: Path) -> None:
    f = [r for r in rows if r["what"] == "frozen" and not r["tag"]]
    t = [r for r in rows if r["what"] == "finetune" and not r["tag"]]
    lines = ["# Memory and speed as the data set grows", "",
             f"`python bench/scale.py --sizes {args.sizes} --image-size {args.image_size} --steps {args.steps} --threads {args.threads} --write` "
             f"on {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other work, "
             f"torch threads {args.threads}. Backbone {args.backbone} at {args.image_size} px (Fashion-MNIST's 28 px "
             "pictures upscaled in the loader), batch 32, feature cache off. Each row is a fresh process; "
             "peak RSS is that process's `ru_maxrss` (dataset read, model, pictures and features together). "
             f"Seconds are {'CPU seconds of the measured process (all its threads): on a machine shared with other jobs, wall time swung 2-5x between runs minutes apart, CPU time far less' if args.clock == 'cpu' else 'wall-clock seconds'}.",
             "", "Why not 224 px: on this 2-core CPU, shared with four other jobs, a 224 px frozen pass runs at about "
             "20-40 pictures/s, so 85,000 pictures would take about an hour. Pixel memory scales with the square of "
             f"the size, so the in-memory budget was scaled the same way ({MEMORY_MB_AT_224} MB at 224 px = "
             f"{MEMORY_MB_AT_224 * (args.image_size / 224) ** 2:.0f} MB at {args.image_size} px): every size picks "
             "the store it would pick at 224 px.", "",
             "## Frozen feature extraction (pictures decoded, embedded and dropped batch by batch)", "",
             "Resident MB at three moments, then the peak: the run started, the last picture's features computed, "
             "the head's fit under way (its first reported point).", "",
             "| pictures | started | features | fit | peak RSS MB | RSS / smallest | s per picture | / smallest |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in f:
        lines.append(f"| {r['n']:,} | {r.get('rss_started', '')} | {r.get('rss_features', '')} | {r.get('rss_fit', '')} | "
                     f"{r['peak_rss_mb']} | {r['peak_rss_mb'] / f[0]['peak_rss_mb']:.2f} | "
                     f"{r['s_per_picture'] * 1000:.2f} ms | {r['s_per_picture'] / f[0]['s_per_picture']:.2f} |")
    lines += ["", f"## Fine-tuning: {args.steps} steps of 32 pictures (freeze none)", "",
              "The store is chosen by size: `memory` while the decoded pictures fit the budget, else a decode-once "
              "file on disk. Preparing = building that store, per picture of the set; step = training time per "
              "picture trained.", "",
              "| pictures | store | peak RSS MB | RSS / smallest | prepare s/picture | step s/picture | / smallest |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for r in t:
        lines.append(f"| {r['n']:,} | {r.get('store', '')} | {r['peak_rss_mb']} | {r['peak_rss_mb'] / t[0]['peak_rss_mb']:.2f} | "
                     f"{r['prepare_s_per_picture'] * 1000:.2f} ms | {r['step_s_per_picture'] * 1000:.2f} ms | "
                     f"{r['step_s_per_picture'] / t[0]['step_s_per_picture']:.2f} |")
    extra = [r for r in rows if r["tag"]]
    if extra:
        lines += ["", "## Variants side by side", "",
                  "| what | pictures | variant | peak RSS MB | prepare or extract s/picture | step s/picture | val accuracy |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for r in extra:
            prep = r.get("s_per_picture", r.get("prepare_s_per_picture", 0)) * 1000
            step = f"{r['step_s_per_picture'] * 1000:.2f} ms" if "step_s_per_picture" in r else ""
            acc = f"{r['val_accuracy']:.3f}" if r.get("val_accuracy") is not None else ""
            lines.append(f"| {r['what']} | {r['n']:,} | {r['tag']} | {r['peak_rss_mb']} | {prep:.2f} ms | {step} | {acc} |")
    lines += ["", *NOTES]
    path.write_text("\n".join(lines) + "\n")


NOTES = [
    "## Reading it", "",
    "- Frozen: a set that fits the in-memory budget is decoded at once, as before; a bigger one is decoded, "
    "embedded and dropped batch by batch. What stays is one block of features: 1,280 numbers a picture, kept as "
    "float16 past 256 MB (164 MB at 64,000). The head's fit reads that block where it lies: the train and "
    "validation parts are views of it, and the fit standardises 4,096 rows at a time. Those passing 20 MB blocks "
    "used to pile up as resident memory (glibc keeps freed blocks of up to 32 MB for reuse): 1,446 MB at the "
    "peak of the 64,000 run, 1,273 already at the fit's first point. A frozen run now has blocks of 4 MB or more "
    "given back to the system when freed (`inputs.return_freed_blocks`), and the fit standardises its blocks in "
    "place: at 64,000 the `fit` column is about 20 MB above `features`. Below 256 MB of features the fit keeps "
    "a float32 copy of its rows turned to their principal axes, fewer columns and faster passes (most of the "
    "16,000 row's 90 MB between the two). "
    "Before any of this, a 224 px frozen run held every decoded picture too: 1.45 GB at 1,000 and 2.15 GB at "
    "4,000 pictures, about 24 GB at 100,000.",
    "- Fine-tuning: once the decoded pictures pass the budget they go to a decode-once file under the run "
    "folder, read per batch (`os.preadv`, not a memory map, whose pages would count as the process's memory); "
    "memory stays flat. `stream` (decoded every epoch, in DataLoader workers on a GPU) costs no preparation "
    "but decodes again each epoch; it is used where the disk is short.",
    "- CPU bf16: this CPU's flags list avx512_bf16 and amx_bf16, yet bf16 autocast made fine-tuning steps "
    "slower and moved frozen validation accuracy by more than 0.3 points, so fp32 stays the default "
    "(`TLGUI_CPU_BF16=1` turns it on). Noise: CPU-time ratios between repeated runs differed by up to 20%.",
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1000,4000,16000,64000")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="/tmp/tlgui-scale")
    p.add_argument("--data", default=str(FASHION))
    p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                   help="also: stores side by side, 300 pictures against the old way, CPU bf16 against fp32")
    p.add_argument("--write", action="store_true")
    p.add_argument("--only", help="comma-separated parts to measure again (frozen, finetune, variants); "
                                  "the last run's other rows are kept")
    p.add_argument("--report", default=str(ROOT / "bench" / "SCALE.md"), help="where --write writes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--child")
    p.add_argument("--table")
    p.add_argument("--out")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: seconds of this process's CPU time (steady on a shared machine); wall: elapsed")
    args = p.parse_args()
    if args.child:
        args.what = args.child
        print(json.dumps(child(args)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    write_pictures(work, Path(args.data), max(sizes + [300]))
    print(f"pictures ready ({time.perf_counter() - t:.0f}s)", flush=True)
    saved = work / "rows.json"  # --only re-measures some rows and keeps the others of the last run
    rows: list[dict] = json.loads(saved.read_text()) if args.only and saved.exists() else []
    parts = set((args.only or "frozen,finetune,variants").split(","))
    target = Path(args.report)
    scaled_mb = MEMORY_MB_AT_224 * (args.image_size / 224) ** 2

    def add(row: dict) -> None:
        rows[:] = [r for r in rows if (r["what"], r["n"], r["tag"]) != (row["what"], row["n"], row["tag"])] + [row]
        rows.sort(key=lambda r: (bool(r["tag"]), r["what"] != "frozen" if not r["tag"] else 0, r["n"]))
        saved.write_text(json.dumps(rows))
        if args.write:
            write_markdown(rows, args, target)

    for n in sizes:
        if "frozen" in parts:
            add(measure("frozen", subset_table(work, n), args))
        if "finetune" in parts:
            row = measure("finetune", subset_table(work, n), args)
            row["store"] = "memory" if n * args.image_size ** 2 * 3 <= scaled_mb * 1024**2 else "disk"
            add(row)
    if "variants" in parts and args.variants:
        small, mid = subset_table(work, 300), subset_table(work, min(4000, max(sizes)))
        for kind in ("memory", "stream"):  # 300 pictures: decode all first (as before) against batch by batch
            add(measure("frozen", small, args, {"TLGUI_PICTURES": kind}, f"300 {kind}"))
        for kind in ("memory", "disk", "stream"):
            add(measure("finetune", mid, args, {"TLGUI_PICTURES": kind}, f"store {kind}"))
        for flag in ("0", "1"):  # CPU bf16 autocast against fp32
            name = "bf16" if flag == "1" else "fp32"
            add(measure("frozen", subset_table(work, 1000), args, {"TLGUI_CPU_BF16": flag}, f"{name}"))
            add(measure("finetune", subset_table(work, 1000), args, {"TLGUI_CPU_BF16": flag}, f"{name}"))
    if args.write and rows:  # `--only report`: the saved rows written out again, nothing measured
        write_markdown(rows, args, target)


if __name__ == "__main__":
    main()
