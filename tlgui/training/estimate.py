"""How long a run will take, told before it starts: one estimator for the trainer, the CLI and the page.

A run's time is: building the model, decoding the pictures, the frozen features (only those
the feature cache lacks), the epochs, and writing the bundle. Each part is a per-item cost
times a count. `estimate_run` measures the costs on the run's own model with short probes
(`timing.py`: a few of the dataset's pictures decoded, a forward pass and, when a backbone
trains, a training step at the run's size and batch, a few head steps, the checkpoint's and
the bundle's writes). `rough_seconds`, for the page's choice among backbones before any is
built, reckons each backbone's forward pass from its GFLOPs at this machine's measured speed.
The probes leave the random number streams as they found them: a run gives the same result
whether or not its time was estimated first.
"""

from __future__ import annotations

import copy

import numpy as np

from ..config import RunConfig
from ..data.batches import decode_size, extract_batch
from ..data.datasets import Dataset
from ..events import format_seconds
from ..nets.model import Classifier
from .device import amp_dtype, fork_rng, pick_device
from .featcache import FeatureCache, feature_key
from .inputs import build_model, uses_stored_features
from .timing import (MAX_PROBE_BATCH, WARM_BATCH, Sample, epoch_overhead, forward_cost, gflops_per_example,
                     head_step_cost, measured_seconds_per_gflop, serialise_cost, train_step_cost, unobserved)

__all__ = ["estimate_run", "fine_tune_seconds", "rough_seconds"]

SHORT_RUN = 20  # a training step is timed only when the run trains on 20 times the probe's pictures
# Otherwise a training step is reckoned as this many forward passes per picture (measured on a
# 2-core CPU: 3.4 to 5, EfficientNet-Lite0 at 224 px, training in batches of 32 against inference in 16s).
TRAIN_OVER_FORWARD = 4.0
ROUGH_DECODE_EACH = 0.002  # seconds per picture, decoded and resized once per run, before any is decoded here


def estimate_run(config: RunConfig, dataset: Dataset, model: Classifier | None = None,
                 probe: bool = True) -> dict | None:
    """Seconds by phase: `setup`, `decode`, `features`, `prepare` (decode + features),
    `epoch`, `epochs`, `finish`, `total`; `cached` (inputs whose features are stored),
    and `text`, the total in words. `model` is the run's model where it is built already.
    `probe=False`: a frozen run's figure from speeds measured already (the page measures this
    machine's in the background), with no probe: None where none is known."""
    import time

    device = pick_device(config.device)
    dataset.assign_splits(config.val_split, config.seed)  # the trainer draws the same split
    n_train, n_val = len(dataset.indices("train")), len(dataset.indices("val"))
    with fork_rng(device), unobserved():
        setup = 0.0
        if model is None:
            t = time.perf_counter()
            model = build_model(config, dataset, device, [dataset.inputs[i] for i in dataset.indices("train")])
            setup = time.perf_counter() - t
        return _estimate(config, dataset, model, device, n_train, n_val, setup, probe)


def _estimate(config, dataset, model, device, n_train, n_val, setup, probe=True) -> dict | None:
    import sklearn.metrics  # noqa: F401 - the run's final report needs it; its first import costs seconds, paid here

    order = np.concatenate([dataset.indices("train"), dataset.indices("val")])
    frozen = uses_stored_features(model, config, dataset.task)
    missing = _missing(config, dataset, model, order, device) if frozen else [list(range(len(order)))]
    n_decode = len(set().union(*missing)) if dataset.task == "image" else 0
    if frozen and not probe:
        return _measured_frozen(config, dataset, model, device, missing, n_decode, setup, len(order))
    sample = Sample.of(dataset, order, decode_size(model)) if any(missing) else None
    decode = n_decode * sample.decode_each if n_decode else 0.0
    features = 0.0
    if frozen:
        extract = extract_batch(config.batch_size, device)
        features = sum(len(m) * forward_cost(b, sample, device, extract) for b, m in zip(model.backbones, missing) if m)
        steps = -(-n_train // config.batch_size) + -(-n_val // extract)
        epoch = steps * head_step_cost(model, config, device)
    else:
        epoch = _train_epoch(model, sample, n_train, n_val, config, device)
    epoch += epoch_overhead(model, config)
    # the bundle: every weight serialised into model.zip (stored, not deflated: floating-point weights
    # barely compress); the last validation pass reuses the best epoch's predictions
    finish = serialise_cost(model) * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    total = setup + decode + features + config.epochs * epoch + finish
    return {"setup": setup, "decode": decode, "features": features, "prepare": decode + features, "epoch": epoch,
            "epochs": config.epochs, "finish": finish, "total": total, "device": str(device),
            "cached": len(order) - max(map(len, missing)) if frozen else 0, "text": format_seconds(total)}


def _measured_frozen(config, dataset, model, device, missing, n_decode, setup, n) -> dict | None:
    """A frozen run's seconds with no probe: its features at this machine's measured speed per GFLOP."""
    rate = measured_seconds_per_gflop(dataset.task, device, extract_batch(config.batch_size, device))
    if rate is None and any(missing):
        return None
    from ..nets.backbones import get_info

    try:
        features = sum(len(m) * rate * gflops_per_example(get_info(b.name), decode_size(model), config.max_length)
                       for b, m in zip(model.backbones, missing) if m)
    except Exception:  # noqa: BLE001 - a backbone without a record: the run's progress tells its time
        return None
    decode = n_decode * ROUGH_DECODE_EACH
    total = setup + decode + features
    return {"setup": setup, "decode": decode, "features": features, "prepare": decode + features, "epoch": 0.0,
            "epochs": config.epochs, "finish": 0.0, "total": total, "device": str(device),
            "cached": n - max(map(len, missing)), "text": format_seconds(total)}


def _missing(config, dataset, model, order, device) -> list[list[int]]:
    """Per backbone, positions in `order` whose features the cache lacks."""
    cache = FeatureCache.from_env()
    if cache is None:
        return [list(range(len(order))) for _ in model.backbones]
    digests = [dataset.digests[i] for i in order]
    out = []
    for b in model.backbones:
        have = cache.present(feature_key(model, b, device, amp_dtype(device), config.max_length), digests)
        out.append([j for j, d in enumerate(digests) if d not in have])
    return out


def _reckoned_epoch(forward: float, n_train: float, n_val: float, train_over_forward: float = TRAIN_OVER_FORWARD) -> float:
    """An epoch reckoned from a forward pass's seconds per input: training steps and a validation pass."""
    return n_train * train_over_forward * forward + n_val * forward


def _train_epoch(model: Classifier, sample: Sample, n_train: int, n_val: int, config, device) -> float:
    """An epoch with a backbone in the loop: training steps and a validation pass. A training
    step is timed (`timing.py`) unless the run is so short that the probe would cost over a
    twentieth of it: then it is reckoned from the forward pass, which validation times anyway."""
    forward = sum(forward_cost(b, sample, device, extract_batch(config.batch_size, device), 0.0)
                  for b in model.backbones)
    k = min(config.batch_size, MAX_PROBE_BATCH)
    if n_train * config.epochs < SHORT_RUN * (k + WARM_BATCH):
        return _reckoned_epoch(forward, n_train, n_val)
    return n_train * train_step_cost(model, sample, config, device, k) + n_val * forward


def fine_tune_seconds(config: RunConfig, dataset: Dataset, model: Classifier, n_train: int, n_val: int,
                      budget: float) -> float:
    """Seconds that fine-tuning every layer of `model` for `config.epochs` would take (the
    second half of `--freeze auto`): decoding, then training steps and validation passes. A
    rough figure from a forward pass comes first; a training step is timed only where the
    rough figure is within twice `budget`, so a far-off fine-tuning costs no probe."""
    device = pick_device(config.device)
    tuned = copy.copy(config)
    tuned.freeze = "none"
    order = np.concatenate([dataset.indices("train"), dataset.indices("val")])
    with fork_rng(device), unobserved():
        sample = Sample.of(dataset, order, decode_size(model))
        forward = sum(forward_cost(b, sample, device, extract_batch(config.batch_size, device))  # median of 3
                      for b in model.backbones)
        decode = (n_train + n_val) * sample.decode_each
        rough = decode + config.epochs * _reckoned_epoch(forward, n_train, n_val)
        if rough > 2 * budget:
            return rough
        model.freeze("none")
        try:
            epoch = _train_epoch(model, sample, n_train, n_val, tuned, device) + epoch_overhead(model, tuned)
        finally:
            model.freeze("all")
    return decode + config.epochs * epoch


def rough_seconds(infos: list, n_examples: int, *, epochs: int, val_split: float, freeze: str, augment: bool | None,
                  image_size: int | None, seconds_per_gflop: float) -> float:
    """A run's seconds before its model is built, from the backbones' records (`infos`): the
    phases of `estimate_run`, each forward pass reckoned from its GFLOPs at `seconds_per_gflop`
    (`timing.seconds_per_gflop`). Frozen backbones without augmentation see each example
    once (their features are stored); otherwise every epoch runs them again, with training
    steps where layers train."""
    forward = sum(gflops_per_example(i, image_size) for i in infos) * seconds_per_gflop
    n_val = n_examples * val_split
    n_train = n_examples - n_val
    trains = freeze != "all" or any(i.trains_when_frozen for i in infos)
    image = bool(infos) and infos[0].task == "image"
    augmenting = (trains if augment is None else augment) and image
    decode = n_examples * ROUGH_DECODE_EACH if image else 0.0
    if not trains and not augmenting:
        return decode + n_examples * forward
    return decode + epochs * _reckoned_epoch(forward, n_train, n_val, TRAIN_OVER_FORWARD if trains else 1.0)
