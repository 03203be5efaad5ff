"""Step 4: scores, confusion matrix, per-class table, the examples the model got wrong."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ..runs import MISTAKES
from . import audit_step, plots, run_folders
from .serve import copy_out
from .text import percent, t


def build(page, ctx) -> None:
    with gr.Column(visible=False, elem_id="results") as page.results_col:
        gr.Markdown(f"## {t('step_results')}")
        page.results_md = gr.Markdown(elem_id="results-summary")
        with gr.Row(equal_height=False):
            page.confusion = gr.Plot(label=t("confusion_label"), elem_id="confusion-plot")
            page.per_class = gr.Dataframe(label=t("per_class_label"), interactive=False, elem_id="per-class",
                                          max_height=420)
        page.mistakes = gr.Gallery(label=t("mistakes_label"), columns=6, height=330, object_fit="contain",
                                   elem_id="mistakes")
        page.mistakes_text = gr.Dataframe(label=t("mistakes_label"), interactive=False, wrap=True, visible=False,
                                          elem_id="mistakes-text", max_height=320)
        page.fusion_plot = gr.Plot(label=t("fusion_weights_label"), visible=False, elem_id="fusion-weights")
        audit_step.build(page, ctx)


def outputs(page) -> list:
    return [page.results_col, page.results_md, page.confusion, page.per_class, page.mistakes, page.mistakes_text,
            page.fusion_plot, *audit_step.outputs(page)]


def hidden(page) -> dict:
    return {page.results_col: gr.Column(visible=False), **audit_step.cleared(page)}


def view(page, folder: Path | None, task: str) -> dict:
    res = run_folders.results(folder) if folder and (folder / "model.zip").exists() else None
    if not res:  # a run stopped before its first epoch, or failed: nothing to show
        return hidden(page)
    m = res.get("metrics", {})
    out = {page.results_col: gr.Column(visible=True), **audit_step.cleared(page)}
    if m.get("per_class"):
        out[page.results_md] = t("results_head", accuracy=percent(m["accuracy"]), f1=f"{m['macro_f1']:.3f}",
                                 count=m["count"], best=m.get("best_epoch", "?"))
        if m.get("fit_steps"):
            out[page.results_md] = t("results_fit", accuracy=percent(m["accuracy"]), f1=f"{m['macro_f1']:.3f}",
                                     count=m["count"], steps=m["fit_steps"])
        if m.get("folds"):
            out[page.results_md] += t("results_folds", k=len(m["folds"]), mean=percent(m["folds_mean"]),
                                      spread=percent(m["folds_std"]))
        if m.get("recipe"):
            from ..outputs.modelcard import describe

            out[page.results_md] += f"\n\n{describe(m['recipe'])}."
        out[page.confusion] = plots.confusion(m)
        out[page.per_class] = pd.DataFrame(
            [(r["class"], round(r["precision"], 3), round(r["recall"], 3), round(r["f1"], 3), r["support"])
             for r in m["per_class"]],
            columns=[t("col_class"), t("col_precision"), t("col_recall"), t("col_f1"), t("col_support")])
    else:
        out.update({page.results_md: t("results_noval"), page.confusion: None, page.per_class: None})
    mistakes = res.get("mistakes", [])
    if task == "image":
        pictures = [(copy_out(folder / MISTAKES / f"{k}.png"), t("mistake_caption", predicted=m_["predicted"], true=m_["true"]))
                    for k, m_ in enumerate(mistakes) if (folder / MISTAKES / f"{k}.png").exists()]
        out[page.mistakes] = gr.Gallery(value=pictures, visible=True)
        out[page.mistakes_text] = gr.Dataframe(visible=False)
    else:
        rows = [(m_["input"][:300], m_["predicted"], m_["true"]) for m_ in mistakes[:50]]
        out[page.mistakes] = gr.Gallery(value=None, visible=False)
        out[page.mistakes_text] = gr.Dataframe(
            value=pd.DataFrame(rows, columns=[t("col_text"), t("col_predicted"), t("col_true")]), visible=True)
    weights = m.get("fusion_weights")
    out[page.fusion_plot] = gr.Plot(value=plots.fusion_weights(weights) if weights else None, visible=bool(weights))
    return out
