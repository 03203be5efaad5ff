"""A whole frozen run against the shortest script that does the same job, as whole processes.

The script (written out below, about 40 lines): decode each picture with Pillow at 224 px,
features from an onnxruntime session of EfficientNet-Lite0 (the ONNX file tlgui exported, so
both read the same network), scikit-learn's logistic regression on 80% and scored on the rest.
tlgui: `python -m tlgui train DATA --backbone efficientnet_lite0 --freeze all` with an empty
feature cache. 400 Fashion-MNIST pictures of the test split (never in the built-in example),
rounds alternating; prints each time, the best of each and their ratio.

    python bench/frozen_vs_script.py [--rounds 3] [--n 400]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SCRIPT = '''
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from sklearn.linear_model import LogisticRegression

data, model = Path(sys.argv[1]), sys.argv[2]
paths, labels = [], []
for k, folder in enumerate(sorted(p for p in data.iterdir() if p.is_dir())):
    for f in sorted(folder.iterdir()):
        paths.append(f)
        labels.append(k)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
feats = []
for start in range(0, len(paths), 16):
    batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR))
                      for p in paths[start:start + 16]])
    feats.append(session.run(None, {name: batch.transpose(0, 3, 1, 2).astype(np.float32) / 255})[0])
x, y = np.concatenate(feats), np.array(labels)
order = np.random.default_rng(0).permutation(len(y))
cut = int(0.8 * len(y))
train, val = order[:cut], order[cut:]
clf = LogisticRegression(max_iter=1000).fit(x[train], y[train])
print(f"validation accuracy {clf.score(x[val], y[val]):.4f}")
'''


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, next(line for line in out.splitlines() if "validation accuracy" in line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    from realdata import fashion_mnist, write_class_folders

    from tlgui.nets.backbones import build_backbone
    from tlgui.training.onnx_features import onnx_bytes

    work = Path(tempfile.mkdtemp(prefix="tlgui-frozen-vs-script-"))
    images, labels, names = fashion_mnist(args.n // 10, split="test", seed=3)
    data = write_class_folders(work / "data", images, labels, names)
    env = {**os.environ, "TLGUI_ONNX_DIR": str(work / "onnx"), "PYTHONPATH": str(ROOT)}
    os.environ["TLGUI_ONNX_DIR"] = env["TLGUI_ONNX_DIR"]
    model = work / "lite0.onnx"
    model.write_bytes(onnx_bytes(build_backbone("efficientnet_lite0", True)))  # tlgui's cache holds it too
    (work / "script.py").write_text(SCRIPT)
    times: dict[str, list[float]] = {"script": [], "tlgui": []}
    for r in range(args.rounds):
        s, acc_s = timed([sys.executable, str(work / "script.py"), str(data), str(model)], env)
        t, acc_t = timed([sys.executable, "-m", "tlgui", "train", str(data), "--backbone", "efficientnet_lite0",
                          "--freeze", "all", "--out", str(work / f"run{r}")],
                         {**env, "TLGUI_CACHE_DIR": str(work / f"features{r}")})
        times["script"].append(s)
        times["tlgui"].append(t)
        print(f"round {r}: script {s:.1f} s ({acc_s}), tlgui {t:.1f} s ({acc_t})", flush=True)
    a, b = min(times["script"]), min(times["tlgui"])
    print(f"best of {args.rounds}: script {a:.1f} s, tlgui {b:.1f} s, ratio tlgui/script {b / a:.2f}")


if __name__ == "__main__":
    main()
