"""The page's run settings, carried as one mapping keyed by `RunConfig`'s field names (`page.settings`):
read into a RunConfig, set from one, and written as the command line that repeats the run.

A setting the page offers is a component under its field's name in `model_step.build`, plus its
label in `text.py`; a page value that differs in form from the config's gets a pair in `FORMS`.
Where a run starts is the page's own three fields (`START`): they become `pretrained` and `init`."""

from __future__ import annotations

import inspect
import shlex
from pathlib import Path

from ..cli import flags_of
from ..config import RunConfig, started_from
from ..errors import TlguiError
from ..nets.backbones import all_backbones
from ..outputs.bundle import init_settings
from . import pretrain_step, run_folders
from .context import AppContext
from .text import t

START = ("start_from", "init_run", "init_upload")
_DEFAULT = RunConfig()

# (page value -> config value, config value -> page value) where the two differ in form;
# an empty field takes the default where that is safe, an empty number is an error
FORMS = {
    "backbones": (list, list),
    "fusion": (lambda v: v or _DEFAULT.fusion, str),
    "freeze": (lambda v: str(v or _DEFAULT.freeze), str),
    "epochs": (int, int), "batch_size": (int, int), "patience": (int, int), "seed": (int, int),
    "lr": (float, float), "val_split": (float, float),
    "image_size": (lambda v: None if v in (None, "", "native") else int(v), lambda v: str(v) if v else "native"),
    "augment": ({"on": True, "off": False}.get, lambda v: {True: "on", False: "off"}.get(v, "auto")),
    "export": (lambda v: list(v or []), list),
    "budget": (lambda v: v or None, lambda v: v),
    "class_weights": (lambda v: v or _DEFAULT.class_weights, str),
    "folds": (lambda v: int(v or 0), int),
    "max_length": (lambda v: v or None, lambda v: v),  # empty (or 0): from the data; the engine checks the rest
}


def make_config(values: dict) -> RunConfig:
    """The page's settings as the engine's RunConfig (which checks them and says what is wrong).
    Settings the page leaves out take their defaults; the earlier model a run may start from is
    `start_model`'s business."""
    if not values.get("backbones"):
        raise TlguiError(t("pick_backbone"))
    try:
        settings = {name: FORMS[name][0](value) for name, value in values.items() if name in FORMS}
    except (TypeError, ValueError):
        raise TlguiError(t("setting_not_a_number")) from None
    return RunConfig(**settings, pretrained=values.get("start_from") != "scratch")


def page_values(config: RunConfig, names) -> dict:
    """The page's fields `names` set to `config`'s settings (where a run starts: pretrained or scratch)."""
    values = {name: FORMS[name][1](getattr(config, name)) for name in names if name in FORMS}
    if "start_from" in names:
        values["start_from"] = "pretrained" if config.pretrained else "scratch"
    return values


def start_model(ctx: AppContext, owner: str, config: RunConfig, values: dict) -> RunConfig:
    """Point `config` at the earlier model it starts from (one of the owner's runs, or an uploaded
    model.zip), whose network wins over the page's (`config.started_from`), as on the command line."""
    start_from = values.get("start_from")
    if start_from not in ("run", "upload"):
        return config
    if start_from == "run":
        init_run = values.get("init_run")
        folder = run_folders.folder_of(ctx.settings.runs_root, init_run, owner) if init_run else None
        if folder is None or not (folder / "model.zip").exists():
            raise TlguiError(t("init_pick_run"))
        bundle = folder / "model.zip"
    else:
        if not values.get("init_upload"):
            raise TlguiError(t("init_pick_upload"))
        bundle = Path(values["init_upload"])
    network = init_settings(bundle)  # refuses anything but a tlgui bundle, never unpickles
    names = []
    for name in network.get("backbones", []):
        if str(name).startswith("encoder:"):  # bundles name an own encoder by its run's id
            folder = run_folders.folder_of(ctx.settings.runs_root, name[len("encoder:"):], owner)
            name = str(folder / "encoder.zip") if folder else name
        if name not in all_backbones() and not _owned_encoder(ctx, owner, name):
            raise TlguiError(t("init_foreign_encoder", name=Path(name).name))
        names.append(name)
    if names:
        network["backbones"] = names
    return RunConfig.from_dict({**started_from(config.to_dict(), str(bundle), network), "pretrained": True})


def _owned_encoder(ctx: AppContext, owner: str, path: str) -> bool:
    """An own encoder named by an earlier model must be a file in one of the owner's runs."""
    p = Path(path)
    try:
        inside = p.resolve().parent.parent == ctx.settings.runs_root.resolve()
    except OSError:
        return False
    return inside and p.name == "encoder.zip" and run_folders.folder_of(ctx.settings.runs_root, p.parent.name, owner) is not None


def shown_path(path: str | Path) -> str:
    """A server file as the command line names it: relative to the server's folder, else by its name."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return p.name


def cli_command(state: dict | None, config: RunConfig) -> str:
    """The `python -m tlgui train` line that repeats these settings (own encoders as encoder.zip)."""
    data = shlex.quote(state["cli_path"]) if state else "DATASET.zip"
    backbones = ["encoder.zip" if pretrain_step.is_encoder(b) else shown_path(b) if b.endswith(".zip") else b
                 for b in config.backbones]  # an earlier model's own encoder is a file
    shown = RunConfig.from_dict({**config.to_dict(), "backbones": backbones,
                                 "init": shown_path(config.init) if config.init else None})
    always = ("backbones", "epochs", "fusion") if len(config.backbones) > 1 else ("backbones", "epochs")
    return " \\\n    ".join([f"python -m tlgui train {data} --out runs/my-run", *flags_of(shown, always)])


def inputs_of(page, settings: dict | None = None, **more) -> dict:
    """An event's `inputs_kwargs`: the settings by name, then `more`, and the browser's key last
    (`owner_key`), which the handler takes as `handler(..., owner_key=None, request=None, **values)`."""
    return {**(page.settings if settings is None else settings), **more, "owner_key": page.owner}


def takes_settings(names):
    """For a handler with `**values` that programs call: Gradio names the API's parameters after
    `inputs_kwargs`, and makes one optional only where the component has a value or the handler's
    parameter defaults to None; this lists the settings in the signature, None by default."""

    def decorate(fn):
        signature = inspect.signature(fn)
        kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        named = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in names]
        fn.__signature__ = signature.replace(parameters=kept + named)
        return fn

    return decorate
