"""Step 2's "from the Hugging Face Hub" field: any model id, checked before training (it exists, it
is a kind tlgui runs, its size and input), its weights fetched into the cache with progress shown,
then offered in the backbones list; beside it, the recommended ones with what they cost."""

from __future__ import annotations

import gradio as gr

from ..config import AUTO
from ..errors import TlguiError
from ..nets.backbones import get_info
from ..nets.backbones.hub import RECOMMENDED, as_name, fetch_weights
from . import pretrain_step
from .context import AppContext
from .guard import guarded
from .text import t


def recommended_table() -> str:
    rows = [f"| `{s.repo}` | {t(f'kind_{s.task}')} | {s.params:.1f} M | {s.size} | ≈ {s.cpu_ms} ms | {s.note} |"
            for s in RECOMMENDED]
    return "\n".join([t("hub_recommended"), "", t("hub_table_head"), "|---|---|---|---|---|---|", *rows])


def build(page) -> None:
    with gr.Accordion(t("hub_title"), open=False, elem_id="hub"):
        with gr.Row(equal_height=True):
            page.hub_id = gr.Textbox(label=t("hub_id_label"), placeholder="facebook/dinov2-small", max_length=200,
                                     elem_id="hub-id", scale=3)
            page.hub_check = gr.Button(t("hub_check"), elem_id="hub-check-btn", scale=1)
        page.hub_info = gr.Markdown("", elem_id="hub-info")
        gr.Markdown(recommended_table(), elem_classes=["tl-help"], elem_id="hub-recommended")


def wire(page, ctx: AppContext) -> None:
    """Check: the id refused in one sentence, or described and added to the chosen backbones."""

    @guarded(page.hub_info)
    def check(hub_id: str, state: dict | None, chosen: list[str] | None, owner_key: str | None = None,
              request: gr.Request = None, progress=gr.Progress(track_tqdm=True)) -> dict:
        name = as_name(hub_id)
        if name == "hf:":
            raise TlguiError(t("hub_id_first"))
        policy = ctx.jobs.policy
        policy.check_hub(name)  # before anything of it is downloaded
        info = get_info(name)
        if not policy.allows_backbone(name, info.params):
            raise TlguiError(t("hub_too_big", name=name, params=f"{info.params / 1e6:,.0f}",
                               most=f"{(policy.max_params or 0) / 1e6:,.0f}"))
        task = state["task"] if state else info.task
        if info.task != task:
            raise TlguiError(t("wrong_task", name=name, kind=t(f"kind_{info.task}"), data=t(f"kind_{task}")))
        info = fetch_weights(name)  # the download's progress bars show on the page
        choices = pretrain_step.backbone_choices(ctx, ctx.owner(request, owner_key), task)
        offered = {value for _, value in choices}
        keep = [b for b in chosen or [] if b in offered and b not in (name, AUTO)]  # a named backbone ends auto
        size = f"{info.input_size} px" if info.task == "image" else f"{info.input_size} tokens"
        return {page.hub_info: t("hub_ok", name=name, source=info.source, params=f"{info.params / 1e6:.1f}",
                                 size=size, stages=info.stages, width=info.feature_dim),
                page.backbones: gr.Dropdown(choices=choices, value=keep + [name])}

    page.hub_check.click(check, [page.hub_id, page.dataset_state, page.backbones, page.owner],
                         [page.hub_info, page.backbones], api_name="hub_check")
