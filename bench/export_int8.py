"""int8 against float32 ONNX: file size, speed and agreement, measured side by side in one run.

    python bench/export_int8.py [--data DIR] [--image-size N] [--write]

A frozen EfficientNet-Lite0 classifier is trained by the engine on the built-in example
(assets/examples/fashion-mnist, 300 real pictures) with `--export onnx`; the int8 file is made
from it by the engine's own quantisation (static, calibrated on the training pictures) and
compared with the model on the validation pictures, without the 97% gate that a save applies. Both files then run on the same pictures in
alternating rounds (one thread, then all threads); the medians give the speed ratio.
`--write` also writes bench/EXPORT_RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.outputs.export import _closest_int8  # noqa: E402
from tlgui.outputs.export_check import pixels, probe_from_dataset, reference  # noqa: E402
from tlgui.training.train import train  # noqa: E402


def session(data: bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def timed(files: dict[str, bytes], x: np.ndarray, threads: int, rounds: int) -> dict[str, float]:
    """Median seconds per picture of each file, the files taking turns round by round."""
    sessions = {k: session(v, threads) for k, v in files.items()}
    for s in sessions.values():
        s.run(None, {"pixels": x[:8]})
    times = {k: [] for k in files}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for start in range(0, len(x), 16):
                s.run(None, {"pixels": x[start : start + 16]})
            times[k].append((time.perf_counter() - t0) / len(x))
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "assets" / "examples" / "fashion-mnist"))
    ap.add_argument("--image-size", type=int, default=None, help="default: the backbone's own (224)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    ds = read_dataset(args.data)
    config = RunConfig(freeze="all", epochs=10, image_size=args.image_size, export=["onnx"])
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, ds, tmp)
        with zipfile.ZipFile(result.bundle) as z:
            meta = json.loads(z.read("tlgui.json"))
            files = {"onnx": z.read(meta["exports"]["onnx"]["file"])}
    size = meta["preprocessing"]["image_size"]
    # the engine's int8 file and check, without its 97% gate, so the figures show whatever it measures
    probe = probe_from_dataset(ds, size)
    expected = reference(result.model, probe)
    files["onnx-int8"], how, got, _ = _closest_int8(files["onnx"], probe, None, expected)
    q = {"agreement": float((got.argmax(1) == expected.argmax(1)).mean()), "max_abs_diff": float(np.abs(got - expected).max()),
         "checked": len(probe), "checked_on": probe.source, "quantization": how}
    x = pixels(probe.inputs)
    one = timed(files, x, 1, args.rounds)
    cores = os.cpu_count() or 1
    many = timed(files, x, cores, args.rounds)
    rows = [
        ("file size (MB)", f"{len(files['onnx']) / 1e6:.1f}", f"{len(files['onnx-int8']) / 1e6:.1f}",
         f"{len(files['onnx-int8']) / len(files['onnx']):.2f}x"),
        ("ms per picture, 1 thread", f"{one['onnx'] * 1e3:.2f}", f"{one['onnx-int8'] * 1e3:.2f}",
         f"{one['onnx'] / one['onnx-int8']:.2f}x as fast"),
        (f"ms per picture, {cores} threads", f"{many['onnx'] * 1e3:.2f}", f"{many['onnx-int8'] * 1e3:.2f}",
         f"{many['onnx'] / many['onnx-int8']:.2f}x as fast"),
        ("top-1 agreement with the model", f"{meta['exports']['onnx']['agreement']:.2%}", f"{q['agreement']:.2%}",
         f"on {q['checked']} {q['checked_on']}"),
        ("largest probability difference", f"{meta['exports']['onnx']['max_abs_diff']:.2g}", f"{q['max_abs_diff']:.2g}", ""),
    ]
    table = ["| | float32 ONNX | int8 ONNX | int8 against float32 |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join([
        "# int8 against float32 ONNX", "",
        f"`python bench/export_int8.py --write` on {platform.processor() or platform.machine()}, {cores} cores, "
        f"onnxruntime CPU; EfficientNet-Lite0 (frozen) trained by the engine on {Path(args.data).name} at "
        f"{size} px, validation accuracy {result.metrics.get('accuracy', float('nan')):.3f}; the int8 file is the "
        f"engine's ({q['quantization']}). Speeds: medians of {args.rounds} alternating rounds over {len(x)} "
        "validation pictures in batches of 16.", "", *table, ""])
    print(text)
    if args.write:
        (ROOT / "bench" / "EXPORT_RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
