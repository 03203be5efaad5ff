"""Where a run computes and how: the device, the random seeds, and the mixed-precision type.

Measured on this project's 2-core CPU (bench/SCALE.md): its flags list avx512_bf16 and amx_bf16,
yet bf16 ran slower than fp32 for extraction and fine-tuning alike, so fp32 stays the CPU's
default; TLGUI_CPU_BF16=1 turns bf16 autocast on (features are stored in fp32 either way).
On a GPU: bf16 where it has it, else fp16 with a loss scaler; TLGUI_AMP=0 turns it off.
`torch.backends.cudnn.benchmark` is process-wide and is never set here: left at its default
(off), nothing needs restoring when a job ends, and on an H200 it re-timed every new batch
shape (the last batch, evaluation, extraction) for 10-20 s each (bench/GPU.md).
"""

from __future__ import annotations

import contextlib
import os
import random
from functools import lru_cache

import numpy as np
import torch

from ..errors import TlguiError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TlguiError("--device cuda was asked for but no CUDA GPU is available: use --device auto")
    if name == "mps" and not _mps_available():
        raise TlguiError("--device mps was asked for but Apple's MPS is not available: use --device auto")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU says it has bf16 units (Linux flags); saying so is not running fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_amp_dtype() -> torch.dtype | None:
    return torch.bfloat16 if os.environ.get("TLGUI_CPU_BF16", "").strip() == "1" else None


def cuda_amp() -> bool:
    """Mixed precision on a GPU: on unless TLGUI_AMP=0 (for measuring it against fp32)."""
    return os.environ.get("TLGUI_AMP", "").strip() != "0"


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast type a run uses on `device`; None: full fp32."""
    if device.type == "cuda" and cuda_amp():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return cpu_amp_dtype()
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def fork_rng(device: torch.device):
    """A block whose random draws leave the process's streams (CPU, and this GPU's) as they were."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else [])
