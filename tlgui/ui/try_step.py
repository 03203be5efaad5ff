"""Step 5: classify a new picture or text with the trained model, and download model.zip."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..errors import TlguiError
from .context import AppContext
from .guard import guarded
from .picture_input import GuardedImage, read_picture
from .serve import copy_out
from .text import t

TOP_K = 3


def snippet(task: str) -> str:
    example = "'picture.jpg'" if task == "image" else "'what a wonderful film'"
    return ("# pip install the tlgui engine (this project), then:\n"
            "from tlgui.outputs import load_bundle\n\n"
            "model = load_bundle('model.zip')\n"
            f"print(model.predict([{example}], top_k=3))\n"
            "# -> [{'label': ..., 'score': ..., 'top_k': [[label, score], ...]}]")


def build(page, ctx) -> None:
    gr.Markdown(f"## {t('step_try')}")
    page.try_wait = gr.Markdown(t("try_wait"), elem_id="try-wait")
    with gr.Column(visible=False, elem_id="try") as page.try_col:
        with gr.Row(equal_height=False):
            with gr.Column():
                # the upload reaches the handler undecoded: read_picture checks its size from the header first
                page.predict_image = GuardedImage(type="filepath", sources=["upload", "webcam", "clipboard"],
                                                  label=t("predict_image_label"), elem_id="predict-input", height=240)
                page.predict_text = gr.Textbox(label=t("predict_text_label"), lines=4, visible=False,
                                               elem_id="predict-text")
                page.predict_btn = gr.Button(t("predict_btn"), variant="primary", elem_id="predict-btn")
                page.predict_msg = gr.Markdown("", elem_id="predict-message")
            with gr.Column():
                page.predict_output = gr.Label(num_top_classes=TOP_K, label=t("predict_output_label"),
                                               elem_id="predict-output")
        with gr.Row(equal_height=False):
            page.download_btn = gr.DownloadButton(t("download_btn"), elem_id="download-btn", variant="primary",
                                                  interactive=False, scale=1)
            page.snippet = gr.Code(snippet("image"), language="python", interactive=False, label=t("snippet_label"),
                                   elem_id="snippet", scale=3)
    page.download_api = gr.Button(visible=False)  # programs fetch model.zip through this button's event


def outputs(page) -> list:
    return [page.try_col, page.try_wait, page.predict_image, page.predict_text, page.predict_output, page.predict_msg,
            page.download_btn, page.snippet]


def view(page, folder: Path | None, task: str) -> dict:
    model = folder / "model.zip" if folder else None
    if model is None or not model.exists():
        return {page.try_col: gr.Column(visible=False), page.try_wait: gr.Markdown(visible=True),
                page.download_btn: gr.DownloadButton(value=None, interactive=False)}
    image = task == "image"
    return {page.try_col: gr.Column(visible=True), page.try_wait: gr.Markdown(visible=False),
            page.predict_image: gr.Image(value=None, visible=image), page.predict_text: gr.Textbox(visible=not image),
            page.predict_output: None, page.predict_msg: "",
            page.download_btn: gr.DownloadButton(value=copy_out(model), interactive=True), page.snippet: snippet(task)}


def wire(page, ctx: AppContext) -> None:
    @guarded(page.predict_msg)
    def predict(run_id: str | None, picture, text: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        folder = ctx.run_folder(run_id, request, owner_key)
        if not (folder / "model.zip").exists():
            raise TlguiError(t("try_wait"))
        model = ctx.model(run_id, folder)
        if model.task == "image":
            if picture is None:
                raise TlguiError(t("predict_empty"))
            item = read_picture(picture, draft=model.meta["preprocessing"]["image_size"])
        else:
            if not text or not text.strip():
                raise TlguiError(t("predict_empty"))
            item = text.strip()
        row = model.predict([item], top_k=TOP_K)[0]
        return {page.predict_output: {label: score for label, score in row["top_k"]}, page.predict_msg: ""}

    page.predict_btn.click(predict, [page.run_state, page.predict_image, page.predict_text, page.owner],
                           [page.predict_output, page.predict_msg], api_name="predict")

    def model_file(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> str:
        """The run's model.zip for a program; a missing one is an API error, not a page line."""
        try:
            folder = ctx.run_folder(run_id, request, owner_key)
        except TlguiError as e:
            raise gr.Error(str(e)) from None
        path = folder / "model.zip"
        if not path.exists():
            raise gr.Error(t("try_wait"))
        return copy_out(path)

    page.download_api.click(model_file, [page.run_state, page.owner], [page.download_btn], api_name="download")
