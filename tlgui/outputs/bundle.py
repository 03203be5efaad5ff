"""The model bundle `model.zip`: safetensors weights, `tlgui.json`, a model card, exports where asked; and loading it back.

Loading never unpickles anything: weights come from safetensors, settings from JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..config import RunConfig, check_exports
from ..data.images import BadImage, open_rgb, square_tensor_bytes
from ..data.limits import check_bundle_meta, check_zip_directory
from ..data.sources import check_zip_bomb
from ..errors import TlguiError
from ..nets.backbones import is_own_encoder, restore_backbone
from ..nets.model import Classifier
from ..nets.standardise import identity_entries
from ..runs import atomic_write, disk_full, temp_name
from .export import FILES, check_task, export_all
from .export_check import probe_from_dataset, random_probe
from .modelcard import model_card

FORMAT_VERSION = 1
META_BYTES = 16 * 1024**2  # tlgui.json: class names and settings, far below this


def transfer_kind(config: RunConfig) -> str:
    """Which kind of knowledge transfer a run used, in words for the model card."""
    mode = {"all": "feature extraction (backbone frozen)", "none": "full fine-tuning",
            "auto": "feature extraction (backbone frozen) or LP-FT, whichever the automatic recipe kept"}.get(
        config.freeze, f"partial fine-tuning (first {config.freeze} stages frozen)")
    if config.init:
        return f"parameters: started from an earlier tlgui model ({Path(config.init).name}), {mode}"
    if not config.pretrained:  # before the encoder check: --no-pretrained leaves an encoder random too
        return "structure only: same architecture, randomly initialised (no pretraining)"
    own = [b for b in config.backbones if is_own_encoder(b)]
    if own:
        fused = " fused with pretrained backbones" if len(own) < len(config.backbones) else ""
        return f"parameters: own encoder pretrained without labels{fused}, {mode}"
    return f"parameters: pretrained weights, {mode}"


def save_bundle(path: Path, model: Classifier, config: RunConfig, dataset, metrics: dict, history: list[dict],
                warn: Callable[[str], None] | None = None) -> Path:
    """Write `path` atomically: built under a temporary name, then renamed. With `warn`, an export
    asked for in `config.export` that fails is left out and warned about, so the trained model is kept."""
    path = Path(path)
    backbones = [b.describe() for b in model.backbones]
    meta = {
        "format_version": FORMAT_VERSION,
        "task": model.task,
        "classes": list(dataset.classes),
        "backbones": backbones,
        "fusion": config.fusion,
        "fusion_dim": config.fusion_dim,
        "freeze": config.freeze,
        "preprocessing": _preprocessing(model),
        "transfer": transfer_kind(config),
        "config": config.to_dict(),
        "metrics": {k: v for k, v in metrics.items() if k != "confusion"},
        "dataset": {k: v for k, v in dataset.report().items() if k != "skipped_files"},
        "epochs_run": len(history),
        "exports": {},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = without_server_paths(meta)
    files = {}
    if config.export:  # each checked against the model on the validation inputs
        probe = probe_from_dataset(dataset, meta["preprocessing"].get("image_size"))
        files, meta["exports"] = export_all(model, config.export, meta, probe, warn)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}

    def write(z: zipfile.ZipFile) -> None:
        # stored, not deflated: float weights shrink by under 10% but take seconds per 100 MB to pack
        z.writestr("model.safetensors", save_safetensors(state), compress_type=zipfile.ZIP_STORED)
        z.writestr("tlgui.json", json.dumps(meta, indent=1))
        z.writestr("README.md", model_card(meta, metrics))
        for i, b in enumerate(model.backbones):
            for name, data in b.bundle_files().items():
                z.writestr(f"backbones/{i}/{name}", data)
        for name, data in files.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)

    _write_zip(path, write)
    return path


def public_name(value: str) -> str:
    """A file named by a bundle, without the folders it lay in on this machine: an own encoder
    or an earlier model by its run's id (`encoder:ID`, `model:ID`), anything else by its name."""
    p = Path(value)
    if p.name in ("encoder.zip", "model.zip") and p.parent.name:
        return f"{p.stem}:{p.parent.name}"
    return p.name


def without_server_paths(value):
    """`value` (tlgui.json's content) with every file path of this machine replaced by `public_name`."""
    if isinstance(value, dict):
        return {k: without_server_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_server_paths(v) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or (value.endswith(".zip") and ("/" in value or "\\" in value))):
        return public_name(value)
    return value


def _write_zip(path: Path, write) -> None:
    """`write(zipfile)` into a temporary name beside `path`, then rename: no half bundle ever has its name."""
    tmp = temp_name(path)
    try:
        with tmp.open("wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                write(z)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        raise disk_full(e, path.parent) or e from None


def add_export(path: str | Path, fmt: str, out: str | Path | None = None, data_path: str | Path | None = None) -> Path:
    """Export a bundle's model as `fmt`, checked against it on the dataset `data_path` (its
    validation part as the bundle's settings split it): into the bundle itself (rewritten
    atomically, with its tlgui.json and model card updated), or into the file `out` (with a
    text model's tokenizer files beside it). Returns where it went."""
    check_exports([fmt])
    path = _bundle_path(path)
    loaded = load_bundle(path)
    check_task(loaded.task, [fmt])
    meta = loaded.meta
    probe = _export_probe(loaded, fmt, data_path)
    exported, entries = export_all(loaded.model, [fmt], meta, probe)
    if out is not None:
        out = Path(out)
        out = out / FILES[fmt] if out.is_dir() else out
        if not out.parent.is_dir():
            raise TlguiError(f"folder not found: {out.parent} (create it, or give another --out)")
        for name, data in exported.items():
            atomic_write(out if name == FILES[fmt] else out.parent / name, data)
        return out
    meta["exports"] = {**meta.get("exports", {}), **entries}
    replaced = {"tlgui.json", "README.md", *exported}

    def write(z: zipfile.ZipFile) -> None:
        with zipfile.ZipFile(path) as old:
            for info in old.infolist():
                if info.filename not in replaced:
                    z.writestr(info, old.read(info))  # its ZipInfo keeps its compression
        z.writestr("tlgui.json", json.dumps(meta, indent=1))
        z.writestr("README.md", model_card(meta, meta.get("metrics", {})))
        for name, data in exported.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)

    _write_zip(path, write)
    return path


def _export_probe(loaded: LoadedModel, fmt: str, data_path: str | Path | None):
    """What `add_export` checks on: the dataset's validation inputs, or, for a float export of a
    picture model given no data, seeded noise pictures."""
    meta = loaded.meta
    if data_path is None:
        if loaded.task == "image" and fmt != "onnx-int8":
            return random_probe(meta["preprocessing"]["image_size"])
        what = "texts" if loaded.task == "text" else "pictures to calibrate and check it on"
        raise TlguiError(f"the {fmt} export of this model needs --data DATA: the dataset it was trained on, or other "
                         f"{what}")
    from ..data.datasets import read_dataset

    ds = read_dataset(data_path)
    if ds.task != loaded.task:
        raise TlguiError(f"--data holds {ds.task}s but this is {'an' if loaded.task == 'image' else 'a'} "
                         f"{loaded.task} model: give its kind of data")
    cfg = meta.get("config", {})
    ds.assign_splits(cfg.get("val_split", 0.2), cfg.get("seed", 0))
    return probe_from_dataset(ds, meta["preprocessing"].get("image_size"))


def _preprocessing(model: Classifier) -> dict:
    if model.task == "image":
        return {"image_size": max(b.input_size for b in model.backbones), "resize": "squash to a square, bilinear",
                "scale": "0-1", "backbones": [{"name": b.name, "input_size": b.input_size,
                                               "mean": b.mean.flatten().tolist(), "std": b.std.flatten().tolist()}
                                              for b in model.backbones]}
    return {"text": "each backbone's own tokenizer, stored in the bundle", "backbones": [b.describe() for b in model.backbones]}


@dataclass
class LoadedModel:
    """A bundle loaded for prediction, with no training data and no network."""

    model: Classifier
    meta: dict

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    def _image_tensor(self, item) -> torch.Tensor:
        size = self.meta["preprocessing"]["image_size"]
        if isinstance(item, (str, Path)):
            try:
                data = Path(item).read_bytes()
            except OSError:
                raise TlguiError(f"cannot read image {item}: check the path") from None
            try:
                img = open_rgb(data, draft=size)
            except BadImage as e:
                raise TlguiError(f"{Path(item).name}: {e}") from None
        elif isinstance(item, np.ndarray):
            from PIL import Image

            img = Image.fromarray(item).convert("RGB")
        else:
            img = open_rgb(b"") if item is None else item.convert("RGB")
        return torch.from_numpy(square_tensor_bytes(img, size)).permute(2, 0, 1)

    @torch.inference_mode()
    def probabilities(self, inputs: list) -> np.ndarray:
        self.model.eval()
        out = []
        for start in range(0, len(inputs), 64):
            chunk = inputs[start : start + 64]
            if self.task == "image":
                x = torch.stack([self._image_tensor(i) for i in chunk]).float().div_(255.0)
            else:
                x = [str(t) for t in chunk]
            out.append(self.model(x).float().softmax(1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, inputs: list, top_k: int = 3) -> list[dict]:
        probs = self.probabilities(inputs)
        results = []
        for item, p in zip(inputs, probs):
            order = np.argsort(-p)[: max(1, top_k)]
            results.append({"input": str(item) if isinstance(item, (str, Path)) else None,
                            "label": self.classes[order[0]], "score": float(p[order[0]]),
                            "top_k": [[self.classes[j], float(p[j])] for j in order]})
        return results


def _bundle_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "model.zip"
    if not path.exists():
        raise TlguiError(f"model not found: {path} (give a model.zip or the folder of a run)")
    return path


def read_bundle(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], zipfile.ZipFile]:
    path = _bundle_path(path)
    meta = read_bundle_meta(path)  # its numbers checked before the weights are read
    try:
        z = zipfile.ZipFile(path)
        check_zip_bomb(z.infolist(), path.name)  # before reading any member
        state = load_safetensors(z.read("model.safetensors"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise TlguiError(f"{path.name} is not a tlgui model bundle (model.zip with tlgui.json and model.safetensors)") from None
    except TlguiError:
        raise
    except Exception as e:  # safetensors raises its own errors for a damaged or foreign file (a pickle)
        raise TlguiError(f"{path.name}: the weights are not a valid safetensors file ({type(e).__name__}); "
                         "other formats are refused, never unpickled: export the model again") from None
    return meta, state, z


def _checked(meta, path: Path) -> dict:
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or "classes" not in meta:
        raise TlguiError(f"{path.name} is not a tlgui model bundle of a version this tlgui reads")
    check_bundle_meta(meta, path.name)
    return meta


def read_bundle_meta(path: str | Path) -> dict:
    """A bundle's tlgui.json alone, checked: the weights are not read."""
    path = _bundle_path(path)
    try:
        check_zip_directory(path, path.name)
        with zipfile.ZipFile(path) as z:
            check_zip_bomb(z.infolist(), path.name)  # before reading any member
            info = z.getinfo("tlgui.json")
            if info.file_size > META_BYTES:
                raise TlguiError(f"{path.name}: its tlgui.json is too large to be a tlgui model bundle")
            meta = json.loads(z.read(info))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise TlguiError(f"{path.name} is not a tlgui model bundle (model.zip with tlgui.json and model.safetensors)") from None
    return _checked(meta, path)


def load_bundle(path: str | Path) -> LoadedModel:
    meta, state, z = read_bundle(path)
    with z:
        backbones = [restore_backbone(entry, lambda name, i=i: z.read(f"backbones/{i}/{name}"))
                     for i, entry in enumerate(meta["backbones"])]
    model = Classifier(backbones, meta["fusion"], len(meta["classes"]), meta.get("fusion_dim", 256))
    try:
        model.load_state_dict(identity_entries(model, state), strict=True)  # older bundles: no statistics
    except RuntimeError:
        raise TlguiError("the bundle's weights do not match its description: the file is damaged; export it again") from None
    model.eval()
    return LoadedModel(model, meta)


ARCHITECTURE = ("backbones", "fusion", "fusion_dim", "image_size", "max_length")


def init_settings(path: str | Path) -> dict:
    """The settings that shape an earlier bundle's network, so that `--init MODEL.zip` alone
    rebuilds the same network (same backbones at the same input size) before taking its weights."""
    config = read_bundle_meta(path).get("config", {})
    return {k: config[k] for k in ARCHITECTURE if k in config}


def init_from_bundle(model: Classifier, path: str | Path, classes: list[str]) -> dict:
    """Start `model` from an earlier bundle: every tensor whose name and shape match, and the head
    only where the classes are the same, in the same order. Returns what was taken."""
    meta, state, z = read_bundle(path)
    z.close()
    own = model.state_dict()
    same_classes = list(meta["classes"]) == list(classes)
    taken = {k: v for k, v in state.items()
             if k in own and own[k].shape == v.shape and (same_classes or not k.startswith("head."))}
    if not any(k.startswith("backbones.") for k in taken):
        raise TlguiError(f"{Path(path).name} was trained with other backbones than {', '.join(b.name for b in model.backbones)}: "
                         "choose the same backbones to start from it")
    model.load_state_dict(taken, strict=False)
    return {"tensors": len(taken), "head": same_classes}
