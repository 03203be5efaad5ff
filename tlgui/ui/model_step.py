"""Step 2: backbones (with what a person needs to choose them), fusion, freezing, advanced settings."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import torch

from ..config import AUTO, CLASS_WEIGHTS, EXPORTS, RunConfig
from ..errors import TlguiError
from ..nets.backbones import BackboneInfo, all_backbones
from ..nets.fusion import MODES as FUSION_MODES
from ..training.auto import candidates
from ..training.estimate import rough_seconds
from ..training.lpft import default_budget
from . import augment_step, hub_step, lr_find_step, pretrain_step, recipes, runs_step
from .context import AppContext
from .guard import guarded
from .run_settings import FORMS, START, cli_command, inputs_of, make_config, page_values, start_model
from .text import duration, t

WELL_KNOWN = ("resnet18", "resnet50", "mobilenet_v3_large", "convnext_tiny", "vit_b_16")  # shown in the table too
IMAGE_SIZES = ("native", "160", "128", "96", "64", "32")
AUGMENT = ("auto", "on", "off")
STARTS = ("pretrained", "scratch", "run", "upload")  # the kinds of parameter and structure transfer


def backbones_for(task: str | None) -> list[BackboneInfo]:
    return [i for i in all_backbones().values() if task is None or i.task == task]


def tried(names: list[str], task: str) -> list[str]:
    """The backbones a run of these names uses: auto's candidates for the task, or the names."""
    if names != [AUTO]:
        return names
    try:
        return candidates(task)
    except TlguiError:  # none installed: the run says so
        return []


def fusable(chosen: list[str]) -> bool:
    return len(chosen) > 1 or chosen == [AUTO]  # auto joins its best few with the chosen fusion


def freeze_choices(chosen: list[str]) -> list[tuple[str, str]]:
    """`all`, `none`, `auto`, then 1..n where n is the fewest stages among the chosen backbones."""
    infos = all_backbones()
    stages = [infos[n].stages for n in chosen if n in infos]
    return [("all", "all"), ("none", "none"), (t("freeze_auto_choice"), "auto")] + [
        (str(k), str(k)) for k in range(1, (min(stages) if stages else 0) + 1)]


def freeze_help(freeze: str, chosen: list[str]) -> str:
    if freeze in ("all", "none", "auto"):
        return t(f"freeze_{freeze}")
    total = max(len(freeze_choices(chosen)) - 3, 1)
    return t("freeze_n", n=freeze, total=total)


def fusion_help(fusion: str, chosen: list[str]) -> str:
    if chosen == [AUTO]:
        return f"{t(f'fusion_{fusion}')} {t('fusion_auto')}"
    return t(f"fusion_{fusion}") if len(chosen) > 1 else t("fusion_single")


def _size_choice(size: int | None, chosen: list[str]):
    if not size:
        return "native"
    if str(size) in IMAGE_SIZES:
        return str(size)
    return gr.Dropdown(choices=_image_size_choices(chosen) + [(f"{size} px", str(size))], value=str(size))


def settings_of(page, config: RunConfig, task: str, names) -> dict:
    """The page's settings `names` set to a recipe's."""
    offered = [AUTO] + [i.name for i in backbones_for(task)]
    chosen = [b for b in config.backbones if b in offered]
    if not chosen:
        raise TlguiError(t("recipe_wrong_task", backbones=", ".join(config.backbones), data=t(f"kind_{task}")))
    values = {**page_values(config, names), "backbones": gr.Dropdown(value=chosen),
              "image_size": _size_choice(config.image_size, chosen)}
    return {page.settings[name]: value for name, value in values.items()}


def _estimate(ctx: AppContext, infos: list[BackboneInfo], state: dict, config: RunConfig, wait: float) -> float | None:
    if not infos:
        return None
    spg = ctx.probe.seconds_per_gflop(infos[0].task, wait)
    if spg is None:
        return None
    freeze = "all" if config.freeze == "auto" else config.freeze  # auto's own time is its probe's
    return rough_seconds(infos, state["size"], epochs=config.epochs, val_split=config.val_split,
                            freeze=freeze, augment=config.augment, image_size=config.image_size,
                            seconds_per_gflop=spg)


def auto_sentence(ctx: AppContext, infos: list[BackboneInfo], state: dict, config: RunConfig) -> str:
    """What a larger budget would add to auto: fine-tuning's rough time against the budget."""
    if config.freeze != "auto" or not infos:
        return ""
    spg = ctx.probe.seconds_per_gflop(infos[0].task, 0.0)
    if spg is None:
        return ""
    tuned = rough_seconds(infos, state["size"], epochs=config.epochs, val_split=config.val_split, freeze="none",
                             augment=config.augment, image_size=config.image_size, seconds_per_gflop=spg)
    budget = config.budget or default_budget(torch.device("cuda" if "cuda" in str(ctx.probe.device).lower() else "cpu"))
    if tuned > budget:
        return t("auto_budget_more", time=duration(tuned), seconds=int(tuned) + 1)
    return t("auto_budget_fits", time=duration(tuned))


def backbone_table(ctx: AppContext, state: dict | None, config: RunConfig | None, chosen: list[str]) -> pd.DataFrame:
    task = state["task"] if state else "image"
    infos = backbones_for(task)
    chosen = tried(chosen, task)
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
    chosen = [AUTO]
    default = page_values(RunConfig(), FORMS)  # the CLI's defaults: a bare `train` runs what the page starts with
    gr.Markdown(f"## {t('step_model')}")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            # every backbone is a valid choice (programs may pick any); a page narrows the list to its data's task.
            # Own encoders come as `encoder:<run id>`, so values are checked on Train, not against this list.
            page.backbones = gr.Dropdown([(t("backbone_auto"), AUTO)] + [(i.name, i.name) for i in backbones_for(None)],
                                         value=chosen, multiselect=True,
                                         label=t("backbones_label"), info=t("backbones_info"), elem_id="backbones",
                                         allow_custom_value=True)
            with gr.Row():
                page.fusion = gr.Dropdown(list(FUSION_MODES), value=default["fusion"], label=t("fusion_label"),
                                          elem_id="fusion", interactive=fusable(chosen))
                page.freeze = gr.Dropdown(freeze_choices(chosen), value=default["freeze"],
                                          label=t("freeze_label"), elem_id="freeze")
            page.fusion_help = gr.Markdown(fusion_help(default["fusion"], chosen), elem_classes=["tl-help"],
                                           elem_id="fusion-help")
            page.freeze_help = gr.Markdown(freeze_help(default["freeze"], chosen), elem_classes=["tl-help"],
                                           elem_id="freeze-help")
            page.start_from = gr.Radio([(t(f"start_{s}"), s) for s in STARTS], value="pretrained",
                                       label=t("start_label"), elem_id="start-from")
            page.init_run = gr.Dropdown([], value=None, label=t("init_run_label"), elem_id="init-run", visible=False)
            page.init_upload = gr.File(None, file_types=[".zip"], label=t("init_upload_label"), elem_id="init-upload",
                                       visible=False, height=90)
            page.start_help = gr.Markdown(t("start_help_pretrained"), elem_classes=["tl-help"], elem_id="start-help")
            hub_step.build(page)
        with gr.Column(scale=3):
            page.table = gr.Dataframe(backbone_table(ctx, None, None, chosen), label=t("table_label"), interactive=False,
                                      elem_id="backbone-table", max_height=300, wrap=True)
            page.estimate = gr.Markdown(t("estimate_pending"), elem_id="estimate")
    with gr.Accordion(t("advanced"), open=False, elem_id="advanced"):
        with gr.Row():
            page.epochs = gr.Number(default["epochs"], precision=0, minimum=1, maximum=1000, label=t("epochs_label"),
                                    elem_id="epochs")
            page.lr = gr.Number(default["lr"], minimum=1e-7, maximum=1.0, label=t("lr_label"), elem_id="lr")
            page.batch_size = gr.Number(default["batch_size"], precision=0, minimum=1, maximum=1024, label=t("batch_label"),
                                        elem_id="batch-size")
            page.image_size = gr.Dropdown(_image_size_choices(chosen), value=default["image_size"],
                                          label=t("image_size_label"), elem_id="image-size")
        with gr.Row():
            page.val_split = gr.Slider(0.0, 0.5, value=default["val_split"], step=0.05, label=t("val_label"),
                                       elem_id="val-split")
            page.augment = gr.Radio([(t(f"augment_{a}"), a) for a in AUGMENT], value=default["augment"],
                                    label=t("augment_label"), elem_id="augment")
            page.patience = gr.Number(default["patience"], precision=0, minimum=0, maximum=1000, label=t("patience_label"),
                                      elem_id="patience")
            page.seed = gr.Number(default["seed"], precision=0, label=t("seed_label"), elem_id="seed")
        page.export = gr.CheckboxGroup([(t(f"export_{f}"), f) for f in EXPORTS], value=default["export"],
                                       label=t("export_label"), info=t("export_info"), elem_id="export")
        with gr.Row():
            page.budget = gr.Number(default["budget"], label=t("budget_label"), elem_id="budget")  # the engine checks it
            page.class_weights = gr.Radio([(t(f"class_weights_{c}"), c) for c in CLASS_WEIGHTS],
                                          value=default["class_weights"], label=t("class_weights_label"),
                                          elem_id="class-weights")
            page.folds = gr.Number(default["folds"], precision=0, label=t("folds_label"), elem_id="folds")
            page.max_length = gr.Number(default["max_length"], precision=0, label=t("max_length_label"),
                                        elem_id="max-length")  # the engine checks it
        lr_find_step.build(page)
        augment_step.build(page, ctx)
    with gr.Accordion(t("recipes"), open=False, elem_id="recipes"):
        with gr.Row(equal_height=True):
            page.recipe_pick = gr.Dropdown([], value=None, label=t("recipe_pick_label"), elem_id="recipe-pick", scale=3)
            page.recipe_apply = gr.Button(t("recipe_apply"), elem_id="recipe-apply-btn", scale=1)
        with gr.Row(equal_height=True):
            page.recipe_name = gr.Textbox(label=t("recipe_name_label"), max_length=recipes.MAX_NAME,
                                          elem_id="recipe-name", scale=3)
            page.recipe_save = gr.Button(t("recipe_save"), elem_id="recipe-save-btn", scale=1)
        page.recipe_msg = gr.Markdown("", elem_id="recipe-message")
    # each setting's component under its RunConfig field's name, in the API's order (programs may call by position)
    page.settings = {name: getattr(page, name) for name in (
        "backbones", "fusion", "freeze", "epochs", "lr", "batch_size", "image_size", "val_split", "augment",
        "patience", "seed", *START, "export", "budget", "class_weights", "folds", "max_length")}
    initial = make_config({name: component.value for name, component in page.settings.items()})
    page.cli = gr.Code(cli_command(state, initial), language="shell", interactive=False, label=t("cli_label"),
                       elem_id="cli-command")


def _image_size_choices(chosen: list[str]) -> list[tuple[str, str]]:
    infos = all_backbones()
    sizes = [infos[n].input_size for n in chosen if n in infos and infos[n].task == "image"]
    native = t("image_size_native", size=max(sizes)) if sizes else t("image_size_native_plain")
    return [(native, "native")] + [(f"{s} px", s) for s in IMAGE_SIZES[1:]]


def wire(page, ctx: AppContext) -> callable:
    """Returns `then_refresh(event)`, which the data step uses to chain a refresh after a load."""
    then_refresh = _wire_refresh(page, ctx)
    _wire_start_from(page)
    _wire_recipes(page, ctx)
    lr_find_step.wire(page, ctx)
    hub_step.wire(page, ctx)
    return then_refresh


def _wire_refresh(page, ctx: AppContext) -> callable:
    """Any setting changed, or a data set loaded: the choices that still fit, the table, the estimate
    and the command line."""

    def for_dataset(state: dict | None, chosen: list[str] | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        """Offer the backbones of the dataset's task (and the person's own encoders), keeping their choice
        where it still fits."""
        task = state["task"] if state else "image"
        choices = pretrain_step.backbone_choices(ctx, ctx.owner(request, owner_key), task)
        names = [value for _, value in choices]
        keep = [n for n in (chosen or []) if n in names] or [AUTO]
        return {page.backbones: gr.Dropdown(choices=choices, value=keep)}

    def refresh(state: dict | None, owner_key: str | None = None, request: gr.Request = None, *, wait: float = 0.0,
                **values) -> dict:
        chosen = [b for b in (values["backbones"] or [])
                  if b == AUTO or b in all_backbones() or pretrain_step.is_encoder(b)]
        choices = freeze_choices(chosen)
        # set the value only when it no longer fits: a refresh still under way must not undo a newer choice
        keep = values["freeze"] in [value for _, value in choices]
        freeze = values["freeze"] if keep else RunConfig().freeze
        out = {page.freeze: gr.Dropdown(choices=choices) if keep else gr.Dropdown(choices=choices, value=freeze),
               page.fusion: gr.Dropdown(interactive=fusable(chosen)),
               page.fusion_help: fusion_help(values["fusion"] or "concat", chosen),
               page.freeze_help: freeze_help(freeze, chosen),
               page.image_size: gr.Dropdown(choices=_image_size_choices(chosen))}
        task = state["task"] if state else "image"
        try:
            if not backbones_for(task):
                raise TlguiError(t("no_backbones", task=task))
            config = make_config({**values, "backbones": chosen, "freeze": freeze})
            config = start_model(ctx, ctx.owner(request, owner_key), config, values)  # what Train would run
        except TlguiError as e:  # the command line would be another run's: the warning stands in its place
            out.update({page.estimate: t("settings_warning", reason=e), page.cli: t("cli_warning", reason=e),
                        page.table: backbone_table(ctx, state, None, chosen)})
            return out
        known = [all_backbones()[n] for n in tried(config.backbones, task)
                 if n in all_backbones()]  # an own encoder is small: left out
        seconds = _estimate(ctx, known, state, config, wait) if state else None
        estimate = t("estimate", time=duration(seconds), device=ctx.probe.device) if seconds is not None else (
            t("estimate_pending") if ctx.probe.measuring(task) else "")
        if seconds is not None:
            estimate += auto_sentence(ctx, known, state, config)
        out.update({page.table: backbone_table(ctx, state, config, chosen), page.estimate: estimate,
                    page.cli: cli_command(state, config)})
        return out

    outputs = [page.freeze, page.fusion, page.fusion_help, page.freeze_help, page.image_size, page.table, page.estimate,
               page.cli]
    gr.on([c.change for c in page.settings.values()], refresh, [page.dataset_state], outputs,
          inputs_kwargs=inputs_of(page), api_visibility="private", show_progress="hidden", trigger_mode="always_last")

    def refresh_waiting(state, owner_key: str | None = None, request: gr.Request = None, **values):
        return refresh(state, owner_key, request, wait=10.0, **values)  # after a page load the speed probe may still run

    page.refresh_waiting, page.refresh_outputs = refresh_waiting, outputs

    def then_refresh(event):
        return (event.then(for_dataset, [page.dataset_state, page.backbones, page.owner], [page.backbones], api_visibility="private",
                           show_progress="hidden")
                .then(refresh_waiting, [page.dataset_state], outputs, inputs_kwargs=inputs_of(page),
                      api_visibility="private", show_progress="hidden"))

    return then_refresh


def _wire_start_from(page) -> None:
    """Where a run starts: the earlier run or upload field that goes with it, and its help."""

    def show_start(start_from: str) -> dict:
        return {page.init_run: gr.Dropdown(visible=start_from == "run"),
                page.init_upload: gr.File(visible=start_from == "upload"),
                page.start_help: t(f"start_help_{start_from}")}

    page.start_from.change(show_start, [page.start_from], [page.init_run, page.init_upload, page.start_help],
                           api_visibility="private", show_progress="hidden")


def _wire_recipes(page, ctx: AppContext) -> None:
    """Save the settings under a name; apply a saved recipe, or an earlier run's settings."""
    # a recipe holds every setting but the earlier model a run starts from
    recipe_settings = {name: c for name, c in page.settings.items() if name not in ("init_run", "init_upload")}

    @guarded(page.recipe_msg)
    def save_recipe(name: str, owner_key: str | None = None, request: gr.Request = None, **values) -> dict:
        owner = ctx.owner(request, owner_key)
        key = recipes.save(ctx.settings.runs_root, owner, name, make_config(values))
        return {page.recipe_msg: t("recipe_saved", name=name.strip()),
                page.recipe_pick: gr.Dropdown(choices=runs_step.recipe_choices(ctx, owner), value=f"recipe:{key}")}

    page.recipe_save.click(save_recipe, [page.recipe_name], [page.recipe_msg, page.recipe_pick],
                           inputs_kwargs=inputs_of(page, recipe_settings), api_visibility="private")

    @guarded(page.recipe_msg)
    def apply_recipe(choice: str | None, state: dict | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not choice:
            raise TlguiError(t("recipe_pick_first"))
        kind, _, key = choice.partition(":")
        if kind == "run":
            config = RunConfig.load(ctx.run_folder(key, request, owner_key) / "config.json")
        else:
            config = recipes.load(ctx.settings.runs_root, ctx.owner(request, owner_key), key)
        out = settings_of(page, config, state["task"] if state else "image", recipe_settings)
        return {**out, page.recipe_msg: t("recipe_applied")}

    page.recipe_apply.click(apply_recipe, [page.recipe_pick, page.dataset_state, page.owner],
                            [page.recipe_msg, *recipe_settings.values()], api_visibility="private")
