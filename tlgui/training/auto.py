"""`auto`: the backbones, their fusion and the fine-tuning a run can afford, chosen on held-out data.

With `--backbone auto` (the default) and frozen features (`--freeze auto` or `all`), a run tries
every backbone usable offline for the data's kind. The default backbone's features come first;
their measured time tells what the others would cost, and those that would not fit the budget's
share (`SEARCH_SHARE`) are left out. Every backbone's features are computed once (and cached),
so trying a combination costs a fit, never an extraction: converged linear probes on each
backbone alone and on the concatenation of the best two, three... The best on k folds (under
`FOLDS_BELOW` labelled examples, where one validation part is too noisy to choose by) or on
validation stays, and its leaderboard travels in the recipe (`results.json`, `tlgui.json`, the
card, the page). `fine_tune_plan` then sizes `--freeze auto`'s fine-tuning to the time left.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch

from ..config import RunConfig
from ..data.batches import cpu_threads, decode_size
from ..errors import TlguiError
from ..events import format_seconds
from ..nets.backbones import all_backbones, get_info
from ..nets.model import Classifier
from . import probe as probes
from .estimate import TRAIN_OVER_FORWARD, fine_tune_seconds
from .featcache import FeatureCache
from .inputs import KIND_WORDS, Inputs
from .timing import gflops_per_example, measured_seconds_per_gflop

DEFAULTS = {"image": "efficientnet_lite0", "text": "minilm_l6"}  # tried first: quick, and good alone
FOLDS = 5
FOLDS_BELOW = 1_000  # labelled examples under which candidates are scored by k folds, not one validation part
SMALL_FIT = 4_000_000  # feature numbers under which a fit runs in one CPU thread, as the trainer's do
# Of the budget, what the candidates' features may take (5 s on a CPU, 50 s on a GPU): the first click
# (300 pictures) stays within 10 s on 2 cores, and most of the budget is left for fine-tuning
SEARCH_SHARE = 1 / 12
# Where this run has measured nothing (the first backbone's features were cached): seconds per GFLOP
# of a frozen forward pass, as PyTorch runs EfficientNet-Lite0 on 2 CPU cores (on the safe side)
FALLBACK_SECONDS_PER_GFLOP = {"cpu": 0.04, "cuda": 0.002, "mps": 0.01}
ONNX_SPEEDUP = 3.0  # onnxruntime's frozen features against PyTorch's, whose training steps fine-tuning runs
# Fine-tuning is cut to fit the time left, down to half of its epochs x pixels and no further: cut
# deeper it stays below the probe it starts from (EfficientNet-Lite0 on 400 digits: LP-FT at 112 px,
# 8 epochs, 0.917 against the probe's 0.919 at 224 px)
LEAST_WORK = 0.5
SIZE_STEPS = (1.0, 0.875, 0.75)  # of the native size, for a cut fine-tuning


def candidates(task: str) -> list[str]:
    """The backbones auto tries for this kind of data: usable offline (no download, no network),
    with fixed features when frozen (a probe); the default first, then the cheapest first."""
    infos = [i for i in all_backbones().values()
             if i.task == task and i.offline and not i.trains_when_frozen and i.stages >= 1]
    if not infos:
        raise TlguiError(f"no backbone for {KIND_WORDS.get(task, task)} is usable offline here: name one with "
                         "--backbone (`python -m tlgui backbones` lists them)")
    infos.sort(key=lambda i: (i.name != DEFAULTS.get(task), gflops_per_example(i, None), i.name))
    return [i.name for i in infos]


def resolved(config: RunConfig, task: str) -> tuple[RunConfig, Search | None]:
    """`config` with `auto` backbones made real: every candidate, and the search that tries them,
    where the features are frozen (`--freeze auto` or `all`); else the default backbone alone
    (fine-tuning each candidate is beyond any budget)."""
    names = candidates(task)
    stored = not (config.uses_augmentation and task == "image")  # features computed once: a fit per candidate
    if config.freeze in ("auto", "all") and stored and len(names) > 1:
        return replace(config, backbones=names), Search(names)
    return replace(config, backbones=names[:1]), None


def one_backbone(config: RunConfig, task: str) -> RunConfig:
    """`config` with `auto` backbones made the default one for the data's kind: for the runs that
    try no candidates (a learning-rate sweep, an audit)."""
    return replace(config, backbones=candidates(task)[:1]) if config.auto_backbones else config


def check_budget(trainer, estimate: dict | None) -> None:
    """`--freeze auto` with a budget that cannot hold even one linear probe: one sentence, before any work."""
    cfg = trainer.config
    if cfg.freeze != "auto" or cfg.budget is None:
        return
    need = time.perf_counter() - trainer.t0 + (estimate or {}).get("prepare", 0.0)
    if need > cfg.budget:
        raise TlguiError(f"a budget of {cfg.budget:g} s is too small for even one linear probe, which takes about "
                         f"{format_seconds(need)} here: give --budget {math.ceil(need) + 1} or more, or leave it out")


class Search:
    """The frozen candidates of one run: which were computed, their scores, the winner."""

    def __init__(self, names: list[str]):
        self.names = names
        self.left_out: list[dict] = []
        self.rows: list[dict] = []
        self.by = ""
        self.record: dict = {}
        self.rate: float | None = None  # seconds per GFLOP of this run's extraction, where it measured one
        self.features_s = 0.0  # seconds the candidates' features took (none where the cache held them)

    def run(self, trainer, model: Classifier, train_idx: np.ndarray, val_idx: np.ndarray):
        """(the winner's model, its training and validation features), from `model`, which holds
        every candidate: the first one's features, then those of the others that fit, then a probe
        on each alone and on the best few joined."""
        cfg, ds, device = trainer.config, trainer.dataset, trainer.device
        order = np.concatenate([train_idx, val_idx])
        digests = [ds.digests[i] for i in order]
        first, rest = _holding(model, model.backbones[:1]), _holding(model, model.backbones[1:])
        missing = len(self._missing(trainer, first, first.backbones[0], digests))
        t = time.perf_counter()
        feats = [f.to(device) for f in trainer.features(first, order)]
        work, seconds = missing * _gflops(first.backbones[0].name, cfg), time.perf_counter() - t
        self.rate = seconds / work if work > 0 and seconds > 0.05 else None
        backbones = list(first.backbones)
        kept = self._planned(trainer, rest, digests, self.rate or _known_rate(trainer), seconds)
        if kept:
            more = _holding(model, kept)
            feats += [f.to(device) for f in trainer.features(more, order)]
            backbones += kept
        self.features_s = time.perf_counter() - t
        labels = torch.as_tensor(ds.labels[order], dtype=torch.long, device=device)
        small = len(order) * sum(f.shape[1] for f in feats) < SMALL_FIT and device.type == "cpu"
        with cpu_threads(1 if small else None):  # tiny fits: a second thread only adds waits (10 s against 1 s)
            keep = self._choose(trainer, backbones, feats, labels, len(train_idx))
        model = Classifier([backbones[k] for k in keep], cfg.fusion, max(len(ds.classes), 2), cfg.fusion_dim).to(device)
        model.freeze(cfg.freeze)
        trainer.config = replace(cfg, backbones=[backbones[k].name for k in keep])
        feats = [feats[k] for k in keep]
        n = len(train_idx)
        tr = Inputs([f[:n] for f in feats], ds.labels[train_idx])
        va = Inputs([f[n:] for f in feats], ds.labels[val_idx])
        tr.joined = va.joined = feats  # views of one block, as `_prepare` gives them
        return model, tr, va

    @staticmethod
    def _missing(trainer, model: Classifier, backbone, digests) -> list:
        cache = FeatureCache.from_env()
        if cache is None:
            return list(digests)
        have = cache.present(trainer._cache_key(model, backbone), digests)
        return [d for d in digests if d not in have]

    def _planned(self, trainer, rest: Classifier, digests: list[str], rate: float, spent: float) -> list:
        """The other candidates whose features fit the budget's share with the first one's (`spent`
        seconds), each costed from its GFLOPs and the inputs the cache lacks; the left out are
        recorded with their cost."""
        cfg = trainer.config
        budget = cfg.budget or _default_budget(trainer.device)
        kept = []
        for b in rest.backbones:
            seconds = len(self._missing(trainer, rest, b, digests)) * rate * _gflops(b.name, cfg)
            if spent + seconds <= SEARCH_SHARE * budget:
                kept.append(b)
                spent += seconds
            else:
                self.left_out.append({"backbone": b.name, "seconds": round(seconds, 2)})
        return kept

    def _choose(self, trainer, backbones: list, feats: list[torch.Tensor], labels: torch.Tensor,
                n_train: int) -> list[int]:
        """Scores each backbone alone and the best 2, 3... joined; returns the winner's positions."""
        if len(backbones) == 1:  # the others left out: nothing to choose between
            self.record = self._record({"backbones": [backbones[0].name], "fusion": None, "accuracy": None})
            return [0]
        cfg = trainer.config
        counts = np.bincount(labels.cpu().numpy())
        folds = cfg.folds or min(FOLDS, int(counts[counts > 0].min()))  # every class in every fold
        if not cfg.folds and len(labels) >= FOLDS_BELOW and len(labels) > n_train or folds < 2:
            folds = 0  # a validation part of hundreds: as good a judge, at a fifth of the fits
        self.by = f"{folds}-fold cross-validation" if folds else "validation"
        tried = [self._score(trainer, backbones, [k], feats, labels, n_train, folds) for k in range(len(backbones))]
        ranked = sorted(range(len(tried)), key=lambda k: _rank(tried[k]))
        for top in range(2, len(ranked) + 1):
            tried.append(self._score(trainer, backbones, sorted(ranked[:top]), feats, labels, n_train, folds))
        best = min(tried, key=_rank)
        for row in tried:
            row["chosen"] = row is best
        self.rows = tried
        self.record = self._record(best)
        return best["keep"]

    def _score(self, trainer, backbones, keep, feats, labels, n_train, folds) -> dict:
        cfg = trainer.config
        trainer.emit.check_stop()
        model = Classifier([backbones[k] for k in keep], cfg.fusion, max(len(trainer.dataset.classes), 2),
                           cfg.fusion_dim).to(trainer.device)
        t = time.perf_counter()
        probe = probes.run_probe(model, [feats[k] for k in keep], labels, n_train, cfg.class_weights, folds, cfg.seed,
                                 lambda *a, **k: None, trainer.emit.check_stop, t, refit_all=False, loose=True)
        fusion = model.fusion.mode if len(keep) > 1 else None
        trainer.emit("note", message=f"auto: {_label([backbones[k].name for k in keep], fusion)} "
                                     f"{100 * (probe.val_accuracy or 0):.1f}% by {self.by}")
        return {"backbones": [backbones[k].name for k in keep], "fusion": fusion, "keep": keep,
                "accuracy": probe.val_accuracy, "loss": probe.val_loss, "c": probe.c,
                "seconds": round(time.perf_counter() - t, 3)}

    def _record(self, best: dict) -> dict:
        singles = [r for r in self.rows if len(r["backbones"]) == 1]
        best_single = min(singles, key=_rank) if singles else best
        rows = [{k: v for k, v in r.items() if k != "keep"} for r in self.rows]
        return {"candidates": rows, "by": self.by, "backbones": best["backbones"], "fusion": best["fusion"],
                "best_single": best_single["backbones"][0], "best_single_accuracy": best_single["accuracy"],
                "left_out": self.left_out, "features_s": round(self.features_s, 2)}


def _rank(row: dict) -> tuple:
    """The most accurate first; among equals the lower held-out loss, then fewer backbones."""
    return (-round(row["accuracy"] or 0.0, 9), row["loss"] if row["loss"] is not None else math.inf,
            len(row["backbones"]))


def _label(names: list[str], fusion: str | None) -> str:
    return " + ".join(names) + (f" ({fusion})" if fusion else "")


def _gflops(name: str, config: RunConfig) -> float:
    return gflops_per_example(get_info(name), config.image_size, config.max_length or 128)


def _holding(model: Classifier, backbones) -> Classifier:
    """A model of some of `model`'s backbones (the same modules), for their features alone."""
    return Classifier(list(backbones), "concat", model.head[-1].out_features)


def _default_budget(device: torch.device) -> float:
    from .lpft import default_budget

    return default_budget(device)


def settle_length(config: RunConfig, model: Classifier, texts: list[str]) -> RunConfig:
    """The tokens kept per text that the text backbones chose from the training texts, as one setting
    (the feature cache's key, `config.json` and the bundle record it): the longest choice, for all."""
    lengths = [b.max_length for b in model.backbones if getattr(b, "max_length", None)]
    if not lengths:
        return config
    length = max(lengths)
    for b in model.backbones:
        if getattr(b, "max_length", length) != length:
            b.fit_text(texts, length)
    return replace(config, max_length=length)


def _known_rate(trainer) -> float:
    """Seconds per GFLOP of frozen features where this run measured none: this machine's known
    speed, else a safe guess."""
    known = measured_seconds_per_gflop(trainer.dataset.task, trainer.device, 16)
    return known or FALLBACK_SECONDS_PER_GFLOP.get(trainer.device.type, 0.04)


def fine_tune_estimate(trainer, model: Classifier, n_train: int, n_val: int, left: float) -> float:
    """Seconds that fine-tuning every layer for the run's epochs would take. Reckoned first from the
    backbones' GFLOPs at the speed this run's features were computed at (as PyTorch computes them:
    training steps do not run on onnxruntime); timed (`fine_tune_seconds`, seconds of probes) only
    where no speed was measured, or a cut of it might fit the time left."""
    cfg = trainer.config
    search = getattr(trainer, "search", None)
    rate = search.rate if search is not None else None
    if rate is None:
        return _timed(trainer, model, n_train, n_val, left)
    if any(e.get("runtime") == "onnxruntime" for e in getattr(trainer, "extraction", {}).values()):
        rate *= ONNX_SPEEDUP
    gflops = sum(gflops_per_example(get_info(b.name), getattr(b, "input_size", None), cfg.max_length or 128)
                 for b in model.backbones)
    rough = cfg.epochs * (TRAIN_OVER_FORWARD * n_train + n_val) * rate * gflops
    if LEAST_WORK * rough > 2 * left:
        return rough
    return _timed(trainer, model, n_train, n_val, left)


def _timed(trainer, model: Classifier, n_train: int, n_val: int, left: float) -> float:
    """`fine_tune_seconds` with the backbones unfrozen while their forward pass is timed: a frozen text
    encoder answers texts it has seen from memory, which timed 14 times too fast (13 s for 3 min)."""
    model.freeze("none")
    try:
        return fine_tune_seconds(trainer.config, trainer.dataset, model, n_train, n_val, max(left, 1.0))
    finally:
        model.freeze("all")


def fine_tune_plan(epochs: int, full: float | None, left: float, model: Classifier, n_train: int,
                   n_val: int) -> dict | None:
    """The fine-tuning that fits the `left` seconds: every epoch at the native size where their
    estimate (`full`) fits; else fewer epochs, or pictures 7/8 or 3/4 the size (an epoch costs the
    square of the size, plus the probe fitted again at it), whichever keeps the most of the work,
    and never less than LEAST_WORK of it. None where nothing fits."""
    if not full or full <= 0 or left <= 0:
        return None
    per_epoch = full / epochs
    native = decode_size(model)
    resizable = native and all(getattr(b, "resizes", True) for b in model.backbones)
    best = None
    for scale in SIZE_STEPS if resizable else (1.0,):
        size = None if scale == 1.0 else int(round(native * scale / 8) * 8)
        area = 1.0 if size is None else (size / native) ** 2
        cost = per_epoch * area
        again = 0.0 if size is None else cost * (n_train + n_val) / (TRAIN_OVER_FORWARD * n_train + n_val)
        n = min(epochs, int((left - again) // cost))
        work = n / epochs * area
        if n >= 1 and work >= LEAST_WORK and (best is None or work > best["work"] + 1e-9):
            best = {"epochs": n, "of": epochs, "image_size": size, "work": round(work, 3),
                    "seconds": round(again + n * cost, 1)}
    return best


def resize(trainer, model: Classifier, plan: dict, order: np.ndarray, n_train: int) -> None:
    """The run set to a cut fine-tuning: its epochs, and where smaller pictures are planned, every
    image backbone at that size with the probe fitted again there (LP-FT starts from a probe of
    the pictures it sees, never from one of other pictures)."""
    cfg = trainer.config
    trainer.config = replace(cfg, epochs=plan["epochs"], image_size=plan["image_size"] or cfg.image_size)
    if not plan["image_size"]:
        return
    for b in model.backbones:
        if hasattr(b, "input_size"):
            b.input_size = plan["image_size"]
    feats = [f.to(trainer.device) for f in trainer.features(model, order)]
    labels = torch.as_tensor(trainer.dataset.labels[order], dtype=torch.long, device=trainer.device)
    probes.run_probe(model, feats, labels, n_train, cfg.class_weights, 0, cfg.seed, lambda *a, **k: None,
                     trainer.emit.check_stop, time.perf_counter(), refit_all=False)
