"""The end of a run: the best model's metrics and mistakes, the bundle with its exports,
results.json, and small pictures of the mistakes. The last of the Trainer's parts (`train.py`)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import runs
from ..data.datasets import Dataset
from ..errors import TlguiError
from ..nets.model import Classifier
from ..outputs.metrics import classification_metrics

log = logging.getLogger("tlgui")
MAX_MISTAKES = 100  # listed in results.json
MAX_MISTAKE_PICTURES = 24  # of those, drawn small into the run folder
PICTURE_PX = 128


@dataclass
class RunResult:
    status: str  # "finished" or "stopped"
    out_dir: Path
    bundle: Path | None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    model: Classifier | None = None  # the best model, on the CPU


def mistakes_of(dataset: Dataset, val_idx, labels: np.ndarray, pred: np.ndarray, probs: np.ndarray) -> list[dict]:
    """The first misclassified validation examples: where they are, their class and the model's guess."""
    out = []
    for k in np.flatnonzero(pred != labels)[:MAX_MISTAKES]:
        i = int(val_idx[k])
        out.append({"index": i, "input": dataset.inputs[i], "true": dataset.classes[dataset.labels[i]],
                    "predicted": dataset.classes[pred[k]], "score": float(probs[k, pred[k]])})
    return out


def save_mistake_pictures(folder: Path, dataset: Dataset, mistakes: list[dict]) -> None:
    """Small copies of misclassified validation pictures, so that the run folder shows them
    later without the dataset (an upload may be gone after a restart)."""
    if dataset.task != "image" or not mistakes:
        return
    out = folder / runs.MISTAKES
    try:
        out.mkdir(exist_ok=True)
    except OSError:
        return  # a full or read-only disk: the model is kept, the pictures are extras
    for k, m in enumerate(mistakes[:MAX_MISTAKE_PICTURES]):
        try:
            img = dataset.load_image(int(m["index"]), draft=PICTURE_PX)
            img.thumbnail((PICTURE_PX, PICTURE_PX))
            img.save(out / f"{k}.png")
        except OSError:  # a full disk: the rest would fail alike, and the results page shows what there is
            (out / f"{k}.png").unlink(missing_ok=True)
            return
        except Exception:  # a picture that decoded for training will decode here; if not, skip it
            log.debug("could not save mistake picture %s of %s", k, folder.name)


class FinishPart:
    """The Trainer's finish (a part of `train.Trainer`)."""

    def _finish(self, model, va, val_idx, cached, status, best_epoch, history, t0, extra=None) -> RunResult:
        from ..outputs.bundle import save_bundle

        ds = self.dataset
        metrics: dict = {}
        mistakes = []
        if len(va):
            pred, probs = self.best_val or self.evaluate_split(model, va, cached)[1:]
            metrics = classification_metrics(va.labels.numpy(), pred, ds.classes)
            mistakes = mistakes_of(ds, val_idx, va.labels.numpy(), pred, probs)
        metrics["best_epoch"] = best_epoch
        metrics.update(extra or {})
        if self.extraction:
            metrics["extraction"] = self.extraction
        if not self.main:  # rank 0 writes the bundle
            return RunResult(status, self.out_dir, None, metrics, history, model)
        weights = model.fusion.weights()
        if weights:
            metrics["fusion_weights"] = dict(zip(self.config.backbones, weights))
        model.cpu()
        bundle = save_bundle(self.out_dir / "model.zip", model, self.config, ds, metrics, history,
                             warn=lambda message: self.emit("warning", message=message))
        results = {"status": status, "metrics": metrics, "history": history, "mistakes": mistakes,
                   "dataset": ds.report(), "elapsed": time.perf_counter() - t0}
        runs.atomic_write(self.out_dir / "results.json", json.dumps(results, indent=1))
        save_mistake_pictures(self.out_dir, ds, mistakes)
        if status == "finished":  # a stopped run keeps it: `--resume` goes on training
            runs.remove_checkpoint(self.out_dir)
        self.emit(status, epoch=best_epoch, elapsed=results["elapsed"], bundle=str(bundle), metrics=metrics)
        return RunResult(status, self.out_dir, bundle, metrics, history, model)

    def _record(self, status: str, **extra) -> None:
        """results.json for a run that ended without a model, so that its folder says what happened."""
        try:
            runs.atomic_write(self.out_dir / runs.RESULTS, json.dumps({"status": status, **extra}, indent=1))
        except (OSError, TlguiError):
            pass  # a full disk: the folder then reads as interrupted
