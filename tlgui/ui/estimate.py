"""The page's time estimates: the engine's (`training/estimate.py`), with this machine's speed measured
once in a background thread, never on the request path.

The page compares backbones before any is built, so it asks the engine's `rough_seconds`, which
reckons each one's forward pass from its GFLOPs at the measured speed. The speed
is measured as the trainer's own probe measures it, so a first run on the reference backbone
finds it measured already.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("tlgui.ui")
TASKS = ("image", "text")


class SpeedProbe:
    """Seconds per GFLOP of backbone forward pass on this machine, by task, each measured once
    in a background thread (never on the request path)."""

    def __init__(self) -> None:
        self.device = "cpu"
        self._rates: dict[str, float | None] = {}
        self._done = {task: threading.Event() for task in TASKS}
        self._lock = threading.Lock()

    def start(self, task: str = "image") -> None:
        with self._lock:
            if task not in TASKS or task in self._rates:
                return
            self._rates[task] = None
        threading.Thread(target=self._measure, args=(task,), name=f"speed-probe-{task}", daemon=True).start()

    def seconds_per_gflop(self, task: str = "image", wait: float = 0.0) -> float | None:
        self.start(task)
        if task in self._done:
            self._done[task].wait(wait)
        return self._rates.get(task)

    def measuring(self, task: str) -> bool:
        return task in self._done and not self._done[task].is_set()

    def _measure(self, task: str) -> None:
        try:
            from ..config import RunConfig
            from ..data.batches import extract_batch
            from ..training.device import pick_device
            from ..training.timing import seconds_per_gflop

            device = pick_device("auto")
            self._rates[task] = seconds_per_gflop(task, device, extract_batch(RunConfig().batch_size, device))
            self.device = device.type
        except Exception:
            log.warning("could not time a %s test batch; training times will not be estimated", task, exc_info=True)
        finally:
            self._done[task].set()
