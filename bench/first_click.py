"""The first click: the built-in example with every default, end to end, against an earlier tlgui.

Runs `python -m tlgui train assets/examples/fashion-mnist` with the page's defaults of this tree
(`--freeze auto`, the default budget) and of an earlier tree (its default, `--freeze all`),
alternately, each with an empty feature cache (a newcomer's first click), and prints the
times and their ratio. The earlier tree is exported with `git archive` (nothing in the
repository changes).

    python bench/first_click.py [--rev COMMIT] [--rounds 2]
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

ROOT = Path(__file__).resolve().parents[1]


def run(tree: Path, flags: list[str], work: Path, name: str) -> tuple[float, dict]:
    env = {**os.environ, "TLGUI_CACHE_DIR": str(work / f"cache-{name}"), "PYTHONPATH": str(tree)}
    out = work / f"run-{name}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tlgui", "train", str(ROOT / "assets/examples/fashion-mnist"), "--out", str(out),
                    *flags], check=True, cwd=tree, env=env, capture_output=True)
    seconds = time.perf_counter() - t
    return seconds, json.loads((out / "results.json").read_text())["metrics"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default="32474e7")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tlgui-first-click-"))
    old = work / "old"
    old.mkdir()
    archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    times: dict[str, list[float]] = {"earlier (freeze all, 10 epochs)": [], "this (freeze auto)": []}
    for r in range(args.rounds):
        s, m_old = run(old, ["--freeze", "all"], work, f"old{r}")
        times["earlier (freeze all, 10 epochs)"].append(s)
        s, m_new = run(ROOT, ["--freeze", "auto"], work, f"new{r}")
        times["this (freeze auto)"].append(s)
        print(f"round {r}: earlier {times['earlier (freeze all, 10 epochs)'][-1]:.1f} s (val acc "
              f"{m_old['accuracy']:.3f}), this {s:.1f} s (val acc {m_new['accuracy']:.3f}, "
              f"{m_new.get('recipe', {}).get('chosen')})", flush=True)
    a, b = (min(v) for v in times.values())
    print(f"best of {args.rounds}: earlier {a:.1f} s, this {b:.1f} s, ratio this/earlier {b / a:.2f}")


if __name__ == "__main__":
    main()
