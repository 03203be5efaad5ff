"""Experiment tracking as event listeners: TensorBoard event files in every run folder, and,
when `TLGUI_MLFLOW_TRACKING_URI` is set, an MLflow run with the settings, the metrics by epoch
and the bundle. MLflow is imported only then: off, it costs nothing.

A tracker that fails (a full disk, an unreachable MLflow server) says so once as a warning
and stops; it never stops the training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..config import RunConfig

TENSORBOARD = "tensorboard"
MLFLOW_ENV = "TLGUI_MLFLOW_TRACKING_URI"


def attach(emit, out_dir: Path, config: RunConfig, resume: bool = False) -> None:
    """Add the trackers to a run's emitter. A fresh run starts its event files anew; a resumed
    one adds to them (the epochs it replays are not written twice)."""
    warn = lambda message: emit("warning", message=message)  # noqa: E731
    emit.listeners.append(_Guarded(TensorBoardLog(Path(out_dir) / TENSORBOARD, fresh=not resume), "TensorBoard", warn))
    uri = os.environ.get(MLFLOW_ENV, "").strip()
    if uri:
        emit.listeners.append(_Guarded(MLflowLog(uri, Path(out_dir), config), "MLflow", warn))


class _Guarded:
    """Runs a tracker; its first failure becomes one warning and turns it off."""

    def __init__(self, tracker, name: str, warn):
        self.tracker, self.name, self.warn, self.off = tracker, name, warn, False

    def __call__(self, e: dict) -> None:
        if self.off or e["event"] in ("warning", "batch", "preparing"):
            return
        try:
            self.tracker(e)
        except Exception as error:  # noqa: BLE001 - tracking must never end a run
            self.off = True
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            self.warn(f"{self.name} logging stopped: {reason}")


class TensorBoardLog:
    """Loss, accuracy and learning rate per epoch; at the end, the confusion matrix as an image."""

    def __init__(self, folder: Path, fresh: bool = True):
        self.folder, self.writer = Path(folder), None
        if fresh:
            shutil.rmtree(self.folder, ignore_errors=True)  # an earlier run's curves are not this one's

    def _open(self):
        if self.writer is None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(self.folder), flush_secs=5)
        return self.writer

    def __call__(self, e: dict) -> None:
        kind = e["event"]
        if kind == "epoch" and not e.get("resumed"):
            w, step = self._open(), e["epoch"]
            for split in ("train", "val"):
                if e.get(f"{split}_loss") is not None:
                    w.add_scalar(f"loss/{split}", e[f"{split}_loss"], step)
                    w.add_scalar(f"accuracy/{split}", e[f"{split}_accuracy"], step)
            if e.get("lr") is not None:
                w.add_scalar("learning_rate", e["lr"], step)
            w.flush()  # readers (TensorBoard, the tests) see each epoch at once
        elif kind in ("finished", "stopped", "failed"):
            metrics = e.get("metrics") or {}
            if metrics.get("confusion"):
                self._open().add_image("confusion_matrix", confusion_image(metrics["confusion"], metrics.get("classes")),
                                       e.get("epoch", 0), dataformats="HWC")
            if self.writer is not None:
                self.writer.close()
                self.writer = None


def confusion_image(confusion: list[list[int]], classes: list[str] | None = None, cell: int = 28) -> np.ndarray:
    """The confusion matrix as an RGB picture: rows the true class (named on the left, numbered),
    columns the predicted one (numbered on top); each cell shaded by its share of the row, with
    its count written in it."""
    from PIL import Image, ImageDraw

    m = np.asarray(confusion, dtype=np.float64)
    n = len(m)
    names = [f"{i} {str(c)[:14]}" for i, c in enumerate(classes or range(n))]
    left, top = 8 + 6 * max(len(t) for t in names), 16
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    img = Image.new("RGB", (left + n * cell + 1, top + n * cell + 1), "white")
    draw = ImageDraw.Draw(img)
    for r in range(n):
        draw.text((4, top + r * cell + 8), names[r], fill="black")
        draw.text((left + r * cell + 10, 2), str(r), fill="black")
        for c in range(n):
            shade = int(255 - 200 * share[r, c])
            box = (left + c * cell, top + r * cell, left + (c + 1) * cell, top + (r + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(160, 160, 160))
            draw.text((box[0] + 3, box[1] + 8), str(int(m[r, c])), fill="black" if shade > 120 else "white")
    return np.asarray(img)


class MLflowLog:
    """One MLflow run per tlgui run, in the experiment `tlgui`: settings as params, metrics by epoch,
    the final metrics and model.zip. Through a client, not mlflow's global active run, so that
    runs training side by side in the app keep apart."""

    EXPERIMENT = "tlgui"

    def __init__(self, uri: str, out_dir: Path, config: RunConfig):
        self.uri, self.out_dir, self.config, self.client, self.run_id = uri, out_dir, config, None, None

    def __call__(self, e: dict) -> None:
        kind = e["event"]
        if kind == "started":
            self._start(e)
        elif self.run_id is None:
            return
        elif kind == "epoch":
            self._log({k: e[k] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
                       if e.get(k) is not None}, step=e["epoch"])
        elif kind in ("finished", "stopped", "failed"):
            metrics = e.get("metrics") or {}
            self._log({k: metrics[k] for k in ("accuracy", "macro_f1", "best_epoch")
                       if isinstance(metrics.get(k), (int, float))}, step=e.get("epoch") or 0)
            if e.get("bundle"):
                self.client.log_artifact(self.run_id, e["bundle"])
            status = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}[kind]
            run_id, self.run_id = self.run_id, None
            self.client.set_terminated(run_id, status)

    def _start(self, e: dict) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("file:") or "://" not in self.uri:  # a folder asked for by name: mlflow 3 wants
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # this opt-in for its file store
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(self.EXPERIMENT)
        experiment = found.experiment_id if found else self.client.create_experiment(self.EXPERIMENT)
        self.run_id = self.client.create_run(experiment, run_name=self.out_dir.name).info.run_id
        params = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in self.config.to_dict().items()}
        params.update(device=e.get("device"), train_size=e.get("train_size"), val_size=e.get("val_size"),
                      classes=",".join(e.get("classes") or []))
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def _log(self, values: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if values:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])
