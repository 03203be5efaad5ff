"""Compute precision on the CPU: bf16 autocast only where asked for.

Measured on this project's 2-core CPU (bench/SCALE.md): its flags list avx512_bf16 and amx_bf16,
yet bf16 ran slower than fp32 for extraction and fine-tuning alike, so fp32 stays the default.
TLGUI_CPU_BF16=1 turns bf16 autocast on (features are stored in fp32 either way).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch


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
