"""How long the frozen head's fit takes on 10,000 x 1,280 real features, stored as float32 and as
float16 (what runs keep past 256 MB of features), side by side. Writes its section of bench/QUALITY.md.

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

import report  # noqa: E402
from probe_vs_lr import Head  # noqa: E402
from quality import fit_features  # noqa: E402

from tlgui.training.probe import run_probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    feats, y = fit_features(10_000)
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
    lines = ["10,000 x 1,280 real features (EfficientNet-Lite0 of Fashion-MNIST at 32 px), 8,000 to fit and 2,000 to "
             f"choose C, 2 threads on a shared 2-core CPU; best of {args.repeats}. Walk over C (warm-started), then the "
             "refit on all rows.", "",
             "| features | wall s | CPU s | L-BFGS steps | C | validation accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {d} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['steps']} | {r['c']:g} | {r['val']:.3f} |"
              for d, r in best.items()]
    lines.append(f"\nfloat16 / float32 wall time: {best['float16']['wall'] / best['float32']['wall']:.2f}. A run keeps its "
                 "features as float16 only past 256 MB of them (50,000 pictures at 1,280 wide): there the fit reads them "
                 "where they lie, all 1,280 columns a block at a time, instead of keeping a float32 copy turned to "
                 "their principal axes; memory, not seconds, is what such a set runs short of.")
    report.put(ROOT / "bench" / "QUALITY.md", "## The fit on float32 and float16 features (`bench/fit_speed.py`)",
               "\n".join(lines))


if __name__ == "__main__":
    main()
