"""Training pictures as the model sees them with augmentation on: the trainer's own crops and flips."""

from __future__ import annotations

import secrets

import numpy as np
import torch
from PIL import Image

from .batches import decode_images, image_batch
from .datasets import Dataset


def augmented_pictures(dataset: Dataset, size: int, count: int = 8,
                       seed: int | None = None) -> list[tuple[Image.Image, str]]:
    """`count` pictures, taken from each class in turn, decoded at the model's input size and
    passed through the trainer's augmentation (`image_batch(..., augment=True)`); a new draw
    each call unless `seed` is given."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(dataset.labels == c)).tolist() for c in range(len(dataset.classes))]
    picked: list[int] = []
    while len(picked) < min(count, len(dataset)):
        for pool in by_class:
            if pool and len(picked) < count:
                picked.append(pool.pop())
    pixels = decode_images(dataset, np.array(picked), size)
    generator = torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(62))
    x = image_batch(pixels, torch.device("cpu"), augment=True, generator=generator)
    arrays = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [(Image.fromarray(a), dataset.classes[dataset.labels[i]]) for a, i in zip(arrays, picked)]
