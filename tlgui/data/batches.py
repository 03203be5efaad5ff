"""Model inputs in memory: images decoded once per run to the size the backbones need."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from .datasets import Dataset
from .images import square_tensor_bytes


def decode_images(dataset: Dataset, indices: np.ndarray, size: int, progress=None) -> torch.Tensor:
    """(N, 3, size, size) uint8: decoding a JPEG costs about as much as a small backbone's
    forward pass, so each picture is decoded and resized once, not once per epoch."""
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)  # numpy: writable from worker threads

    def load(k: int) -> None:
        out[k] = square_tensor_bytes(dataset.load_image(int(indices[k]), draft=size), size)

    with ThreadPoolExecutor(max_workers=max(1, min(8, torch.get_num_threads()))) as pool:
        for k, _ in enumerate(pool.map(load, range(len(indices)))):
            if progress and (k + 1) % 64 == 0:
                progress(k + 1, len(indices))
    if progress:
        progress(len(indices), len(indices))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode_size(model) -> int | None:
    """The size pictures are decoded at: the largest input size among the model's image backbones."""
    sizes = [b.input_size for b in model.backbones if getattr(b, "input_size", None)]
    return max(sizes) if sizes else None


def extract_batch(batch_size: int, device: torch.device) -> int:
    """Inputs per forward pass without gradients (frozen features, validation). Not the training
    batch: on a 2-core CPU, EfficientNet-Lite0 ran 35 pictures/s in batches of 8 or 16 against
    25 in batches of 64 (MobileNetV2: 60 against 30), as small batches stay in the caches. A GPU
    wants large batches."""
    return max(batch_size, 256) if device.type == "cuda" else 16


def uses_channels_last(device: torch.device) -> bool:
    """NHWC tensors: 1.1-1.9x the CPU throughput of NCHW for the offline convnets (oneDNN;
    bench/RESULTS.md), and what tensor cores want on a GPU. Left off on MPS, where it is untried."""
    return device.type in ("cpu", "cuda")


_threads_lock = threading.Lock()
_threads_held = {"blocks": 0, "before": 0}  # blocks inside cpu_threads now, and the count the first one found


@contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` torch CPU threads (None: unchanged). Training a head on stored
    features is a few tiny matrix products per step: threads only add synchronisation, and
    on a busy CPU each barrier can cost tens of milliseconds (measured 70 ms a step with 2
    threads against 1-3 ms with one).
    The count is process-wide and runs train in threads of one server: blocks overlapping in
    two jobs share the first one's count, and only the last one out restores the count the
    first found, so that no interleaving leaves the process on one thread."""
    if n is None:
        yield
        return
    with _threads_lock:
        if _threads_held["blocks"] == 0:
            _threads_held["before"] = torch.get_num_threads()
            if n != _threads_held["before"]:
                torch.set_num_threads(n)
        _threads_held["blocks"] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_held["blocks"] -= 1
            if _threads_held["blocks"] == 0 and torch.get_num_threads() != _threads_held["before"]:
                torch.set_num_threads(_threads_held["before"])


def to_device(x, device: torch.device, augment: bool = False, generator: torch.Generator | None = None,
              channels_last: bool | None = None):
    """A batch as the model takes it on `device`: pictures (uint8) as floats (channels-last where
    faster, unless told), augmented when training; lists of feature tensors moved; texts as they
    are (each text backbone tokenises)."""
    if isinstance(x, torch.Tensor):
        layout = uses_channels_last(device) if channels_last is None else channels_last
        return image_batch(x, device, augment, generator, channels_last=layout)
    if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
        return [f.to(device, non_blocking=True) for f in x]
    return x


def image_batch(pixels: torch.Tensor, device: torch.device, augment: bool, generator: torch.Generator | None = None,
                channels_last: bool = False) -> torch.Tensor:
    """uint8 (B,3,S,S) to float in [0, 1] on `device`, with light augmentation when training:
    a random crop of 60-100% of the area, resized back, and a horizontal flip."""
    if device.type == "cuda" and not pixels.is_pinned():
        pixels = pixels.pin_memory()  # page-locked: the copy below runs alongside the GPU's work
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    if augment:
        x = _random_resized_crop_flip(x, generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _random_resized_crop_flip(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    b, _, h, w = x.shape
    scale = torch.empty(b).uniform_(0.6, 1.0, generator=g)
    ratio = torch.exp(torch.empty(b).uniform_(np.log(3 / 4), np.log(4 / 3), generator=g))
    cw = (torch.sqrt(scale * ratio) * w).clamp(max=w).floor().clamp(min=8)
    ch = (torch.sqrt(scale / ratio) * h).clamp(max=h).floor().clamp(min=8)
    x0 = (torch.rand(b, generator=g) * (w - cw + 1)).floor()
    y0 = (torch.rand(b, generator=g) * (h - ch + 1)).floor()
    flip = torch.rand(b, generator=g) < 0.5
    # one affine grid per sample: crop box mapped back to the full size, mirrored when flipped
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cw / w * torch.where(flip, -1.0, 1.0)
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = torch.nn.functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def index_batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
