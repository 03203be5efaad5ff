"""A rough training-time estimate: one timed test batch per server, scaled by GFLOPs and data size.

It only has to tell 30 seconds from 30 minutes, so it ignores everything but the forward and
backward passes through the backbones.
"""

from __future__ import annotations

import logging
import threading
import time

from ..backbones import BackboneInfo

log = logging.getLogger("tlgui.ui")
PROBE = "efficientnet_lite0"
PROBE_BATCH = 8
TEXT_TOKENS = 64  # a typical review or message, in tokens
DECODE_SECONDS = 0.002  # per picture, decoded and resized once per run
BACKWARD_FACTOR = 3.0  # forward + backward costs about three forwards


class SpeedProbe:
    """Seconds per GFLOP of backbone forward pass on this machine, measured once, off the request path."""

    def __init__(self) -> None:
        self._seconds_per_gflop: float | None = None
        self.device = "cpu"
        self._started = threading.Lock()
        self._done = threading.Event()

    def start(self) -> None:
        if self._started.acquire(blocking=False):
            threading.Thread(target=self._measure, name="speed-probe", daemon=True).start()

    def seconds_per_gflop(self, wait: float = 0.0) -> float | None:
        self.start()
        self._done.wait(wait)
        return self._seconds_per_gflop

    def _measure(self) -> None:
        try:
            import torch

            from ..backbones import build_backbone, get_info
            from ..train import pick_device

            device = pick_device("auto")
            info = get_info(PROBE)
            net = build_backbone(PROBE, pretrained=False).to(device).eval()
            x = torch.rand(PROBE_BATCH, 3, info.input_size, info.input_size, device=device)
            with torch.inference_mode():
                net(x)  # the first pass pays for allocation and kernel choice
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            self.device = device.type
            self._seconds_per_gflop = (time.perf_counter() - t0) / (PROBE_BATCH * info.gflops)
        except Exception:
            log.warning("could not time a test batch; training times will not be estimated", exc_info=True)
        finally:
            self._done.set()


def gflops_per_example(info: BackboneInfo, image_size: int | None, max_length: int = 128) -> float:
    if info.task == "text":
        base = info.gflops or 2 * info.params * min(TEXT_TOKENS, max_length) / 1e9
        return base
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
    trains = freeze != "all"
    augmenting = trains if augment is None else augment
    decode = n_examples * DECODE_SECONDS if infos and infos[0].task == "image" else 0.0
    if not trains and not augmenting:
        return decode + n_examples * per_example
    train_factor = BACKWARD_FACTOR if trains else 1.0
    return decode + epochs * (n_train * train_factor + n_val) * per_example
