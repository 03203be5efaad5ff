"""Earlier runs of this browser: listed, reopened, compared on one chart, deleted."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from ..config import RunConfig
from ..errors import TlguiError
from ..outputs.bundle import transfer_kind
from . import plots, recipes, run_folders
from .context import AppContext
from .guard import guarded
from .text import duration, percent, t


def run_label(meta: dict) -> str:
    when = time.strftime("%b %d %H:%M", time.localtime(meta.get("created", 0)))
    return f"{meta.get('label', meta['id'])} · {when}"


def recipe_choices(ctx: AppContext, owner: str, metas: list[dict] | None = None) -> list[tuple[str, str]]:
    """The owner's saved recipes, then the settings of each of their runs."""
    root = ctx.settings.runs_root
    metas = run_folders.list_runs(root, owner) if metas is None else metas
    return ([(t("recipe_choice", name=name), f"recipe:{key}") for name, key in recipes.names(root, owner)]
            + [(t("recipe_of_run", label=run_label(m)), f"run:{m['id']}") for m in metas
               if (root / m["id"] / "config.json").exists()])


def build(page, ctx) -> None:
    gr.Markdown(f"## {t('step_runs')}")
    page.runs_table = gr.Dataframe(None, label=None, interactive=False, elem_id="runs-table", max_height=260, wrap=True)
    page.runs_empty = gr.Markdown(t("runs_empty"), elem_id="runs-empty")
    with gr.Row(equal_height=False):
        page.run_pick = gr.Dropdown([], value=None, label=t("runs_pick_label"), elem_id="run-pick", scale=4)
        with gr.Column(scale=1, min_width=160):
            page.open_btn = gr.Button(t("open_btn"), elem_id="open-btn", size="md")
            page.delete_btn = gr.Button(t("delete_btn"), variant="stop", elem_id="delete-btn", size="md")
    page.runs_msg = gr.Markdown("", elem_id="runs-message")
    page.compare = gr.Dropdown([], value=[], multiselect=True, label=t("compare_label"), elem_id="compare")
    page.compare_plot = gr.Plot(None, label=t("compare_plot_label"), elem_id="compare-plot", visible=False)
    page.compare_table = gr.Dataframe(None, interactive=False, elem_id="compare-table", visible=False, wrap=True)


def outputs(page) -> list:
    return [page.runs_table, page.runs_empty, page.run_pick, page.compare, page.init_run, page.recipe_pick]


def view(page, ctx: AppContext, owner: str, current: str | None = None) -> dict:
    metas = run_folders.list_runs(ctx.settings.runs_root, owner)
    rows = []
    for meta in metas:
        res = run_folders.results(ctx.settings.runs_root / meta["id"]) or {}
        acc = res.get("metrics", {}).get("accuracy")
        rows.append((run_label(meta), t(f"state_{meta.get('state', 'failed')}"), percent(acc) if acc is not None else "–",
                     ", ".join(meta.get("backbones", []))))
    table = pd.DataFrame(rows, columns=[t("col_run"), t("col_status"), t("col_accuracy"), t("col_backbone")])
    choices = [(run_label(m), m["id"]) for m in metas]
    ids = {m["id"] for m in metas}
    return {page.runs_table: gr.Dataframe(value=table, visible=bool(rows)),
            page.runs_empty: gr.Markdown(visible=not rows),
            page.run_pick: gr.Dropdown(choices=choices, value=current if current in ids else None),
            page.compare: gr.Dropdown(choices=choices),
            page.init_run: gr.Dropdown(choices=[(run_label(m), m["id"]) for m in metas
                                                if (ctx.settings.runs_root / m["id"] / "model.zip").exists()]),
            page.recipe_pick: gr.Dropdown(choices=recipe_choices(ctx, owner, metas))}


def wire(page, ctx: AppContext) -> None:
    @guarded(page.runs_msg)
    def compare(ids: list[str] | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        series, rows = [], []
        for run_id in ids or []:
            folder = ctx.run_folder(run_id, request, owner_key)
            meta = run_folders.read_meta(folder) or {}
            res = run_folders.results(folder) or {}
            series.append((run_label(meta), res.get("history") or run_folders.history(folder)))
            m = res.get("metrics", {})
            try:
                kind = transfer_kind(RunConfig.load(folder / "config.json"))
            except TlguiError:
                kind = "–"
            rows.append((run_label(meta), kind, percent(m["accuracy"]) if "accuracy" in m else "–",
                         f"{m['macro_f1']:.3f}" if "macro_f1" in m else "–",
                         duration(res["elapsed"]) if res.get("elapsed") else "–"))
        table = pd.DataFrame(rows, columns=[t("col_run"), t("col_transfer"), t("col_accuracy"), t("col_macro_f1"),
                                            t("col_time_taken")])
        return {page.compare_plot: gr.Plot(value=plots.compare(series) if series else None, visible=bool(series)),
                page.compare_table: gr.Dataframe(value=table, visible=bool(rows)), page.runs_msg: ""}

    page.compare.change(compare, [page.compare, page.owner], [page.compare_plot, page.compare_table, page.runs_msg],
                        api_visibility="private", show_progress="hidden")
