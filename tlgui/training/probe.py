"""The linear probe of a run: standardise, walk the C grid on validation (or k folds), refit on all.

Used by the trainer for frozen runs, as the first half of LP-FT, and as the first candidate of
`--freeze auto`. Progress goes out as `epoch` events marked `fit`, one per group of L-BFGS
iterations, so the page's curve grows live and metrics.jsonl records the fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import TlguiError
from . import head_fit


@dataclass
class Probe:
    c: float  # the chosen C (scikit-learn's count)
    steps: int  # L-BFGS iterations in all
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_pred: np.ndarray | None = None  # held-out predictions (out of fold with --folds), for the report
    val_probs: np.ndarray | None = None
    folds: list[float] = field(default_factory=list)  # each fold's accuracy at the chosen C
    class_weights: list[float] | None = None
    refit_all: bool = False  # the final head saw every labelled example
    weight: torch.Tensor | None = field(default=None, repr=False)  # the loss weights the fit used
    report: Reporter | None = field(default=None, repr=False)

    def summary(self) -> dict:
        out = {"fit_steps": self.steps, "c": self.c, "refit_on_all": self.refit_all}
        if self.folds:
            out.update(folds=self.folds, folds_mean=float(np.mean(self.folds)), folds_std=float(np.std(self.folds)))
        if self.class_weights is not None:
            out["class_weights"] = self.class_weights
        return out


def check_folds(k: int, labels: np.ndarray) -> None:
    """k-fold needs every class in every fold's validation part."""
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if k > smallest:
        raise TlguiError(f"--folds {k} is more than the smallest class has examples ({smallest}): "
                         f"use --folds {max(2, smallest)} or fewer, or add examples")


def _reset(model, initial: dict[str, torch.Tensor]) -> None:
    head_fit.load_head(model, initial)


def initial_state(model) -> dict[str, torch.Tensor]:
    """Where every fit starts: the fusion as built, the linear layer at zero (the convex problem's
    natural start, and the same from any seed)."""
    state = head_fit.head_state(model)
    if model.fusion.mode != "concat":  # a non-convex fit: each fit starts from the backbones' probes (`Fused.start`)
        return state
    for k in state:
        if k.startswith("head.") and k.endswith(("weight", "bias")):
            state[k] = torch.zeros_like(state[k])
    return state


class Reporter:
    """Turns fit points into `epoch` events with a running step count."""

    def __init__(self, emit: Callable, t0: float):
        self.emit, self.t0, self.offset, self.rows = emit, t0, 0, []

    def __call__(self, point: dict) -> None:
        row = {"epoch": self.offset + point["step"], "fit": True, "c": point["c"], "train_loss": point["train_loss"],
               "train_accuracy": point.get("train_accuracy"), "best": False,
               "elapsed": time.perf_counter() - self.t0, "eta": 0.0}
        if point.get("val_loss") is not None:
            row.update(val_loss=point["val_loss"], val_accuracy=point["val_accuracy"])
        self.rows.append(row)
        self.emit("epoch", **row)

    def advance(self, steps: int) -> None:
        self.offset += steps


def run_probe(model, feats: list[torch.Tensor], labels: torch.Tensor, n_train: int, weight_mode: str, folds: int,
              seed: int, emit: Callable, check_stop: Callable, t0: float, refit_all: bool = True,
              loose: bool = False) -> Probe:
    """Fit `model`'s scale, fusion and head on `feats` (train rows first, then validation rows).
    With `folds`, the C is chosen by k-fold cross-validation over every row instead. `loose`: the
    walk's fits stop at WALK_RTOL, enough to rank candidates (the same scores to 0.3 points on
    400 pictures, in two thirds of the time)."""
    rtol = head_fit.WALK_RTOL if loose else None
    n_classes = model.head[-1].out_features
    counted = labels if folds and folds > 1 else labels[:n_train]
    weight = head_fit.class_weights(counted.cpu().numpy(), n_classes, weight_mode)
    weight = weight.to(labels.device) if weight is not None else None
    report = Reporter(emit, t0)
    start = initial_state(model)
    _reset(model, start)
    if folds and folds > 1:
        probe = _cross_validate(model, feats, labels, folds, seed, weight, report, check_stop, start, rtol)
    else:
        probe = _validate(model, feats, labels, n_train, weight, report, check_stop, refit_all, rtol)
    probe.class_weights = weight.tolist() if weight is not None else None
    probe.weight, probe.report = weight, report
    return probe


def refit_all(model, feats: list[torch.Tensor], labels: torch.Tensor, probe: Probe) -> None:
    """After a probe fitted on the training part only: the head again, at the chosen C, on every row
    (the scale stays the training part's)."""
    _, steps = head_fit.fit(model, feats, labels, probe.c, probe.weight)  # no points: nothing is held out to score
    probe.steps += steps
    probe.refit_all = True


def fit_train_part(model, feats: list[torch.Tensor], labels: torch.Tensor, n_train: int, probe: Probe) -> None:
    """The probe's C on the training rows alone (after k folds, before fine-tuning, so that the
    validation rows stay unseen by the model that fine-tuning starts from)."""
    tr = [f[:n_train] for f in feats]
    model.scale.fit(tr)
    head_fit.fit(model, tr, labels[:n_train], probe.c, probe.weight)


def _validate(model, feats, labels, n_train, weight, report, check_stop, refit_all, rtol=None) -> Probe:
    tr, va = [f[:n_train] for f in feats], [f[n_train:] for f in feats]
    ytr, yva = labels[:n_train], labels[n_train:]
    model.scale.fit(tr)
    if not len(yva):  # nothing to choose on: scikit-learn's default strength
        _, steps = head_fit.fit(model, tr, ytr, 1.0, weight, _points(report, 1.0), fresh=True)
        return Probe(c=1.0, steps=steps)
    walk = head_fit.walk(model, tr, ytr, va, yva, weight, report, check_stop, rtol=rtol)
    b = walk.best()
    walk.problem.load(walk.states[b])
    # The chosen C to convergence: on every example (the held-out scores stay the walk's), or on the training part.
    _, steps = walk.problem.fit(walk.cs[b], (0, 1) if refit_all else (0,))
    return Probe(c=walk.cs[b], steps=walk.steps + steps, val_loss=walk.val_loss[b], val_accuracy=walk.val_accuracy[b],
                 val_probs=walk.val_probs[b], val_pred=walk.val_probs[b].argmax(1), refit_all=refit_all)


def _cross_validate(model, feats, labels, k, seed, weight, report, check_stop, start, rtol=None) -> Probe:
    y = labels.cpu().numpy()
    check_folds(k, y)
    parts = head_fit.stratified_folds(y, k, seed)
    walks, order = [], []
    for part in parts:
        check_stop()
        keep = torch.from_numpy(np.setdiff1d(np.arange(len(y)), part)).to(labels.device)
        hold = torch.from_numpy(part).to(labels.device)
        _reset(model, start)
        tr, va = [f[keep] for f in feats], [f[hold] for f in feats]
        model.scale.fit(tr)
        w = head_fit.walk(model, tr, labels[keep], va, labels[hold], weight, report, check_stop, rtol=rtol)
        report.advance(w.steps)
        w.problem = None  # its copy of the fold's rows is not needed past the fold
        walks.append(w)
        order.append(part)
    reached = min(len(w.cs) for w in walks)  # the grid points every fold reached
    acc = [float(np.mean([w.val_accuracy[i] for w in walks])) for i in range(reached)]
    loss = [float(np.mean([w.val_loss[i] for w in walks])) for i in range(reached)]
    b = head_fit.best_index(acc, loss)
    c = walks[0].cs[b]
    probs = np.zeros((len(y), walks[0].val_probs[0].shape[1]), dtype=np.float32)
    for w, part in zip(walks, order):
        probs[part] = w.val_probs[b]  # out-of-fold: every example scored by a head that never saw it
    _reset(model, start)
    model.scale.fit(feats)
    _, steps = head_fit.fit(model, feats, labels, c, weight, fresh=True)
    return Probe(c=c, steps=sum(w.steps for w in walks) + steps, val_loss=loss[b], val_accuracy=acc[b],
                 val_pred=probs.argmax(1), val_probs=probs, folds=[w.val_accuracy[b] for w in walks], refit_all=True)


def _points(report, c):
    """A fit's points with nothing held out: the training part's loss and accuracy."""

    def group(steps: int, loss: float, accuracy: float) -> None:
        report({"step": steps, "c": c, "train_loss": loss, "train_accuracy": accuracy})

    return group
