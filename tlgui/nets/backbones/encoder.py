"""Encoders made by `tlgui pretrain`, used as backbones like any other.

An encoder bundle `encoder.zip` holds `encoder.safetensors` (the encoder's weights, never a
pickle), `encoder.json` (architecture, input size, mean and std, method, losses, data) and a
short `README.md`. `--backbone path/to/encoder.zip` trains a classifier on top of it.

A classifier bundle records the encoder's architecture in its backbone entry (kind
`encoder`), so it reloads from its own weights even after the encoder.zip is gone.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ...data.sources import check_zip_bomb
from ...errors import TlguiError
from ...runs import atomic_write
from .base import BackboneInfo, Family, ImageBackbone, Reader

FORMAT = "tlgui-encoder"
FORMAT_VERSION = 1
META_FILE = "encoder.json"
WEIGHTS_FILE = "encoder.safetensors"
DEFAULT_WIDTHS = (32, 64, 128, 256)
METHODS = ("autoencoder", "vae")


def conv_block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    """A stride-2 3x3 convolution (halves the picture), then `convs - 1` stride-1 ones, each with BatchNorm."""
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, stride=2 if k == 0 else 1, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Stride-2 conv blocks, then global average pooling; a VAE adds `mu`, a linear map of the
    pooled vector whose output is the feature (its mean code), and `logvar` for training only.

    The architecture is the JSON-able dict `arch` (`widths`, `convs_per_block`, `latent_dim`),
    so a bundle can rebuild it without any code of its own.
    """

    def __init__(self, widths: list[int] | tuple[int, ...] = DEFAULT_WIDTHS, convs_per_block: int = 2,
                 latent_dim: int | None = None, in_channels: int = 3):
        super().__init__()
        self.arch = {"widths": [int(w) for w in widths], "convs_per_block": int(convs_per_block),
                     "latent_dim": None if latent_dim is None else int(latent_dim), "in_channels": int(in_channels)}
        chans = [in_channels, *widths]
        self.blocks = nn.Sequential(*(conv_block(a, b, convs_per_block) for a, b in zip(chans, chans[1:])))
        self.mu = nn.Linear(widths[-1], latent_dim) if latent_dim else None

    @property
    def out_dim(self) -> int:
        return self.arch["latent_dim"] or self.arch["widths"][-1]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pooled(x)
        return self.mu(h) if self.mu is not None else h

    def stages(self) -> list[list[nn.Module]]:
        """One stage per conv block; the VAE's `mu` goes with the last, so `all` freezes it too."""
        stages = [[block] for block in self.blocks]
        if self.mu is not None:
            stages[-1].append(self.mu)
        return stages


def encoder_from_arch(arch: dict) -> ConvEncoder:
    from ...data.limits import check_numbers

    check_numbers(arch, "the encoder")  # a forged width is refused, not allocated
    if len(arch.get("widths", [])) > 8:
        raise TlguiError("the encoder's description is damaged (more than 8 blocks): run `tlgui pretrain` again")
    try:
        return ConvEncoder(arch["widths"], arch.get("convs_per_block", 2), arch.get("latent_dim"),
                           arch.get("in_channels", 3))
    except (KeyError, TypeError, ValueError):
        raise TlguiError("the encoder's description is damaged (no usable `arch`): run `tlgui pretrain` again") from None


class EncoderBackbone(ImageBackbone):
    """An own encoder as a backbone: resizes to the size it was pretrained at and normalises
    with the mean and std of its pretraining images."""

    def __init__(self, name: str, body: ConvEncoder, mean, std, input_size: int, method: str):
        super().__init__(name, body, body.out_dim, mean, std, input_size)
        self.stages = body.stages()
        self.method = method

    def describe(self) -> dict:
        return {**super().describe(), "kind": "encoder", "method": self.method, "arch": dict(self.body.arch)}


# -- the encoder.zip bundle -----------------------------------------------------------------
def save_encoder(path: Path, encoder: ConvEncoder, meta: dict) -> Path:
    """Write `path` atomically; `meta` is completed with the format, architecture and feature width."""
    path = Path(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "arch": dict(encoder.arch),
            "feature_dim": encoder.out_dim}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(WEIGHTS_FILE, save_safetensors(state))
        z.writestr(META_FILE, json.dumps(meta, indent=1))
        z.writestr("README.md", encoder_card(meta))
    atomic_write(path, buf.getvalue())
    return path


def encoder_card(meta: dict) -> str:
    kind = {"autoencoder": "autoencoder", "vae": "variational autoencoder (VAE)"}.get(meta.get("method"), "encoder")
    losses = meta.get("losses", {})
    data = meta.get("data", {})
    lines = [f"# tlgui encoder ({kind})", "",
             f"Pretrained without labels on {data.get('images', '?')} images of {data.get('name', '?')} "
             f"at {meta['image_size']}x{meta['image_size']} pixels, {meta.get('epochs_run', '?')} epochs.", "",
             f"- Architecture: {len(meta['arch']['widths'])} stride-2 conv blocks of widths "
             f"{', '.join(map(str, meta['arch']['widths']))}, global average pooling, {meta['feature_dim']}-d features",
             f"- Losses of the epoch kept ({meta.get('best_epoch', '?')}, the lowest validation loss): "
             + ", ".join(f"{k} {v:.4f}" for k, v in losses.items() if isinstance(v, float)), "",
             "## How to use", "", "```bash",
             "python -m tlgui train DATA --backbone encoder.zip --out run --freeze all   # or none, or a number of blocks",
             "```", ""]
    return "\n".join(lines)


def _open(path: str | Path) -> zipfile.ZipFile:
    path = Path(path)
    if not path.exists():
        raise TlguiError(f"encoder not found: {path} (make one with `python -m tlgui pretrain DATA --out DIR`)")
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise TlguiError(f"{path.name} is not a readable zip: give an encoder.zip made by `tlgui pretrain`") from None
    check_zip_bomb(z.infolist(), path.name)  # a file from elsewhere is checked before anything is unpacked
    return z


def read_encoder_meta(path: str | Path) -> dict:
    with _open(path) as z:
        try:
            meta = json.loads(z.read(META_FILE))
        except (KeyError, json.JSONDecodeError, UnicodeDecodeError):
            meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TlguiError(f"{Path(path).name} is not an encoder made by `tlgui pretrain` (an encoder.zip with {META_FILE})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TlguiError(f"{Path(path).name} is an encoder of a format this tlgui does not read: update tlgui")
    return meta


def load_encoder(path: str | Path, pretrained: bool = True) -> EncoderBackbone:
    """The encoder of `path` as a backbone; `pretrained=False` gives the same architecture with
    random weights (structure transfer only)."""
    meta = read_encoder_meta(path)
    body = encoder_from_arch(meta["arch"])
    if pretrained:
        with _open(path) as z:
            try:
                state = load_safetensors(z.read(WEIGHTS_FILE))
                body.load_state_dict(state, strict=True)
            except Exception:  # a missing member, a damaged file or foreign tensors
                raise TlguiError(f"{Path(path).name}: the encoder's weights are missing or damaged: "
                                 "run `tlgui pretrain` again") from None
    return EncoderBackbone(str(path), body, meta["mean"], meta["std"], int(meta["image_size"]), meta["method"])


def is_own_encoder(name: str) -> bool:
    """Whether a backbone name is the path of an encoder.zip (the listed backbones have plain names)."""
    return str(name).endswith(".zip") and not str(name).startswith("hf:")  # a Hub id may end in .zip too


def encoder_info(path: str | Path) -> BackboneInfo:
    """The registry record of an encoder.zip, read from its JSON alone (the weights wait for `build`)."""
    meta = read_encoder_meta(path)
    params = sum(p.numel() for p in encoder_from_arch(meta["arch"]).parameters())
    losses = meta.get("losses", {})
    data = meta.get("data", {})
    loss = losses.get("val_loss", losses.get("train_loss"))
    description = (f"own {meta['method']} encoder, pretrained on {data.get('images', '?')} images of "
                   f"{data.get('name', '?')}" + (f", loss {loss:.4f}" if isinstance(loss, float) else ""))
    return BackboneInfo(
        name=str(path), task="image", params=params, input_size=int(meta["image_size"]),
        stages=len(meta["arch"]["widths"]), feature_dim=int(meta["feature_dim"]), offline=True,
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), source="own encoder", description=description,
        build=lambda pretrained, p=str(path): load_encoder(p, pretrained),
    )


def restore_encoder(entry: dict, read: Reader) -> EncoderBackbone:
    """Rebuild an encoder backbone from a classifier bundle's entry; the bundle's weights follow,
    so the original encoder.zip is not needed."""
    try:
        body = encoder_from_arch(entry["arch"])
        return EncoderBackbone(entry["name"], body, entry["mean"], entry["std"], int(entry["input_size"]),
                               entry.get("method", "autoencoder"))
    except (KeyError, TypeError, ValueError):
        raise TlguiError("the bundle's encoder entry is damaged: export the model again") from None


def list_encoders(root: str | Path) -> list[BackboneInfo]:
    """Every usable encoder.zip under `root`, newest first (the app's "my encoders" group)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted(root.rglob("encoder.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    infos = []
    for path in found:
        try:
            infos.append(encoder_info(path))
        except TlguiError:
            continue  # a half-copied or foreign file is not offered
    return infos


# not listed: each encoder is named by the path of its file
FAMILY = Family("encoder", infos=lambda: [], restore=restore_encoder,
                lookup=lambda name: encoder_info(name) if is_own_encoder(name) else None)
