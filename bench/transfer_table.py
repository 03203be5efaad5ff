"""Few labels, many unlabelled pictures: which kind of transfer helps most?

Fashion-MNIST with 20 labelled pictures per class (200 in all) for training, 500 other labelled
pictures (the official test images) for validation, and 5000 further training pictures whose
labels are thrown away. Compared, by validation accuracy and time:

- ImageNet weights (efficientnet_lite0), frozen and fine-tuned;
- an own autoencoder and an own VAE pretrained on the unlabelled pictures, frozen and fine-tuned;
- the ImageNet backbone fused with the own autoencoder's encoder;
- no pretraining at all (the same architectures, randomly initialised, everything trained).

    python bench/transfer_table.py [--threads 1] [--out bench/TRANSFER_RESULTS.md]

Writes a Markdown table. Times are wall-clock and rough when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from realdata import encode_image, fashion_mnist, write_class_zip  # noqa: E402

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.training.pretrain import PretrainConfig, pretrain, read_images  # noqa: E402
from tlgui.training.train import train  # noqa: E402


def make_data(root: Path, labelled: int, unlabelled: int, val: int) -> tuple[Path, Path]:
    """A labelled zip with train/ and val/ folders, and a zip of loose unlabelled pictures that
    share no picture with the labelled ones."""
    per_class = labelled + unlabelled // 10
    images, labels, names = fashion_mnist(per_class, seed=1)
    keep, loose = [], []
    for c in range(10):  # rows are grouped by class
        rows = np.flatnonzero(labels == c)
        keep += rows[:labelled].tolist()
        loose += rows[labelled:].tolist()
    val_images, val_labels, _ = fashion_mnist(val, split="test", seed=0)
    all_images = np.concatenate([images[keep], val_images])
    all_labels = np.concatenate([labels[keep], val_labels])
    splits = {"train": range(len(keep)), "val": range(len(keep), len(all_images))}
    labelled_zip = write_class_zip(root / "labelled.zip", all_images, all_labels, names, splits=splits)
    unlabelled_zip = root / "unlabelled.zip"
    with zipfile.ZipFile(unlabelled_zip, "w") as z:
        for k, i in enumerate(np.random.default_rng(0).permutation(loose)):
            z.writestr(f"pictures/{k}.png", encode_image(images[i]))
    return labelled_zip, unlabelled_zip


def run_pretraining(method: str, data: Path, out: Path, size: int, epochs: int) -> dict:
    t = time.perf_counter()
    result = pretrain(PretrainConfig(method=method, epochs=epochs, image_size=size, batch_size=32), read_images(data), out)
    return {"method": method, "bundle": str(result.bundle), "seconds": time.perf_counter() - t,
            "val_loss": result.losses.get("val_loss")}


def run_classifier(name: str, data: Path, out: Path, **settings) -> dict:
    config = RunConfig(patience=0, seed=0, batch_size=16, **settings)
    t = time.perf_counter()
    result = train(config, read_dataset(data), out)
    seconds = time.perf_counter() - t
    row = {"name": name, "backbones": config.backbones, "freeze": config.freeze, "epochs": config.epochs,
           "size": config.image_size, "accuracy": result.metrics["accuracy"], "macro_f1": result.metrics["macro_f1"],
           "seconds": seconds, "bundle": str(result.bundle)}
    print(f"{name}: accuracy {row['accuracy']:.3f}  {seconds:.0f}s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels-per-class", type=int, default=20)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--unlabelled", type=int, default=5000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--frozen-epochs", type=int, default=30)
    ap.add_argument("--tuned-epochs", type=int, default=10)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "TRANSFER_RESULTS.md"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, frozen, tuned = args.image_size, args.frozen_epochs, args.tuned_epochs
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tlgui-transfer-") as tmp:
        tmp = Path(tmp)
        os.environ["TLGUI_CACHE_DIR"] = str(tmp / "features")  # every run computes its own features
        labelled, unlabelled = make_data(tmp, args.labels_per_class, args.unlabelled, args.val_per_class)
        encoders = {}
        for method in ("autoencoder", "vae"):
            encoders[method] = run_pretraining(method, unlabelled, tmp / method, size, args.pretrain_epochs)
            print(f"pretrained {method}: val loss {encoders[method]['val_loss']:.4f}  "
                  f"{encoders[method]['seconds']:.0f}s", flush=True)
        ae, vae = encoders["autoencoder"]["bundle"], encoders["vae"]["bundle"]
        scratch = {"pretrained": False, "backbone_lr_scale": 1.0}  # nothing to preserve: one learning rate
        # (key, name, backbones, freeze, epochs, extra settings, the frozen row whose bundle a fine-tuning starts from)
        plan = [
            ("inet", "ImageNet (efficientnet_lite0), frozen", ["efficientnet_lite0"], "all", frozen, {}, None),
            ("inet64", "ImageNet (efficientnet_lite0), frozen, 64 px", ["efficientnet_lite0"], "all", frozen,
             {"image_size": 64}, None),
            ("inet_ft", "ImageNet (efficientnet_lite0), fine-tuned", ["efficientnet_lite0"], "none", tuned, {}, "inet"),
            ("ae", "own autoencoder, frozen", [ae], "all", frozen, {}, None),
            ("ae_ft", "own autoencoder, fine-tuned", [ae], "none", tuned, {}, "ae"),
            ("vae", "own VAE, frozen", [vae], "all", frozen, {}, None),
            ("vae_ft", "own VAE, fine-tuned", [vae], "none", tuned, {}, "vae"),
            ("fused", "ImageNet + own autoencoder (concat), frozen", ["efficientnet_lite0", ae], "all", frozen, {}, None),
            ("scratch_ae", "no pretraining (the autoencoder's architecture)", [ae], "none", args.scratch_epochs,
             scratch, None),
            ("scratch_inet", "no pretraining (efficientnet_lite0)", ["efficientnet_lite0"], "none", args.scratch_epochs,
             scratch, None),
        ]
        rows: dict[str, dict] = {}
        for key, name, backbones, freeze, epochs, extra, start in plan:
            settings = {"backbones": backbones, "freeze": freeze, "epochs": epochs, "image_size": size, **extra}
            if start:
                settings["init"] = rows[start]["bundle"]
            rows[key] = run_classifier(name, labelled, tmp / key, **settings)
    total = time.perf_counter() - t_all
    Path(args.out).write_text(report(args, encoders, list(rows.values()), total))
    print(f"wrote {args.out} ({total:.0f}s in all)")


def report(args, encoders: dict, rows: list[dict], total: float) -> str:
    n_lab, n_val = 10 * args.labels_per_class, 10 * args.val_per_class
    lines = [
        "# Transfer with few labels: Fashion-MNIST",
        "",
        f"{n_lab} labelled training pictures ({args.labels_per_class} per class), {n_val} labelled validation "
        f"pictures (the official test images), and {args.unlabelled} unlabelled training pictures (no overlap) "
        f"for the own encoders. Pictures at {args.image_size} px unless said. Classifiers use tlgui's defaults "
        f"(AdamW, learning rate 0.001, warm-up then cosine decay) with batch 16: a frozen backbone's head trains "
        f"{args.frozen_epochs} epochs; fine-tuning starts from that frozen run's bundle (`--init`, so the head "
        f"is already trained) and trains everything {args.tuned_epochs} more epochs, the backbone at 0.1x the "
        f"head's learning rate, with augmentation; no pretraining trains everything {args.scratch_epochs} epochs "
        "at one learning rate. The model kept is the epoch of lowest validation loss; its accuracy on those "
        "validation pictures is reported.",
        "",
        f"Produced by `python bench/transfer_table.py{' --threads ' + str(args.threads) if args.threads else ''}` "
        f"on {platform.machine()} with {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), {total / 60:.1f} minutes in all. Other work shared the CPU, "
        "so times are rough; compare them as ratios.",
        "",
        "## Pretraining without labels",
        "",
        "| encoder | pictures | epochs | validation loss | time (s) |",
        "|---|---|---|---|---|",
    ]
    for method, e in encoders.items():
        unit = "MSE per pixel value" if method == "autoencoder" else "cross-entropy + KL per pixel value"
        lines.append(f"| {method} | {args.unlabelled} | {args.pretrain_epochs} | {e['val_loss']:.4f} ({unit}) "
                     f"| {e['seconds']:.0f} |")
    lines += ["", f"## Classifier on the {n_lab} labelled pictures", "",
              "| transfer | freeze | epochs | size | val accuracy | macro F1 | time (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['freeze']} | {r['epochs']} | {r['size']} | {r['accuracy']:.3f} "
                     f"| {r['macro_f1']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "Chance is 0.100. Times leave out pretraining (above) and, for fine-tuning, the frozen run it "
              "starts from.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
