"""A run's model and inputs: the model built as every run builds it, pictures decoded (into
memory, a file, or batch by batch), and frozen backbones' features computed once or read
from the feature cache. The first of the Trainer's three parts (`train.py`)."""

from __future__ import annotations

import ctypes
import sys
import time

import numpy as np
import torch

from ..config import AUTO, RunConfig
from ..data import loader
from ..data.batches import decode_size, extract_batch, to_device, uses_channels_last
from ..data.datasets import Dataset
from ..errors import TlguiError
from ..events import format_seconds
from ..nets.backbones import build_backbone
from ..nets.model import Classifier
from . import distributed
from .device import autocast
from .featcache import FeatureCache, feature_key
from .onnx_features import onnxruntime_features

ESTIMATE_AFTER = 32  # inputs embedded before a run with no estimate reckons one from their speed
STORE_ROWS = 4096  # feature rows handed to the cache at a time
# Stored features past this size in float32 are kept as float16: half the memory, the one thing a
# frozen run's memory grows with (the head's fit reads them a block at a time, in float32).
HALF_ABOVE_MB = 256
KIND_WORDS = {"image": "images", "text": "texts"}


def return_freed_blocks() -> None:
    """From now on (in this process), blocks of 4 MB or more go back to the system when freed. glibc
    keeps freed blocks of up to 32 MB for reuse (its threshold for mapping them rises as they are
    freed), so the 20 MB blocks a frozen run's fit passes through pile up as resident memory: 1,446
    against 1,158 MB at the peak of a 64,000-picture run (bench/SCALE.md), at the same speed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD; a fixed value stops its rise
        except (OSError, AttributeError):  # not glibc
            pass


def check_backbone_kinds(names: list[str], task: str) -> None:
    """Each backbone must read what the dataset holds: a text backbone cannot read pictures."""
    from ..nets.backbones import get_info

    for name in (n for n in names if n != AUTO):  # auto is made real by the data's kind
        kind = get_info(name).task
        if kind != task:
            raise TlguiError(f"{name} works on {KIND_WORDS.get(kind, kind)}, but the dataset holds "
                             f"{KIND_WORDS.get(task, task)}: choose a backbone for {KIND_WORDS.get(task, task)}")


def build_classifier(config: RunConfig, num_classes: int, pretrained: bool | None = None) -> Classifier:
    pretrained = config.pretrained if pretrained is None else pretrained
    backbones = [build_backbone(n, pretrained, config.image_size) for n in config.backbones]
    for b in backbones:
        b.keep_norm_stats = pretrained or bool(config.init)
    tasks = {b.task for b in backbones}
    if len(tasks) > 1:
        raise TlguiError("image and text backbones cannot be fused: choose backbones of one kind")
    model = Classifier(backbones, config.fusion, num_classes, config.fusion_dim)
    model.freeze(config.freeze)
    return model


def uses_stored_features(model: Classifier, config: RunConfig, task: str) -> bool:
    """Frozen backbones that see each input unchanged (no augmented pictures): their features are
    computed once (or read from the feature cache) and every epoch trains only the head."""
    return model.backbones_frozen and not (config.uses_augmentation and task == "image")


def build_model(config: RunConfig, dataset: Dataset, device: torch.device, texts: list[str]) -> Classifier:
    """The run's classifier on `device`: text backbones given their vocabulary from `texts`,
    started from `config.init` where set, laid out channels-last where that is faster."""
    model = build_classifier(config, max(len(dataset.classes), 2))
    for b in model.backbones:  # text backbones: tokens kept per text, and a vocabulary from the texts
        b.fit_text(texts, config.max_length)
    if config.init:
        from ..outputs.bundle import init_from_bundle

        init_from_bundle(model, config.init, dataset.classes)
    model.to(device)
    if uses_channels_last(device) and dataset.task == "image":
        model.to(memory_format=torch.channels_last)
    return model


class Inputs:
    """One split's inputs held in memory: decoded pixels, texts, or precomputed features."""

    def __init__(self, data, labels: np.ndarray):
        self.data = data  # uint8 tensor (N,3,S,S), list[str], or list of (N, D) feature tensors
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.joined: list[torch.Tensor] | None = None  # stored features: both splits' block, train rows first

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


class InputsPart:
    """The Trainer's inputs and features (a part of `train.Trainer`)."""

    def _prepare(self, model: Classifier, train_idx, val_idx) -> tuple[Inputs, Inputs, bool]:
        """Inputs per split; with stored features (`uses_stored_features`), those features instead."""
        ds, n = self.dataset, len(train_idx)
        order = np.concatenate([train_idx, val_idx])
        cached = uses_stored_features(model, self.config, ds.task)
        if cached:
            feats = [f.to(self.device) for f in self.features(model, order)]
            tr, va = Inputs([f[:n] for f in feats], ds.labels[train_idx]), Inputs([f[n:] for f in feats], ds.labels[val_idx])
            tr.joined = va.joined = feats  # views of one block: the fit takes every row with no copy
            return tr, va, True
        # one choice for both splits: their sizes added up decide where the pictures are held
        kind = loader.choose_kind(len(order), decode_size(model) or 0, self.out_dir) if ds.task == "image" else ""
        data_tr, data_va = self._inputs(model, train_idx, kind), self._inputs(model, val_idx, kind)
        return Inputs(data_tr, ds.labels[train_idx]), Inputs(data_va, ds.labels[val_idx]), cached

    def _inputs(self, model: Classifier, indices: np.ndarray, kind: str = "memory"):
        """Texts, or pictures at the size the backbones need (uint8, CPU): decoded once into memory
        or a file on disk, or decoded batch by batch (`stream`), as `data/loader.py` chooses."""
        ds = self.dataset
        if ds.task != "image":
            return [ds.inputs[i] for i in indices]

        def progress(done, total):
            self.emit("preparing", what="decoding images", done=done, total=total)
            self.emit.check_stop()

        store = loader.pictures(ds, indices, decode_size(model), kind, self.out_dir / "pictures", self.device, progress)
        self.stores.append(store)
        return store

    def features(self, model: Classifier, order: np.ndarray) -> list[torch.Tensor]:
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
                big = len(digests) * feats.shape[1] * 4 > HALF_ABOVE_MB * 1024**2
                return_freed_blocks()
                with torch.inference_mode(False):  # called while extracting: the head's fit needs a normal tensor
                    out[k] = torch.empty((len(digests), *feats.shape[1:]), dtype=torch.float16 if big else torch.float32)
            out[k][rows] = feats.to(out[k].dtype)

        for k, f in enumerate(found):
            rows = [j for j, d in enumerate(digests) if d in f]
            if rows:
                put(k, rows, torch.stack([f[digests[j]] for j in rows]))
        found.clear()
        def keep(which: list[int], miss: list[int]) -> None:  # one pass's features into the cache
            if cache and self.main:
                for k in which:
                    for s in range(0, len(miss), STORE_ROWS):  # in blocks: no second copy of them all
                        part = miss[s:s + STORE_ROWS]
                        cache.store(keys[k], [digests[j] for j in part], out[k][part].float())

        need = sorted(set().union(*missing))
        if need:
            self._compute_missing(model, order, need, missing, put, keep)
        return out

    def _compute_missing(self, model: Classifier, order: np.ndarray, need: list[int], missing: list[list[int]],
                         put, keep) -> None:
        """The features the cache lacks (`missing`, per backbone): each batch's handed to `put(k, rows,
        feats)`, then each pass's to `keep(backbones, rows)`."""
        # streamed: each batch decoded while the one before is embedded, and only those in flight held
        inputs = Inputs(self._inputs(model, order[need], "stream"), np.zeros(len(need), dtype=np.int64))
        at = {j: r for r, j in enumerate(need)}
        if all(m == need for m in missing):  # the usual case: one pass through every backbone
            passes = [(model.features, list(range(len(missing))), need)]
        else:  # some backbones' features are stored already: each computes only what it lacks
            passes = [(lambda x, b=b: [b(x)], [k], m) for k, (b, m) in enumerate(zip(model.backbones, missing)) if m]
        total, done = sum(len(m) for _, _, m in passes), 0
        def note(message: str) -> None:
            self.emit("note", message=message)

        with onnxruntime_features(model.backbones, self.device, len(need), note, self.extraction):
            for fn, which, miss in passes:
                self._pass(model, fn, which, miss, inputs, at, done, total, put)
                done += len(miss)
                keep(which, miss)

    def _pass(self, model, fn, which, miss, inputs, at, done, total, put) -> None:
        """One pass of `fn` (the backbones `which`) over the rows `miss`, their features handed to `put`."""
        lo, hi = distributed.shard(len(miss))  # this rank's share; the others compute the rest
        rows = torch.tensor([at[j] for j in miss[lo:hi]], dtype=torch.long)
        if distributed.world() == 1:  # each batch's features straight into place: one copy in memory
            def sink(start, feats):
                for k, f in zip(which, feats):
                    put(k, miss[start:start + len(f)], f)

            self._extract(model, fn, inputs, rows, done, total, sink)
        else:
            for k, f in zip(which, self._extract(model, fn, inputs, rows, done + lo, total)):
                put(k, miss, distributed.gather_rows(f, len(miss)))

    def _cache_key(self, model: Classifier, backbone) -> str:
        return feature_key(model, backbone, self.device, self.amp_dtype, self.config.max_length)

    @torch.inference_mode()
    def _extract(self, model: Classifier, fn, inputs: Inputs, rows: torch.Tensor, done: int, total: int,
                 sink=None) -> list[torch.Tensor]:
        """`fn`'s features (a list, one tensor per backbone) of `inputs` rows, in batches sized for
        throughput; with `sink(start, feats)`, each batch's features go there instead (not kept)."""
        model.eval()
        chunks: list[list[torch.Tensor]] = []

        # onnxruntime takes plain (NCHW) arrays: channels-last pictures would be laid out twice for nothing
        layout = None if any(b.runtime is None for b in model.backbones) else False

        def piece(part: torch.Tensor) -> list[torch.Tensor]:
            with autocast(self.device, self.amp_dtype):
                return [f.float().cpu() for f in fn(to_device(inputs.take(part), self.device, channels_last=layout))]

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
            rate = meter.update(done)
            self.emit("preparing", what="computing features", done=done, total=total, **rate)
            if self.estimate is None and rate["eta"] is not None and done >= ESTIMATE_AFTER:
                self.estimate = time.perf_counter() - self.t0 + rate["eta"]  # nothing timed before: from these batches
                self.emit("estimate", total=self.estimate, text=format_seconds(self.estimate))
        if sink is not None:
            return []
        if not chunks:  # a rank whose share is empty: a probe gives the features' widths
            return [f[:0] for f in piece(torch.zeros(1, dtype=torch.long))]
        return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
