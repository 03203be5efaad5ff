"""How long the frozen head's fit takes on 10,000 x 1,280 real features, stored as float32 and as
float16 (what runs keep past 256 MB of features), side by side. Appends to bench/QUALITY.md.

The features are EfficientNet-Lite0's of 10,000 Fashion-MNIST pictures at 32 px (computed once and
kept in the temp folder, as `bench/quality.py` does); 8,000 train the head, 2,000 choose its C.
Wall and CPU seconds of `probe.run_probe` (the walk over C, then the refit on all rows), 2 threads.

    python bench/fit_speed.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from probe_vs_lr import Head  # noqa: E402
from quality import fit_features  # noqa: E402
from tlgui.probe import run_probe  # noqa: E402


def fold_ratio(feats: torch.Tensor, y: torch.Tensor, passes: int = 30) -> None:
    """CPU seconds of one forward and backward pass over 8,000 rows, with the scale folded into the
    linear layer (head_fit's concat path) and standardising a copy first (its general path),
    alternated in one process."""
    import torch.nn.functional as F

    from tlgui import head_fit

    model = Head(feats.shape[1], 10).eval()  # no dropout, as in a fit
    x, labels = [feats[:8_000]], y[:8_000]
    model.scale.fit(x)
    general = lambda: model.head(model.fusion(model.scale(x))).float()  # noqa: E731
    folded = lambda: head_fit._logits(model, x, slice(0, 8_000))  # noqa: E731
    seconds = {"folded": 0.0, "general": 0.0}
    with head_fit.flush_denormals():  # as a fit runs
        for _ in range(passes):
            for name, fn in (("folded", folded), ("general", general)):
                c = time.process_time()
                logits = fn()
                logits.register_hook(head_fit.no_denormals)
                F.cross_entropy(logits, labels).backward()
                seconds[name] += time.process_time() - c
    print({k: round(v / passes * 1000, 1) for k, v in seconds.items()}, "ms CPU a pass; general / folded:",
          round(seconds["general"] / seconds["folded"], 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fold-only", action="store_true", help="only time a step with the scale folded in or not")
    args = ap.parse_args()
    torch.set_num_threads(2)
    feats, y = fit_features(10_000)
    if args.fold_only:
        fold_ratio(feats, y)
        return
    n_tr = 8_000
    rows = []
    for dtype in [torch.float32, torch.float16] * args.repeats:
        model = Head(feats.shape[1], 10)
        t, c = time.perf_counter(), time.process_time()
        probe = run_probe(model, [feats.to(dtype)], y, n_tr, "auto", 0, 0, lambda *a, **k: None, lambda: None, t)
        rows.append({"dtype": str(dtype).split(".")[-1], "wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                     "steps": probe.steps, "c": probe.c, "val": probe.val_accuracy})
        print(rows[-1], flush=True)
    best = {d: min((r for r in rows if r["dtype"] == d), key=lambda r: r["wall"]) for d in ("float32", "float16")}
    lines = ["", "## Speed of the frozen fit (`bench/fit_speed.py`)", "",
             "10,000 x 1,280 real features (EfficientNet-Lite0 of Fashion-MNIST at 32 px), 8,000 to fit and 2,000 to "
             "choose C, 2 threads on a shared 2-core CPU; best of "
             f"{args.repeats}. Walk over C (warm-started), then the refit on all rows.", "",
             "| features | wall s | CPU s | L-BFGS steps | C | validation accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {d} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['steps']} | {r['c']:g} | {r['val']:.3f} |"
              for d, r in best.items()]
    lines.append(f"\nfloat16 / float32 wall time: {best['float16']['wall'] / best['float32']['wall']:.2f}. "
                 "Target <= 2 s: not met.")
    with open(ROOT / "bench" / "QUALITY.md", "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
