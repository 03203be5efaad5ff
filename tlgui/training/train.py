"""Training a classifier: the Trainer behind the CLI's `train` and the app's Train button.

The Trainer is three parts, each in its own module, joined here with the run's start and its
ending: inputs and features (`inputs.py`), the optimisation loop (`loop.py`) and the finish
(`finish.py`). Phases beyond the epoch loop (the converged probe, LP-FT, auto) are in `phases.py`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .. import runs
from ..config import RunConfig
from ..data import loader
from ..data.batches import cpu_threads
from ..data.datasets import Dataset
from ..errors import TlguiError
from ..events import Emitter, Listener, MetricsLog, StopRequested
from ..outputs import tracking
from ..outputs.export import check_task
from . import auto, distributed, head_fit, lpft, phases
from .device import amp_dtype, pick_device, seed_everything
from .estimate import estimate_run
from .finish import FinishPart, RunResult
from .inputs import Inputs, InputsPart, build_model, check_backbone_kinds, uses_stored_features
from .loop import LoopPart

__all__ = ["Inputs", "RunResult", "Trainer", "pick_device", "seed_everything", "train"]


class Trainer(InputsPart, LoopPart, FinishPart):
    def __init__(self, config: RunConfig, dataset: Dataset, out_dir: str | Path, listeners: list[Listener] | tuple = (),
                 stop: threading.Event | None = None, resume: bool = False):
        self.config, self.dataset, self.out_dir = config, dataset, Path(out_dir)
        self.resume = resume  # continue from the folder's last epoch checkpoint
        self.piece: int | None = None  # examples per forward pass once CUDA ran out of memory
        self.threads = contextlib.ExitStack()  # a thread count set for the loop, restored when the run ends
        self.best_val: tuple | None = None  # the best epoch's validation predictions and probabilities
        self.loss_weight: torch.Tensor | None = None  # inverse class frequencies, where on
        self.search: auto.Search | None = None  # `auto` backbones: the frozen candidates tried
        self.t0, self.estimate = time.perf_counter(), None  # the run's start, and its seconds as told
        self.extraction: dict = {}  # by backbone: the runtime that computed its features (`onnx_features.py`)
        state = runs.run_state(self.out_dir) if self.out_dir.exists() and distributed.is_main() else None
        if state == "running":
            raise TlguiError(f"a run is already training in {self.out_dir}: wait for it, stop it, or use another folder")
        if resume and state == "finished":
            raise TlguiError(f"the run in {self.out_dir} has finished: nothing to resume; train into a new folder")
        self.saved = runs.load_checkpoint(self.out_dir) if resume else None  # a damaged one is refused at once
        self.main, self.ddp, self.stores = distributed.is_main(), None, []
        if not self.main:  # only rank 0 writes the run folder; the others' logs go to a scratch folder
            self.out_dir = Path(tempfile.mkdtemp(prefix=f"tlgui-rank{distributed.rank()}-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.emit = Emitter([MetricsLog(self.out_dir / "metrics.jsonl"), *listeners], stop)
        if self.main:
            tracking.attach(self.emit, self.out_dir, config, resume)  # TensorBoard files; MLflow where set
        self.device = distributed.setup(pick_device(config.device))
        self.amp_dtype = amp_dtype(self.device)  # device.py: bf16/fp16 on a GPU, fp32 on a CPU unless asked
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _check_dataset(self) -> tuple[np.ndarray, np.ndarray]:
        ds, cfg = self.dataset, self.config
        if ds.check is not None:  # a big set: its file-by-file check runs since it was read
            self.emit("preparing", what="checking every file", done=ds.check.done, total=ds.check.total)
        ds.wait_checked()
        if len(ds.classes) < 2:
            raise TlguiError(f"the dataset has only one class ({ds.classes[0]}): a classifier needs at least two")
        if cfg.export:  # before training, not after it
            check_task(ds.task, cfg.export)
        if cfg.folds:
            phases.probes.check_folds(cfg.folds, ds.labels)
        if cfg.auto_backbones:  # made real for the data's kind
            self.config, self.search = auto.resolved(cfg, ds.task)
            cfg = self.config
        if cfg.freeze == "auto":
            from ..nets.backbones import get_info

            lpft.check_auto([get_info(n) for n in cfg.backbones])
        check_backbone_kinds(cfg.backbones, ds.task)
        ds.assign_splits(cfg.val_split, cfg.seed)
        train, val = ds.indices("train"), ds.indices("val")
        if len(set(ds.labels[train].tolist())) < 2:
            raise TlguiError("the training part holds fewer than two classes: add examples to each class")
        return train, val

    def _estimate(self, model) -> dict | None:
        """Seconds the run will take by phase (`estimate.py`), or None where the probe failed:
        a wrong guess must never stop a run. A frozen run times nothing for it (the time a probe
        takes is a large part of a small run's): its progress events tell the time left."""
        try:
            return estimate_run(self.config, self.dataset, model,
                                probe=not uses_stored_features(model, self.config, self.dataset.task))
        except Exception:  # noqa: BLE001 - the run goes on without an estimate
            return None

    def run(self) -> RunResult:
        t0 = self.t0 = time.perf_counter()
        runs.mark_running(self.out_dir)
        runs.remove_partial_writes(self.out_dir)
        # confident predictions make gradients underflow to denormal floats, which a CPU computes on 10-100 times slower
        self.threads.enter_context(head_fit.flush_denormals())
        try:
            if not self.resume:  # an earlier run's leftovers must not be taken for this one's
                runs.remove_checkpoint(self.out_dir)
            (self.out_dir / runs.RESULTS).unlink(missing_ok=True)
            return self._run(t0)
        except StopRequested:
            self.emit("stopped", epoch=0, elapsed=time.perf_counter() - t0, bundle=None)
            self._record("stopped")
            return RunResult("stopped", self.out_dir, None)
        except Exception as e:
            error = runs.disk_full(e, self.out_dir) or e
            message = str(error) if isinstance(error, TlguiError) else f"{type(e).__name__}: {e}"
            self.emit("failed", error=message, elapsed=time.perf_counter() - t0)
            self._record("failed", error=message)
            if error is not e:
                raise error from None
            raise
        finally:
            runs.clear_running(self.out_dir)
            self.threads.close()
            loader.close_all(*self.stores)
            if not self.main:  # a scratch folder of this process's own
                shutil.rmtree(self.out_dir, ignore_errors=True)

    def _run(self, t0: float) -> RunResult:
        cfg, ds = self.config, self.dataset
        generator = seed_everything(cfg.seed)
        train_idx, val_idx = self._check_dataset()
        cfg = self.config  # `auto` backbones made real
        cfg.save(self.out_dir / "config.json")
        model = build_model(cfg, ds, self.device, [ds.inputs[i] for i in train_idx])
        if ds.task == "text" and cfg.max_length is None:  # tokens kept per text, as the training texts ask
            self.config = cfg = auto.settle_length(cfg, model, [ds.inputs[i] for i in train_idx])
        estimate = self._estimate(model)
        self.estimate = estimate["total"] if estimate else None
        self.emit("started", device=str(self.device), train_size=len(train_idx), val_size=len(val_idx),
                  epochs=cfg.epochs, backbones=list(cfg.backbones), freeze=cfg.freeze, classes=list(ds.classes),
                  estimate=estimate)
        auto.check_budget(self, estimate)
        if self.search is not None:  # every candidate's features, a probe on each and on the best few joined
            model, tr, va = self.search.run(self, model, train_idx, val_idx)
            cached, cfg = True, self.config
        else:
            tr, va, cached = self._prepare(model, train_idx, val_idx)
        cfg.save(self.out_dir / "config.json")  # as run: the backbones auto kept, the tokens kept per text
        small = len(tr) * sum(b.out_dim for b in model.backbones) < 4_000_000  # larger fits use every thread
        self.threads.enter_context(cpu_threads(1 if cached and small and self.device.type == "cpu" else None))
        weight = head_fit.class_weights(ds.labels[train_idx], len(ds.classes), cfg.class_weights)
        self.loss_weight = weight.to(self.device) if weight is not None else None
        if cached:  # frozen features in memory: a converged fit, no epochs
            return phases.probe_run(self, model, tr, va, train_idx, val_idx, generator, t0)
        extra = {}
        if cfg.trains_backbone and cfg.lp_ft and not (self.resume and self.saved):
            extra = phases.probe_first(self, model, tr, va, train_idx, val_idx, t0)
        augment = cfg.uses_augmentation and ds.task == "image" and not cached
        status, best_epoch, history = self._epochs(model, tr, va, cached, augment, generator, t0,
                                                   from_probe=bool(extra))  # LP-FT: the probe is its epoch 0
        return self._finish(model, va, val_idx, cached, status, best_epoch, history, t0, extra)


def train(config: RunConfig, dataset: Dataset, out_dir: str | Path, listeners=(), stop=None,
          resume: bool = False) -> RunResult:
    return Trainer(config, dataset, out_dir, listeners, stop, resume).run()
