"""The page: the five steps of the user's path, put together and wired to the job manager."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..errors import TlguiError
from ..public import is_public
from ..training.inputs import check_backbone_kinds
from . import (audit_step, augment_step, builder_step, data_step, model_step, plots, pretrain_step, results_step,
               retention, run_folders, runs_step, train_step, try_step)
from .context import AppContext
from .guard import guarded
from .multigpu import all_gpus_work
from .run_settings import inputs_of, make_config, start_model, takes_settings
from .sessions import browser_secret
from .settings import AppSettings
from .text import t

log = logging.getLogger("tlgui.ui")
CSS_FILE = Path(__file__).with_name("style.css")


def run_outputs(page) -> list:
    """Everything that shows one run: status, progress, curves, results, try-it, the runs list."""
    return [page.status, page.leaderboard, page.progress, page.loss_plot, page.shown_state, page.timer, page.done_state,
            page.resume_btn, *results_step.outputs(page), *try_step.outputs(page), *runs_step.outputs(page)]


def run_view(page, ctx: AppContext, run_id: str | None, request: gr.Request | None, key: str | None = None) -> dict:
    """The whole page for `run_id` (None: no run yet); the timer runs while the run does."""
    owner = ctx.owner(request, key)
    folder = run_folders.folder_of(ctx.settings.runs_root, run_id, owner) if run_id else None
    out = runs_step.view(page, ctx, owner, run_id if folder else None)
    if folder is None:
        out.update({page.status: t("status_idle"), page.leaderboard: train_step.leaderboard(None), page.progress: "",
                    page.loss_plot: None, page.shown_state: -1,
                    page.timer: gr.Timer(active=False), page.done_state: None, page.resume_btn: gr.Button(visible=False)})
        out.update(results_step.hidden(page))
        out.update(try_step.view(page, None, "image"))
        return out
    p = ctx.jobs.progress(run_id, folder)
    task = (run_folders.read_meta(folder) or {}).get("task", "image")
    out.update({page.status: train_step.status_line(p, ctx.settings.max_jobs), page.leaderboard: train_step.leaderboard(p),
                page.progress: train_step.progress_html(p),
                page.loss_plot: plots.curves(p.history), page.shown_state: len(p.history),
                page.timer: gr.Timer(active=not p.done), page.done_state: run_id if p.done else None,
                page.resume_btn: gr.Button(visible=train_step.can_resume(p))})
    out.update(results_step.view(page, folder, task) if p.done else results_step.hidden(page))
    out.update(try_step.view(page, folder if p.done else None, task))
    return out


def wire_training(page, ctx: AppContext) -> None:
    _wire_start(page, ctx)
    _wire_control(page, ctx)
    _wire_follow(page, ctx)


def _wire_start(page, ctx: AppContext) -> None:
    """Train and Resume queue a run; the page then follows it."""
    limit = ctx.settings.max_jobs

    @guarded(page.status, reset={page.started_state: None})
    @takes_settings(page.settings)
    def start(state: dict | None, all_gpus: bool = False, owner_key: str | None = None, request: gr.Request = None,
              **values) -> dict:
        """Queue a run with the page's settings (`values`, by name); the page then follows it through the timer.

        Returns the new run as `started_state` too, which stays None when the run could not start."""
        if not state:
            raise TlguiError(t("no_dataset"))
        builder_step.check_ready(state)
        owner = ctx.owner(request, owner_key)
        backbones = pretrain_step.encoder_paths(ctx, values["backbones"], state["task"], request, owner_key)
        config = start_model(ctx, owner, make_config({**values, "backbones": backbones}), values)
        ctx.jobs.policy.check_run(config.backbones, config.epochs)  # public mode's limits, before anything queues
        check_backbone_kinds(config.backbones, state["task"])  # the engine's check, before anything queues
        dataset = ctx.store.get(state["path"])
        number = 1 + max((m.get("number", 0) for m in run_folders.list_runs(ctx.settings.runs_root, owner)), default=0)
        shown = [pretrain_step.shown_name(b) for b in config.backbones]  # an own encoder by name, not path
        meta = {"label": f"#{number} {state['name']} · {' + '.join(shown)}", "number": number,
                "dataset": state["name"], "task": state["task"], "backbones": shown,
                "epochs": config.epochs, "source": state["path"]}
        run_id = ctx.jobs.submit(owner, config, dataset, meta, **({"work": all_gpus_work} if all_gpus else {}))
        p = ctx.jobs.progress(run_id, ctx.settings.runs_root / run_id)
        return {page.run_state: run_id, page.started_state: run_id, page.status: train_step.status_line(p, limit)}

    def follow(started: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not started:  # the click did not start a run: the status already says why
            return {page.done_state: gr.skip()}
        return run_view(page, ctx, started, request, owner_key)

    page.train_btn.click(start, [page.dataset_state], [page.run_state, page.started_state, page.status],
                         inputs_kwargs=inputs_of(page, all_gpus=page.all_gpus), api_name="train").then(
        follow, [page.started_state, page.owner], run_outputs(page), api_visibility="private", show_progress="hidden")

    @guarded(page.status, reset={page.started_state: None})
    def resume(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        """Queue the shown run again from its last epoch checkpoint, on the dataset it was started with."""
        folder = ctx.run_folder(run_id, request, owner_key)
        if not train_step.can_resume(ctx.jobs.progress(run_id, folder)):
            raise TlguiError(t("resume_not_now"))
        source = (run_folders.read_meta(folder) or {}).get("source")
        try:
            dataset = ctx.store.get(source)
        except (TlguiError, TypeError):
            raise TlguiError(t("resume_no_data")) from None
        ctx.jobs.resume(run_id, folder, dataset)
        p = ctx.jobs.progress(run_id, folder)
        return {page.started_state: run_id, page.status: train_step.status_line(p, limit),
                page.resume_btn: gr.Button(visible=False)}

    page.resume_btn.click(resume, [page.run_state, page.owner], [page.started_state, page.status, page.resume_btn],
                          api_name="resume").then(follow, [page.started_state, page.owner], run_outputs(page),
                                                  api_visibility="private", show_progress="hidden")


def _wire_control(page, ctx: AppContext) -> None:
    """Stop, and the status that programs ask for."""
    limit = ctx.settings.max_jobs

    @guarded(page.status)
    def stop(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        folder = ctx.run_folder(run_id, request, owner_key)
        ctx.jobs.stop(run_id)
        return {page.status: train_step.status_line(ctx.jobs.progress(run_id, folder), limit)}

    page.stop_btn.click(stop, [page.run_state, page.owner], [page.status], api_name="stop")

    @guarded(page.status)
    def status(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        folder = ctx.run_folder(run_id, request, owner_key)
        return {page.status: train_step.status_line(ctx.jobs.progress(run_id, folder), limit)}

    page.status_api.click(status, [page.run_state, page.owner], [page.status], api_name="status")


def _wire_follow(page, ctx: AppContext) -> None:
    """The timer that redraws a run while it trains, and the whole run once it ends."""
    limit = ctx.settings.max_jobs

    def poll(run_id: str | None, shown: int, owner_key: str | None = None, request: gr.Request = None) -> dict:
        """One timer tick: status and progress always, the curve only when an epoch ended."""
        try:
            folder = ctx.run_folder(run_id, request, owner_key)
        except TlguiError:
            return {page.timer: gr.Timer(active=False)}
        p = ctx.jobs.progress(run_id, folder)
        out = {page.status: train_step.status_line(p, limit), page.progress: train_step.progress_html(p)}
        if len(p.history) != shown:
            out.update({page.loss_plot: plots.curves(p.history), page.shown_state: len(p.history)})
        if p.done:
            out.update({page.timer: gr.Timer(active=False), page.done_state: run_id,
                        page.resume_btn: gr.Button(visible=train_step.can_resume(p))})
        return out

    page.timer.tick(poll, [page.run_state, page.shown_state, page.owner],
                    [page.status, page.progress, page.loss_plot, page.shown_state, page.timer, page.done_state,
                     page.resume_btn],
                    api_visibility="private", show_progress="hidden", concurrency_limit=None)

    def ended(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        return run_view(page, ctx, run_id, request, owner_key) if run_id else {page.done_state: gr.skip()}

    page.done_state.change(ended, [page.done_state, page.owner], run_outputs(page), api_visibility="private", show_progress="hidden")


def wire_runs(page, ctx: AppContext) -> None:
    def open_run(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not run_id:
            return {page.runs_msg: ""}
        return {page.run_state: run_id, page.runs_msg: "", **run_view(page, ctx, run_id, request, owner_key)}

    page.open_btn.click(open_run, [page.run_pick, page.owner], [page.run_state, page.runs_msg, *run_outputs(page)],
                        api_visibility="private")

    @guarded(page.runs_msg)
    def delete(run_id: str | None, current: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        folder = ctx.run_folder(run_id, request, owner_key)
        if ctx.jobs.is_active(run_id):
            raise TlguiError(t("delete_running"))
        label = runs_step.run_label(run_folders.read_meta(folder) or {"id": run_id})
        run_folders.delete(folder)
        ctx.jobs.forget(run_id)
        ctx.drop_model(run_id)
        keep = current if current != run_id else None
        return {page.run_state: keep, page.runs_msg: t("deleted", label=label), **run_view(page, ctx, keep, request, owner_key)}

    page.delete_btn.click(delete, [page.run_pick, page.run_state, page.owner], [page.run_state, page.runs_msg, *run_outputs(page)],
                          api_visibility="private")


def wire_session(page, ctx: AppContext, demo: gr.Blocks) -> None:
    def on_load(token: str | None, request: gr.Request) -> dict:
        """Bind the page to its browser; show the run still going (closing a tab never stops one), else the latest."""
        token = ctx.sessions.register(request, token)
        mine = run_folders.list_runs(ctx.settings.runs_root, token)
        run_id = ctx.jobs.active_run(mine) or (mine[0]["id"] if mine else None)
        return {page.owner: token, page.run_state: run_id, **run_view(page, ctx, run_id, request, token),
                page.runs_msg: retention.removed_notice(ctx.settings.runs_root, token)}

    page.loaded = demo.load(on_load, [page.owner], [page.owner, page.run_state, *run_outputs(page), page.runs_msg],
                            api_visibility="private", show_progress="hidden")
    page.loaded.then(page.refresh_waiting, [page.dataset_state], page.refresh_outputs, inputs_kwargs=inputs_of(page),
                     api_visibility="private", show_progress="hidden")

    def on_unload(request: gr.Request) -> None:
        ctx.sessions.forget(request)

    demo.unload(on_unload)


def build_demo(ctx: AppContext) -> gr.Blocks:
    page = SimpleNamespace()
    ctx.probe.start()
    # Gradio's copies of downloads and any upload left behind (uploads are removed once read) go after
    # two days, or three hours on a public server
    cache_s = 3 * 3600 if is_public() else 2 * 86400
    with gr.Blocks(title="tlgui", fill_width=False, delete_cache=(min(3600, cache_s), cache_s)) as demo:
        page.owner = gr.BrowserState(None, storage_key="tlgui-owner", secret=browser_secret(ctx.settings.runs_root))
        gr.Markdown(f"# {t('title')}\n{t('intro')}", elem_id="header")
        data_step.build(page, ctx)
        builder_step.build(page, ctx)
        pretrain_step.build(page, ctx)
        model_step.build(page, ctx)
        train_step.build(page, ctx)
        results_step.build(page, ctx)
        try_step.build(page, ctx)
        runs_step.build(page, ctx)
        then_refresh = model_step.wire(page, ctx)
        data_step.wire(page, ctx, then_refresh)
        builder_step.wire(page, ctx)
        audit_step.wire(page, ctx)
        augment_step.wire(page, ctx)
        wire_training(page, ctx)
        try_step.wire(page, ctx)
        runs_step.wire(page, ctx)
        wire_runs(page, ctx)
        wire_session(page, ctx, demo)
        pretrain_step.wire(page, ctx)
    return demo


def warm_up(ctx: AppContext) -> None:
    """What a server's first run would otherwise wait for, done as the server starts: this machine's
    speed measured (the page's estimates), the libraries a run loads, and the offline image
    backbones exported to ONNX for their frozen features (`training/onnx_features.py`)."""
    try:
        ctx.probe.start("image")
        import sklearn.metrics  # noqa: F401 - a run's report needs it; its first import takes a second or two

        from ..training.auto import candidates
        from ..training.onnx_features import warm

        warm(candidates("image"))
    except Exception:  # noqa: BLE001 - the first run does it itself
        log.debug("warm-up failed", exc_info=True)


def launch(host: str = "127.0.0.1", port: int = 7860, settings: AppSettings | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings or AppSettings.from_env()
    ctx = AppContext.create(settings)
    threading.Thread(target=warm_up, args=(ctx,), name="warm-up", daemon=True).start()
    demo = build_demo(ctx)
    retention.start_sweeper(settings.runs_root, ctx.jobs.is_active)
    demo.queue(default_concurrency_limit=4, max_size=64)
    log.info("runs are kept in %s; %d run(s) train at a time", settings.runs_root, settings.max_jobs)
    try:
        demo.launch(server_name=host, server_port=port, max_file_size=f"{settings.max_upload_mb}mb",
                    css=CSS_FILE.read_text(),  # no allowed_paths: run files go out only through serve.copy_out
                    theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate"), show_error=False)
    except ValueError as e:
        # Gradio's check that the page it serves answers gives up after one 3 s request; on a busy
        # machine the server, already up, can be slower than that. It goes on serving.
        if "localhost is not accessible" not in str(e):
            raise
        log.warning("the page answered Gradio's start-up check slowly; serving on")
        demo.block_thread()
