"""A converged head on frozen features: the linear probe, its strength chosen on validation.

With every backbone frozen the features are in memory, and fitting the head is a small convex
problem (concat fusion) or a small non-convex one (the other fusions): full-batch L-BFGS with a
strong-Wolfe line search fits it to convergence, where minibatch epochs leave it undertrained.
The L2 strength is picked from a small log grid of C values, exactly as scikit-learn's
LogisticRegression counts it (objective: C * summed loss + |W|^2 / 2), walked from strong to weak,
each fit warm-started from the previous one and stopped early (the choice needs validation
scores, not the last digits). The chosen C is then fitted to convergence: on every labelled
example, as a tuned scikit-learn baseline would be, or on the training part before fine-tuning.

A concat head is fitted in the principal axes of its standardised rows (`Linear`): the optimum
lies in their span, so dropping the axes without variance changes nothing, and scaling each axis
by the curvature it brings makes L-BFGS converge in a few times fewer steps, each on fewer numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nets.fusion import Conv, Product, Projected, Weighted
from ..nets.standardise import FeatureScale

C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # strong to weak regularisation
HISTORY = 20  # L-BFGS curvature pairs kept
GROUP = 5  # L-BFGS iterations per reported point
MAX_ITER = 300  # per fit; a well-scaled probe converges in tens
FUSED_MAX_ITER = 20  # per fit of a fused head: each step moves every projection's weights, and past tens of
# steps a non-convex head on few rows fits the training part, not validation
RTOL = 3e-5  # a group of steps that gains less than this share of the objective ends the fit
WALK_RTOL = 1e-3  # the same for the walk's fits on many rows: enough for validation scores to settle
LOOSE_ABOVE = 1_000_000  # numbers in the training rows above which the walk's fits stop at WALK_RTOL
CHUNK = 4096  # rows standardised and pushed through the head at once (a 20 MB float32 block at 1,280 wide)
LEFT_OUT = 1e-5  # share of the rows' variance the principal axes may leave out
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


def no_denormals(grad: torch.Tensor) -> torch.Tensor:
    """A logits gradient with its underflowing entries set to zero: flushing denormals is per thread,
    and the matrix product behind it runs on every thread."""
    return grad.masked_fill(grad.abs() < 1e-30, 0.0)


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


def _lbfgs(params: list[torch.Tensor], closure, rtol: float, on_group, tolerance_grad: float,
           max_iter: int = MAX_ITER) -> int:
    """L-BFGS in groups of GROUP iterations until it converges: its own tolerances, or a group that
    lowered the objective by less than `rtol` of it. On real 1,280-wide features the tolerances may
    never fire in float32: the last hundreds of steps move the objective in its fifth digit and
    held-out accuracy not at all. Returns the iterations taken."""
    opt = torch.optim.LBFGS(params, lr=1, max_iter=GROUP, max_eval=GROUP * 5, history_size=HISTORY,
                            tolerance_grad=tolerance_grad, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    steps, before = 0, None
    with flush_denormals():
        while steps < max_iter:
            opt.step(closure)
            done = opt.state[params[0]]["n_iter"] - steps
            steps += done
            if on_group:
                on_group(steps, closure.loss, closure.accuracy)
            if done < GROUP:  # stopped on its own tolerance (or out of evaluations: no progress left)
                break
            if before is not None and before - closure.total < rtol * abs(closure.total):
                break
            before = closure.total
    return steps


class Linear:
    """A concat head as the convex problem it is, in the principal axes of the standardised rows.

    `parts` are blocks of rows (the training part, the validation part). A float32 part is kept
    turned to the axes, r numbers a row where r <= 1,280 is the count of axes with variance: each
    pass reads fewer numbers. A float16 part (a big set) is read where it lies, standardised a block
    at a time, with the weights turned back to the features' own axes: no second copy of it. The
    parameters L-BFGS moves are each axis's weights times the square root of the loss's curvature
    along it (`_scales`), which evens out the steps it needs."""

    def __init__(self, model, parts: list[list[torch.Tensor]], labels: list[torch.Tensor], weight=None):
        self.model, self.labels, self.weight, self.parts = model, labels, weight, parts
        width = sum(x.shape[1] for x in parts[0])
        n = sum(len(y) for y in labels)
        var, axes = self._rows_axes(n) if n < width else self._width_axes(width, n)
        share = var.cumsum(0) / var.sum().clamp_min(1e-30)
        r = min(int((share < 1 - LEFT_OUT).sum()) + 1, len(var))
        self.var, self.axes = var[:r].float(), axes[:, :r].float().contiguous()
        self.width = r
        self.turned = [self._turn(f) if f[0].dtype == torch.float32 else None for f in parts]
        self.onehot = [F.one_hot(y, model.head[-1].out_features).float() for y in labels]
        self.row_weight = [weight[y] if weight is not None else torch.ones(len(y), device=y.device) for y in labels]
        linear = model.head[-1]
        self.w = (linear.weight.detach() @ self.axes).clone()
        self.b = linear.bias.detach().clone()

    def _width_axes(self, width: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Variances and principal axes, largest first, from the width x width Gram matrix of the rows."""
        gram = torch.zeros(width, width, device=self.labels[0].device)
        for f in self.parts:
            for rows in _chunks(len(f[0])):
                x = self._standardised(f, rows)
                gram.addmm_(x.T, x)
        gram /= max(n, 1)
        # in float64: float32's eigh fails on many repeated (zero) eigenvalues (fewer rows than width), and
        # whether it fails depends on where its buffers lie in memory, so the same seed gave two runs;
        # float64's axes are the same to the bit each time, for 0.08 s more at 1,280 wide
        var, axes = torch.linalg.eigh(gram.double())
        return var.flip(0).clamp_min(0), axes.flip(1)

    def _rows_axes(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same from the n x n matrix of the rows' products, where rows are fewer than features (a few
        hundred pictures, several backbones side by side): X X^T u = l u gives the axis X^T u / sqrt(l) of
        variance l / n. Its eigh costs n^3, not width^3: 0.02 s against 28 s at 300 rows of 3,840 features."""
        x = torch.cat([self._standardised(f, slice(None)) for f in self.parts]).double()
        lam, u = torch.linalg.eigh(x @ x.T)
        lam, u = lam.flip(0).clamp_min(0), u.flip(1)
        axes = (x.T @ u) / lam.sqrt().clamp_min(1e-12)  # columns past the rank are cut by the caller's share
        return lam / max(n, 1), axes

    def _turn(self, f: list[torch.Tensor]) -> torch.Tensor:
        out = torch.empty(len(f[0]), self.width, device=f[0].device)
        for rows in _chunks(len(f[0])):
            out[rows] = self._standardised(f, rows) @ self.axes
        return out

    def _standardised(self, f: list[torch.Tensor], rows: slice) -> torch.Tensor:
        """Rows of the features `f`, standardised by the model's scale and joined, in float32."""
        scale = self.model.scale  # in place on one float32 copy of the block: a big set's fit peaks lower
        parts = [x[rows].to(torch.float32, copy=True).sub_(getattr(scale, f"mean{i}")).div_(getattr(scale, f"std{i}"))
                 for i, x in enumerate(f)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _blocks(self, which):
        """(rows, turned, labels, one-hot labels, row weights) of parts `which`: a turned part whole,
        another a block of CHUNK standardised rows at a time."""
        for i in which:
            y, onehot, rw = self.labels[i], self.onehot[i], self.row_weight[i]
            if self.turned[i] is not None:
                yield self.turned[i], True, y, onehot, rw
            else:
                for rows in _chunks(len(y)):
                    yield self._standardised(self.parts[i], rows), False, y[rows], onehot[rows], rw[rows]

    def _logits(self, which, w, b):
        """(logits, rows, turned, labels, one-hot labels, row weights) a block at a time."""
        own = None  # the weights in the features' own axes, made once for the parts read where they lie
        for x, turned, *rest in self._blocks(which):
            if not turned and own is None:
                own = w @ self.axes.T
            yield (torch.addmm(b, x, (w if turned else own).T), x, turned, *rest)

    def _pass(self, which, w, b):
        """Weighted summed loss, correct count, and the summed gradients over parts `which`."""
        loss, correct = 0.0, 0
        gw, gb, g_own = torch.zeros_like(w), torch.zeros_like(b), None
        for logits, x, turned, y, onehot, rw in self._logits(which, w, b):
            lse = logits.logsumexp(1)
            loss += float(rw @ (lse - logits.gather(1, y[:, None]).squeeze(1)))
            correct += int((logits.argmax(1) == y).sum())
            # Probabilities below e^-80 are left at e^-80: never a denormal float (see flush_denormals).
            g = logits.sub_(lse[:, None]).clamp_min_(-80.0).exp_().sub_(onehot).mul_(rw[:, None])
            if turned:
                gw.addmm_(g.T, x)
            else:
                g_own = g.T @ x if g_own is None else g_own.addmm_(g.T, x)
            gb += g.sum(0)
        if g_own is not None:
            gw += g_own @ self.axes
        return loss, correct, gw, gb

    @torch.no_grad()
    def _scales(self, which, l2: float) -> torch.Tensor:
        """Per class and axis, the square root of the loss's curvature along that axis where the fit
        starts: mean p(1 - p) of the class times the axis's variance, plus l2. A fixed bound (p(1 - p)
        <= 1/4) would overstate it for confident classes and slow the fit where the data separate."""
        curvature = torch.zeros_like(self.b)
        for logits, *_ in self._logits(which, self.w, self.b):
            p = logits.softmax(1)
            curvature += (p * (1 - p)).sum(0)
        n = sum(len(self.labels[i]) for i in which)
        return (curvature[:, None] / max(n, 1) * self.var + l2).sqrt()

    def fit(self, c: float, which=(0,), rtol: float = RTOL, on_group=None) -> tuple[float, int]:
        """Fit at this C on parts `which`, from the current weights. (training loss, L-BFGS iterations)."""
        n = sum(len(self.labels[i]) for i in which)
        total_weight = float(sum(self.row_weight[i].sum() for i in which)) or 1.0  # cross_entropy's mean
        l2 = 1.0 / (c * n)  # C * sum(loss) + |W|^2/2, divided by C * n
        d = self._scales(which, l2)
        v = (self.w * d).requires_grad_(True)
        b = self.b.clone().requires_grad_(True)

        def closure():
            w = v.detach() / d
            self.w, self.b = w, b.detach()  # what `scores` reads between groups of steps
            loss, correct, gw, gb = self._pass(which, w, self.b)
            penalty = 0.5 * l2 * float((w * w).sum())
            v.grad = (gw / total_weight + l2 * w) / d
            b.grad = gb / total_weight
            closure.loss, closure.total, closure.accuracy = loss / total_weight, loss / total_weight + penalty, correct / n
            return torch.tensor(closure.total)

        steps = _lbfgs([v, b], closure, rtol, on_group, 1e-7)
        self.load({"w": v.detach() / d, "b": b.detach()})
        return closure.loss, steps

    @torch.no_grad()
    def scores(self, i: int) -> tuple[float, float, np.ndarray]:
        """(loss, accuracy, probabilities) of the head on part i."""
        logits = torch.cat([logits for logits, *_ in self._logits((i,), self.w, self.b)])
        return _scores(logits, self.labels[i], self.weight)

    def state(self) -> dict:
        return {"w": self.w.clone(), "b": self.b.clone()}

    @torch.no_grad()
    def load(self, state: dict) -> None:
        """Take these weights, and give the model's linear layer the same (in the features' own axes)."""
        self.w, self.b = state["w"].clone(), state["b"].clone()
        linear = self.model.head[-1]
        linear.weight.copy_(self.w @ self.axes.T)
        linear.bias.copy_(self.b)


class Fused:
    """A head behind a learned fusion (mean, weighted, product, conv): non-convex, fitted through
    autograd on the model itself. Under strong regularisation a projection and the head both shrink
    to zero, a stationary point no warm start would leave, so each C of a walk starts afresh, from
    the backbones' own probes (`start`)."""

    def __init__(self, model, parts: list[list[torch.Tensor]], labels: list[torch.Tensor], weight=None):
        self.model, self.parts, self.labels, self.weight = model, parts, labels, weight
        self.restart = self.state()
        self.width = sum(f.shape[1] for f in parts[0])
        self.singles: list[tuple[Linear, nn.Module]] | None = None  # each backbone's probe, made on first use

    def start(self, c: float) -> None:
        """Where a fit at this C starts: each projection from its backbone's own converged probe at C
        (on the training rows, read through the projection's own normalisation), the head reading
        those logits back. Mean, weighted and conv start from the average of the probes' logits,
        product from the best probe's (the other factors at one). From a random start the fit stopped
        below its best backbone alone (weighted: 0.896 against 0.931 on 400 digits)."""
        self.load(self.restart)
        fusion, linear = self.model.fusion, self.model.head[-1]
        k = linear.out_features
        if not isinstance(fusion, Projected) or k > fusion.out_dim:  # no room for the logits: a random start
            return
        self.singles = self.singles or self._singles(fusion, k)
        losses = [problem.fit(c)[0] for problem, _ in self.singles]
        with torch.no_grad():
            for (_, single), proj in zip(self.singles, fusion.proj):
                out = proj[1]
                out.weight.zero_()
                out.bias.zero_()
                out.weight[:k] = single.head[-1].weight
                out.bias[:k] = single.head[-1].bias
                if isinstance(fusion, Product) and single is not self.singles[int(np.argmin(losses))][1]:
                    out.bias.fill_(1.0)
            linear.weight.zero_()
            linear.bias.zero_()
            linear.weight[:, :k] = torch.eye(k, device=linear.weight.device)
            if isinstance(fusion, Conv):  # the middle tap of each backbone's channel: their mean
                fusion.conv.weight.zero_()
                fusion.conv.bias.zero_()
                fusion.conv.weight[0, :, 1] = 1 / len(fusion.proj)

    def _squares(self, penalised: list[torch.Tensor]) -> torch.Tensor:
        """The L2 penalty's sum of squares. Weighted fusion's projections count times their backbone's
        weight (K w_k: 1 where the weights are even): penalised on their own, a projection would cost
        less behind a larger weight, and the penalty, not the data, drove all the weight onto one
        backbone (85.1% against 85.7% for the best backbone alone, 87.6% for mean)."""
        fusion = self.model.fusion
        scale = {}
        if isinstance(fusion, Weighted):
            w = fusion.logits.softmax(0) * len(fusion.proj)
            scale = {id(proj[1].weight): w[k] for k, proj in enumerate(fusion.proj)}
        return sum(((scale[id(p)] * p) ** 2).sum() if id(p) in scale else (p * p).sum() for p in penalised)

    def _singles(self, fusion: Projected, k: int) -> list[tuple[Linear, nn.Module]]:
        """Per backbone, the convex probe on its training rows as its projection reads them."""
        with torch.no_grad():
            feats = [proj[0](x.float()) for proj, x in zip(fusion.proj, self.model.scale(self.parts[0]))]
        out = []
        for z in feats:
            single = _Probe(z.shape[1], k).to(z.device)
            out.append((Linear(single, [[z]], [self.labels[0]], self.weight), single))
        return out

    def _params(self) -> list[torch.Tensor]:
        return [p for m in (self.model.fusion, self.model.head) for p in m.parameters() if p.requires_grad]

    def _logits(self, i: int, rows: slice) -> torch.Tensor:
        m = self.model
        return m.head(m.fusion(m.scale([f[rows] for f in self.parts[i]]))).float()

    def fit(self, c: float, which=(0,), rtol: float = RTOL, on_group=None) -> tuple[float, int]:
        params = self._params()
        penalised = [p for p in params if p.dim() >= 2]  # weights, never biases or norm scales
        n = sum(len(self.labels[i]) for i in which)
        l2 = 1.0 / (c * n)
        total_weight = float(sum((self.weight[self.labels[i]].sum() if self.weight is not None else len(self.labels[i]))
                                 for i in which)) or 1.0
        self.model.fusion.eval()
        self.model.head.eval()  # no dropout: the objective must be deterministic for L-BFGS

        def closure():
            for p in params:
                p.grad = None
            loss, correct = 0.0, 0
            for i in which:
                for rows in _chunks(len(self.labels[i])):  # each block's graph freed by its own backward
                    logits = self._logits(i, rows)
                    logits.register_hook(no_denormals)
                    y = self.labels[i][rows]
                    part = F.cross_entropy(logits, y, weight=self.weight, reduction="sum") / total_weight
                    part.backward()
                    loss += part.item()
                    correct += int((logits.detach().argmax(1) == y).sum())
            penalty = 0.5 * l2 * self._squares(penalised)
            penalty.backward()
            closure.loss, closure.total, closure.accuracy = loss, loss + penalty.item(), correct / n
            return torch.tensor(closure.total)

        steps = _lbfgs(params, closure, rtol, on_group, 1e-5, FUSED_MAX_ITER)
        return closure.loss, steps

    @torch.no_grad()
    def scores(self, i: int) -> tuple[float, float, np.ndarray]:
        self.model.fusion.eval()
        self.model.head.eval()
        logits = torch.cat([self._logits(i, rows) for rows in _chunks(len(self.labels[i]))])
        return _scores(logits, self.labels[i], self.weight)

    def state(self) -> dict:
        return head_state(self.model)

    def load(self, state: dict) -> None:
        load_head(self.model, state)


class _Probe(nn.Module):
    """A linear head on features already standardised: the model a `Linear` problem fits, alone."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.scale = FeatureScale([width])  # the identity
        self.head = nn.Sequential(nn.Linear(width, classes))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)


def head_state(model) -> dict[str, torch.Tensor]:
    """A copy of the fusion's and the head's weights, keyed as in the model's state dict."""
    return {**{f"fusion.{k}": v.detach().clone() for k, v in model.fusion.state_dict().items()},
            **{f"head.{k}": v.detach().clone() for k, v in model.head.state_dict().items()}}


def load_head(model, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=False)


def _scores(logits, y, weight) -> tuple[float, float, np.ndarray]:
    return (F.cross_entropy(logits, y, weight=weight).item(), (logits.argmax(1) == y).float().mean().item(),
            logits.softmax(1).cpu().numpy())


def problem(model, parts: list[list[torch.Tensor]], labels: list[torch.Tensor], weight=None) -> Linear | Fused:
    """The head's fit on these blocks of rows, the model's scale fitted before."""
    kind = Linear if model.fusion.mode == "concat" else Fused
    return kind(model, parts, labels, weight)


def fit(model, feats: list[torch.Tensor], y: torch.Tensor, c: float, weight=None, on_group=None,
        fresh: bool = False) -> tuple[float, int]:
    """Fit fusion and head on `feats` (standardised by `model.scale`) to convergence for this C, from
    their current weights, or with `fresh` from where a walk's fit at C starts (a fused head: its
    backbones' probes). Returns (final training loss, L-BFGS iterations)."""
    p = problem(model, [feats], [y], weight)
    if fresh and isinstance(p, Fused):
        p.start(c)
    return p.fit(c, (0,), RTOL, on_group)


@dataclass
class Walk:
    """One walk along the C grid: validation scores and states per C reached; `problem` fits on."""

    problem: Linear | Fused
    cs: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_probs: list[np.ndarray] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    steps: int = 0

    def best(self) -> int:
        return best_index(self.val_accuracy, self.val_loss)


def best_index(accuracy: list[float], loss: list[float]) -> int:
    """The most accurate on validation; among equals, the lowest validation loss."""
    return min(range(len(accuracy)), key=lambda i: (-round(accuracy[i], 9), loss[i]))


def walk(model, tr: list[torch.Tensor], ytr: torch.Tensor, va: list[torch.Tensor], yva: torch.Tensor, weight=None,
         on_point: Callable[[dict], None] | None = None, check_stop: Callable[[], None] = lambda: None,
         grid: tuple[float, ...] = C_GRID, rtol: float | None = None) -> Walk:
    """Fit along `grid` (strong to weak) on the training rows, scoring each C on the validation rows,
    until the validation scores say weaker regularisation cannot help (`_past_best`). On many rows
    each fit stops early; on few, where a tight fit takes milliseconds, it does not: there the rows
    may separate, and a loose fit at a weak C looks better on validation than its optimum is."""
    p = problem(model, [tr, va], [ytr, yva], weight)
    rtol = rtol or (WALK_RTOL if len(ytr) * p.width > LOOSE_ABOVE else RTOL)
    w = Walk(p)
    for c in grid:
        check_stop()
        if isinstance(p, Fused):
            p.start(c)

        def group(steps, loss, accuracy, c=c):
            check_stop()
            if on_point:
                vl, va_acc, _ = p.scores(1)
                on_point({"step": w.steps + steps, "c": c, "train_loss": loss, "train_accuracy": accuracy,
                          "val_loss": vl, "val_accuracy": va_acc})

        _, steps = p.fit(c, (0,), rtol, group)
        w.steps += steps
        vl, acc, probs = p.scores(1)
        w.cs.append(c)
        w.val_loss.append(vl)
        w.val_accuracy.append(acc)
        w.val_probs.append(probs)
        w.states.append(p.state())
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
