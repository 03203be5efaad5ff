"""Optional, after the data: pretrain an own encoder (AutoEncoder or VAE) on unlabelled pictures.

A pretraining run is a run folder like a classifier's (`kind: "pretrain"` in its run.json) and
waits in the same queue. Its `encoder.zip` is then offered among its owner's backbones as
`encoder:<run id>`; the server maps that back to the file (`encoder_paths`), so no server path
ever travels to a browser or is taken from one.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..config import AUTO
from ..data.datasets import Dataset
from ..errors import TlguiError
from ..nets.backbones import all_backbones
from ..nets.backbones.encoder import METHODS
from ..training.pretrain import PretrainConfig, pretrain, read_images
from . import plots, run_folders, train_step
from .context import AppContext
from .guard import guarded
from .jobs import Job, Progress
from .serve import copy_out
from .text import duration, t

PREFIX = "encoder:"  # a backbone value that names one of the caller's pretraining runs
ENCODER, SHEET = "encoder.zip", "reconstructions.png"
IMAGE_SIZES = (32, 48, 64, 96, 128)  # multiples of 16: the encoder halves the picture four times
DEFAULT_EPOCHS = 10  # about 10 s for the built-in example at 32 px on 2 CPU cores


def pretrain_work(job: Job) -> str:
    """A job's work: the engine's pretraining, which writes encoder.zip last."""
    result = pretrain(job.config, job.dataset, job.folder, [job.listen], job.stop)
    job.has_model = result.bundle is not None
    return result.status


# -- own encoders as backbones ----------------------------------------------------------------
def is_encoder(value) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def encoder_choices(ctx: AppContext, owner: str) -> list[tuple[str, str]]:
    """The owner's encoders as (label, `encoder:<run id>`), newest first."""
    root = ctx.settings.runs_root
    return [(t("my_encoder", label=m["label"]), PREFIX + m["id"])
            for m in run_folders.list_runs(root, owner, kind="pretrain") if (root / m["id"] / ENCODER).exists()]


def backbone_choices(ctx: AppContext, owner: str, task: str) -> list[tuple[str, str]]:
    """What the backbones list offers for `task`: auto first, (for pictures) the owner's encoders,
    where they are easy to find, then the registry's."""
    names = [(name, name) for name, info in all_backbones().items()
             if info.task == task and ctx.jobs.policy.allows_backbone(name, info.params)]  # public mode: sized for it
    return [(t("backbone_auto"), AUTO)] + (encoder_choices(ctx, owner) if task == "image" else []) + names


def shown_name(name: str) -> str:
    """How a run's label names a backbone: an own encoder by its short name, never by its path."""
    path = Path(name)
    if path.name != ENCODER:
        return name
    return (run_folders.read_meta(path.parent) or {}).get("name", ENCODER)


def encoder_paths(ctx: AppContext, backbones: list[str] | None, task: str, request: gr.Request | None,
                  key: str | None = None) -> list[str]:
    """The backbones a client sent, as the engine names them: `encoder:<run id>` becomes that
    run's encoder.zip when the run is the caller's; a file path from a client is never taken."""
    names = []
    for value in backbones or []:
        if is_encoder(value):
            folder = ctx.run_folder(value[len(PREFIX):], request, key)  # anyone else's run does not exist
            path = folder / ENCODER
            if not path.exists():
                raise TlguiError(t("encoder_missing"))
            if task != "image":
                raise TlguiError(t("wrong_task", name=shown_name(str(path)), kind=t("kind_image"),
                                   data=t(f"kind_{task}")))
            names.append(str(path))
        elif not str(value).startswith("hf:") and (str(value).lower().endswith(".zip") or "/" in str(value)
                                                   or "\\" in str(value)):  # a Hub id names no file
            raise TlguiError(t("backbone_not_a_name"))
        else:
            names.append(value)
    return names


# -- what the section shows -------------------------------------------------------------------
def _loss(row: dict) -> float:
    return row["val_loss"] if row.get("val_loss") is not None else row["train_loss"]


def status_line(p: Progress, folder: Path, limit: int) -> str:
    if not p.done:  # queued, preparing, training, stopping: said as for a classifier
        return train_step.status_line(p, limit)
    if p.state in ("finished", "stopped") and p.history and (folder / ENCODER).exists():
        best = min(p.history, key=_loss)
        name = t("my_encoder", label=(run_folders.read_meta(folder) or {}).get("label", ""))
        if p.state == "stopped":
            return t("pretrain_stopped", ran=len(p.history), best=best["epoch"], name=name, value=PREFIX + p.run_id)
        elapsed = p.elapsed if p.elapsed is not None else p.history[-1].get("elapsed")
        return t("pretrain_finished", elapsed=duration(elapsed), loss=f"{_loss(best):.4f}", best=best["epoch"],
                 ran=len(p.history), name=name, value=PREFIX + p.run_id)
    if p.state == "stopped":
        return t("pretrain_stopped_empty")
    if p.state == "interrupted":
        return t("pretrain_interrupted")
    return t("status_error", reason=p.error or "the run failed")


def outputs(page) -> list:
    return [page.pretrain_status, page.pretrain_plot, page.pretrain_shown, page.pretrain_sheet,
            page.pretrain_download, page.pretrain_timer]


def show(page, folder: Path | None, p: Progress | None, limit: int) -> dict:
    """The section for one run (None: none yet); the timer runs while the run does."""
    if folder is None or p is None:
        return {page.pretrain_status: t("pretrain_idle"), page.pretrain_plot: None, page.pretrain_shown: -1,
                page.pretrain_sheet: None, page.pretrain_download: gr.DownloadButton(value=None, visible=False),
                page.pretrain_timer: gr.Timer(active=False)}
    encoder, sheet = folder / ENCODER, folder / SHEET
    kept = p.done and encoder.exists()
    return {page.pretrain_status: status_line(p, folder, limit), page.pretrain_plot: plots.curves(p.history, ("loss",)),
            page.pretrain_shown: len(p.history), page.pretrain_sheet: copy_out(sheet) if p.done else None,
            page.pretrain_download: gr.DownloadButton(value=copy_out(encoder) if kept else None, visible=kept),
            page.pretrain_timer: gr.Timer(active=not p.done)}


def pictures(ctx: AppContext, state: dict | None, upload: str | None) -> Dataset:
    """The upload if there is one (pictures in any layout), else the dataset of step 1, labels ignored."""
    if upload:
        return read_images(upload)
    if not state:
        raise TlguiError(t("no_dataset"))
    if state["task"] != "image":
        raise TlguiError(t("pretrain_needs_pictures"))
    return ctx.store.get(state["path"])


def build(page, ctx: AppContext) -> None:
    with gr.Accordion(t("pretrain"), open=False, elem_id="pretrain") as page.pretrain_box:
        gr.Markdown(t("pretrain_help"), elem_classes=["tl-help"])
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                page.pretrain_upload = gr.File(label=t("pretrain_upload_label"), file_types=[".zip"], type="filepath",
                                               elem_id="pretrain-upload", height=140)
                page.pretrain_method = gr.Radio([(t(f"pretrain_method_{m}"), m) for m in METHODS], value=METHODS[0],
                                                label=t("pretrain_method_label"), elem_id="pretrain-method")
                with gr.Row():
                    page.pretrain_epochs = gr.Number(DEFAULT_EPOCHS, precision=0, minimum=1, maximum=1000,
                                                     label=t("epochs_label"), elem_id="pretrain-epochs")
                    page.pretrain_size = gr.Dropdown([(f"{s} px", s) for s in IMAGE_SIZES], value=IMAGE_SIZES[0],
                                                     label=t("pretrain_size_label"), elem_id="pretrain-image-size")
                with gr.Row():
                    page.pretrain_btn = gr.Button(t("pretrain_btn"), variant="primary", elem_id="pretrain-btn", scale=3)
                    page.pretrain_stop_btn = gr.Button(t("stop_btn"), variant="stop", elem_id="pretrain-stop-btn",
                                                       scale=1)
                page.pretrain_status = gr.Markdown(t("pretrain_idle"), elem_id="pretrain-status", container=True)
            with gr.Column(scale=3):
                page.pretrain_plot = gr.Plot(None, label=t("pretrain_plot_label"), elem_id="pretrain-plot")
        gr.Markdown(t("pretrain_sheet_label"), elem_classes=["tl-help"])  # a label would cover the top row
        page.pretrain_sheet = gr.Image(None, type="filepath", interactive=False, show_label=False,
                                       elem_id="pretrain-sheet")
        page.pretrain_download = gr.DownloadButton(t("pretrain_download"), visible=False,
                                                   elem_id="pretrain-download-btn")
    page.pretrain_timer = gr.Timer(train_step.POLL_SECONDS, active=False)
    # programs ask for the status through this button's event; people see it change on its own
    page.pretrain_status_api = gr.Button(visible=False)
    page.pretrain_run = gr.State(None)  # the pretraining run this section shows
    page.pretrain_started = gr.State(None)  # the run a Pretrain click just started (None when it could not start)
    page.pretrain_shown = gr.State(-1)  # epochs drawn in the curve so far


def _backbones_update(ctx: AppContext, state: dict | None, owner: str) -> gr.Dropdown:
    # only the choices: the person's current pick stays as it is
    return gr.Dropdown(choices=backbone_choices(ctx, owner, state["task"] if state else "image"))


def wire(page, ctx: AppContext) -> None:
    """Needs `page.loaded` (the page's load event, after which the caller's owner is known)."""
    _wire_start(page, ctx)
    _wire_control(page, ctx)
    _wire_follow(page, ctx)


def _wire_start(page, ctx: AppContext) -> None:
    """Pretrain: queue a run, then follow it."""
    limit, root = ctx.settings.max_jobs, ctx.settings.runs_root

    @guarded(page.pretrain_status, reset={page.pretrain_started: None})
    def start(state: dict | None, upload: str | None = None, method: str = METHODS[0], epochs: float = DEFAULT_EPOCHS,
              image_size: int = IMAGE_SIZES[0], owner_key: str | None = None, request: gr.Request = None) -> dict:
        """Queue a pretraining run; the section then follows it through its timer."""
        owner = ctx.owner(request, owner_key)
        dataset = pictures(ctx, state, upload)
        try:
            config = PretrainConfig(method=method, epochs=int(epochs), image_size=int(image_size))
        except (TypeError, ValueError):
            raise TlguiError(t("pretrain_bad_setting")) from None
        number = 1 + max((m.get("number", 0) for m in run_folders.list_runs(root, owner, kind="pretrain")), default=0)
        method_name = t(f"method_{config.method}")
        meta = {"kind": "pretrain", "label": f"{method_name} #{number} · {dataset.name}", "number": number,
                "name": t("my_encoder_short", method=method_name, number=number), "method": config.method,
                "dataset": dataset.name, "task": "image", "epochs": config.epochs}
        run_id = ctx.jobs.submit(owner, config, dataset, meta, work=pretrain_work)
        p = ctx.jobs.progress(run_id, root / run_id)
        return {page.pretrain_run: run_id, page.pretrain_started: run_id,
                page.pretrain_status: status_line(p, root / run_id, limit)}

    def follow(started: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not started:  # the click did not start a run: the status already says why
            return {page.pretrain_timer: gr.skip()}
        folder = ctx.run_folder(started, request, owner_key)
        return show(page, folder, ctx.jobs.progress(started, folder), limit)

    page.pretrain_btn.click(start, [page.dataset_state, page.pretrain_upload, page.pretrain_method,
                                    page.pretrain_epochs, page.pretrain_size, page.owner],
                            [page.pretrain_run, page.pretrain_started, page.pretrain_status],
                            api_name="pretrain").then(follow, [page.pretrain_started, page.owner], outputs(page),
                                                      api_visibility="private", show_progress="hidden")


def _wire_control(page, ctx: AppContext) -> None:
    """Stop, and the status that programs ask for."""
    limit = ctx.settings.max_jobs

    def status_of(run_id: str | None, request: gr.Request, key: str | None, stop: bool = False) -> dict:
        if not run_id:
            raise TlguiError(t("pretrain_no_run"))
        folder = ctx.run_folder(run_id, request, key)
        if stop:
            ctx.jobs.stop(run_id)
        return {page.pretrain_status: status_line(ctx.jobs.progress(run_id, folder), folder, limit)}

    @guarded(page.pretrain_status)
    def stop(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        return status_of(run_id, request, owner_key, stop=True)

    @guarded(page.pretrain_status)
    def status(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        return status_of(run_id, request, owner_key)

    page.pretrain_stop_btn.click(stop, [page.pretrain_run, page.owner], [page.pretrain_status], api_name="pretrain_stop")
    page.pretrain_status_api.click(status, [page.pretrain_run, page.owner], [page.pretrain_status], api_name="pretrain_status")


def _wire_follow(page, ctx: AppContext) -> None:
    """The timer that follows a run until it ends, and the run shown again when the page opens."""
    limit, root = ctx.settings.max_jobs, ctx.settings.runs_root

    def poll(run_id: str | None, shown: int, state: dict | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        """One tick: the status always, the curve when an epoch ended, everything (and the
        owner's backbones, now with this encoder) once the run is over."""
        owner = ctx.owner(request, owner_key)
        folder = run_folders.folder_of(root, run_id, owner) if run_id else None
        if folder is None:
            return {page.pretrain_timer: gr.Timer(active=False)}
        p = ctx.jobs.progress(run_id, folder)
        if p.done:
            return {**show(page, folder, p, limit), page.backbones: _backbones_update(ctx, state, owner)}
        out = {page.pretrain_status: status_line(p, folder, limit)}
        if len(p.history) != shown:
            out.update({page.pretrain_plot: plots.curves(p.history, ("loss",)), page.pretrain_shown: len(p.history)})
        return out

    page.pretrain_timer.tick(poll, [page.pretrain_run, page.pretrain_shown, page.dataset_state, page.owner],
                             [*outputs(page), page.backbones], api_visibility="private", show_progress="hidden",
                             concurrency_limit=None)

    def on_load(state: dict | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        """Show the owner's pretraining still going (closing a tab never stops one), else the latest,
        and offer their encoders among the backbones."""
        owner = ctx.owner(request, owner_key)
        mine = run_folders.list_runs(root, owner, kind="pretrain")
        run_id = ctx.jobs.active_run(mine) or (mine[0]["id"] if mine else None)
        folder = root / run_id if run_id else None
        out = {page.pretrain_run: run_id, **show(page, folder, ctx.jobs.progress(run_id, folder) if folder else None,
                                                 limit)}
        if encoder_choices(ctx, owner):  # nothing of theirs to add: leave the list as the page built it
            out[page.backbones] = _backbones_update(ctx, state, owner)
        if run_id and ctx.jobs.is_active(run_id):  # a closed section would hide the run going on
            out[page.pretrain_box] = gr.Accordion(open=True)
        return out

    page.loaded.then(on_load, [page.dataset_state, page.owner],
                     [page.pretrain_run, *outputs(page), page.backbones, page.pretrain_box],
                     api_visibility="private", show_progress="hidden")
