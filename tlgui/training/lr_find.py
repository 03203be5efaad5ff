"""The learning-rate finder (fastai's `lr_find`, after Smith 2015): a short sweep of training
steps with the rate growing exponentially, the smoothed loss recorded at each; the suggestion
is the rate where the loss falls fastest, before it blows up.

It trains what the run would train: every layer for `--freeze none`, `N` and `auto` (the rate
matters for fine-tuning only: a frozen head is fitted to convergence with no rate at all), the
head alone for `--freeze all`. Nothing is written; the model is thrown away.
"""

from __future__ import annotations

import copy
import math
import tempfile

import numpy as np
import torch

from ..config import RunConfig
from ..data.datasets import Dataset
from ..errors import TlguiError

START, END = 1e-7, 1.0
STEPS = 60
BLOW_UP = 4.0  # the sweep stops once the smoothed loss is this many times its lowest
SMOOTH = 0.9


def lr_find(config: RunConfig, dataset: Dataset, steps: int = STEPS, start: float = START, end: float = END,
            stop=None) -> dict:
    """{"lrs", "losses" (smoothed), "suggested", "frozen"}: the sweep and its suggestion."""
    from .auto import one_backbone, settle_length
    from .device import seed_everything
    from .inputs import build_model
    from .train import Trainer

    if not (0 < start < end) or steps < 5:
        raise TlguiError("the sweep needs 0 < start < end and at least 5 steps")
    config = one_backbone(copy.copy(config), dataset.task)
    if config.freeze == "auto":
        config.freeze = "none"  # auto's rate is its fine-tuning's
    config.folds = 0
    with tempfile.TemporaryDirectory(prefix="tlgui-lr-find-") as folder:
        trainer = Trainer(config, dataset, folder, [], stop)
        generator = seed_everything(config.seed)
        train_idx, val_idx = trainer._check_dataset()
        model = build_model(config, dataset, trainer.device, [dataset.inputs[i] for i in train_idx])
        trainer.config = settle_length(config, model, [dataset.inputs[i] for i in train_idx])
        tr, _, cached = trainer._prepare(model, train_idx, val_idx)
        if cached:
            model.scale.fit(tr.data)  # the head sees standardised features, as in a run
        augment = config.uses_augmentation and dataset.task == "image" and not cached
        lrs, losses = _sweep(trainer, model, tr, cached, augment, generator, steps, start, end)
    return {"lrs": lrs, "losses": losses, "suggested": suggest(lrs, losses), "frozen": cached}


def _sweep(trainer, model, tr, cached, augment, generator, steps, start, end) -> tuple[list[float], list[float]]:
    from ..data.batches import index_batches

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=start, weight_decay=trainer.config.weight_decay)
    factor = (end / start) ** (1 / (steps - 1))
    lrs, losses, avg, lowest = [], [], 0.0, math.inf
    batches: list = []
    model.train()
    for i in range(steps):
        trainer.emit.check_stop()
        if not batches:
            batches = list(index_batches(len(tr), trainer.config.batch_size, True, generator))
        idx = batches.pop(0)
        lr = start * factor ** i
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum, _ = trainer._train_step(model, tr, idx, augment, generator, cached, opt)
        trainer.scaler.step(opt)
        trainer.scaler.update()
        loss = loss_sum / len(idx)
        if not math.isfinite(loss):
            break
        avg = SMOOTH * avg + (1 - SMOOTH) * loss
        smooth = avg / (1 - SMOOTH ** (i + 1))
        lrs.append(lr)
        losses.append(smooth)
        lowest = min(lowest, smooth)
        if smooth > BLOW_UP * lowest:
            break
    return lrs, losses


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate of the steepest fall of the smoothed loss, up to its lowest point (fastai's
    `steepest`); a tenth of the lowest point's rate where the curve is too short to tell."""
    if len(lrs) < 2:
        raise TlguiError("the learning-rate sweep ended at once (the loss was not finite): check the data")
    low = int(np.argmin(losses))
    if low < 3:
        return float(lrs[low] / 10)
    slope = np.gradient(np.asarray(losses[: low + 1]), np.log(np.asarray(lrs[: low + 1])))
    return float(lrs[int(np.argmin(slope))])
