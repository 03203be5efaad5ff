"""The first click, as a newcomer has it: a fresh server, cold caches, headless Chromium; the page
opened, Train pressed with every default on the built-in example, model.zip downloaded.

Times this tree against an earlier one (`--rev`, exported with `git archive`; nothing in the
repository changes), alternately, each round with a fresh server and empty caches (features,
ONNX files, runs), and prints each phase and the ratio of the totals. The server's own start
(importing torch and gradio) comes before the page is opened and is not counted.

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
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CHROMIUM, CHROMIUM_ARGS, answers, free_port  # noqa: E402 - as the tests start the app

LOAD_S = 120_000  # ms


def click_through(url: str, saved: Path) -> dict:
    """Seconds from opening the page to the data shown, to Finished, to model.zip on disk."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000}).new_page()
        t0 = time.perf_counter()
        page.goto(url)
        expect(page.locator("#dataset-summary")).to_contain_text("300 images used", timeout=LOAD_S)
        shown = time.perf_counter()
        page.click("#train-btn")
        expect(page.locator("#status")).to_contain_text("Finished", timeout=LOAD_S)
        finished = time.perf_counter()
        with page.expect_download(timeout=LOAD_S) as download:
            page.click("#download-btn")
        download.value.save_as(saved)
        done = time.perf_counter()
        status = page.locator("#status").inner_text()
        browser.close()
    return {"page": shown - t0, "train": finished - shown, "download": done - finished, "total": done - t0,
            "status": status.splitlines()[0][:80]}


def one_round(tree: Path, work: Path, name: str) -> dict:
    base = work / name
    dirs = {k: base / k for k in ("runs", "gradio", "tmp", "features", "onnx")}
    for d in dirs.values():
        d.mkdir(parents=True)
    env = {**os.environ, "TLGUI_RUNS_DIR": str(dirs["runs"]), "GRADIO_TEMP_DIR": str(dirs["gradio"]),
           "TMPDIR": str(dirs["tmp"]), "TLGUI_CACHE_DIR": str(dirs["features"]), "TLGUI_ONNX_DIR": str(dirs["onnx"]),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(tree)}
    proc, url = start(tree, env, base / "app.log")
    try:
        times = click_through(url, base / "model.zip")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (base / "model.zip").stat().st_size > 0
    results = next(dirs["runs"].rglob("results.json"))
    times["run"] = json.loads(results.read_text())["elapsed"]
    return times


def start(tree: Path, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """The tree's app.py on a free port, once it answers."""
    url = f"http://127.0.0.1:{(port := free_port())}"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=tree, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    while not answers(url):
        if proc.poll() is not None:
            raise RuntimeError(f"the app did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default="e220085", help="the earlier tree")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tlgui-first-click-"))
    old = work / "old-tree"
    old.mkdir()
    archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    totals: dict[str, list[float]] = {"earlier": [], "this": []}
    for r in range(args.rounds):
        for label, tree in (("earlier", old), ("this", ROOT)):
            t = one_round(tree, work, f"{label}{r}")
            totals[label].append(t["total"])
            print(f"round {r} {label:8s} total {t['total']:.1f} s (page {t['page']:.1f}, train {t['train']:.1f} of "
                  f"which the run {t['run']:.1f}, download {t['download']:.1f}): {t['status']}", flush=True)
    a, b = min(totals["earlier"]), min(totals["this"])
    print(f"best of {args.rounds}: earlier {a:.1f} s, this {b:.1f} s, ratio this/earlier {b / a:.2f}")


if __name__ == "__main__":
    main()
