"""A rough training-time estimate: one timed test batch per server and kind of data, scaled by
GFLOPs and data size.

It only has to tell 30 seconds from 30 minutes, so it ignores everything but the passes through
the backbones. Pictures and texts get a probe each: a transformer does far more arithmetic per
second than a mobile convolutional network, so one rate for both would be off tenfold.
"""

from __future__ import annotations

import logging
import threading
import time

from ..backbones import BackboneInfo

log = logging.getLogger("tlgui.ui")
PROBES = {"image": "efficientnet_lite0", "text": "minilm_l6"}
PROBE_BATCH = 8
TEXT_TOKENS = 64  # a typical review or message, in tokens
PROBE_TEXT = " ".join(["the story moves slowly but the actors carry it and the ending works"] * 5)
DECODE_SECONDS = 0.002  # per picture, decoded and resized once per run
BACKWARD_FACTOR = 3.0  # forward + backward costs about three forwards


class SpeedProbe:
    """Seconds per GFLOP of backbone forward pass on this machine, by task, each measured once
    in a background thread (never on the request path)."""

    def __init__(self) -> None:
        self.device = "cpu"
        self._rates: dict[str, float | None] = {}
        self._done = {task: threading.Event() for task in PROBES}
        self._lock = threading.Lock()

    def start(self, task: str = "image") -> None:
        with self._lock:
            if task not in PROBES or task in self._rates:
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
            import torch

            from ..backbones import build_backbone, get_info
            from ..train import pick_device

            device = pick_device("auto")
            info = get_info(PROBES[task])
            net = build_backbone(info.name, pretrained=task == "text").to(device).eval()
            if task == "image":
                x = torch.rand(PROBE_BATCH, 3, info.input_size, info.input_size, device=device)
            else:
                x = [PROBE_TEXT] * PROBE_BATCH
            with torch.inference_mode():
                net(x)  # the first pass pays for allocation and kernel choice
                best = float("inf")
                for _ in range(2):  # the faster of two: other work on the machine only ever slows a pass
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    net(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - t0)
            self.device = device.type
            self._rates[task] = best / (PROBE_BATCH * gflops_per_example(info, None))
        except Exception:
            log.warning("could not time a %s test batch; training times will not be estimated", task, exc_info=True)
        finally:
            self._done[task].set()


def gflops_per_example(info: BackboneInfo, image_size: int | None, max_length: int = 128) -> float:
    if info.task == "text":
        return info.gflops or 2 * info.params * min(TEXT_TOKENS, max_length) / 1e9
    base = info.gflops or 2 * info.params / 1e9
    size = image_size or info.input_size
    return base * (size / info.input_size) ** 2


def training_seconds(infos: list[BackboneInfo], n_examples: int, *, epochs: int, val_split: float, freeze: str,
                     augment: bool | None, image_size: int | None, seconds_per_gflop: float) -> float:
    """Frozen backbones without augmentation see each example once (their features are cached);
    otherwise every epoch runs them again, with a backward pass where layers train."""
    per_example = sum(gflops_per_example(i, image_size) for i in infos) * seconds_per_gflop
    n_val = n_examples * val_split
    n_train = n_examples - n_val
    trains = freeze != "all" or any(i.trains_when_frozen for i in infos)
    augmenting = trains if augment is None else augment
    image = bool(infos) and infos[0].task == "image"
    decode = n_examples * DECODE_SECONDS if image else 0.0
    if not trains and not (augmenting and image):
        return decode + n_examples * per_example
    train_factor = BACKWARD_FACTOR if trains else 1.0
    return decode + epochs * (n_train * train_factor + n_val) * per_example
