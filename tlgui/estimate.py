"""How long a run will take, told before it starts, from a short measured probe on this machine.

A run's time is: building the model, decoding the pictures, the frozen features (only those
the feature cache lacks), the epochs, and writing the bundle. Each part is one measured
per-item cost times a count: the probe decodes a few of the dataset's own pictures, times a
forward pass (and, when a backbone trains, a training step) of a batch of them at the run's
size and batch size, a few head steps, and writes the weights as an epoch's checkpoint and the
bundle would. Probes are kept in memory per backbone, size and batch, so asking twice (an app
or script, then the trainer) measures once.
The probe leaves the random number streams as it found them: a run gives the same result
whether or not its time was estimated first.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from .batches import cpu_threads, decode_images, decode_size, extract_batch, image_batch, uses_channels_last
from .config import RunConfig
from .datasets import Dataset
from .featcache import FeatureCache, feature_key
from .model import Classifier, build_classifier

# Timed passes run at the run's own batch size: on a CPU the cost per picture depends on it
# (EfficientNet-Lite0 training: 17 pictures/s in batches of 8, 11 in batches of 32).
MAX_PROBE_BATCH = 32  # larger batches are timed at this size and scaled per picture
WARM_BATCH = 2  # a training step is warmed with a small batch (weights laid out, memory allocated)
SHORT_RUN = 20  # a training step is timed only when the run trains on 20 times the probe's pictures
# Otherwise a training step is reckoned as this many forward passes per picture (measured on a
# 2-core CPU: 3.4 to 5, EfficientNet-Lite0 at 224 px, training in batches of 32 against inference in 16s).
TRAIN_OVER_FORWARD = 4.0
DECODE_SAMPLE = 16
_PROBES: dict[tuple | str, float] = {}
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_pre_hooks",
                 "_global_backward_hooks")


def estimate_run(config: RunConfig, dataset: Dataset, model: Classifier | None = None) -> dict:
    """Seconds by phase: `setup`, `decode`, `features`, `prepare` (decode + features),
    `epoch`, `epochs`, `finish`, `total`; `cached` (inputs whose features are stored),
    and `text`, the total in words. `model` is the run's model where it is built already."""
    from .train import pick_device

    device = pick_device(config.device)
    dataset.assign_splits(config.val_split, config.seed)  # the trainer draws the same split
    n_train, n_val = len(dataset.indices("train")), len(dataset.indices("val"))
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []), _unobserved():
        setup = 0.0
        if model is None:
            t = time.perf_counter()
            model = _build(config, dataset, device)
            setup = time.perf_counter() - t
        return _estimate(config, dataset, model, device, n_train, n_val, setup)


@contextlib.contextmanager
def _unobserved():
    """The probe is no part of the run: module hooks registered for every module (a profiler,
    a counter, a fault injected by a test) watch the run, so they are set aside meanwhile."""
    from torch.nn.modules import module

    saved = {name: getattr(module, name) for name in _GLOBAL_HOOKS}
    for name in saved:
        setattr(module, name, type(saved[name])())
    try:
        yield
    finally:
        for name, hooks in saved.items():
            setattr(module, name, hooks)


def _build(config: RunConfig, dataset: Dataset, device: torch.device) -> Classifier:
    model = build_classifier(config, max(len(dataset.classes), 2))
    for b in model.backbones:  # text backbones: a vocabulary from the training texts, as the trainer does
        b.fit_text([dataset.inputs[i] for i in dataset.indices("train")], config.max_length)
    if config.init:
        from .bundle import init_from_bundle

        init_from_bundle(model, config.init, dataset.classes)
    model.to(device)
    if uses_channels_last(device) and dataset.task == "image":
        model.to(memory_format=torch.channels_last)
    return model


def _estimate(config, dataset, model, device, n_train, n_val, setup) -> dict:
    import sklearn.metrics  # noqa: F401 - the run's final report needs it; its first import costs seconds, paid here

    order = np.concatenate([dataset.indices("train"), dataset.indices("val")])
    frozen = model.backbones_frozen and not (config.uses_augmentation and dataset.task == "image")
    missing = _missing(config, dataset, model, order, device) if frozen else [list(range(len(order)))]
    n_decode = len(set().union(*missing)) if dataset.task == "image" else 0
    sample = _Sample(dataset, order, decode_size(model)) if any(missing) else None
    decode = n_decode * sample.decode_each if n_decode else 0.0
    features = 0.0
    if frozen:
        extract = extract_batch(config.batch_size, device)
        features = sum(len(m) * _forward_cost(b, sample, device, extract) for b, m in zip(model.backbones, missing) if m)
        epoch = _head_epoch(model, n_train, n_val, config, device)
    else:
        epoch = _train_epoch(model, sample, n_train, n_val, config, device)
    epoch += _epoch_overhead(model, config)
    finish = _finish_cost(model)
    total = setup + decode + features + config.epochs * epoch + finish
    return {"setup": setup, "decode": decode, "features": features, "prepare": decode + features, "epoch": epoch,
            "epochs": config.epochs, "finish": finish, "total": total, "device": str(device),
            "cached": len(order) - max(map(len, missing)) if frozen else 0, "text": format_seconds(total)}


def format_seconds(seconds: float) -> str:
    """`45 s`, `3 min 05 s`, `2 h 10 min`."""
    s = max(1, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(s / 60)
    return f"{m // 60} h {m % 60:02d} min"


# -- the probe's inputs ------------------------------------------------------------------------
class _Sample:
    """A few of the dataset's own inputs, ready for the model: pictures decoded by the trainer's
    own decoder (which times it), or texts."""

    def __init__(self, dataset: Dataset, order: np.ndarray, size: int | None):
        pick = np.random.default_rng(0).choice(order, size=min(DECODE_SAMPLE, len(order)), replace=False)
        self.decode_each = 0.0
        if dataset.task == "image":
            t = time.perf_counter()
            self.data = decode_images(dataset, pick, size)
            self.decode_each = (time.perf_counter() - t) / len(pick)
            self.shape = tuple(self.data.shape[1:])
        else:
            self.data = [dataset.inputs[i] for i in pick]
            self.shape = ("text", int(np.mean([len(t) for t in self.data])))
        self.n = len(pick)

    def batch(self, k: int):
        reps = math.ceil(k / self.n)
        if isinstance(self.data, torch.Tensor):
            return self.data.repeat(reps, 1, 1, 1)[:k]
        return (self.data * reps)[:k]


def _to_device(sample_batch, device, augment=False, generator=None):
    if isinstance(sample_batch, torch.Tensor):
        return image_batch(sample_batch, device, augment, generator, channels_last=uses_channels_last(device))
    return sample_batch


def _amp_dtype(device):
    """The trainer's mixed precision: bf16 where the GPU has it, else fp16; none on a CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device):
    amp = _amp_dtype(device)
    return torch.autocast("cuda", dtype=amp) if amp else torch.autocast("cpu", enabled=False)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, warm=None, budget: float = 0.3, calls: int = 3) -> float:
    """Median seconds of a call of `fn`, after one untimed call of `warm` (kernel set-up,
    allocator): called up to `calls` times while under `budget` seconds, so that one hiccup
    of a shared CPU does not set the estimate."""
    (warm or fn)()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while not times or (len(times) < calls and time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# -- the phases --------------------------------------------------------------------------------
def _missing(config, dataset, model, order, device) -> list[list[int]]:
    """Per backbone, positions in `order` whose features the cache lacks."""
    cache = FeatureCache.from_env()
    if cache is None:
        return [list(range(len(order))) for _ in model.backbones]
    digests = [dataset.digests[i] for i in order]
    out = []
    for b in model.backbones:
        have = cache.present(feature_key(model, b, device, _amp_dtype(device), config.max_length), digests)
        out.append([j for j, d in enumerate(digests) if d not in have])
    return out


def _forward_cost(backbone, sample: _Sample, device, batch: int, budget: float = 0.3) -> float:
    """Seconds per input of a frozen forward pass (inference mode) at the run's batch shape."""
    k = min(batch, MAX_PROBE_BATCH)
    key = ("forward", getattr(backbone, "name", ""), getattr(backbone, "input_size", None), k, str(device), sample.shape)
    if key not in _PROBES:
        backbone.eval()

        @torch.inference_mode()
        def run(n=k):
            with _autocast(device):
                backbone(_to_device(sample.batch(n), device))

        _PROBES[key] = _timed(run, device, budget=budget) / k  # warmed at the same shape: kernels are set up per shape
    return _PROBES[key]


def _head_epoch(model: Classifier, n_train: int, n_val: int, config, device) -> float:
    """An epoch on stored features: the head's steps (in one CPU thread, as the trainer runs
    them) and a validation pass."""
    bs = config.batch_size
    key = ("head", tuple(b.out_dim for b in model.backbones), config.fusion, bs, str(device))
    if key not in _PROBES:
        fusion, head = copy.deepcopy(model.fusion).to(device), copy.deepcopy(model.head).to(device)
        params = [p for m in (fusion, head) for p in m.parameters()]
        opt = torch.optim.AdamW(params, lr=config.lr)
        feats = [torch.randn(bs, b.out_dim, device=device) for b in model.backbones]
        n_out = head[-1].out_features
        y = torch.randint(0, n_out, (bs,), device=device)

        def step():
            for _ in range(5):
                loss = F.cross_entropy(head(fusion(feats)).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()

        with cpu_threads(1 if device.type == "cpu" else None):
            _PROBES[key] = _timed(step, device) / 5
    steps = math.ceil(n_train / bs) + math.ceil(n_val / extract_batch(bs, device))
    return steps * _PROBES[key]


def _train_epoch(model: Classifier, sample: _Sample, n_train: int, n_val: int, config, device) -> float:
    """An epoch with a backbone in the loop: training steps and a validation pass. A training
    step is timed on a copy of the model (the run's own weights stay untouched) unless the run
    is so short that the probe would cost over a twentieth of it: then it is reckoned from the
    forward pass, which the validation estimate times anyway."""
    forward = sum(_forward_cost(b, sample, device, extract_batch(config.batch_size, device), 0.0)
                  for b in model.backbones)
    k = min(config.batch_size, MAX_PROBE_BATCH)
    if n_train * config.epochs < SHORT_RUN * (k + WARM_BATCH):
        per_picture = TRAIN_OVER_FORWARD * forward
    else:
        per_picture = _train_step_cost(model, sample, config, device, k)
    return n_train * per_picture + n_val * forward


def _train_step_cost(model: Classifier, sample: _Sample, config, device, k: int) -> float:
    """Seconds per picture of one training step at the run's batch size (at most MAX_PROBE_BATCH)."""
    augment = config.uses_augmentation and isinstance(sample.data, torch.Tensor)
    key = ("train", tuple(config.backbones), config.freeze, config.pretrained, k, augment, str(device), sample.shape)
    if key not in _PROBES:
        probe = copy.deepcopy(model).train()
        params = [p for p in probe.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr)
        generator = torch.Generator().manual_seed(0)
        scaler = torch.amp.GradScaler("cuda", enabled=_amp_dtype(device) == torch.float16)

        def step(n=k):
            with _autocast(device):
                logits = probe(_to_device(sample.batch(n), device, augment, generator))
            loss = F.cross_entropy(logits.float(), torch.zeros(n, dtype=torch.long, device=device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss.item()

        _PROBES[key] = _timed(step, device, lambda: step(WARM_BATCH), budget=0.0) / k
        del probe, opt
    return _PROBES[key]


def _finish_cost(model: Classifier) -> float:
    """The bundle: every weight serialised into model.zip (stored, not deflated: floating-point
    weights barely compress). The last validation pass reuses the best epoch's predictions."""
    return _serialise_cost(model) * sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _epoch_overhead(model: Classifier, config) -> float:
    """What each epoch costs besides its steps: switching the model between training and
    evaluation, copying the best weights, and the checkpoint (trainable weights, buffers, the
    best copies and the optimizer's two moments, serialised and written). Timed on this model:
    with a frozen backbone, its hundreds of small normalisation buffers cost more than their bytes."""
    key = ("epoch", tuple(config.backbones), config.freeze, config.pretrained)
    if key not in _PROBES:
        from safetensors.torch import save as save_safetensors

        was_training = model.training
        t = time.perf_counter()
        model.train()
        model.eval()
        trainable = [p for p in model.parameters() if p.requires_grad]
        tensors: dict[str, torch.Tensor] = {}
        for i, p in enumerate(trainable):
            tensors.update({f"w{i}": p, f"best{i}": p, f"m{i}": p, f"v{i}": p})
        for i, b in enumerate(model.buffers()):
            tensors.update({f"b{i}": b, f"bbest{i}": b})
        data = save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
        with tempfile.TemporaryFile() as f:
            f.write(data)
        _PROBES[key] = time.perf_counter() - t
        model.train(was_training)
    return _PROBES[key]


def _serialise_cost(model: Classifier) -> float:
    """Seconds per byte to serialise weights with safetensors and write them to a file."""
    if "serialise" not in _PROBES:
        from safetensors.torch import save as save_safetensors

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        t = time.perf_counter()
        data = save_safetensors(state)
        with tempfile.TemporaryFile() as f:
            f.write(data)
        _PROBES["serialise"] = (time.perf_counter() - t) / max(len(data), 1)
    return _PROBES["serialise"]


def fine_tune_seconds(config: RunConfig, dataset: Dataset, model: Classifier, n_train: int, n_val: int) -> float:
    """Seconds that fine-tuning every layer of `model` for `config.epochs` would take (the
    second half of `--freeze auto`): decoding, then training steps and validation passes. A
    rough figure from a forward pass comes first; a training step is timed only where the
    rough figure is within twice the budget, so a far-off fine-tuning costs no probe."""
    from .lpft import default_budget
    from .train import pick_device

    device = pick_device(config.device)
    tuned = copy.copy(config)
    tuned.freeze = "none"
    order = np.concatenate([dataset.indices("train"), dataset.indices("val")])
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []), _unobserved():
        sample = _Sample(dataset, order, decode_size(model))
        forward = sum(_forward_cost(b, sample, device, extract_batch(config.batch_size, device))  # median of 3
                      for b in model.backbones)
        decode = (n_train + n_val) * sample.decode_each
        rough = decode + config.epochs * (n_train * TRAIN_OVER_FORWARD * forward + n_val * forward)
        if rough > 2 * (config.budget or default_budget(device)):
            return rough
        model.freeze("none")
        try:
            epoch = _train_epoch(model, sample, n_train, n_val, tuned, device) + _epoch_overhead(model, tuned)
        finally:
            model.freeze("all")
    return decode + config.epochs * epoch
