"""The optimisation loop: optimizer and schedule, the epochs with their steps, validation,
early stopping, and the checkpoint a killed run resumes from. Forward passes that run CUDA
out of memory are retried in smaller pieces. The second of the Trainer's parts (`train.py`)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .. import runs
from ..data import loader
from ..data.batches import extract_batch, to_device
from ..errors import TlguiError
from ..events import StopRequested
from ..nets.model import Classifier
from . import distributed, lpft
from .device import autocast
from .inputs import Inputs


def snapshot(model: Classifier) -> dict[str, torch.Tensor]:
    """A copy of what training changes: trainable parameters and every buffer (BatchNorm statistics)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}



def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The rate of every run and pretraining: a linear warm-up over `warmup` steps, then a cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)

class LoopPart:
    """The Trainer's optimisation loop (a part of `train.Trainer`)."""

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
        return opt, warmup_cosine(opt, warmup, steps)

    def _logits(self, model: Classifier, x, cached: bool) -> torch.Tensor:
        with autocast(self.device, self.amp_dtype):
            if self.ddp is not None and model.training:  # several processes: gradients averaged over them
                return self.ddp(x)
            return model.classify(x) if cached else model(x)

    @torch.inference_mode()
    def evaluate_split(self, model: Classifier, inputs: Inputs, cached: bool) -> tuple[float, np.ndarray, np.ndarray]:
        """Mean loss, predicted classes and their probabilities on a split."""
        model.eval()
        losses, probs = [], []

        def piece(part: torch.Tensor) -> tuple[float, torch.Tensor]:
            logits = self._logits(model, to_device(inputs.take(part), self.device), cached).float()
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

    def _epochs(self, model, tr: Inputs, va: Inputs, cached: bool, augment: bool, generator, t0: float,
                history: list | None = None, from_probe: bool = False) -> tuple[str, int, list[dict]]:
        """The epoch loop: (status, best epoch, history); the model ends with the best epoch's weights.
        `from_probe`: the model holds the linear probe LP-FT starts from, scored as epoch 0 and kept
        like any epoch's checkpoint, so that fine-tuning never ends below it on validation."""
        cfg = self.config
        steps = distributed.steps_per_epoch(len(tr), cfg.batch_size)
        opt, sched = self._optimizer(model, cfg.epochs * steps)
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
        if from_probe and first == 1 and len(va):
            val_loss, pred, val_probs = self.evaluate_split(model, va, cached)
            best.update(loss=val_loss, epoch=0, state=snapshot(model))
            self.best_val = (pred, val_probs)
        try:
            for epoch in range(first, cfg.epochs + 1):
                row = self._train_epoch(model, tr, epoch, steps, augment, generator, cached, opt, sched, t0, t_train)
                if len(va):
                    val_loss, pred, val_probs = self.evaluate_split(model, va, cached)
                    row.update(val_loss=val_loss, val_accuracy=float((pred == va.labels.numpy()).mean()))
                score = row.get("val_loss", row["train_loss"])
                row["best"] = score < best["loss"]
                if row["best"]:
                    best.update(loss=score, epoch=epoch, state=snapshot(model))
                    self.best_val = (pred, val_probs) if len(va) else None  # the final report reuses them
                    stale = 0
                else:
                    stale += 1
                row.update(elapsed=time.perf_counter() - t0,
                           eta=(time.perf_counter() - t_train) / epoch * (cfg.epochs - epoch))
                history.append(row)
                self._checkpoint(model, opt, sched, generator, epoch, best, stale, history)
                self.emit("epoch", **row)
                if cfg.patience and stale >= cfg.patience:
                    break
                deadline = getattr(self, "deadline", None)  # auto's budget: no epoch that would end past it
                each = (time.perf_counter() - t_train) / (epoch - first + 1)
                if deadline and time.perf_counter() + each > deadline:
                    break
        except StopRequested:
            if best["state"] is None:
                raise
            status = "stopped"
        model.load_state_dict(best["state"], strict=False)
        return status, best["epoch"], history

    def _train_epoch(self, model, tr: Inputs, epoch: int, steps: int, augment: bool, generator, cached: bool,
                     opt, sched, t0: float, t_train: float) -> dict:
        """One epoch's training steps, each told as a `batch` event: the epoch's row so far."""
        cfg = self.config
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
            done = (epoch - 1) * steps + step
            rate = (time.perf_counter() - t_train) / done
            self.emit("batch", epoch=epoch, epochs=cfg.epochs, step=step, steps=steps, loss=loss_sum / len(idx),
                      progress=done / (cfg.epochs * steps), eta=rate * (cfg.epochs * steps - done),
                      elapsed=time.perf_counter() - t0,
                      pictures_per_s=meter.update(seen * distributed.world())["rate"], memory_mb=round(loader.memory_mb()))
        total_loss, correct, seen = distributed.reduce_sum([total_loss, correct, seen])
        return {"epoch": epoch, "epochs": cfg.epochs, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                "lr": opt.param_groups[0]["lr"]}

    def _train_step(self, model, tr: Inputs, idx, augment, generator, cached, opt) -> tuple[float, int]:
        """Forward and backward over one batch: (summed loss, correct predictions). In pieces, the
        gradients are weighted to add up to the whole batch's, so halving changes no result."""

        def step(parts) -> tuple[float, int]:
            opt.zero_grad(set_to_none=True)
            loss_sum, correct = 0.0, 0
            for part in parts:
                x = to_device(tr.take(part), self.device, augment, generator)
                y = tr.labels[part].to(self.device, non_blocking=True)
                logits = self._logits(model, x, cached)
                loss = F.cross_entropy(logits.float(), y, weight=self.loss_weight,
                                       label_smoothing=self.config.label_smoothing)
                self.scaler.scale(loss * (len(part) / len(idx))).backward()
                loss_sum += loss.item() * len(part)
                correct += (logits.argmax(1) == y).sum().item()
            return loss_sum, correct

        return self._retried_smaller(idx, step)

    # -- out of GPU memory: smaller pieces -----------------------------------------------------
    def _retried_smaller(self, idx: torch.Tensor, fn):
        """`fn(pieces of the batch idx)`; after CUDA runs out of memory, again in pieces half the size."""
        while True:
            try:
                return fn(torch.split(idx, self.piece) if self.piece else (idx,))
            except torch.cuda.OutOfMemoryError:
                pass  # leave the except block first: the failed pass's tensors are freed with its traceback
            torch.cuda.empty_cache()
            self.piece = min(self.piece or len(idx), len(idx)) // 2
            if self.piece < 1:
                raise TlguiError("the GPU ran out of memory even for one example at a time: choose a smaller image "
                                 "size or backbone, or --device cpu")
            self.emit("warning", message=f"the GPU ran out of memory: batch size halved to {self.piece}, going on")

    def _in_pieces(self, idx: torch.Tensor, fn) -> list:
        """`fn(piece)` over the pieces of a batch, retried smaller as `_retried_smaller` says."""
        return self._retried_smaller(idx, lambda parts: [fn(part) for part in parts])

    # -- resuming a killed run ---------------------------------------------------------------
    def _checkpoint(self, model, opt, sched, generator, epoch: int, best: dict, stale: int, history: list) -> None:
        """Everything a killed run needs to go on after `epoch`: written atomically, no pickle."""
        if not self.main:
            return
        opt_tensors, opt_state = runs.optimizer_to_checkpoint(opt)
        tensors = {**{f"model.{k}": v for k, v in snapshot(model).items()},
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
