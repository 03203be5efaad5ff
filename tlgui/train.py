"""Training a classifier: the loop behind the CLI's `train` and the app's Train button."""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed, loader, runs, tracking
from .batches import cpu_threads, decode_size, extract_batch, image_batch, uses_channels_last
from .config import RunConfig
from .datasets import Dataset
from .errors import TlguiError
from .events import Emitter, Listener, MetricsLog, StopRequested
from .estimate import estimate_run
from .export import check_task
from .featcache import FeatureCache, feature_key
from .metrics import classification_metrics
from .model import Classifier, build_classifier
from .precision import cpu_amp_dtype, cuda_amp
from . import head_fit, lpft, phases


STORE_ROWS = 4096  # feature rows handed to the cache at a time


@dataclass
class RunResult:
    status: str  # "finished" or "stopped"
    out_dir: Path
    bundle: Path | None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    model: Classifier | None = None  # the best model, on the CPU


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TlguiError("--device cuda was asked for but no CUDA GPU is available: use --device auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TlguiError("--device mps was asked for but Apple's MPS is not available: use --device auto")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Inputs:
    """One split's inputs held in memory: decoded pixels, texts, or precomputed features."""

    def __init__(self, data, labels: np.ndarray):
        self.data = data  # uint8 tensor (N,3,S,S), list[str], or list of (N, D) feature tensors
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor):
        if isinstance(self.data, loader.STORES):  # pictures on disk or decoded per batch
            return self.data.take(idx)
        if isinstance(self.data, torch.Tensor):
            return self.data[idx]
        if isinstance(self.data, list) and self.data and isinstance(self.data[0], torch.Tensor):
            return [f[idx] for f in self.data]
        return [self.data[i] for i in idx.tolist()]

    def plan(self, batches: list[torch.Tensor]) -> None:
        """The batches asked for next, in order: streamed pictures are decoded ahead."""
        if isinstance(self.data, loader.StreamedPictures):
            self.data.plan(batches)


class Trainer:
    def __init__(self, config: RunConfig, dataset: Dataset, out_dir: str | Path, listeners: list[Listener] | tuple = (),
                 stop: threading.Event | None = None, resume: bool = False):
        self.config, self.dataset, self.out_dir = config, dataset, Path(out_dir)
        self.resume = resume  # continue from the folder's last epoch checkpoint
        self.piece: int | None = None  # examples per forward pass once CUDA ran out of memory
        self.threads = contextlib.ExitStack()  # a thread count set for the loop, restored when the run ends
        self.best_val: tuple | None = None  # the best epoch's validation predictions and probabilities
        self.loss_weight: torch.Tensor | None = None  # inverse class frequencies, where on
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
        self.amp_dtype = None
        # bf16 where the GPU has it, else fp16 with a loss scaler. cudnn.benchmark stays off: on an H200 it
        # re-timed every new batch shape (the last batch, evaluation, extraction) for 10-20 s each (bench/GPU.md)
        if self.device.type == "cuda" and cuda_amp():
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif self.device.type == "cpu":
            self.amp_dtype = cpu_amp_dtype()  # fp32 unless TLGUI_CPU_BF16=1 (tlgui.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # -- setup ---------------------------------------------------------------------------
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
        if cfg.freeze == "auto":
            from .backbones import get_info

            lpft.check_auto([get_info(n) for n in cfg.backbones])
        ds.assign_splits(cfg.val_split, cfg.seed)
        train, val = ds.indices("train"), ds.indices("val")
        if len(set(ds.labels[train].tolist())) < 2:
            raise TlguiError("the training part holds fewer than two classes: add examples to each class")
        return train, val

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _prepare(self, model: Classifier, train_idx, val_idx) -> tuple[Inputs, Inputs, bool]:
        """Inputs per split; with frozen backbones and no augmentation, their features instead,
        computed once (or read from the feature cache) so that every epoch only trains the head."""
        ds, n = self.dataset, len(train_idx)
        order = np.concatenate([train_idx, val_idx])
        cached = model.backbones_frozen and not (self.config.uses_augmentation and ds.task == "image")
        if cached:
            feats = [f.to(self.device) for f in self._features(model, order)]
            data_tr, data_va = [f[:n] for f in feats], [f[n:] for f in feats]
        else:  # one choice for both splits: their sizes added up decide where the pictures are held
            kind = loader.choose_kind(len(order), decode_size(model) or 0, self.out_dir) if ds.task == "image" else ""
            data_tr, data_va = self._inputs(model, train_idx, kind), self._inputs(model, val_idx, kind)
        return Inputs(data_tr, ds.labels[train_idx]), Inputs(data_va, ds.labels[val_idx]), cached

    def _inputs(self, model: Classifier, indices: np.ndarray, kind: str = "memory"):
        """Texts, or pictures at the size the backbones need (uint8, CPU): decoded once into memory
        or a file on disk, or decoded batch by batch (`stream`), as tlgui.loader chooses."""
        ds = self.dataset
        if ds.task != "image":
            return [ds.inputs[i] for i in indices]

        def progress(done, total):
            self.emit("preparing", what="decoding images", done=done, total=total)
            self.emit.check_stop()

        store = loader.pictures(ds, indices, decode_size(model), kind, self.out_dir / "pictures", self.device, progress)
        self.stores.append(store)
        return store

    def _features(self, model: Classifier, order: np.ndarray) -> list[torch.Tensor]:
        """Each frozen backbone's features of the inputs `order` (CPU): read from the feature cache
        where an earlier run computed them; the rest computed here (pictures decoded, embedded and
        dropped batch by batch, shared out among the ranks of a distributed run) and cached."""
        digests = [self.dataset.digests[i] for i in order]
        cache = FeatureCache.from_env()
        keys = [self._cache_key(model, b) if cache else "" for b in model.backbones]
        found = [cache.load(k, digests) if cache else {} for k in keys]
        missing = [[j for j, d in enumerate(digests) if d not in f] for f in found]
        hits = sum(len(digests) - len(m) for m in missing)
        if hits:
            self.emit("preparing", what="cached features", done=hits, total=hits)
        out: list[torch.Tensor | None] = [None] * len(keys)  # filled in place: features are all that grows

        def put(k: int, rows: list[int], feats: torch.Tensor) -> None:
            if out[k] is None:
                out[k] = torch.empty((len(digests), *feats.shape[1:]), dtype=torch.float32)
            out[k][rows] = feats

        for k, f in enumerate(found):
            rows = [j for j, d in enumerate(digests) if d in f]
            if rows:
                put(k, rows, torch.stack([f[digests[j]] for j in rows]))
        found.clear()
        need = sorted(set().union(*missing))
        if need:
            inputs = Inputs(self._inputs(model, order[need], loader.extraction_kind(len(need), decode_size(model) or 0)), np.zeros(len(need), dtype=np.int64))
            at = {j: r for r, j in enumerate(need)}
            if all(m == need for m in missing):  # the usual case: one pass through every backbone
                passes = [(model.features, list(range(len(keys))), need)]
            else:  # some backbones' features are stored already: each computes only what it lacks
                passes = [(lambda x, b=b: [b(x)], [k], m) for k, (b, m) in enumerate(zip(model.backbones, missing)) if m]
            total, done = sum(len(m) for _, _, m in passes), 0
            for fn, which, miss in passes:
                lo, hi = distributed.shard(len(miss))  # this rank's share; the others compute the rest
                rows = torch.tensor([at[j] for j in miss[lo:hi]], dtype=torch.long)
                if distributed.world() == 1:  # each batch's features straight into place: one copy in memory
                    def sink(start, feats, which=which, miss=miss):
                        for k, f in zip(which, feats):
                            put(k, miss[start:start + len(f)], f)

                    self._extract(model, fn, inputs, rows, done, total, sink)
                else:
                    for k, f in zip(which, self._extract(model, fn, inputs, rows, done + lo, total)):
                        put(k, miss, distributed.gather_rows(f, len(miss)))
                done += len(miss)
                if cache and self.main:
                    for k in which:
                        for s in range(0, len(miss), STORE_ROWS):  # in blocks: no second copy of them all
                            part = miss[s:s + STORE_ROWS]
                            cache.store(keys[k], [digests[j] for j in part], out[k][part])
        return out

    def _estimate(self, model: Classifier) -> dict | None:
        """Seconds the run will take by phase (tlgui.estimate), or None where the probe failed:
        a wrong guess must never stop a run."""
        try:
            return estimate_run(self.config, self.dataset, model)
        except Exception:  # noqa: BLE001 - the run goes on without an estimate
            return None

    def _cache_key(self, model: Classifier, backbone) -> str:
        return feature_key(model, backbone, self.device, self.amp_dtype, self.config.max_length)

    @torch.inference_mode()
    def _extract(self, model: Classifier, fn, inputs: Inputs, rows: torch.Tensor, done: int, total: int,
                 sink=None) -> list[torch.Tensor]:
        """`fn`'s features (a list, one tensor per backbone) of `inputs` rows, in batches sized for
        throughput; with `sink(start, feats)`, each batch's features go there instead (not kept)."""
        model.eval()
        chunks: list[list[torch.Tensor]] = []

        def piece(part: torch.Tensor) -> list[torch.Tensor]:
            with self._autocast():
                return [f.float().cpu() for f in fn(self._to_device(inputs.take(part), augment=False))]

        batches = list(torch.split(rows, extract_batch(self.config.batch_size, self.device)))
        inputs.plan(batches)
        meter = loader.Throughput(total, done)
        start = 0
        for idx in batches:
            self.emit.check_stop()
            chunks += self._in_pieces(idx, piece)
            if sink is not None:
                for c in chunks:
                    sink(start, c)
                    start += len(c[0])
                chunks.clear()
            done += len(idx)
            self.emit("preparing", what="computing features", done=done, total=total, **meter.update(done))
        if sink is not None:
            return []
        if not chunks:  # a rank whose share is empty: a probe gives the features' widths
            return [f[:0] for f in piece(torch.zeros(1, dtype=torch.long))]
        return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def _to_device(self, x, augment: bool, generator=None):
        if isinstance(x, torch.Tensor):
            return image_batch(x, self.device, augment, generator, channels_last=uses_channels_last(self.device))
        if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            return [f.to(self.device, non_blocking=True) for f in x]
        return x  # texts: each text backbone tokenises on its own

    def _optimizer(self, model: Classifier, steps: int):
        cfg = self.config
        scratch = {id(p) for b in model.backbones for p in b.scratch_parameters()}
        backbone = [p for p in model.backbones.parameters() if p.requires_grad and id(p) not in scratch]  # scratch: head's rate
        ids = {id(p) for p in backbone}
        head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": head, "lr": cfg.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale})
        if backbone and cfg.lp_ft:  # the head is fitted already: it and the top stage at the backbone's rate
            groups = lpft.stage_groups(model, cfg.lr * cfg.backbone_lr_scale)
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = min(int(cfg.warmup_epochs * steps / max(cfg.epochs, 1)), steps // 3)

        def factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    # -- loop ----------------------------------------------------------------------------
    def _logits(self, model: Classifier, x, cached: bool) -> torch.Tensor:
        with self._autocast():
            if self.ddp is not None and model.training:  # several processes: gradients averaged over them
                return self.ddp(x)
            return model.classify(x) if cached else model(x)

    @torch.inference_mode()
    def evaluate_split(self, model: Classifier, inputs: Inputs, cached: bool) -> tuple[float, np.ndarray, np.ndarray]:
        """Mean loss, predicted classes and their probabilities on a split."""
        model.eval()
        losses, probs = [], []

        def piece(part: torch.Tensor) -> tuple[float, torch.Tensor]:
            logits = self._logits(model, self._to_device(inputs.take(part), augment=False), cached).float()
            y = inputs.labels[part].to(self.device)
            return F.cross_entropy(logits, y, reduction="sum").item(), logits.softmax(1).cpu()

        lo, hi = distributed.shard(len(inputs))  # this rank's share; all the ranks' shares gathered below
        batches = list(torch.split(torch.arange(lo, hi), extract_batch(self.config.batch_size, self.device)))
        inputs.plan(batches)
        for idx in batches:
            for loss_sum, p in self._in_pieces(idx, piece):
                losses.append(loss_sum)
                probs.append(p)
        p = torch.cat(probs) if probs else torch.empty(0, len(self.dataset.classes))
        p = distributed.gather_rows(p, len(inputs))
        loss = distributed.reduce_sum([sum(losses)])[0]
        return loss / max(len(inputs), 1), p.argmax(1).numpy() if len(p) else np.array([]), p.numpy()

    def run(self) -> RunResult:
        t0 = time.perf_counter()
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

    def _record(self, status: str, **extra) -> None:
        """results.json for a run that ended without a model, so that its folder says what happened."""
        try:
            runs.atomic_write(self.out_dir / runs.RESULTS, json.dumps({"status": status, **extra}, indent=1))
        except (OSError, TlguiError):
            pass  # a full disk: the folder then reads as interrupted

    def _run(self, t0: float) -> RunResult:
        cfg, ds = self.config, self.dataset
        generator = seed_everything(cfg.seed)
        train_idx, val_idx = self._check_dataset()
        cfg.save(self.out_dir / "config.json")
        model = build_classifier(cfg, len(ds.classes))
        for b in model.backbones:  # text backbones: tokens kept per text, and a vocabulary from the training texts
            b.fit_text([ds.inputs[i] for i in train_idx], cfg.max_length)
        if cfg.init:
            from .bundle import init_from_bundle

            init_from_bundle(model, cfg.init, ds.classes)
        model.to(self.device)
        if uses_channels_last(self.device) and ds.task == "image":
            model.to(memory_format=torch.channels_last)
        self.emit("started", device=str(self.device), train_size=len(train_idx), val_size=len(val_idx),
                  epochs=cfg.epochs, backbones=list(cfg.backbones), freeze=cfg.freeze, classes=list(ds.classes),
                  estimate=self._estimate(model))
        tr, va, cached = self._prepare(model, train_idx, val_idx)
        small = len(tr) * sum(b.out_dim for b in model.backbones) < 4_000_000  # larger fits use every thread
        self.threads.enter_context(cpu_threads(1 if cached and small and self.device.type == "cpu" else None))
        weight = head_fit.class_weights(ds.labels[train_idx], len(ds.classes), cfg.class_weights)
        self.loss_weight = weight.to(self.device) if weight is not None else None
        if cached:  # frozen features in memory: a converged fit, no epochs
            return phases.probe_run(self, model, tr, va, train_idx, val_idx, generator, t0)
        extra = {}
        if cfg.trains_backbone and cfg.lp_ft and not (self.resume and self.saved):
            extra = phases.probe_first(self, model, tr, va, t0)
        augment = cfg.uses_augmentation and ds.task == "image" and not cached
        status, best_epoch, history = self._epochs(model, tr, va, cached, augment, generator, t0)
        return self._finish(model, va, val_idx, cached, status, best_epoch, history, t0, extra)

    def _epochs(self, model, tr: Inputs, va: Inputs, cached: bool, augment: bool, generator, t0: float,
                history: list | None = None) -> tuple[str, int, list[dict]]:
        """The epoch loop: (status, best epoch, history); the model ends with the best epoch's weights."""
        cfg = self.config
        steps_per_epoch = distributed.steps_per_epoch(len(tr), cfg.batch_size)
        opt, sched = self._optimizer(model, cfg.epochs * steps_per_epoch)
        self.ddp = distributed.wrap(model, cached, self.device)  # None in a single process
        best = {"loss": float("inf"), "epoch": 0, "state": None}
        history = [] if history is None else history
        stale, status, t_train = 0, "finished", time.perf_counter()
        first = 1
        if self.resume:
            first, stale = self._restore(model, opt, sched, generator, best, history)
            first += 1
            if cfg.patience and stale >= cfg.patience:
                first = cfg.epochs + 1  # it had stopped early and was killed while saving
        try:
            for epoch in range(first, cfg.epochs + 1):
                model.train()
                total_loss, correct, seen = 0.0, 0, 0
                batches = distributed.train_batches(len(tr), cfg.batch_size, generator, epoch, cfg.seed)
                tr.plan(batches)
                meter = loader.Throughput(len(tr))
                for step, idx in enumerate(batches, start=1):
                    if distributed.agree(self.emit.stop.is_set()):  # every rank stops at the same batch
                        raise StopRequested
                    loss_sum, n_correct = self._train_step(model, tr, idx, augment, generator, cached, opt)
                    self.scaler.step(opt)
                    self.scaler.update()
                    sched.step()
                    total_loss += loss_sum
                    correct += n_correct
                    seen += len(idx)
                    done = (epoch - 1) * steps_per_epoch + step
                    rate = (time.perf_counter() - t_train) / done
                    self.emit("batch", epoch=epoch, epochs=cfg.epochs, step=step, steps=steps_per_epoch, loss=loss_sum / len(idx),
                              progress=done / (cfg.epochs * steps_per_epoch),
                              eta=rate * (cfg.epochs * steps_per_epoch - done), elapsed=time.perf_counter() - t0,
                              pictures_per_s=meter.update(seen * distributed.world())["rate"], memory_mb=round(loader.memory_mb()))
                total_loss, correct, seen = distributed.reduce_sum([total_loss, correct, seen])
                row = {"epoch": epoch, "epochs": cfg.epochs, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                       "lr": opt.param_groups[0]["lr"]}
                if len(va):
                    val_loss, pred, val_probs = self.evaluate_split(model, va, cached)
                    row.update(val_loss=val_loss, val_accuracy=float((pred == va.labels.numpy()).mean()))
                score = row.get("val_loss", row["train_loss"])
                row["best"] = score < best["loss"]
                if row["best"]:
                    best.update(loss=score, epoch=epoch, state=_snapshot(model))
                    self.best_val = (pred, val_probs) if len(va) else None  # the final report reuses them
                    stale = 0
                else:
                    stale += 1
                elapsed = time.perf_counter() - t0
                row.update(elapsed=elapsed, eta=(time.perf_counter() - t_train) / epoch * (cfg.epochs - epoch))
                history.append(row)
                self._checkpoint(model, opt, sched, generator, epoch, best, stale, history)
                self.emit("epoch", **row)
                if cfg.patience and stale >= cfg.patience:
                    break
        except StopRequested:
            if best["state"] is None:
                raise
            status = "stopped"
        model.load_state_dict(best["state"], strict=False)
        return status, best["epoch"], history

    # -- out of GPU memory: smaller pieces -----------------------------------------------------
    def _pieces(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(idx, self.piece) if self.piece else (idx,)

    def _out_of_memory(self, batch: int) -> None:
        """CUDA ran out of memory: halve the examples per forward pass, say so; the caller retries."""
        torch.cuda.empty_cache()
        self.piece = min(self.piece or batch, batch) // 2
        if self.piece < 1:
            raise TlguiError("the GPU ran out of memory even for one example at a time: choose a smaller image size "
                             "or backbone, or --device cpu")
        self.emit("warning", message=f"the GPU ran out of memory: batch size halved to {self.piece}, going on")

    def _in_pieces(self, idx: torch.Tensor, fn) -> list:
        """`fn(piece)` over the pieces of a batch; after CUDA runs out of memory, again in smaller pieces."""
        while True:
            try:
                return [fn(part) for part in self._pieces(idx)]
            except torch.cuda.OutOfMemoryError:
                pass  # leave the except block first: the failed pass's tensors are freed with its traceback
            self._out_of_memory(len(idx))

    def _train_step(self, model, tr: Inputs, idx, augment, generator, cached, opt) -> tuple[float, int]:
        """Forward and backward over one batch: (summed loss, correct predictions). In pieces, the
        gradients are weighted to add up to the whole batch's, so halving changes no result."""
        while True:
            try:
                opt.zero_grad(set_to_none=True)
                loss_sum, correct = 0.0, 0
                for part in self._pieces(idx):
                    x = self._to_device(tr.take(part), augment, generator)
                    y = tr.labels[part].to(self.device, non_blocking=True)
                    logits = self._logits(model, x, cached)
                    loss = F.cross_entropy(logits.float(), y, weight=self.loss_weight,
                                           label_smoothing=self.config.label_smoothing)
                    self.scaler.scale(loss * (len(part) / len(idx))).backward()
                    loss_sum += loss.item() * len(part)
                    correct += (logits.argmax(1) == y).sum().item()
                return loss_sum, correct
            except torch.cuda.OutOfMemoryError:
                pass
            self._out_of_memory(len(idx))

    # -- resuming a killed run ---------------------------------------------------------------
    def _checkpoint(self, model, opt, sched, generator, epoch: int, best: dict, stale: int, history: list) -> None:
        """Everything a killed run needs to go on after `epoch`: written atomically, no pickle."""
        if not self.main:
            return
        opt_tensors, opt_state = runs.optimizer_to_checkpoint(opt)
        tensors = {**{f"model.{k}": v for k, v in _snapshot(model).items()},
                   **{f"best.{k}": v for k, v in best["state"].items()}, **opt_tensors,
                   "rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
        state = {"epoch": epoch, "stale": stale, "best_loss": best["loss"], "best_epoch": best["epoch"],
                 "history": history, "config": self.config.to_dict(), "dataset": self.dataset.fingerprint,
                 "optimizer": opt_state, "scheduler": sched.state_dict(), "scaler": self.scaler.state_dict()}
        runs.save_checkpoint(self.out_dir, tensors, state)

    def _restore(self, model, opt, sched, generator, best: dict, history: list) -> tuple[int, int]:
        """Load the folder's last checkpoint: (epochs done, epochs since the best). The earlier
        epochs are emitted again, so metrics.jsonl and the charts show the whole run."""
        saved = self.saved
        if saved is None:
            self.emit("warning", message=f"no checkpoint in {self.out_dir}: training from the start")
            return 0, 0
        tensors, state = saved
        mine = {k: v for k, v in self.config.to_dict().items() if k != "device"}
        theirs = {k: v for k, v in state["config"].items() if k != "device"}
        changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if changed or state["dataset"] != self.dataset.fingerprint:
            what = f"settings ({', '.join(changed)})" if changed else "data"
            raise TlguiError(f"the checkpoint in {self.out_dir} was made with other {what}: "
                             "resume with the same ones, or train into a new folder")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
        runs.optimizer_from_checkpoint(opt, tensors, state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        best.update(loss=state["best_loss"], epoch=state["best_epoch"],
                    state={k[5:]: v for k, v in tensors.items() if k.startswith("best.")})
        history.extend(state["history"])
        for row in state["history"]:
            self.emit("epoch", **row, resumed=True)
        return state["epoch"], state["stale"]

    def _finish(self, model, va, val_idx, cached, status, best_epoch, history, t0, extra=None) -> RunResult:
        from .bundle import save_bundle

        ds = self.dataset
        metrics: dict = {}
        mistakes = []
        if len(va):
            pred, probs = self.best_val or self.evaluate_split(model, va, cached)[1:]
            metrics = classification_metrics(va.labels.numpy(), pred, ds.classes)
            for k in np.flatnonzero(pred != va.labels.numpy())[:100]:
                i = int(val_idx[k])
                mistakes.append({"index": i, "input": ds.inputs[i], "true": ds.classes[ds.labels[i]],
                                 "predicted": ds.classes[pred[k]], "score": float(probs[k, pred[k]])})
        metrics["best_epoch"] = best_epoch
        metrics.update(extra or {})
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
        _atomic_write(self.out_dir / "results.json", json.dumps(results, indent=1))
        if status == "finished":  # a stopped run keeps it: `--resume` goes on training
            runs.remove_checkpoint(self.out_dir)
        self.emit(status, epoch=best_epoch, elapsed=results["elapsed"], bundle=str(bundle), metrics=metrics)
        return RunResult(status, self.out_dir, bundle, metrics, history, model)


def _snapshot(model: Classifier) -> dict[str, torch.Tensor]:
    """A copy of what training changes: trainable parameters and every buffer (BatchNorm statistics)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}


def _atomic_write(path: Path, text: str) -> None:
    runs.atomic_write(path, text)


def train(config: RunConfig, dataset: Dataset, out_dir: str | Path, listeners=(), stop=None,
          resume: bool = False) -> RunResult:
    return Trainer(config, dataset, out_dir, listeners, stop, resume).run()
