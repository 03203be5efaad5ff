"""What work costs on this machine: short timed probes, kept per process, and durations in words.

Each probe runs a few of a run's own steps (a forward pass, a head step, a training step, a
checkpoint's serialisation) and keeps the seconds per item in `PROBES`, keyed by what sets its
cost (backbone, size, batch, device), so asking twice (the page, then the trainer) measures once.
`estimate.py` turns these costs into a run's time.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import cpu_threads, decode_images, to_device, uses_channels_last
from .device import amp_dtype, autocast, fork_rng, sync

MAX_PROBE_BATCH = 32  # larger batches are timed at this size and scaled per picture
WARM_BATCH = 2  # a training step is warmed with a small batch (weights laid out, memory allocated)
DECODE_SAMPLE = 16
REFERENCE = {"image": "efficientnet_lite0", "text": "minilm_l6"}  # timed once to scale the others by GFLOPs
TEXT_TOKENS = 64  # a typical review or message, in tokens
PROBE_TEXT = " ".join(["the story moves slowly but the actors carry it and the ending works"] * 5)
# Seconds per item by probe, for the whole process. Safe for two jobs at once without a lock: a dict's
# get and set are atomic, and two jobs that miss the same key at once both measure it, the later
# figure staying: a wasted probe, never a wrong one.
PROBES: dict[tuple | str, float] = {}
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_pre_hooks",
                 "_global_backward_hooks")
_hooks_lock = threading.Lock()
_hooks_set_aside: dict = {"blocks": 0, "saved": {}}


def forget() -> None:
    """Measure every probe again from now on (the machine changed, or a test wants a fresh start)."""
    PROBES.clear()


@contextlib.contextmanager
def unobserved():
    """Probes are no part of a run: module hooks registered for every module (a profiler, a
    counter, a fault injected by a test) watch runs, so they are set aside meanwhile. They are
    process-wide and jobs run in threads: overlapping probes share one setting-aside and the last
    one out puts the hooks back, so that no interleaving of two jobs loses them."""
    from torch.nn.modules import module

    with _hooks_lock:
        if _hooks_set_aside["blocks"] == 0:
            _hooks_set_aside["saved"] = {name: getattr(module, name) for name in _GLOBAL_HOOKS}
            for name, hooks in _hooks_set_aside["saved"].items():
                setattr(module, name, type(hooks)())
        _hooks_set_aside["blocks"] += 1
    try:
        yield
    finally:
        with _hooks_lock:
            _hooks_set_aside["blocks"] -= 1
            if _hooks_set_aside["blocks"] == 0:
                for name, hooks in _hooks_set_aside["saved"].items():
                    setattr(module, name, hooks)


class Sample:
    """A few inputs ready for the model, repeated to any batch size: a dataset's own pictures,
    decoded by the trainer's own decoder (which times it), or texts."""

    def __init__(self, data, decode_each: float = 0.0):
        self.data, self.decode_each, self.n = data, decode_each, len(data)
        if isinstance(data, torch.Tensor):
            self.shape = tuple(data.shape[1:])
        else:
            self.shape = ("text", int(np.mean([len(t) for t in data])))

    @classmethod
    def of(cls, dataset, order: np.ndarray, size: int | None) -> Sample:
        pick = np.random.default_rng(0).choice(order, size=min(DECODE_SAMPLE, len(order)), replace=False)
        if dataset.task != "image":
            return cls([dataset.inputs[i] for i in pick])
        t = time.perf_counter()
        data = decode_images(dataset, pick, size)
        return cls(data, (time.perf_counter() - t) / len(pick))

    def batch(self, k: int):
        reps = -(-k // self.n)
        if isinstance(self.data, torch.Tensor):
            return self.data.repeat(reps, 1, 1, 1)[:k]
        return (self.data * reps)[:k]


def timed(fn, device, warm=None, budget: float = 0.3, calls: int = 3) -> float:
    """Median seconds of a call of `fn`, after one untimed call of `warm` (kernel set-up,
    allocator): called up to `calls` times while under `budget` seconds, so that one hiccup
    of a shared CPU does not set the estimate."""
    (warm or fn)()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while not times or (len(times) < calls and time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def forward_cost(backbone, sample: Sample, device, batch: int, budget: float = 0.3) -> float:
    """Seconds per input of a frozen forward pass (inference mode) at the run's batch shape."""
    k = min(batch, MAX_PROBE_BATCH)
    key = ("forward", getattr(backbone, "name", ""), getattr(backbone, "input_size", None), k, str(device), sample.shape)
    if key not in PROBES:
        backbone.eval()
        amp = amp_dtype(device)

        @torch.inference_mode()
        def run(n=k):
            with autocast(device, amp):
                backbone(to_device(sample.batch(n), device))

        PROBES[key] = timed(run, device, budget=budget) / k  # warmed at the same shape: kernels are set up per shape
    return PROBES[key]


def head_step_cost(model, config, device) -> float:
    """Seconds of one step of the head on stored features, in one CPU thread as the trainer runs it."""
    bs = config.batch_size
    key = ("head", tuple(b.out_dim for b in model.backbones), config.fusion, bs, str(device))
    if key not in PROBES:
        fusion, head = copy.deepcopy(model.fusion).to(device), copy.deepcopy(model.head).to(device)
        opt = torch.optim.AdamW([p for m in (fusion, head) for p in m.parameters()], lr=config.lr)
        feats = [torch.randn(bs, b.out_dim, device=device) for b in model.backbones]
        y = torch.randint(0, head[-1].out_features, (bs,), device=device)

        def step():
            for _ in range(5):
                loss = F.cross_entropy(head(fusion(feats)).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()

        with cpu_threads(1 if device.type == "cpu" else None):
            PROBES[key] = timed(step, device) / 5
    return PROBES[key]


def train_step_cost(model, sample: Sample, config, device, k: int) -> float:
    """Seconds per picture of one training step at the run's batch size (at most MAX_PROBE_BATCH),
    timed on a copy of the model: the run's own weights stay untouched."""
    augment = config.uses_augmentation and isinstance(sample.data, torch.Tensor)
    key = ("train", tuple(config.backbones), config.freeze, config.pretrained, k, augment, str(device), sample.shape)
    if key not in PROBES:
        probe = copy.deepcopy(model).train()
        opt = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=config.lr)
        generator = torch.Generator().manual_seed(0)
        amp = amp_dtype(device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

        def step(n=k):
            with autocast(device, amp):
                logits = probe(to_device(sample.batch(n), device, augment, generator))
            loss = F.cross_entropy(logits.float(), torch.zeros(n, dtype=torch.long, device=device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss.item()

        PROBES[key] = timed(step, device, lambda: step(WARM_BATCH), budget=0.0) / k
        del probe, opt
    return PROBES[key]


def epoch_overhead(model, config) -> float:
    """What each epoch costs besides its steps: switching the model between training and
    evaluation, copying the best weights, and the checkpoint (trainable weights, buffers, the
    best copies and the optimizer's two moments, serialised and written). Timed on this model:
    with a frozen backbone, its hundreds of small normalisation buffers cost more than their bytes."""
    key = ("epoch", tuple(config.backbones), config.freeze, config.pretrained)
    if key not in PROBES:
        was_training = model.training
        t = time.perf_counter()
        model.train()
        model.eval()
        tensors: dict[str, torch.Tensor] = {}
        for i, p in enumerate(p for p in model.parameters() if p.requires_grad):
            tensors.update({f"w{i}": p, f"best{i}": p, f"m{i}": p, f"v{i}": p})
        for i, b in enumerate(model.buffers()):
            tensors.update({f"b{i}": b, f"bbest{i}": b})
        _write({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
        PROBES[key] = time.perf_counter() - t
        model.train(was_training)
    return PROBES[key]


def serialise_cost(model) -> float:
    """Seconds per byte to serialise weights with safetensors and write them to a file."""
    if "serialise" not in PROBES:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        t = time.perf_counter()
        size = _write(state)
        PROBES["serialise"] = (time.perf_counter() - t) / max(size, 1)
    return PROBES["serialise"]


def _write(tensors: dict[str, torch.Tensor]) -> int:
    from safetensors.torch import save as save_safetensors

    data = save_safetensors(tensors)
    with tempfile.TemporaryFile() as f:
        f.write(data)
    return len(data)


def gflops_per_example(info, image_size: int | None, max_length: int = 128) -> float:
    """A backbone's forward pass in GFLOPs per input, from its record (or its parameter count)."""
    if info.task == "text":
        return info.gflops or 2 * info.params * min(TEXT_TOKENS, max_length) / 1e9
    base = info.gflops or 2 * info.params / 1e9
    size = image_size or info.input_size
    return base * (size / info.input_size) ** 2


def measured_seconds_per_gflop(task: str, device: torch.device, batch: int) -> float | None:
    """`seconds_per_gflop` where this process measured it already; None otherwise (nothing is timed)."""
    return PROBES.get(("per-gflop", task, str(device), batch))


def seconds_per_gflop(task: str, device: torch.device, batch: int) -> float:
    """This machine's forward-pass speed for `task`: the reference backbone timed as a run's
    frozen extraction times it (same probe, same key, so that run then measures nothing again)."""
    key = ("per-gflop", task, str(device), batch)
    if key not in PROBES:
        from ..nets.backbones import build_backbone, get_info

        info = get_info(REFERENCE[task])
        if task == "image":
            pixels = torch.randint(0, 256, (DECODE_SAMPLE, 3, info.input_size, info.input_size), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
            sample = Sample(pixels)
        else:
            sample = Sample([PROBE_TEXT] * DECODE_SAMPLE)
        with fork_rng(device), unobserved():  # no run's random streams move for it
            net = build_backbone(info.name, pretrained=task == "text").to(device).eval()
            if task == "image" and uses_channels_last(device):
                net.to(memory_format=torch.channels_last)
            PROBES[key] = forward_cost(net, sample, device, batch) / gflops_per_example(info, None)
    return PROBES[key]
