"""A run's recipe: every setting but the data, saved as `config.json` and reusable with `--config`."""

from __future__ import annotations

import argparse
import json
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path

from .errors import TlguiError

OPTIMIZERS = ("adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
EXPORTS = ("onnx", "onnx-int8", "torchscript")
CLASS_WEIGHTS = ("auto", "on", "off")
NOT_SWEPT = ("export", "budget", "folds")  # settings a learning-rate sweep neither takes nor checks
AUTO = "auto"  # as the backbone: the run chooses its backbones and their fusion


def check_exports(formats: list[str]) -> None:
    for fmt in formats:
        if fmt not in EXPORTS:
            raise TlguiError(f"unknown export format {fmt!r}: use {', '.join(EXPORTS[:-1])} or {EXPORTS[-1]}")


def flag(help: str, **argparse_keywords) -> dict:
    """A field's metadata when `train` offers it as a flag: `--name-with-dashes` unless `flag=` names
    it, its help, and argparse's keywords (type, choices, action). The CLI's flags, their choices and
    help, and the page's command line are all made from these."""
    return {"cli": {"help": help, **argparse_keywords}}


class FusionModes:
    """`--fusion`'s choices: the fusion table, read only when a value is checked or help is shown
    (the table lives beside torch, which the command line loads only when a command runs)."""

    def __contains__(self, mode) -> bool:
        from .nets.fusion import MODES

        return mode in MODES

    def __iter__(self):
        from .nets.fusion import MODES

        return iter(MODES)


@dataclass
class RunConfig:
    backbones: list[str] = field(default_factory=lambda: [AUTO], metadata=flag(
        "auto (the default: every backbone usable offline for the data's kind is tried, alone and the best few "
        "joined, within --budget; the best on held-out data stays), a backbone from `python -m tlgui backbones`, "
        "a Hugging Face Hub model as hf:OWNER/NAME, or an encoder.zip made by `pretrain`; repeat to fuse several",
        flag="--backbone", action="append"))
    fusion: str = field(default="concat", metadata=flag("how the features of several backbones are joined: %(choices)s",
                                                        choices=FusionModes(), metavar="MODE"))
    freeze: str = field(default="auto", metadata=flag(
        "auto (the default: linear probe, then LP-FT if it fits --budget; the better on validation stays), all "
        "(frozen backbones, the head alone), none, or a number of leading stages"))
    pretrained: bool = field(default=True, metadata=flag("same architectures, random initialisation",
                                                         flag="--no-pretrained", action="store_false"))
    init: str | None = field(default=None, metadata=flag(
        "an earlier model.zip to start from: its network (backbones, fusion, sizes) wins over the settings beside "
        "it, and its head is kept where the classes match"))
    epochs: int = field(default=10, metadata=flag("passes over the training data", type=int))
    batch_size: int = field(default=32, metadata=flag("examples per training step", type=int))
    lr: float = field(default=1e-3, metadata=flag(
        "learning rate of the head; trainable backbone layers get a tenth of it", type=float))
    backbone_lr_scale: float = 0.1
    optimizer: str = field(default="adamw", metadata=flag("the optimizer", choices=OPTIMIZERS))
    weight_decay: float = field(default=1e-4, metadata=flag("weight decay", type=float))
    warmup_epochs: float = 1.0
    label_smoothing: float = field(default=0.0, metadata=flag("label smoothing of the loss (0: off)", type=float))
    augment: bool | None = field(default=None, metadata=flag(
        "random flips, crops and colour changes (default: on exactly when a backbone layer trains)",
        action=argparse.BooleanOptionalAction))
    patience: int = field(default=3, metadata=flag("early-stopping patience in epochs (0: off)", type=int))
    image_size: int | None = field(default=None, metadata=flag(
        "input size in pixels (default: each backbone's own)", type=int))
    val_split: float = field(default=0.2, metadata=flag(
        "share held out for validation when the dataset has no validation folder", type=float))
    seed: int = field(default=0, metadata=flag("the random seed; the same seed repeats a run", type=int))
    device: str = field(default="auto", metadata=flag("where to train", choices=DEVICES))
    fusion_dim: int = 256
    max_length: int | None = field(default=None, metadata=flag(  # a string on the command line: checked here
        "tokens kept per text (default: from the data, the 95th percentile of the training texts' lengths, up to "
        "the encoder's own limit)"))
    export: list[str] = field(default_factory=list, metadata=flag(
        "also put the model in the bundle as model.onnx, model.int8.onnx or model.torchscript.pt, checked against "
        "it on the validation data (repeat for several)", action="append", choices=EXPORTS))
    budget: float | None = field(default=None, metadata=flag(  # a string on the command line: checked here
        "seconds --freeze auto may spend in all: trying backbones (frozen), then fine-tuning in the time left, "
        "with fewer epochs or pixels where that fits (default 60 on a CPU, 600 on a GPU)"))
    class_weights: str = field(default="auto", metadata=flag(
        "inverse-frequency loss weights (auto: on when the largest class has 3x the smallest)", choices=CLASS_WEIGHTS))
    folds: int = field(default=0, metadata=flag(
        "k-fold cross-validation of a frozen head; the final head sees all data", type=int))
    lp_ft: bool = True  # fine-tuning starts from a converged linear probe, with per-stage rates

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.backbones:
            raise TlguiError("no backbone chosen: pick at least one (see `python -m tlgui backbones`)")
        if AUTO in self.backbones and len(self.backbones) > 1:
            raise TlguiError("auto chooses the backbones itself: give auto alone, or name the backbones to use")
        from .nets.fusion import check_mode  # beside torch, which the command line loads only when a command runs

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
        if self.max_length is not None:
            whole = isinstance(self.max_length, float) and self.max_length.is_integer()  # a page's number: 256.0
            try:
                self.max_length = int(self.max_length if whole else str(self.max_length).strip())
            except ValueError:
                self.max_length = 0
            if self.max_length < 8:
                raise TlguiError("--max-length must be a whole number of tokens, 8 or more (for example 256), "
                                 "or left out to follow the data")
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
    def auto_backbones(self) -> bool:
        return self.backbones == [AUTO]

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


def cli_settings() -> list[Field]:
    """The settings `train` offers as flags, in the config's order."""
    return [f for f in fields(RunConfig) if "cli" in f.metadata]


def flag_of(setting: Field) -> str:
    return setting.metadata["cli"].get("flag", "--" + setting.name.replace("_", "-"))


def started_from(settings: dict, init: str, network: dict) -> dict:
    """`settings` for a run that starts from the earlier model `init`, whose network is `network`
    (`bundle.init_settings`). The earlier model's network wins over every setting beside it (a flag,
    a config file, the page's fields): its weights fit that network only. The command line and the
    page both start a run from an earlier model through here."""
    return {**settings, **network, "init": init}
