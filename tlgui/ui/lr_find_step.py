"""The advanced panel's learning-rate finder: a short sweep with the page's settings, plotted,
its suggestion filled into the learning-rate field."""

from __future__ import annotations

import gradio as gr

from ..config import NOT_SWEPT
from ..errors import TlguiError
from . import plots, pretrain_step
from .guard import guarded
from .run_settings import inputs_of, make_config, takes_settings
from .text import t


def build(page) -> None:
    with gr.Row(equal_height=True):
        page.lr_find_btn = gr.Button(t("lr_find_btn"), elem_id="lr-find-btn", scale=1)
        page.lr_find_msg = gr.Markdown("", elem_id="lr-find-message")
    page.lr_find_plot = gr.Plot(None, label=t("lr_find_label"), elem_id="lr-find-plot", visible=False)


def wire(page, ctx) -> None:
    @guarded(page.lr_find_msg)
    @takes_settings(page.settings)
    def find(state: dict | None, owner_key: str | None = None, request: gr.Request = None, **values) -> dict:
        from ..training.lr_find import lr_find

        if not state:
            raise TlguiError(t("no_dataset"))
        backbones = pretrain_step.encoder_paths(ctx, values["backbones"], state["task"], request, owner_key)
        # the sweep starts where Train would, less what a sweep has no use for (as `lr-find` on the command line)
        swept = {name: value for name, value in values.items() if name not in NOT_SWEPT}
        config = make_config({**swept, "backbones": backbones})
        ctx.jobs.policy.check_run(config.backbones, config.epochs)  # a public server's limits hold here too
        found = lr_find(config, ctx.store.get(state["path"]), steps=40)
        message = t("lr_find_done", lr=f"{found['suggested']:.2g}") + (t("lr_find_frozen") if found["frozen"] else "")
        return {page.lr: float(f"{found['suggested']:.2g}"), page.lr_find_msg: message,
                page.lr_find_plot: gr.Plot(plots.lr_sweep(found["lrs"], found["losses"], found["suggested"]),
                                           visible=True)}

    page.lr_find_btn.click(find, [page.dataset_state], [page.lr, page.lr_find_msg, page.lr_find_plot],
                           inputs_kwargs=inputs_of(page), api_name="lr_find")
