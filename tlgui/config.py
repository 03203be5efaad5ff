"""A run's recipe: every setting but the data, saved as `config.json` and reusable with `--config`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import TlguiError

OPTIMIZERS = ("adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
EXPORTS = ("onnx", "onnx-int8", "torchscript")
CLASS_WEIGHTS = ("auto", "on", "off")


def check_exports(formats: list[str]) -> None:
    for fmt in formats:
        if fmt not in EXPORTS:
            raise TlguiError(f"unknown export format {fmt!r}: use {', '.join(EXPORTS[:-1])} or {EXPORTS[-1]}")


@dataclass
class RunConfig:
    backbones: list[str] = field(default_factory=lambda: ["efficientnet_lite0"])
    fusion: str = "concat"
    freeze: str = "all"  # "all", "none", the number of leading stages to freeze, or "auto" (probe, then LP-FT if it fits)
    pretrained: bool = True  # False: same architecture, random initialisation
    init: str | None = None  # an earlier model.zip to start from
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # the head's; trainable backbone layers get lr * backbone_lr_scale
    backbone_lr_scale: float = 0.1
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: bool | None = None  # None: on exactly when a backbone layer trains
    patience: int = 3  # early stopping on validation loss; 0 turns it off
    image_size: int | None = None  # None: each backbone's native size
    val_split: float = 0.2
    seed: int = 0
    device: str = "auto"
    fusion_dim: int = 256
    max_length: int = 128  # text: tokens kept per text
    export: list[str] = field(default_factory=list)  # extra files in the bundle, from EXPORTS
    budget: float | None = None  # auto: seconds fine-tuning may take (None: 60 on a CPU, 600 on a GPU)
    class_weights: str = "auto"  # inverse-frequency loss weights; auto: on at 3:1 imbalance or more
    folds: int = 0  # k-fold cross-validation of a frozen run's head (0: one validation part)
    lp_ft: bool = True  # fine-tuning starts from a converged linear probe, with per-stage rates

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.backbones:
            raise TlguiError("no backbone chosen: pick at least one (see `python -m tlgui backbones`)")
        from .fusion import check_mode  # beside torch, which the command line loads only when a command runs

        check_mode(self.fusion)
        if self.optimizer not in OPTIMIZERS:
            raise TlguiError(f"unknown optimizer {self.optimizer!r}: use adamw or sgd")
        if self.device not in DEVICES:
            raise TlguiError(f"unknown device {self.device!r}: use one of {', '.join(DEVICES)}")
        if self.freeze not in ("all", "none", "auto") and not str(self.freeze).isdigit():
            raise TlguiError(f"--freeze must be all, none, auto or a number of stages, not {self.freeze!r}")
        self.freeze = str(self.freeze)
        self._validate_recipe()
        for name, low in (("epochs", 1), ("batch_size", 1)):
            if int(getattr(self, name)) < low:
                raise TlguiError(f"{name} must be at least {low}")
        if not 0.0 <= self.val_split < 1.0:
            raise TlguiError("the validation share must be between 0 and 1 (for example 0.2)")
        if self.lr <= 0:
            raise TlguiError("the learning rate must be positive (for example 0.001)")
        if self.image_size is not None and not 16 <= int(self.image_size) <= 1024:
            raise TlguiError("the image size must be between 16 and 1024 pixels")
        if isinstance(self.export, str):
            self.export = [self.export]
        check_exports(self.export)
        self.export = list(dict.fromkeys(self.export))  # asked twice, exported once

    def _validate_recipe(self) -> None:
        if self.budget is not None:
            try:
                self.budget = float(self.budget)
            except (TypeError, ValueError):
                self.budget = -1.0
            if not self.budget > 0 or self.budget != self.budget or self.budget == float("inf"):
                raise TlguiError("--budget must be a positive number of seconds (for example 300)")
        if self.class_weights not in CLASS_WEIGHTS:
            raise TlguiError(f"--class-weights must be auto, on or off, not {self.class_weights!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 0 or self.folds == 1:
            raise TlguiError("--folds must be a whole number of at least 2 (or 0 for one validation part)")
        if self.folds and self.freeze not in ("all", "auto"):
            raise TlguiError("--folds cross-validates a frozen head: use it with --freeze all or auto")

    @property
    def trains_backbone(self) -> bool:
        return self.freeze not in ("all", "auto")  # auto's fine-tuning, if any, comes after its probe

    @property
    def uses_augmentation(self) -> bool:
        return self.trains_backbone if self.augment is None else bool(self.augment)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TlguiError(f"unknown setting(s) in the config: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise TlguiError(f"config file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TlguiError(f"{path} is not a JSON config: use a run's config.json") from None
        if not isinstance(data, dict):
            raise TlguiError(f"{path} is not a run config: use a run's config.json")
        return cls.from_dict(data.get("config", data))
