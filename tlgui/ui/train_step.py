"""Step 3: Train and Stop, and a page that follows the run (status, progress bar, learning curves)."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from ..outputs.modelcard import candidate_name, describe
from .jobs import Progress
from .multigpu import gpu_count
from .text import duration, percent, t

POLL_SECONDS = 1.0  # redrawing a plotly figure costs the browser ~100 ms: at most once a second


def status_line(p: Progress | None, limit: int) -> str:
    if p is None:
        return t("status_idle")
    if p.state == "queued":
        return t("status_queued", ahead=p.ahead, limit=limit)
    if p.state == "running":
        if p.stopping:
            return t("status_stopping")
        if p.batch:
            eta = p.batch.get("eta")
            return t("status_training", epoch=p.batch["epoch"], epochs=p.batch["epochs"],
                     eta=t("status_eta", time=duration(eta)) if eta is not None and p.batch["progress"] > 0.02 else "")
        if p.phase:
            whole = t("status_whole", time=duration(p.estimate)) if p.estimate else ""
            return t("status_preparing", what=p.phase["what"], done=p.phase["done"], total=p.phase["total"]) + whole
        return t("status_starting")
    if p.state == "finished":
        m = p.metrics
        ran = len(p.history)
        if p.history and p.history[-1].get("phase") == "lp-ft":  # auto's epochs are numbered after the fit's steps
            ran = p.history[-1]["epoch"]
        if m.get("fit_steps") or (m.get("recipe") or {}).get("chosen") == "probe":
            return fitted_line(p, m)
        if m.get("per_class"):
            line = t("status_finished", elapsed=duration(p.elapsed), accuracy=percent(m["accuracy"]),
                     f1=f"{m['macro_f1']:.3f}", best=m.get("best_epoch", ran), ran=ran)
        else:
            line = t("status_finished_noval", elapsed=duration(p.elapsed), ran=ran)
        if m.get("recipe"):  # auto kept its fine-tuning
            line += t("status_recipe", sentence=describe(m["recipe"]))
        return line
    if p.state == "stopped":
        more = t("status_stopped_more") if p.resumable_from else ""
        more += f" {p.warning}" if p.warning else ""  # the server's time limit stopped it
        if p.has_model:
            return t("status_stopped", ran=len(p.history), best=p.metrics.get("best_epoch", len(p.history))) + more
        return t("status_stopped_empty") + more
    if p.state == "interrupted":
        return t("status_interrupted", epoch=p.resumable_from) if p.resumable_from else t("status_interrupted_empty")
    return t("status_error", reason=p.error or "the run failed")


def fitted_line(p: Progress, m: dict) -> str:
    """A run whose classifier was fitted to convergence (frozen, or auto): steps, folds, the recipe kept."""
    steps = m.get("fit_steps") or (p.history[-1]["epoch"] if p.history else 0)
    if m.get("per_class"):
        line = t("status_fitted", elapsed=duration(p.elapsed), accuracy=percent(m["accuracy"]), f1=f"{m['macro_f1']:.3f}",
                 steps=steps)
    else:
        line = t("status_fitted_noval", elapsed=duration(p.elapsed), steps=steps)
    if m.get("folds"):
        line += t("status_folds", k=len(m["folds"]), mean=percent(m["folds_mean"]), spread=percent(m["folds_std"]))
    if m.get("recipe"):
        line += t("status_recipe", sentence=describe(m["recipe"]))
    return line


def leaderboard(p: Progress | None):
    """The table under the status once auto has tried its candidates: each one's held-out accuracy
    and fit time, the kept one ticked; hidden otherwise."""
    recipe = (p.metrics.get("recipe") or {}) if p is not None and p.done and p.metrics else {}
    rows = recipe.get("candidates") or []
    if not rows:
        return gr.Dataframe(value=None, visible=False)
    table = pd.DataFrame([(("✔ " if r.get("chosen") else "") + candidate_name(r), percent(r["accuracy"] or 0.0),
                           round(r["seconds"], 2)) for r in rows],
                         columns=[t("col_candidate"), f"{t('col_heldout')} ({recipe['by']})", t("col_fit_s")])
    return gr.Dataframe(value=table, visible=True)


def can_resume(p: Progress | None) -> bool:
    return p is not None and p.resumable_from is not None


def progress_html(p: Progress | None) -> str:
    """A thin bar with one line under it: which phase, how far."""
    if p is None:
        return ""
    if p.done:
        fraction, label = 1.0, ""
    elif p.state == "queued":
        fraction, label = 0.0, t("state_queued")
    elif p.batch:
        b = p.batch
        fraction, label = b["progress"], f"epoch {b['epoch']}/{b['epochs']} · batch {b['step']}/{b['steps']}" + pace(b)
    elif p.phase:
        fraction = p.phase["done"] / max(p.phase["total"], 1)
        label = f"{p.phase['what']} {p.phase['done']}/{p.phase['total']}" + pace(p.phase)
    else:
        fraction, label = 0.0, ""
    if p.warning:
        label = f"{label} · {p.warning}" if label else p.warning
    return (f'<div class="tl-progress" role="progressbar" aria-valuenow="{round(100 * fraction)}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="tl-bar" style="width:{100 * fraction:.1f}%"></div></div>'
            f'<div class="tl-progress-text">{html.escape(label)}</div>')


def pace(e: dict) -> str:
    """Throughput, time left and memory of long work, where the event carries them."""
    rate = e.get("pictures_per_s", e.get("rate"))
    parts = [f"{rate:,.0f}/s" if rate else "", t("pace_left", time=duration(e["eta"])) if e.get("eta") else "",
             f"{e['memory_mb']:,} MB" if e.get("memory_mb") else ""]
    return "".join(f" · {x.strip()}" for x in parts if x.strip())


def build(page, ctx) -> None:
    gr.Markdown(f"## {t('step_train')}")
    with gr.Row():
        page.train_btn = gr.Button(t("train_btn"), variant="primary", elem_id="train-btn", scale=3)
        page.stop_btn = gr.Button(t("stop_btn"), variant="stop", elem_id="stop-btn", scale=1)
        page.resume_btn = gr.Button(t("resume_btn"), elem_id="resume-btn", scale=1, visible=False)
    gpus = gpu_count()  # offered where the server has more than one
    page.all_gpus = gr.Checkbox(False, label=t("all_gpus", n=gpus), visible=gpus > 1, elem_id="all-gpus")
    page.status = gr.Markdown(t("status_idle"), elem_id="status", container=True)
    page.leaderboard = gr.Dataframe(None, label=t("leaderboard_label"), interactive=False, visible=False,
                                    elem_id="leaderboard", max_height=260)
    page.progress = gr.HTML("", elem_id="progress")
    page.loss_plot = gr.Plot(None, label=t("loss_label"), elem_id="loss-plot")
    page.timer = gr.Timer(POLL_SECONDS, active=False)
    page.run_state = gr.State(None)  # the run this page shows
    page.started_state = gr.State(None)  # the run a Train click just started (None when it could not start)
    page.shown_state = gr.State(-1)  # epochs drawn in the curve so far
    page.done_state = gr.State(None)  # set to the run id once it ended: shows the results
    # programs ask for the status through this button's event; people see it change on its own
    page.status_api = gr.Button(visible=False)
