"""Several processes training one model, started by PyTorch's launcher (torchrun): who is who,
each one's share of the data, and what they agree on. Alone (no torchrun) a process is rank 0 of
a world of one, and every helper here returns at once.

Rank 0 alone writes the run folder and the bundle; the others read a checkpoint from it to
resume (on several machines, give them the same folder, a shared disk). A collective that fails
because another process died raises one sentence, and the last epoch's checkpoint stays.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import TlguiError

PEER_LOST = ("another training process stopped or died, so the run stopped: resume it with the same command "
             "and --resume")
TIMEOUT = timedelta(minutes=30)  # a rank still extracting features while another waits at the gather


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (NCCL between GPUs, gloo on CPUs); this rank's device."""
    if world() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _collective(fn):
    try:
        return fn()
    except RuntimeError:  # gloo and NCCL raise it (DistBackendError included) when a peer is gone
        raise TlguiError(PEER_LOST) from None


def shard(total: int) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of `total` rows; shares in rank order make the whole."""
    per = math.ceil(total / world())
    return min(rank() * per, total), min((rank() + 1) * per, total)


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's `shard` of rows, put back together in order on every rank (CPU)."""
    if world() == 1:
        return local
    per = math.ceil(total / world())
    dev = _comm_device()
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=dev)
    padded[: len(local)] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(world())]
    _collective(lambda: dist.all_gather(parts, padded))
    return torch.cat(parts)[:total].cpu()


def reduce_sum(values: list[float]) -> list[float]:
    """Sums over the ranks (losses, correct predictions, examples seen)."""
    if world() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    _collective(lambda: dist.all_reduce(t))
    return t.cpu().tolist()


def agree(flag: bool) -> bool:
    """True on every rank when it is true on any (Stop asked in one process stops them all at the same batch)."""
    if world() == 1:
        return flag
    return reduce_sum([float(flag)])[0] > 0


def steps_per_epoch(n: int, batch_size: int) -> int:
    if world() == 1:
        return math.ceil(n / batch_size)
    return math.ceil(math.ceil(n / world()) / max(1, batch_size // world()))


def train_batches(n: int, batch_size: int, generator: torch.Generator, epoch: int, seed: int) -> list[torch.Tensor]:
    """This rank's batches for an epoch. The batch size is the total over the ranks: each takes its
    share through a DistributedSampler, so every rank runs the same number of steps."""
    if world() == 1:
        order = torch.randperm(n, generator=generator)
        return list(torch.split(order, batch_size))
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world(), rank=rank(), shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(torch.split(torch.tensor(list(sampler)), max(1, batch_size // world())))


class _Forward(nn.Module):
    """What DistributedDataParallel wraps: the head on stored features, or the whole model."""

    def __init__(self, model: nn.Module, cached: bool):
        super().__init__()
        self.model, self.cached = model, cached

    def forward(self, x):
        return self.model.classify(x) if self.cached else self.model(x)


def wrap(model: nn.Module, cached: bool, device: torch.device) -> nn.Module | None:
    """The model in DistributedDataParallel (gradients averaged over the ranks), or None alone."""
    if world() == 1:
        return None
    ids = [device.index] if device.type == "cuda" else None
    return _collective(lambda: nn.parallel.DistributedDataParallel(_Forward(model, cached), device_ids=ids))


def finish() -> None:
    if world() > 1 and dist.is_initialized():
        dist.destroy_process_group()


# -- starting torchrun for the user (`train ... --gpus N`) ------------------------------------------
def check_gpus(n: int, device: str | None) -> None:
    """`--gpus N` needs N GPUs; with `--device cpu` it starts N CPU processes (gloo) instead."""
    if n < 1:
        raise TlguiError("--gpus must be at least 1")
    if device == "cpu":
        return
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < n:
        fix = f"use --gpus {have} or fewer" if have else "leave out --gpus to train on the CPU"
        raise TlguiError(f"--gpus {n} asks for {n} GPUs but this machine has {have}: {fix}")


def launch(n: int, argv: list[str]) -> int:
    """Run `python -m tlgui <argv>` as `n` processes under torchrun on this machine. Their output
    passes through; a failure is told in one line, the workers' own `error:` line where there is one."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "tlgui", *argv]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    interrupted = False
    try:
        _, err = proc.communicate()
    except KeyboardInterrupt:  # Ctrl-C reached the workers too: they stop at the same batch and save
        interrupted = True
        _, err = proc.communicate()
    line = next((x for x in err.splitlines() if x.startswith("error: ")), None)
    if proc.returncode == 0 or (interrupted and line is None):  # torchrun itself exits non-zero after Ctrl-C
        return 0
    if line and PEER_LOST not in line:
        print(line, file=sys.stderr)
        return 2
    print(f"error: {PEER_LOST}", file=sys.stderr)
    return 1
