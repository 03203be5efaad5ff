"""Step 2: backbones (with what a person needs to choose them), fusion, freezing, advanced settings."""

from __future__ import annotations

import shlex

import gradio as gr
import pandas as pd

from ..backbones import BackboneInfo, registry
from ..config import FUSIONS, RunConfig
from ..errors import TlguiError
from .context import AppContext
from .estimate import training_seconds
from .text import duration, t

DEFAULTS = {"image": "efficientnet_lite0", "text": "minilm_l6"}  # pretrained, offline, frozen features
WELL_KNOWN = ("resnet18", "resnet50", "mobilenet_v3_large", "convnext_tiny", "vit_b_16")  # shown in the table too
IMAGE_SIZES = ("native", "160", "128", "96", "64", "32")
AUGMENT = ("auto", "on", "off")


def backbones_for(task: str | None) -> list[BackboneInfo]:
    return [i for i in registry().values() if task is None or i.task == task]


def default_backbones(task: str) -> list[str]:
    infos = backbones_for(task)
    names = [i.name for i in infos]
    if DEFAULTS.get(task) in names:
        return [DEFAULTS[task]]
    offline = [i.name for i in infos if i.offline]
    return (offline or names)[:1]


def freeze_choices(chosen: list[str]) -> list[str]:
    """`all`, `none`, then 1..n where n is the fewest stages among the chosen backbones."""
    infos = registry()
    stages = [infos[n].stages for n in chosen if n in infos]
    return ["all", "none"] + [str(k) for k in range(1, (min(stages) if stages else 0) + 1)]


def freeze_help(freeze: str, chosen: list[str]) -> str:
    if freeze in ("all", "none"):
        return t(f"freeze_{freeze}")
    total = max(len(freeze_choices(chosen)) - 2, 1)
    return t("freeze_n", n=freeze, total=total)


def fusion_help(fusion: str, chosen: list[str]) -> str:
    return t(f"fusion_{fusion}") if len(chosen) > 1 else t("fusion_single")


def make_config(backbones, fusion, freeze, epochs, lr, batch_size, image_size, val_split, augment, patience,
                seed) -> RunConfig:
    """The page's settings as the engine's RunConfig (which checks them and says what is wrong)."""
    if not backbones:
        raise TlguiError(t("pick_backbone"))
    try:
        return RunConfig(
            backbones=list(backbones), fusion=fusion or "concat", freeze=str(freeze or "all"),
            epochs=int(epochs), lr=float(lr), batch_size=int(batch_size),
            image_size=None if image_size in (None, "", "native") else int(image_size),
            val_split=float(val_split), augment={"on": True, "off": False}.get(augment),
            patience=int(patience), seed=int(seed))
    except (TypeError, ValueError):
        raise TlguiError("a setting is empty or not a number: check the advanced settings") from None


def cli_command(state: dict | None, config: RunConfig) -> str:
    """The `python -m tlgui train` line that repeats these settings."""
    data = shlex.quote(state["cli_path"]) if state else "DATASET.zip"
    parts = [f"python -m tlgui train {data} --out runs/my-run"]
    parts += [f"--backbone {b}" for b in config.backbones]
    default = RunConfig()
    if len(config.backbones) > 1:
        parts.append(f"--fusion {config.fusion}")
    for flag, attr in (("--freeze", "freeze"), ("--epochs", "epochs"), ("--lr", "lr"), ("--batch-size", "batch_size"),
                       ("--image-size", "image_size"), ("--val-split", "val_split"), ("--patience", "patience"),
                       ("--seed", "seed")):
        value = getattr(config, attr)
        if value != getattr(default, attr) or attr == "epochs":
            parts.append(f"{flag} {value}")
    if config.augment is not None:
        parts.append("--augment" if config.augment else "--no-augment")
    return " \\\n    ".join(parts)


def _estimate(ctx: AppContext, infos: list[BackboneInfo], state: dict, config: RunConfig, wait: float) -> float | None:
    if not infos:
        return None
    spg = ctx.probe.seconds_per_gflop(infos[0].task, wait)
    if spg is None:
        return None
    return training_seconds(infos, state["size"], epochs=config.epochs, val_split=config.val_split,
                            freeze=config.freeze, augment=config.augment, image_size=config.image_size,
                            seconds_per_gflop=spg)


def backbone_table(ctx: AppContext, state: dict | None, config: RunConfig | None, chosen: list[str]) -> pd.DataFrame:
    task = state["task"] if state else "image"
    infos = backbones_for(task)
    shown = [i for i in infos if i.name in chosen or i.offline or i.name in WELL_KNOWN]
    shown.sort(key=lambda i: (i.name not in chosen, not i.offline, i.params))
    rows = []
    for i in shown:
        seconds = _estimate(ctx, [i], state, config, 0.0) if state and config else None
        size = f"{config.image_size} px" if config and config.image_size and i.task == "image" else (
            f"{i.input_size} px" if i.task == "image" else f"{i.input_size} tokens")
        rows.append(((" ✔ " if i.name in chosen else "") + i.name, f"{i.params / 1e6:.1f} M", size,
                     t("offline_yes") if i.offline else t("offline_no"), "≈ " + duration(seconds)))
    return pd.DataFrame(rows, columns=[t("col_backbone"), t("col_params"), t("col_input"), t("col_offline"), t("col_time")])


def build(page, ctx: AppContext) -> None:
    state = page.initial_dataset
    task = state["task"] if state else "image"
    chosen = default_backbones(task)
    gr.Markdown(f"## {t('step_model')}")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            # every backbone is a valid choice (programs may pick any); a page narrows the list to its data's task
            page.backbones = gr.Dropdown([(i.name, i.name) for i in backbones_for(None)], value=chosen, multiselect=True,
                                         label=t("backbones_label"), info=t("backbones_info"), elem_id="backbones")
            with gr.Row():
                page.fusion = gr.Dropdown(list(FUSIONS), value="concat", label=t("fusion_label"), elem_id="fusion",
                                          interactive=len(chosen) > 1)
                page.freeze = gr.Dropdown(freeze_choices(chosen), value="all",
                                          label=t("freeze_label"), elem_id="freeze")
            page.fusion_help = gr.Markdown(fusion_help("concat", chosen), elem_classes=["tl-help"], elem_id="fusion-help")
            page.freeze_help = gr.Markdown(freeze_help("all", chosen), elem_classes=["tl-help"], elem_id="freeze-help")
        with gr.Column(scale=3):
            page.table = gr.Dataframe(backbone_table(ctx, None, None, chosen), label=t("table_label"), interactive=False,
                                      elem_id="backbone-table", max_height=300, wrap=True)
            page.estimate = gr.Markdown(t("estimate_pending"), elem_id="estimate")
    with gr.Accordion(t("advanced"), open=False, elem_id="advanced"):
        with gr.Row():
            page.epochs = gr.Number(10, precision=0, minimum=1, maximum=1000, label=t("epochs_label"), elem_id="epochs")
            page.lr = gr.Number(1e-3, minimum=1e-7, maximum=1.0, label=t("lr_label"), elem_id="lr")
            page.batch_size = gr.Number(32, precision=0, minimum=1, maximum=1024, label=t("batch_label"), elem_id="batch-size")
            page.image_size = gr.Dropdown(_image_size_choices(chosen), value="native", label=t("image_size_label"),
                                          elem_id="image-size")
        with gr.Row():
            page.val_split = gr.Slider(0.0, 0.5, value=0.2, step=0.05, label=t("val_label"), elem_id="val-split")
            page.augment = gr.Radio([(t(f"augment_{a}"), a) for a in AUGMENT], value="auto", label=t("augment_label"),
                                    elem_id="augment")
            page.patience = gr.Number(3, precision=0, minimum=0, maximum=1000, label=t("patience_label"), elem_id="patience")
            page.seed = gr.Number(0, precision=0, label=t("seed_label"), elem_id="seed")
    page.cli = gr.Code(cli_command(state, make_config(chosen, "concat", "all", 10, 1e-3, 32, "native", 0.2, "auto", 3, 0)),
                       language="shell", interactive=False, label=t("cli_label"), elem_id="cli-command")
    page.settings = [page.backbones, page.fusion, page.freeze, page.epochs, page.lr, page.batch_size, page.image_size,
                     page.val_split, page.augment, page.patience, page.seed]


def _image_size_choices(chosen: list[str]) -> list[tuple[str, str]]:
    infos = registry()
    sizes = [infos[n].input_size for n in chosen if n in infos and infos[n].task == "image"]
    native = t("image_size_native", size=max(sizes)) if sizes else t("image_size_native_plain")
    return [(native, "native")] + [(f"{s} px", s) for s in IMAGE_SIZES[1:]]


def wire(page, ctx: AppContext) -> callable:
    """Returns `then_refresh(event)`, which the data step uses to chain a refresh after a load."""

    def for_dataset(state: dict | None, chosen: list[str] | None) -> dict:
        """Offer the backbones of the dataset's task, keeping the person's choice where it still fits."""
        task = state["task"] if state else "image"
        names = [i.name for i in backbones_for(task)]
        keep = [n for n in (chosen or []) if n in names] or default_backbones(task)
        return {page.backbones: gr.Dropdown(choices=names, value=keep)}

    def refresh(state: dict | None, backbones, fusion, freeze, *rest, wait: float = 0.0) -> dict:
        chosen = [b for b in (backbones or []) if b in registry()]
        choices = freeze_choices(chosen)
        # set the value only when it no longer fits: a refresh still under way must not undo a newer choice
        keep = freeze in choices
        freeze = freeze if keep else "all"
        out = {page.freeze: gr.Dropdown(choices=choices) if keep else gr.Dropdown(choices=choices, value=freeze),
               page.fusion: gr.Dropdown(interactive=len(chosen) > 1),
               page.fusion_help: fusion_help(fusion or "concat", chosen),
               page.freeze_help: freeze_help(freeze, chosen),
               page.image_size: gr.Dropdown(choices=_image_size_choices(chosen))}
        task = state["task"] if state else "image"
        try:
            if not backbones_for(task):
                raise TlguiError(t("no_backbones", task=task))
            config = make_config(chosen, fusion, freeze, *rest)
        except TlguiError as e:
            out.update({page.estimate: f"**Warning:** {e}", page.table: backbone_table(ctx, state, None, chosen)})
            return out
        seconds = _estimate(ctx, [registry()[n] for n in chosen], state, config, wait) if state else None
        estimate = t("estimate", time=duration(seconds), device=ctx.probe.device) if seconds is not None else (
            t("estimate_pending") if ctx.probe.measuring(task) else "")
        out.update({page.table: backbone_table(ctx, state, config, chosen), page.estimate: estimate,
                    page.cli: cli_command(state, config)})
        return out

    outputs = [page.freeze, page.fusion, page.fusion_help, page.freeze_help, page.image_size, page.table, page.estimate,
               page.cli]
    gr.on([c.change for c in page.settings], refresh, [page.dataset_state, *page.settings], outputs,
          api_visibility="private", show_progress="hidden", trigger_mode="always_last")

    def refresh_waiting(state, *settings):  # after a page load the speed probe may still be running
        return refresh(state, *settings, wait=10.0)

    page.refresh_waiting, page.refresh_outputs = refresh_waiting, outputs

    def then_refresh(event):
        return (event.then(for_dataset, [page.dataset_state, page.backbones], [page.backbones], api_visibility="private",
                           show_progress="hidden")
                .then(refresh_waiting, [page.dataset_state, *page.settings], outputs, api_visibility="private",
                      show_progress="hidden"))

    return then_refresh
