"""Unsupervised pretraining on the user's own pictures: a convolutional autoencoder or a VAE.

Labels, if the data has any, are ignored. The run emits the same kind of dict events as the
classifier trainer (`started`, `preparing`, `batch`, `epoch`, `finished`, `stopped`, `failed`)
and writes under its folder `config.json`, `metrics.jsonl`, `reconstructions.png` and, last
and atomically, `encoder.zip`, which `train --backbone DIR/encoder.zip` uses as a backbone.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import decode_images, index_batches
from ..data.datasets import TABLE_EXTS, Dataset, _build_images, _read_with_budget, read_dataset
from ..data.images import IMAGE_EXTS
from ..data.sources import is_hidden, open_source
from ..errors import TlguiError
from ..events import Emitter, Listener, MetricsLog, StopRequested
from ..nets.backbones.encoder import DEFAULT_WIDTHS, METHODS, ConvEncoder, save_encoder
from ..runs import atomic_write
from .device import pick_device, seed_everything
from .loop import warmup_cosine

MIN_IMAGES = 8
MIN_STD = 0.05  # a near-constant channel (grey pictures) must not blow up the normalised input


@dataclass
class PretrainConfig:
    method: str = "autoencoder"  # "autoencoder" (reconstruction loss) or "vae" (reconstruction + KL)
    epochs: int = 10
    image_size: int = 64
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_split: float = 0.1
    seed: int = 0
    device: str = "auto"
    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    convs_per_block: int = 2
    beta: float = 1.0  # VAE: weight of the KL term (1 is the plain evidence lower bound)
    flip: bool = True  # random horizontal flips while training

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TlguiError(f"unknown pretraining method {self.method!r}: use autoencoder or vae")
        for name, low in (("epochs", 1), ("batch_size", 2)):
            if int(getattr(self, name)) < low:
                raise TlguiError(f"{name} must be at least {low}")
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise TlguiError("the encoder needs at least one block of positive width")
        step = 2 ** len(self.widths)  # each block halves the picture; the decoder doubles it back
        if not 16 <= int(self.image_size) <= 512 or int(self.image_size) % step:
            raise TlguiError(f"the image size must be a multiple of {step} between 16 and 512 (for example 32 or 64)")
        if self.lr <= 0:
            raise TlguiError("the learning rate must be positive (for example 0.002)")
        if not 0.0 <= self.val_split < 1.0:
            raise TlguiError("the validation share must be between 0 and 1 (for example 0.1)")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


# -- reading pictures in any layout ---------------------------------------------------------
def read_images(path: str | Path) -> Dataset:
    """Every picture in a folder or zip, whatever its layout, as a Dataset of one class.

    A CSV/TSV table of image paths is read as for training; its labels are ignored anyway.
    """
    path = Path(path)
    if not path.exists():
        raise TlguiError(f"dataset not found: {path}")
    if path.is_file() and path.suffix.lower() in TABLE_EXTS:
        ds = read_dataset(path)
        if ds.task != "image":
            raise TlguiError(f"{path.name} is a table of texts: pretraining needs pictures")
        return ds
    if path.is_file() and path.suffix.lower() != ".zip":
        raise TlguiError(f"{path.name}: unsupported file type; give a .zip or a folder of pictures")
    source = open_source(path)
    names = [n for n in source.names if not is_hidden(n)]
    images = [n for n in names if PurePosixPath(n).suffix.lower() in IMAGE_EXTS]
    if not images:
        raise TlguiError(f"no image files found in {path.name}: pretraining needs a zip or folder of pictures (any layout)")
    chosen = set(images)
    skipped = [(n, "not an image file") for n in names
               if n not in chosen and PurePosixPath(n).suffix.lower() not in TABLE_EXTS]
    ds = _read_with_budget(source, lambda: _build_images(source, [(n, "images", "") for n in images], skipped))
    ds.warnings = []  # class-count warnings mean nothing without labels
    return ds


def summary(ds: Dataset) -> str:
    r = ds.report()
    lines = [f"{r['name']}: {r['used']} images used for pretraining, {r['skipped']} skipped (labels, if any, ignored)"]
    lines += [f"  skipped {n}: {reason}" for reason, n in r["skipped_reasons"].items()]
    return "\n".join(lines)


# -- models ---------------------------------------------------------------------------------
class Decoder(nn.Module):
    """The mirror of the encoder: a linear map to the smallest grid, then one 2x transposed
    convolution per encoder block, and a 3x3 convolution to RGB logits."""

    def __init__(self, widths: list[int], latent_dim: int, image_size: int):
        super().__init__()
        rev = list(widths)[::-1]
        self.start = image_size // 2 ** len(widths)
        self.first = rev[0]
        self.fc = nn.Linear(latent_dim, rev[0] * self.start**2)
        chans = [*rev, rev[-1]]
        self.ups = nn.Sequential(*(nn.Sequential(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False),
                                                 nn.BatchNorm2d(b), nn.ReLU(inplace=True))
                                   for a, b in zip(chans, chans[1:])))
        self.out = nn.Conv2d(rev[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(-1, self.first, self.start, self.start)
        return self.out(self.ups(h))


class AutoEncoder(nn.Module):
    """Pooled encoder features are the bottleneck, so the feature a classifier sees is exactly
    what the decoder had to rebuild the picture from."""

    def __init__(self, config: PretrainConfig):
        super().__init__()
        self.encoder = ConvEncoder(config.widths, config.convs_per_block)
        self.decoder = Decoder(config.widths, self.encoder.out_dim, config.image_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.decoder(self.encoder(x))}

    def losses(self, out: dict, target: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        loss = F.mse_loss(torch.sigmoid(out["logits"]), target)  # per pixel value, in [0, 1] units
        return {"loss": loss}


class VAE(nn.Module):
    """The encoder's `mu` is the feature; `logvar` exists only for training. The loss is the
    negative evidence lower bound per pixel value: Bernoulli cross-entropy plus beta * KL."""

    def __init__(self, config: PretrainConfig):
        super().__init__()
        latent = config.widths[-1]
        self.encoder = ConvEncoder(config.widths, config.convs_per_block, latent_dim=latent)
        self.logvar = nn.Linear(config.widths[-1], latent)
        self.decoder = Decoder(config.widths, latent, config.image_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encoder.pooled(x)
        mu, logvar = self.encoder.mu(h), self.logvar(h).clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu  # eval: the mean code
        return {"logits": self.decoder(z), "mu": mu, "logvar": logvar}

    def losses(self, out: dict, target: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        recon = F.binary_cross_entropy_with_logits(out["logits"], target)
        mu, logvar = out["mu"], out["logvar"]
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / target.numel()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl}

    @torch.inference_mode()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.logvar.out_features, generator=generator).to(self.logvar.weight.device)
        return torch.sigmoid(self.decoder(z))


def build_model(config: PretrainConfig) -> AutoEncoder | VAE:
    return VAE(config) if config.method == "vae" else AutoEncoder(config)


# -- the run --------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    status: str  # "finished" or "stopped"
    out_dir: Path
    bundle: Path | None
    history: list[dict] = field(default_factory=list)
    losses: dict = field(default_factory=dict)
    model: nn.Module | None = None  # the best model, on the CPU


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 pictures in [0, 1] units, in chunks to spare memory."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(pixels), 1024):
        x = pixels[start : start + 1024].double().div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.pow(2).sum(dim=(0, 2, 3))
    n = len(pixels) * pixels.shape[2] * pixels.shape[3]
    mean = total / n
    std = (squares / n - mean.pow(2)).clamp(min=0).sqrt().clamp(min=MIN_STD)
    return mean.tolist(), std.tolist()


class Pretrainer:
    def __init__(self, config: PretrainConfig, dataset: Dataset, out_dir: str | Path,
                 listeners: list[Listener] | tuple = (), stop: threading.Event | None = None):
        self.config, self.dataset, self.out_dir = config, dataset, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.emit = Emitter([MetricsLog(self.out_dir / "metrics.jsonl"), *listeners], stop)
        self.device = pick_device(config.device)
        self.mean = self.std = torch.zeros(1, 3, 1, 1)  # the training pictures' own, set once they are decoded

    def run(self) -> PretrainResult:
        t0 = time.perf_counter()
        try:
            return self._run(t0)
        except StopRequested:
            self.emit("stopped", epoch=0, elapsed=time.perf_counter() - t0, bundle=None)
            return PretrainResult("stopped", self.out_dir, None)
        except Exception as e:
            message = str(e) if isinstance(e, TlguiError) else f"{type(e).__name__}: {e}"
            self.emit("failed", error=message, elapsed=time.perf_counter() - t0)
            raise

    def _split(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(n, generator=generator)
        n_val = int(n * self.config.val_split) if n >= 10 else 0  # tiny sets: all for training
        return order[n_val:], order[:n_val]

    def _prepare(self, train_idx: torch.Tensor, val_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def progress(done, total):
            self.emit("preparing", what="decoding images", done=done, total=total)
            self.emit.check_stop()

        order = torch.cat([train_idx, val_idx]).numpy()
        pixels = decode_images(self.dataset, order, self.config.image_size, progress)
        return pixels[: len(train_idx)], pixels[len(train_idx) :]

    def _batch(self, pixels: torch.Tensor, flip: bool, generator: torch.Generator | None = None):
        """(normalised encoder input, [0, 1] target) on the device."""
        x = pixels.to(self.device, non_blocking=True).float().div_(255.0)
        if flip:
            mask = (torch.rand(len(x), generator=generator) < 0.5).to(self.device).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(3), x)
        return (x - self.mean) / self.std, x

    @torch.inference_mode()
    def _evaluate(self, model: nn.Module, pixels: torch.Tensor) -> dict[str, float]:
        model.eval()
        sums: dict[str, float] = {}
        for idx in index_batches(len(pixels), max(self.config.batch_size, 64), shuffle=False):
            x, target = self._batch(pixels[idx], flip=False)
            for k, v in model.losses(model(x), target, self.config.beta).items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
        return {k: v / len(pixels) for k, v in sums.items()}

    def _schedule(self, opt: torch.optim.Optimizer, steps: int):
        return warmup_cosine(opt, max(1, min(steps // 10, 100)), steps)

    def _run(self, t0: float) -> PretrainResult:
        cfg, ds = self.config, self.dataset
        if len(ds) < MIN_IMAGES:
            raise TlguiError(f"pretraining needs at least {MIN_IMAGES} pictures; {ds.name} has {len(ds)}")
        generator = seed_everything(cfg.seed)
        cfg.save(self.out_dir / "config.json")
        train_idx, val_idx = self._split(len(ds), generator)
        self.emit("started", device=str(self.device), train_size=len(train_idx), val_size=len(val_idx),
                  epochs=cfg.epochs, method=cfg.method, image_size=cfg.image_size)
        tr, va = self._prepare(train_idx, val_idx)
        mean, std = channel_stats(tr)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        model = build_model(cfg).to(self.device)
        steps_per_epoch = math.ceil(len(tr) / cfg.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = self._schedule(opt, cfg.epochs * steps_per_epoch)
        best: dict = {"loss": float("inf"), "epoch": 0, "state": None, "row": {}}
        history: list[dict] = []
        status, t_train = "finished", time.perf_counter()
        try:
            for epoch in range(1, cfg.epochs + 1):
                model.train()
                sums: dict[str, float] = {}
                seen = 0
                # a last batch of one picture would break BatchNorm: skip it (the next shuffle puts it elsewhere)
                batches = [b for b in index_batches(len(tr), cfg.batch_size, True, generator) if len(b) > 1]
                for step, idx in enumerate(batches, start=1):
                    self.emit.check_stop()
                    x, target = self._batch(tr[idx], cfg.flip, generator)
                    parts = model.losses(model(x), target, cfg.beta)
                    opt.zero_grad(set_to_none=True)
                    parts["loss"].backward()
                    opt.step()
                    sched.step()
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
                    seen += len(idx)
                    done = (epoch - 1) * steps_per_epoch + step
                    rate = (time.perf_counter() - t_train) / done
                    self.emit("batch", epoch=epoch, epochs=cfg.epochs, step=step, steps=len(batches),
                              loss=parts["loss"].item(), progress=done / (cfg.epochs * steps_per_epoch),
                              eta=rate * (cfg.epochs * steps_per_epoch - done), elapsed=time.perf_counter() - t0)
                row: dict = {"epoch": epoch, "epochs": cfg.epochs}
                row.update({f"train_{k}": v / seen for k, v in sums.items()})
                if len(va):
                    row.update({f"val_{k}": v for k, v in self._evaluate(model, va).items()})
                score = row.get("val_loss", row["train_loss"])
                row["best"] = score < best["loss"]
                if row["best"]:
                    best.update(loss=score, epoch=epoch, row=dict(row),
                                state={k: v.detach().clone() for k, v in model.state_dict().items()})
                row.update(lr=opt.param_groups[0]["lr"], elapsed=time.perf_counter() - t0,
                           eta=(time.perf_counter() - t_train) / epoch * (cfg.epochs - epoch))
                history.append(row)
                self.emit("epoch", **row)
        except StopRequested:
            if best["state"] is None:
                raise
            status = "stopped"
        model.load_state_dict(best["state"])
        return self._finish(model, va if len(va) else tr, mean, std, status, best, history, t0)

    def _finish(self, model, shown, mean, std, status, best, history, t0) -> PretrainResult:
        cfg, ds = self.config, self.dataset
        save_reconstructions(self.out_dir / "reconstructions.png", model, shown[:16], self._batch, cfg.seed)
        losses = {k: v for k, v in best["row"].items() if k.startswith(("train_", "val_"))}
        meta = {
            "method": cfg.method, "image_size": cfg.image_size, "mean": mean, "std": std,
            "losses": losses, "best_epoch": best["epoch"], "epochs_run": len(history),
            "data": {"name": ds.name, "images": len(ds), "skipped": len(ds.skipped)},
            "config": asdict(cfg), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        model.cpu().eval()
        bundle = save_encoder(self.out_dir / "encoder.zip", model.encoder, meta)
        elapsed = time.perf_counter() - t0
        self.emit(status, epoch=best["epoch"], elapsed=elapsed, bundle=str(bundle), losses=losses)
        return PretrainResult(status, self.out_dir, bundle, history, losses, model)


def pretrain(config: PretrainConfig, dataset: Dataset, out_dir: str | Path, listeners=(), stop=None) -> PretrainResult:
    return Pretrainer(config, dataset, out_dir, listeners, stop).run()


# -- what a person sees ---------------------------------------------------------------------
@torch.inference_mode()
def save_reconstructions(path: Path, model: nn.Module, pixels: torch.Tensor, batch, seed: int = 0,
                         pairs_per_row: int = 4) -> Path:
    """A grid of pictures, each input beside its reconstruction; a VAE adds a row of samples
    drawn from its prior. Written atomically."""
    from PIL import Image

    model.eval()
    x, target = batch(pixels, flip=False)
    recon = torch.sigmoid(model(x)["logits"]).cpu()
    rows = []
    for start in range(0, len(pixels), pairs_per_row):
        row = []
        for a, b in zip(target[start : start + pairs_per_row].cpu(), recon[start : start + pairs_per_row]):
            row += [a, b]
        rows.append(row)
    if isinstance(model, VAE):
        rows.append(list(model.sample(2 * pairs_per_row, torch.Generator().manual_seed(seed)).cpu()))
    size = max(pixels.shape[-1], 64)  # small pictures are enlarged so that they can be seen
    gap, cols = 8, 2 * pairs_per_row  # an input and its reconstruction touch; pairs stand apart

    def left(c: int) -> int:
        return gap + c * size + (c // 2) * gap

    sheet = Image.new("RGB", (left(cols - 1) + size + gap, len(rows) * (size + gap) + gap), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            arr = (tile.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(arr).resize((size, size), Image.NEAREST), (left(c), gap + r * (size + gap)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())
    return path

