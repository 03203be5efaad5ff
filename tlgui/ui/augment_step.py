"""In the advanced settings: a few training pictures as the model will see them with augmentation."""

from __future__ import annotations

import gradio as gr

from ..data.augment_preview import augmented_pictures
from ..errors import TlguiError
from ..nets.backbones import all_backbones
from .context import AppContext
from .guard import guarded
from .text import t

COUNT = 8
DEFAULT_SIZE = 224


def build(page, ctx) -> None:
    page.augment_btn = gr.Button(t("augment_preview_btn"), elem_id="augment-preview-btn", size="sm")
    page.augment_note = gr.Markdown("", elem_id="augment-note")
    page.augment_gallery = gr.Gallery(label=t("augment_preview_label"), columns=COUNT, height=170,
                                      object_fit="contain", elem_id="augment-preview", visible=False)


def preview_size(backbones: list[str] | None, image_size: str | None) -> int:
    """The size pictures are decoded at for these settings: the chosen one, else the backbones' own."""
    if image_size not in (None, "", "native"):
        return int(image_size)
    infos = all_backbones()
    sizes = [infos[b].input_size for b in backbones or [] if b in infos and infos[b].task == "image"]
    return max(sizes) if sizes else DEFAULT_SIZE


def wire(page, ctx: AppContext) -> None:
    @guarded(page.augment_note)
    def show(state: dict | None, backbones, freeze: str | None, image_size: str | None, augment: str | None) -> dict:
        if not state:
            raise TlguiError(t("no_dataset"))
        ds = ctx.store.get(state["path"])
        if ds.task != "image":
            raise TlguiError(t("augment_preview_texts"))
        if augment == "off" or (augment in (None, "auto") and freeze in (None, "all")):
            note = "augment_preview_off"
        elif augment in (None, "auto") and freeze == "auto":  # the probe sees plain pictures; LP-FT, if it runs, these
            note = "augment_preview_auto"
        else:
            note = "augment_preview_on"
        pictures = augmented_pictures(ds, preview_size(backbones, image_size), COUNT)
        return {page.augment_note: t(note),
                page.augment_gallery: gr.Gallery(value=pictures, visible=True)}

    page.augment_btn.click(show, [page.dataset_state, page.backbones, page.freeze, page.image_size, page.augment],
                           [page.augment_note, page.augment_gallery], api_visibility="private")
