"""Step 1, built by hand: classes named in the page, pictures dropped on them or taken with the webcam.

The dataset the page shows (`dataset_state`) is the one these controls change: a dataset built
here is changed in place; an example or an upload is first copied (see `built`), so that its
original is never touched. Every picture is decoded by the project's reader before it is kept.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import gradio as gr

from ..data.images import BadImage
from ..errors import TlguiError
from . import built
from .context import AppContext
from .data_step import summary_markdown
from .guard import guarded
from .serve import copy_out
from .text import t

SKIPPED_SHOWN = 5


def raw_bytes(payload: dict | None) -> bytes | None:
    """A picture's bytes as the browser sent them (the event skips Gradio's preprocessing, which
    opens the file with Pillow and trusts its header): the project's reader decodes them."""
    if not isinstance(payload, dict):
        return None
    url = payload.get("url") or ""
    if url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error, ValueError):
            return b""
    return Path(payload["path"]).read_bytes() if payload.get("path") else None


def state_of(folder: Path) -> dict:
    """The page's dataset state for a dataset built here."""
    return {"path": str(folder), "name": folder.name, "origin": "built", "task": "image",
            "size": sum(built.classes(folder).values()), "cli_path": f"{folder.name}.zip"}


def counts_line(folder: Path) -> str:
    counts = built.classes(folder)
    if not counts:
        return t("builder_no_classes", name=folder.name)
    return t("builder_counts", name=folder.name,
             classes=", ".join(t("builder_class_count", cls=c, n=n) for c, n in counts.items()))


def build(page, ctx: AppContext) -> None:
    with gr.Accordion(t("builder"), open=False, elem_id="builder") as page.builder_acc:
        gr.Markdown(t("builder_help"), elem_classes=["tl-help"])
        with gr.Row(equal_height=True):
            page.builder_name = gr.Textbox(label=t("builder_name_label"), value="my-pictures",
                                           max_length=built.MAX_NAME, elem_id="builder-name", scale=2)
            page.builder_new = gr.Button(t("builder_new"), elem_id="builder-new-btn", scale=1)
            page.builder_mine = gr.Dropdown([], value=None, label=t("builder_mine_label"), elem_id="builder-mine",
                                            scale=2)
            page.builder_open = gr.Button(t("builder_open"), elem_id="builder-open-btn", scale=1)
        with gr.Row(equal_height=True):
            page.class_name = gr.Textbox(label=t("class_name_label"), max_length=200, elem_id="class-name", scale=2)
            page.class_add = gr.Button(t("class_add"), elem_id="class-add-btn", scale=1)
            page.class_pick = gr.Dropdown([], value=None, label=t("class_pick_label"), elem_id="class-pick", scale=3,
                                         allow_custom_value=True)  # checked against the folders on use
        with gr.Row(equal_height=False):
            page.class_files = gr.File(file_count="multiple", type="filepath", label=t("class_files_label"),
                                       elem_id="class-files", height=160)
            with gr.Column():
                page.webcam = gr.Image(sources=["webcam"], label=t("webcam_label"), elem_id="webcam", height=200)
                page.webcam_add = gr.Button(t("webcam_add"), elem_id="webcam-add-btn")
        page.builder_msg = gr.Markdown("", elem_id="builder-message")
        page.builder_counts = gr.Markdown("", elem_id="builder-counts")
        with gr.Row():
            page.builder_zip = gr.Button(t("builder_zip"), elem_id="builder-zip-btn")
            page.builder_download = gr.DownloadButton(t("builder_download"), elem_id="builder-download",
                                                      interactive=False)


def _editable(ctx: AppContext, owner: str, state: dict | None) -> tuple[Path, str]:
    """The built dataset to change: the page's own, or a copy of the example or upload it shows."""
    root = ctx.settings.runs_root
    if state and state.get("task") == "text":
        raise TlguiError(t("builder_text_data"))
    if state and state.get("origin") == "built":
        if not built.is_mine(root, owner, state["path"]):
            raise TlguiError(t("builder_gone"))
        return Path(state["path"]), ""
    if not state:
        folder = built.create(root, owner, "my-pictures")
        return folder, t("builder_started", name=folder.name)
    ds = ctx.store.get(state["path"])
    if ds.task != "image":
        raise TlguiError(t("builder_text_data"))
    folder, n = built.copy_as_new(root, owner, ds, f"{ds.name}-edited")
    return folder, t("builder_copied", name=folder.name, original=ds.name, n=n)


def shown(page, ctx: AppContext, folder: Path, message: str, pick: str | None = None) -> dict:
    """Everything that shows a built dataset after a change."""
    state = state_of(folder)
    counts = built.classes(folder)
    try:
        summary = summary_markdown(ctx.store.get(folder), "built") if state["size"] else counts_line(folder)
    except TlguiError:
        summary = counts_line(folder)
    pick = pick if pick in counts else next(iter(counts), None)
    return {page.dataset_state: state, page.summary: summary, page.builder_msg: message,
            page.builder_counts: counts_line(folder),
            page.class_pick: gr.Dropdown(choices=list(counts), value=pick),
            page.builder_download: gr.DownloadButton(value=None, interactive=False)}


def _skipped(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    files = "; ".join(f"{Path(n).name} ({why})" for n, why in skipped[:SKIPPED_SHOWN])
    return t("builder_skipped", n=len(skipped), files=files + ("; …" if len(skipped) > SKIPPED_SHOWN else ""))


def check_ready(state: dict | None) -> None:
    """Before training: a dataset built here needs two classes, none of them empty."""
    if state and state.get("origin") == "built":
        built.check_ready(Path(state["path"]))


def wire(page, ctx: AppContext) -> None:
    after_load = page.after_load  # the data step's views and the model step's refresh
    changed = [page.dataset_state, page.summary, page.builder_msg, page.builder_counts, page.class_pick,
               page.builder_download]

    @guarded(page.builder_msg)
    def new_dataset(name: str, owner_key: str | None = None, request: gr.Request = None) -> dict:
        folder = built.create(ctx.settings.runs_root, ctx.owner(request, owner_key), name or "my-pictures")
        return shown(page, ctx, folder, t("builder_started", name=folder.name))

    @guarded(page.builder_msg)
    def add_class(state: dict | None, name: str, owner_key: str | None = None, request: gr.Request = None) -> dict:
        built.class_name(name)  # a bad name is refused before anything is copied
        folder, note = _editable(ctx, ctx.owner(request, owner_key), state)
        added = built.add_class(folder, name)
        return {**shown(page, ctx, folder, f"{note} {t('builder_class_added', name=added)}".strip(), added),
                page.class_name: ""}

    @guarded(page.builder_msg)
    def add_files(state: dict | None, cls: str | None, files: list[str] | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not files:
            raise TlguiError(t("builder_nothing"))
        if not cls:
            raise TlguiError(t("class_pick_first"))
        folder, note = _editable(ctx, ctx.owner(request, owner_key), state)
        n, skipped = built.add_pictures(folder, cls, ((Path(f).name, Path(f).read_bytes()) for f in files))
        message = f"{note} {t('builder_added', n=n, cls=cls)}{_skipped(skipped)}".strip()
        return {**shown(page, ctx, folder, message, cls), page.class_files: None}

    @guarded(page.builder_msg)
    def add_webcam(state: dict | None, cls: str | None, payload: dict | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        picture = raw_bytes(payload)
        if picture is None:
            raise TlguiError(t("builder_no_webcam"))
        try:
            built.checked_picture(picture)  # before anything is copied or kept
        except BadImage as e:
            raise TlguiError(t("webcam_bad", reason=e)) from None
        if not cls:
            raise TlguiError(t("class_pick_first"))
        folder, note = _editable(ctx, ctx.owner(request, owner_key), state)
        n, _ = built.add_pictures(folder, cls, [("webcam.png", picture)])
        return {**shown(page, ctx, folder, f"{note} {t('builder_added', n=n, cls=cls)}".strip(), cls),
                page.webcam: None}

    @guarded(page.builder_msg)
    def make_zip(state: dict | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        folder, note = _editable(ctx, ctx.owner(request, owner_key), state)
        path = built.write_zip(folder)
        counts = built.classes(folder)
        message = f"{note} {t('builder_zipped', n=sum(counts.values()), classes=len(counts))}".strip()
        return {**shown(page, ctx, folder, message, None),
                page.builder_download: gr.DownloadButton(value=copy_out(path), interactive=True)}

    def list_mine(owner_key: str | None = None, request: gr.Request = None) -> dict:
        root, owner = ctx.settings.runs_root, ctx.owner(request, owner_key)
        folders = built.mine(root, owner)
        return {page.builder_mine: gr.Dropdown(choices=[(f"{f.name} ({sum(built.classes(f).values())})", str(f))
                                                        for f in folders])}

    @guarded(page.builder_msg)
    def open_mine(path: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not path or not built.is_mine(ctx.settings.runs_root, ctx.owner(request, owner_key), path):
            raise TlguiError(t("builder_gone"))
        return shown(page, ctx, Path(path), "")

    page.builder_acc.expand(list_mine, [page.owner], [page.builder_mine], api_visibility="private", show_progress="hidden")
    after_load(page.builder_new.click(new_dataset, [page.builder_name, page.owner], changed, api_visibility="private"))
    after_load(page.class_add.click(add_class, [page.dataset_state, page.class_name, page.owner], [*changed, page.class_name],
                                    api_name="add_class"))
    after_load(page.class_files.upload(add_files, [page.dataset_state, page.class_pick, page.class_files, page.owner],
                                       [*changed, page.class_files], api_name="add_pictures"))
    after_load(page.webcam_add.click(add_webcam, [page.dataset_state, page.class_pick, page.webcam, page.owner],
                                     [*changed, page.webcam], api_name="add_webcam_picture", preprocess=False))
    page.builder_zip.click(make_zip, [page.dataset_state, page.owner], changed, api_name="dataset_zip")
    after_load(page.builder_open.click(open_mine, [page.builder_mine, page.owner], changed, api_visibility="private"))
