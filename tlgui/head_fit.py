"""A converged head on frozen features: the linear probe, its strength chosen on validation.

With every backbone frozen the features are in memory, and fitting the head is a small convex
problem (concat fusion) or a small non-convex one (the other fusions): full-batch L-BFGS with a
strong-Wolfe line search fits it to convergence in a second or two, where minibatch epochs
leave it undertrained. The L2 strength is picked from a small log grid of C values, exactly
as scikit-learn's LogisticRegression counts it (objective: C * summed loss + |W|^2 / 2), walked
from strong to weak, each fit warm-started from the previous one. The model is then refitted
with the chosen C on every labelled example, as a tuned scikit-learn baseline would be.

Features come in as stored (float32, or float16 for big sets) and are standardised by the model's
own `scale` a block of CHUNK rows at a time, each block's gradient added up: a fit holds no second
copy of the features, however many there are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # strong to weak regularisation
GROUP = 10  # L-BFGS iterations per reported point
MAX_ITER = 300  # per fit; a well-scaled probe converges in tens
RTOL = 1e-5  # a group of steps that gains less than this share of the objective ends the fit
CHUNK = 4096  # rows standardised and pushed through the head at once (a 20 MB float32 block at 1,280 wide)
PATIENCE = 2  # grid points past the best, all worse on validation, before the walk stops
IMBALANCE = 3.0  # largest class over smallest at which `class_weights auto` turns on


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """Inverse-frequency loss weights (mean 1 over examples), or None where they are off."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(float)
    present = counts[counts > 0]
    if mode == "off" or (mode == "auto" and present.max() < IMBALANCE * present.min()):
        return None
    w = np.where(counts > 0, counts.sum() / (len(present) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


@contextlib.contextmanager
def flush_denormals():
    """Confident examples' probabilities underflow to denormal floats, which make a CPU's matrix
    products 10-20 times slower (measured: 0.72 s against 0.05 s a step at 10,000 x 1,280)."""
    was = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if was:
            torch.set_flush_denormal(False)


def _params(model) -> list[torch.Tensor]:
    return [p for m in (model.fusion, model.head) for p in m.parameters() if p.requires_grad]


def _penalised(model) -> list[torch.Tensor]:
    return [p for p in _params(model) if p.dim() >= 2]  # weights, never biases or norm scales


def no_denormals(grad: torch.Tensor) -> torch.Tensor:
    """A logits gradient with its underflowing entries set to zero: flushing denormals is per thread,
    and the matrix product behind it runs on every thread."""
    return grad.masked_fill(grad.abs() < 1e-30, 0.0)


def _logits(model, feats: list[torch.Tensor], rows: slice) -> torch.Tensor:
    """The head's logits of `rows`, as `model.classify` computes them. For concat fusion the scale is
    folded into the linear layer, (x - m) / s @ W.T = x @ (W / s).T - m @ (W / s).T, so that no
    standardised copy of the rows is made: 3.5 times less CPU a pass over 8,000 x 1,280 features
    (`bench/fit_speed.py --fold-only`, both ways in one process)."""
    if model.fusion.mode != "concat":
        return model.head(model.fusion(model.scale([f[rows] for f in feats]))).float()
    linear = model.head[-1]
    out, start = linear.bias, 0
    for i, f in enumerate(feats):
        w = linear.weight[:, start:start + f.shape[1]] / getattr(model.scale, f"std{i}")
        out = out + f[rows].float() @ w.T - getattr(model.scale, f"mean{i}") @ w.T
        start += f.shape[1]
    return out


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


def fit(model, feats: list[torch.Tensor], y: torch.Tensor, c: float, weight=None,
        on_group: Callable[[int, float], None] | None = None) -> tuple[float, int]:
    """Fit fusion and head on the features `feats` (standardised by `model.scale`, fitted before) to
    convergence for this C, starting from their current weights. Returns (final training loss,
    L-BFGS iterations)."""
    params = _params(model)
    l2 = 1.0 / (c * len(y))  # C * sum(loss) + |W|^2/2, divided by C * n
    total_weight = float(weight[y].sum()) if weight is not None else float(len(y))  # cross_entropy's mean
    opt = torch.optim.LBFGS(params, lr=1, max_iter=GROUP, history_size=20, tolerance_grad=1e-5,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")
    model.fusion.eval()
    model.head.eval()  # no dropout: the objective must be deterministic for L-BFGS

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for rows in _chunks(len(y)):  # each block's graph freed by its own backward
            logits = _logits(model, feats, rows)
            logits.register_hook(no_denormals)
            part = F.cross_entropy(logits, y[rows], weight=weight, reduction="sum") / total_weight
            part.backward()
            loss += part.item()
        penalty = 0.5 * l2 * sum((p * p).sum() for p in _penalised(model))
        penalty.backward()
        closure.loss, closure.total = loss, loss + penalty.item()
        return torch.tensor(closure.total)

    with flush_denormals():
        return _iterate(opt, closure, params, on_group)


def _iterate(opt, closure, params, on_group) -> tuple[float, int]:
    """L-BFGS in groups of GROUP iterations until it converges: its own tolerances, or a group that
    lowered the objective by less than RTOL of it. On real 1,280-wide features the tolerances may
    never fire in float32: the last hundreds of steps move the objective in its fifth digit and
    held-out accuracy not at all (10,000 Fashion-MNIST features: 300 steps a C without the rule)."""
    steps, before = 0, None
    while steps < MAX_ITER:
        opt.step(closure)
        done = opt.state[params[0]]["n_iter"] - steps
        steps += done
        if on_group:
            on_group(steps, closure.loss)
        if done < GROUP:  # L-BFGS stopped on its tolerance before the group ended: converged
            break
        if before is not None and before - closure.total < RTOL * abs(closure.total):
            break
        before = closure.total
    return closure.loss, steps


@torch.no_grad()
def scores(model, feats, y, weight=None) -> tuple[float, float, np.ndarray]:
    """(loss, accuracy, probabilities) of the head on the features `feats`."""
    model.fusion.eval()
    model.head.eval()
    logits = torch.cat([_logits(model, feats, rows) for rows in _chunks(len(y))])
    return (F.cross_entropy(logits, y, weight=weight).item(), (logits.argmax(1) == y).float().mean().item(),
            logits.softmax(1).cpu().numpy())


@dataclass
class Walk:
    """One walk along the C grid: validation scores and probabilities per C reached."""

    cs: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_probs: list[np.ndarray] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    steps: int = 0


def best_index(accuracy: list[float], loss: list[float]) -> int:
    """The most accurate on validation; among equals, the lowest validation loss."""
    return min(range(len(accuracy)), key=lambda i: (-round(accuracy[i], 9), loss[i]))


def walk(model, tr: list[torch.Tensor], ytr: torch.Tensor, va: list[torch.Tensor], yva: torch.Tensor, weight=None,
         on_point: Callable[[dict], None] | None = None, check_stop: Callable[[], None] = lambda: None,
         grid: tuple[float, ...] = C_GRID, restart: dict | None = None) -> Walk:
    """Fit along `grid` (strong to weak), scoring each C on the validation part, until the
    validation scores say weaker regularisation cannot help (`_past_best`). With `restart` (the
    non-convex fusions) every C starts from that state instead: under strong regularisation a
    projection and the head both shrink to zero, a stationary point no warm start would leave."""
    w = Walk()
    for c in grid:
        check_stop()
        if restart is not None:
            load_state(model, {k: v.clone() for k, v in restart.items()})

        def group(steps, loss, c=c):
            check_stop()
            if on_point:
                vl, va_acc, _ = scores(model, va, yva, weight)
                on_point({"step": w.steps + steps, "c": c, "train_loss": loss, "val_loss": vl, "val_accuracy": va_acc})

        _, steps = fit(model, tr, ytr, c, weight, group)
        w.steps += steps
        vl, acc, probs = scores(model, va, yva, weight)
        w.cs.append(c)
        w.val_loss.append(vl)
        w.val_accuracy.append(acc)
        w.val_probs.append(probs)
        w.states.append({k: v.detach().clone() for k, v in _state(model).items()})
        if _past_best(w.val_accuracy, w.val_loss):
            break
    return w


def _past_best(accuracy: list[float], loss: list[float]) -> bool:
    """The last PATIENCE points are past the validation loss's minimum and none is as accurate as
    the best: weaker regularisation from here on only fits the training part more closely."""
    if len(loss) <= PATIENCE:
        return False
    lowest = int(np.argmin(loss))
    tail = range(len(loss) - PATIENCE, len(loss))
    return lowest < tail[0] and all(accuracy[i] < max(accuracy) for i in tail)


def _state(model) -> dict[str, torch.Tensor]:
    return {**{f"fusion.{k}": v for k, v in model.fusion.state_dict().items()},
            **{f"head.{k}": v for k, v in model.head.state_dict().items()}}


def load_state(model, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(state, strict=False)


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint index sets covering every example, each class spread evenly across them."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(int(i))
        offset += len(idx)
    return [np.array(sorted(f)) for f in folds]
