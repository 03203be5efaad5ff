"""Progress events of a run, and the listeners that record them.

An event is a plain dict with an `event` key: `started`, `preparing`, `batch`, `epoch`,
`warning`, `note` (what the run decided, in words), `finished`, `stopped` or `failed`. Epochs of a
frozen run are points of its head's fit (`fit: true`, `epoch` counting L-BFGS steps). The CLI prints them, `metrics.jsonl` records the epochs,
the app draws them.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

Listener = Callable[[dict], None]


class StopRequested(Exception):
    """Raised at a batch boundary once a stop was asked for."""


class Emitter:
    def __init__(self, listeners: list[Listener] | tuple = (), stop: threading.Event | None = None):
        self.listeners = list(listeners)
        self.stop = stop or threading.Event()

    def __call__(self, event: str, **data) -> None:
        payload = {"event": event, **data}
        for listen in self.listeners:
            listen(payload)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise StopRequested


class MetricsLog:
    """Writes `metrics.jsonl`: one line per epoch and split, flushed at once so readers see it live.
    Besides the loss, a line holds whichever of the split's accuracy or (pretraining) reconstruction
    and KL terms the epoch reported."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.write_text("")

    def __call__(self, e: dict) -> None:
        if e["event"] != "epoch":
            return
        with self.path.open("a") as f:
            for split in ("train", "val"):
                if e.get(f"{split}_loss") is None:
                    continue
                row = {"epoch": e["epoch"], "split": split, "loss": e[f"{split}_loss"], "elapsed": e["elapsed"]}
                row.update({k: e[f"{split}_{k}"] for k in ("accuracy", "recon", "kl") if f"{split}_{k}" in e})
                f.write(json.dumps(row) + "\n")


def print_progress(e: dict, out=None) -> None:
    """The CLI's listener, for training and pretraining alike: one line per epoch, per phase and per
    warning; the time estimate first."""
    out = out or sys.stdout  # looked up at each call: whoever redirected it meanwhile gets the lines
    kind = e["event"]
    if kind == "started" and "method" in e:
        print(f"pretraining a {e['method']} on {e['device']}: {e['train_size']} train / {e['val_size']} val images "
              f"at {e['image_size']} px, {e['epochs']} epochs", file=out, flush=True)
    elif kind == "started":
        print(f"training on {e['device']}: {e['train_size']} train / {e['val_size']} val, "
              f"{e['epochs']} epochs, backbones {', '.join(e['backbones'])} (freeze {e['freeze']})", file=out, flush=True)
        if e.get("estimate"):
            print(f"estimated time: {e['estimate']['text']}", file=out, flush=True)
    elif kind == "estimate":  # a run that timed nothing before it started tells it from its first batches
        print(f"estimated time: {e['text']}", file=out, flush=True)
    elif kind == "warning":
        print(f"warning: {e['message']}", file=out, flush=True)
    elif kind == "note":
        print(e["message"], file=out, flush=True)
    elif kind == "preparing" and e.get("done") == e.get("total"):
        print(f"{e['what']}: {e['total']} done", file=out, flush=True)
    elif kind == "epoch":
        print(_epoch_line(e), file=out, flush=True)
    elif kind == "stopped":
        print("stopped: kept the best model so far", file=out, flush=True)


def _epoch_line(e: dict) -> str:
    """`fit step N  C c ...` for a head's fit, else `epoch N/M ...`; accuracy where the epoch has it,
    a VAE's reconstruction and KL terms where it has those."""
    def scores(split: str) -> str:
        acc = f" acc {e[f'{split}_accuracy']:.3f}" if e.get(f"{split}_accuracy") is not None else ""
        return f"{split} loss {e[f'{split}_loss']:.4f}{acc}"

    parts = [f"fit step {e['epoch']}  C {e['c']:g}" if e.get("fit") else f"epoch {e['epoch']}/{e['epochs']}",
             scores("train")]
    if e.get("val_loss") is not None:
        parts.append(scores("val"))
    split = "val" if e.get("val_loss") is not None else "train"
    if f"{split}_kl" in e:
        parts.append(f"(recon {e[f'{split}_recon']:.4f}, kl {e[f'{split}_kl']:.4f})")
    return "  ".join(parts) + f"  {e['elapsed']:.1f}s" + ("  *" if e.get("best") else "")


def format_seconds(seconds: float, rough: bool = False) -> str:
    """`45 s`, `3 min 05 s`, `2 h 10 min`; `rough` for estimates: `45 s`, `3 min`, `1.5 h`."""
    if rough:
        if seconds < 90:
            return f"{max(1, round(seconds))} s"
        return f"{round(seconds / 60)} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"
    s = max(1, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(s / 60)
    return f"{m // 60} h {m % 60:02d} min"
