"""Training a classifier: the loop behind the CLI's `train` and the app's Train button."""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import runs
from .batches import decode_images, image_batch, index_batches
from .config import RunConfig
from .datasets import Dataset
from .errors import TlguiError
from .events import Emitter, Listener, MetricsLog, StopRequested
from .metrics import classification_metrics
from .model import Classifier, build_classifier


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
        if isinstance(self.data, torch.Tensor):
            return self.data[idx]
        if isinstance(self.data, list) and self.data and isinstance(self.data[0], torch.Tensor):
            return [f[idx] for f in self.data]
        return [self.data[i] for i in idx.tolist()]


class Trainer:
    def __init__(self, config: RunConfig, dataset: Dataset, out_dir: str | Path, listeners: list[Listener] | tuple = (),
                 stop: threading.Event | None = None, resume: bool = False):
        self.config, self.dataset, self.out_dir = config, dataset, Path(out_dir)
        self.resume = resume  # continue from the folder's last epoch checkpoint
        self.piece: int | None = None  # examples per forward pass once CUDA ran out of memory
        state = runs.run_state(self.out_dir) if self.out_dir.exists() else None
        if state == "running":
            raise TlguiError(f"a run is already training in {self.out_dir}: wait for it, stop it, or use another folder")
        if resume and state == "finished":
            raise TlguiError(f"the run in {self.out_dir} has finished: nothing to resume; train into a new folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.emit = Emitter([MetricsLog(self.out_dir / "metrics.jsonl"), *listeners], stop)
        self.device = pick_device(config.device)
        self.amp_dtype = None
        if self.device.type == "cuda":  # bf16 where the GPU has it, else fp16 with a loss scaler
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # -- setup ---------------------------------------------------------------------------
    def _check_dataset(self) -> tuple[np.ndarray, np.ndarray]:
        ds, cfg = self.dataset, self.config
        if len(ds.classes) < 2:
            raise TlguiError(f"the dataset has only one class ({ds.classes[0]}): a classifier needs at least two")
        ds.assign_splits(cfg.val_split, cfg.seed)
        train, val = ds.indices("train"), ds.indices("val")
        if len(set(ds.labels[train].tolist())) < 2:
            raise TlguiError("the training part holds fewer than two classes: add examples to each class")
        return train, val

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _prepare(self, model: Classifier, train_idx, val_idx) -> tuple[Inputs, Inputs, bool]:
        """Inputs per split; with frozen backbones and no augmentation, their features instead,
        computed once so that every epoch only trains the head."""
        ds = self.dataset
        if ds.task == "image":
            size = max(b.input_size for b in model.backbones)

            def progress(done, total):
                self.emit("preparing", what="decoding images", done=done, total=total)
                self.emit.check_stop()

            pixels = decode_images(ds, np.concatenate([train_idx, val_idx]), size, progress)
            if self.device.type == "cuda":
                pixels = pixels.pin_memory()
            data_tr, data_va = pixels[: len(train_idx)], pixels[len(train_idx) :]
        else:
            data_tr = [ds.inputs[i] for i in train_idx]
            data_va = [ds.inputs[i] for i in val_idx]
        tr, va = Inputs(data_tr, ds.labels[train_idx]), Inputs(data_va, ds.labels[val_idx])
        cached = model.backbones_frozen and not (self.config.uses_augmentation and ds.task == "image")
        if cached:
            tr = Inputs(self._features(model, tr, len(tr) + len(va)), tr.labels)
            va = Inputs(self._features(model, va, len(tr) + len(va), offset=len(tr)), va.labels)
        return tr, va, cached

    @torch.inference_mode()
    def _features(self, model: Classifier, inputs: Inputs, total: int, offset: int = 0) -> list[torch.Tensor]:
        model.eval()
        chunks: list[list[torch.Tensor]] = []
        bs = max(self.config.batch_size, 64)
        for idx in index_batches(len(inputs), bs, shuffle=False):
            self.emit.check_stop()
            with self._autocast():
                feats = model.features(self._to_device(inputs.take(idx), augment=False))
            chunks.append([f.float() for f in feats])
            self.emit("preparing", what="computing features", done=offset + int(idx[-1]) + 1, total=total)
        return [torch.cat([c[k] for c in chunks]) for k in range(len(model.backbones))]

    def _to_device(self, x, augment: bool, generator=None):
        if isinstance(x, torch.Tensor):
            return image_batch(x, self.device, augment, generator, channels_last=self.device.type == "cuda")
        if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            return [f.to(self.device, non_blocking=True) for f in x]
        return x  # texts: each text backbone tokenises on its own

    def _optimizer(self, model: Classifier, steps: int):
        cfg = self.config
        scratch = {id(p) for b in model.backbones if hasattr(b, "scratch_parameters") for p in b.scratch_parameters()}
        backbone = [p for p in model.backbones.parameters() if p.requires_grad and id(p) not in scratch]  # scratch: head's rate
        ids = {id(p) for p in backbone}
        head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": head, "lr": cfg.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale})
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
            return model.classify(x) if cached else model(x)

    @torch.inference_mode()
    def evaluate_split(self, model: Classifier, inputs: Inputs, cached: bool) -> tuple[float, np.ndarray, np.ndarray]:
        """Mean loss, predicted classes and their probabilities on a split."""
        model.eval()
        losses, probs = [], []
        for idx in index_batches(len(inputs), max(self.config.batch_size, 64), shuffle=False):
            logits = self._logits(model, self._to_device(inputs.take(idx), augment=False), cached).float()
            y = inputs.labels[idx].to(self.device)
            losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            probs.append(logits.softmax(1).cpu())
        p = torch.cat(probs) if probs else torch.empty(0, 0)
        return sum(losses) / max(len(inputs), 1), p.argmax(1).numpy() if len(p) else np.array([]), p.numpy()

    def run(self) -> RunResult:
        t0 = time.perf_counter()
        try:
            return self._run(t0)
        except StopRequested:
            self.emit("stopped", epoch=0, elapsed=time.perf_counter() - t0, bundle=None)
            return RunResult("stopped", self.out_dir, None)
        except Exception as e:
            message = str(e) if isinstance(e, TlguiError) else f"{type(e).__name__}: {e}"
            self.emit("failed", error=message, elapsed=time.perf_counter() - t0)
            raise

    def _run(self, t0: float) -> RunResult:
        cfg, ds = self.config, self.dataset
        generator = seed_everything(cfg.seed)
        train_idx, val_idx = self._check_dataset()
        cfg.save(self.out_dir / "config.json")
        model = build_classifier(cfg, len(ds.classes))
        for b in model.backbones:  # text backbones: tokens kept per text, and a vocabulary from the training texts
            if hasattr(b, "fit_text"):
                b.fit_text([ds.inputs[i] for i in train_idx], cfg.max_length)
        if cfg.init:
            from .bundle import init_from_bundle

            init_from_bundle(model, cfg.init, ds.classes)
        model.to(self.device)
        if self.device.type == "cuda" and ds.task == "image":
            model.to(memory_format=torch.channels_last)
        self.emit("started", device=str(self.device), train_size=len(train_idx), val_size=len(val_idx),
                  epochs=cfg.epochs, backbones=list(cfg.backbones), freeze=cfg.freeze, classes=list(ds.classes))
        tr, va, cached = self._prepare(model, train_idx, val_idx)
        steps_per_epoch = math.ceil(len(tr) / cfg.batch_size)
        opt, sched = self._optimizer(model, cfg.epochs * steps_per_epoch)
        augment = cfg.uses_augmentation and ds.task == "image" and not cached
        best = {"loss": float("inf"), "epoch": 0, "state": None}
        history: list[dict] = []
        stale, status, t_train = 0, "finished", time.perf_counter()
        try:
            for epoch in range(1, cfg.epochs + 1):
                model.train()
                total_loss, correct, seen = 0.0, 0, 0
                for step, idx in enumerate(index_batches(len(tr), cfg.batch_size, True, generator), start=1):
                    self.emit.check_stop()
                    x = self._to_device(tr.take(idx), augment, generator)
                    y = tr.labels[idx].to(self.device, non_blocking=True)
                    logits = self._logits(model, x, cached)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.step(opt)
                    self.scaler.update()
                    sched.step()
                    total_loss += loss.item() * len(idx)
                    correct += (logits.argmax(1) == y).sum().item()
                    seen += len(idx)
                    done = (epoch - 1) * steps_per_epoch + step
                    rate = (time.perf_counter() - t_train) / done
                    self.emit("batch", epoch=epoch, epochs=cfg.epochs, step=step, steps=steps_per_epoch, loss=loss.item(),
                              progress=done / (cfg.epochs * steps_per_epoch),
                              eta=rate * (cfg.epochs * steps_per_epoch - done), elapsed=time.perf_counter() - t0)
                row = {"epoch": epoch, "epochs": cfg.epochs, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                       "lr": opt.param_groups[0]["lr"]}
                if len(va):
                    val_loss, pred, _ = self.evaluate_split(model, va, cached)
                    row.update(val_loss=val_loss, val_accuracy=float((pred == va.labels.numpy()).mean()))
                score = row.get("val_loss", row["train_loss"])
                row["best"] = score < best["loss"]
                if row["best"]:
                    best.update(loss=score, epoch=epoch, state=_snapshot(model))
                    stale = 0
                else:
                    stale += 1
                elapsed = time.perf_counter() - t0
                row.update(elapsed=elapsed, eta=(time.perf_counter() - t_train) / epoch * (cfg.epochs - epoch))
                history.append(row)
                self.emit("epoch", **row)
                if cfg.patience and stale >= cfg.patience:
                    break
        except StopRequested:
            if best["state"] is None:
                raise
            status = "stopped"
        model.load_state_dict(best["state"], strict=False)
        return self._finish(model, va, val_idx, cached, status, best["epoch"], history, t0)

    def _finish(self, model, va, val_idx, cached, status, best_epoch, history, t0) -> RunResult:
        from .bundle import save_bundle

        ds = self.dataset
        metrics: dict = {}
        mistakes = []
        if len(va):
            _, pred, probs = self.evaluate_split(model, va, cached)
            metrics = classification_metrics(va.labels.numpy(), pred, ds.classes)
            for k in np.flatnonzero(pred != va.labels.numpy())[:100]:
                i = int(val_idx[k])
                mistakes.append({"index": i, "input": ds.inputs[i], "true": ds.classes[ds.labels[i]],
                                 "predicted": ds.classes[pred[k]], "score": float(probs[k, pred[k]])})
        metrics["best_epoch"] = best_epoch
        weights = model.fusion.weights()
        if weights:
            metrics["fusion_weights"] = dict(zip(self.config.backbones, weights))
        model.cpu()
        bundle = save_bundle(self.out_dir / "model.zip", model, self.config, ds, metrics, history)
        results = {"status": status, "metrics": metrics, "history": history, "mistakes": mistakes,
                   "dataset": ds.report(), "elapsed": time.perf_counter() - t0}
        _atomic_write(self.out_dir / "results.json", json.dumps(results, indent=1))
        self.emit(status, epoch=best_epoch, elapsed=results["elapsed"], bundle=str(bundle), metrics=metrics)
        return RunResult(status, self.out_dir, bundle, metrics, history, model)


def _snapshot(model: Classifier) -> dict[str, torch.Tensor]:
    """A copy of what training changes: trainable parameters and every buffer (BatchNorm statistics)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def train(config: RunConfig, dataset: Dataset, out_dir: str | Path, listeners=(), stop=None) -> RunResult:
    return Trainer(config, dataset, out_dir, listeners, stop).run()
