"""Model inputs in memory: images decoded once per run to the size the backbones need."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .datasets import Dataset
from .images import square_tensor_bytes


def decode_images(dataset: Dataset, indices: np.ndarray, size: int, progress=None) -> torch.Tensor:
    """(N, 3, size, size) uint8: decoding a JPEG costs about as much as a small backbone's
    forward pass, so each picture is decoded and resized once, not once per epoch."""
    out = torch.empty((len(indices), size, size, 3), dtype=torch.uint8)

    def load(k: int) -> None:
        out[k] = torch.from_numpy(square_tensor_bytes(dataset.load_image(int(indices[k]), draft=size), size))

    with ThreadPoolExecutor(max_workers=max(1, min(8, torch.get_num_threads()))) as pool:
        for k, _ in enumerate(pool.map(load, range(len(indices)))):
            if progress and (k + 1) % 64 == 0:
                progress(k + 1, len(indices))
    if progress:
        progress(len(indices), len(indices))
    return out.permute(0, 3, 1, 2).contiguous()


def image_batch(pixels: torch.Tensor, device: torch.device, augment: bool, generator: torch.Generator | None = None,
                channels_last: bool = False) -> torch.Tensor:
    """uint8 (B,3,S,S) to float in [0, 1] on `device`, with light augmentation when training:
    a random crop of 60-100% of the area, resized back, and a horizontal flip."""
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
