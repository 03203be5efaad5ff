"""The trainer's phases beyond the epoch loop: the converged probe of a frozen run, the probe
that LP-FT starts from, and `--freeze auto`'s choice between the two.

Functions of a `Trainer` (`train.py`), kept here so that the loop stays readable.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..outputs.modelcard import describe
from . import lpft
from . import probe as probes
from .auto import fine_tune_estimate, fine_tune_plan, resize
from .inputs import Inputs


def _all_rows(tr, va) -> tuple[list[torch.Tensor], torch.Tensor]:
    feats = tr.joined if tr.joined is not None and tr.joined is va.joined else [
        torch.cat([a, b]) for a, b in zip(tr.data, va.data)]
    return feats, torch.cat([tr.labels, va.labels]).to(feats[0].device)


def probe_run(trainer, model, tr, va, train_idx, val_idx, generator, t0):
    """A frozen run (or auto's first half): the converged probe, then for auto LP-FT if it fits."""
    cfg = trainer.config
    feats, labels = _all_rows(tr, va)
    auto = cfg.freeze == "auto" and len(va) > 0
    probe = probes.run_probe(model, feats, labels, len(tr), cfg.class_weights, cfg.folds, cfg.seed, trainer.emit,
                             trainer.emit.check_stop, t0, refit_all=not auto)
    history = list(probe.report.rows)
    if cfg.folds:  # out-of-fold predictions: every labelled example is scored
        va_report, idx_report = Inputs(feats, labels.cpu().numpy()), np.concatenate([train_idx, val_idx])
        own = slice(len(tr), None)
        probe_val = (probe.val_pred[own], probe.val_probs[own])
    else:
        va_report, idx_report = va, val_idx
        probe_val = (probe.val_pred, probe.val_probs) if probe.val_pred is not None else None
    trainer.best_val = (probe.val_pred, probe.val_probs) if probe.val_pred is not None else None
    chosen = None
    if auto:
        chosen = _auto(trainer, model, probe, probe_val, feats, labels, tr, va, train_idx, val_idx, generator, t0, history)
    if getattr(trainer, "search", None) is not None:  # the backbones auto tried, with their scores
        chosen = {**trainer.search.record, **(chosen or {})}
    extra = probe.summary()
    if chosen:
        extra["recipe"] = chosen
        if chosen.get("chosen") == "lp-ft":
            va_report, idx_report, extra = va, val_idx, {"recipe": chosen, "class_weights": extra.get("class_weights")}
    steps = history[-1]["epoch"] if history else 0
    if chosen and chosen.get("chosen") == "lp-ft":
        steps = chosen["lpft_best_epoch"]
    stopped = trainer.emit.stop.is_set()  # Stop during auto's fine-tuning: the probe is kept, the run says stopped
    return trainer._finish(model, va_report, idx_report, True, "stopped" if stopped else "finished", steps, history,
                           t0, extra)


def _auto(trainer, model, probe, probe_val, feats, labels, tr, va, train_idx, val_idx, generator, t0, history) -> dict:
    """LP-FT in the time the budget has left, cut to fit where it must (`auto.fine_tune_plan`);
    the better of it and the probe on validation stays."""
    cfg = trainer.config
    budget = cfg.budget or lpft.default_budget(trainer.device)
    left = budget - (time.perf_counter() - t0)
    va_labels = va.labels.numpy()
    probe_acc = float((probe_val[0] == va_labels).mean()) if probe_val else None
    try:
        estimate = fine_tune_estimate(trainer, model, len(tr), len(va), left)
    except Exception:  # noqa: BLE001 - without an estimate the probe stays, as on a tight budget
        estimate = None
    plan = fine_tune_plan(cfg.epochs, estimate, left, model, len(tr), len(va))
    if plan is None:
        if not cfg.folds:
            probes.refit_all(model, feats, labels, probe)
        record = lpft.choose(probe_acc, None, estimate, budget, False, left=left)
        trainer.emit("note", message=describe(record))
        return record
    kept = copy.deepcopy(model.state_dict())  # the probe as it would be saved (refitted below if it wins)
    kept_config, sizes = cfg, [getattr(b, "input_size", None) for b in model.backbones]
    if cfg.folds:
        probes.fit_train_part(model, feats, labels, len(tr), probe)
    resize(trainer, model, plan, np.concatenate([train_idx, val_idx]), len(tr))
    trainer.deadline = t0 + budget  # an estimate may be wrong: the epochs stop where the budget ends
    try:
        tuned, best_epoch = _fine_tune(trainer, model, train_idx, val_idx, generator, t0, history)
    finally:
        trainer.deadline = None
    tuned_acc = float((trainer.best_val[0] == va_labels).mean()) if trainer.best_val else None
    wins = None
    if trainer.best_val and probe_val:
        tuned_right, probe_right = trainer.best_val[0] == va_labels, probe_val[0] == va_labels
        wins = (int((tuned_right & ~probe_right).sum()), int((probe_right & ~tuned_right).sum()))
    record = lpft.choose(probe_acc, tuned_acc, estimate, budget, tuned, wins, left=left, plan=plan)
    record["lpft_best_epoch"] = best_epoch
    if record["chosen"] == "probe":
        trainer.config = kept_config
        for b, size in zip(model.backbones, sizes):
            if size is not None:
                b.input_size = size
        model.load_state_dict(kept)
        if not cfg.folds:
            probes.refit_all(model, feats, labels, probe)
        trainer.best_val = (probe.val_pred, probe.val_probs)
    trainer.emit("note", message=describe(record))
    return record


def _fine_tune(trainer, model, train_idx, val_idx, generator, t0, history) -> tuple[bool, int | None]:
    """Auto's second half: every layer trains from the probe. (whether it ran an epoch, its best epoch)."""
    from ..events import StopRequested

    cfg, ds = trainer.config, trainer.dataset
    model.freeze("none")
    order = np.concatenate([train_idx, val_idx])
    data = trainer._inputs(model, order)
    n = len(train_idx)
    tr, va = Inputs(data[:n], ds.labels[train_idx]), Inputs(data[n:], ds.labels[val_idx])
    augment = ds.task == "image" and cfg.augment is not False
    offset = history[-1]["epoch"] if history else 0
    rows: list[dict] = []
    emit = trainer.emit
    try:
        trainer.emit = _Offset(emit, offset)  # LP-FT's epochs follow the fit's steps on the curve
        _, best_epoch, _ = trainer._epochs(model, tr, va, False, augment, generator, t0, rows, from_probe=True)
    except StopRequested:
        return False, None
    finally:
        trainer.emit = emit
        model.freeze("all")
    history += [{**r, "epoch": r["epoch"] + offset, "phase": "lp-ft"} for r in rows]
    return True, best_epoch


class _Offset:
    """The trainer's emitter with epoch numbers moved past the probe's steps."""

    def __init__(self, emit, offset: int):
        self.inner, self.offset = emit, offset
        self.stop, self.listeners = emit.stop, emit.listeners

    def __call__(self, event: str, **data) -> None:
        if event in ("epoch", "batch") and "epoch" in data:
            data = {**data, "epoch": data["epoch"] + self.offset, "phase": "lp-ft"}
        self.inner(event, **data)

    def check_stop(self) -> None:
        self.inner.check_stop()


def probe_first(trainer, model, tr, va, train_idx, val_idx, t0) -> dict:
    """LP-FT's first half: the probe on the backbone's features as they are, fitted on the training
    part (validation stays held out for the epochs), so that fine-tuning starts from a fitted head.
    The features are a frozen run's (the feature cache's, or computed as a frozen run computes them)."""
    cfg = trainer.config
    feats = [f.to(trainer.device) for f in trainer.features(model, np.concatenate([train_idx, val_idx]))]
    labels = torch.cat([tr.labels, va.labels]).to(trainer.device)
    t = time.perf_counter()
    probe = probes.run_probe(model, feats, labels, len(tr), cfg.class_weights, 0, cfg.seed, lambda *a, **k: None,
                             trainer.emit.check_stop, t0, refit_all=False)
    out = {"probe": {"fit_steps": probe.steps, "c": probe.c, "val_accuracy": probe.val_accuracy,
                     "seconds": time.perf_counter() - t}}
    trainer.emit("note", message=f"LP-FT: linear probe fitted ({probe.steps} steps, validation accuracy "
                                    f"{100 * (probe.val_accuracy or 0):.1f}%); fine-tuning from it")
    return out
