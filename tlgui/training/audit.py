"""Likely label errors: out-of-fold probabilities from frozen features, ranked by cleanlab.

Every labelled example gets a probability for each class from a linear model that never saw
it (k-fold over the whole set), fitted on the backbones' frozen features, which the trainer
computes once and keeps in the feature cache: a second look at the same data costs the folds
only. cleanlab's confident learning (`find_label_issues`) then picks the examples whose given
label the model disputes, most suspicious (lowest probability of the given label) first.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data.datasets import Dataset
from ..errors import TlguiError

DEFAULT_FOLDS = 5
MAX_ITER = 300  # lbfgs converges well within this on standardised features


def frozen_features(config: RunConfig, dataset: Dataset, work_dir: str | Path | None = None, listeners=(),
                    stop=None) -> np.ndarray:
    """(N, D) features of every example from the frozen backbones of `config`, through the
    trainer's own feature path: the same decoding, the same precision, the same cache.
    `work_dir` receives the trainer's log (a temporary folder when None)."""
    import torch

    from .auto import one_backbone, settle_length
    from .inputs import build_model
    from .train import Trainer

    cfg = RunConfig.from_dict({**config.to_dict(), "freeze": "all", "augment": False, "export": []})
    cfg = one_backbone(cfg, dataset.task)
    with tempfile.TemporaryDirectory(prefix="tlgui-audit-") as tmp:
        trainer = Trainer(cfg, dataset, work_dir or tmp, listeners, stop)
        model = build_model(cfg, dataset, trainer.device, list(dataset.inputs))  # a vocabulary from the texts at hand
        trainer.config = settle_length(cfg, model, list(dataset.inputs))
        feats = trainer.features(model, np.arange(len(dataset)))
    return torch.cat([f.float() for f in feats], dim=1).numpy()


def out_of_fold(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = DEFAULT_FOLDS,
                seed: int = 0) -> np.ndarray:
    """(N, C) probabilities, each row from a logistic regression fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    counts = np.bincount(labels, minlength=n_classes)
    k = int(min(folds, counts.min()))
    if k < 2:
        raise TlguiError("every class needs at least 2 examples to check its labels: add examples to "
                         f"{', '.join(str(c) for c in np.flatnonzero(counts < 2)[:5])}")
    probs = np.zeros((len(labels), n_classes))
    for fit, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(features, labels):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=MAX_ITER))
        # one BLAS thread: these products are small, and threads fighting over 2 busy cores made a fit 50x slower
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # a fold that stops short of convergence still ranks well
            clf.fit(features[fit], labels[fit])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(features[held])
    return probs


def rank_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices cleanlab flags as label errors, most suspicious first (self-confidence)."""
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(find_label_issues(labels, probs, return_indices_ranked_by="self_confidence",
                                            n_jobs=1), dtype=np.int64)


def describe(dataset: Dataset, probs: np.ndarray, ranked: np.ndarray) -> list[dict]:
    """One object per flagged example: where it is, the given and the suggested label, and how
    strongly the model disputes the given one (`score`: 1 - its probability of the given label)."""
    rows = dataset.rows
    out = []
    for i in ranked.tolist():
        given = int(dataset.labels[i])
        others = probs[i].copy()
        others[given] = -1.0
        suggested = int(others.argmax())
        item = {"path": dataset.inputs[i] if dataset.task == "image" else (rows[i] if rows else i + 2),
                "given": dataset.classes[given], "suggested": dataset.classes[suggested],
                "score": round(float(1.0 - probs[i, given]), 4),
                "confidence": round(float(probs[i, suggested]), 4), "index": i}
        if dataset.task == "text":
            item["text"] = dataset.inputs[i]
        out.append(item)
    return out


def audit(config: RunConfig, dataset: Dataset, folds: int = DEFAULT_FOLDS, work_dir: str | Path | None = None,
          listeners=(), stop=None) -> list[dict]:
    """Likely label errors of `dataset`, most suspicious first (see `describe`)."""
    if len(dataset.classes) < 2:
        raise TlguiError("the dataset has only one class: label errors need at least two classes to tell apart")
    feats = frozen_features(config, dataset, work_dir, listeners, stop)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    probs = out_of_fold(feats, labels, len(dataset.classes), folds, config.seed)
    return describe(dataset, probs, rank_issues(labels, probs))


def format_issues(issues: list[dict], n: int = 50) -> str:
    """The issues as plain lines, for the terminal."""
    if not issues:
        return "no likely label errors found"
    lines = [f"{len(issues)} likely label error(s), most suspicious first:"]
    for k, it in enumerate(issues[:n], start=1):
        where = it["path"] if isinstance(it["path"], str) else f"row {it['path']}"
        lines.append(f"{k:>4}. {where}: labelled {it['given']}, looks like {it['suggested']} (score {it['score']:.3f})")
    if len(issues) > n:
        lines.append(f"  ... and {len(issues) - n} more (use --json for all)")
    return "\n".join(lines)
