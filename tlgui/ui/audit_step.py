"""Step 4, continued: the examples whose label the model disputes; keep, relabel or remove each,
then train again on the corrected copy (the original dataset is never changed)."""

from __future__ import annotations

import gradio as gr

from ..config import RunConfig
from ..errors import TlguiError
from ..training.audit import audit
from . import builder_step, built, run_folders
from .context import AppContext
from .data_step import summary_markdown
from .guard import guarded
from .text import t

SHOWN = 24  # examples in the gallery; the audit may flag more
THUMB = 128
KEEP, REMOVE, TO = "keep", "remove", "to:"


def build(page, ctx) -> None:
    with gr.Column(elem_id="audit"):
        gr.Markdown(t("audit_head"))
        gr.Markdown(t("audit_help"), elem_classes=["tl-help"])
        page.audit_btn = gr.Button(t("audit_btn"), elem_id="audit-btn")
        page.audit_msg = gr.Markdown("", elem_id="audit-message")
        page.audit_gallery = gr.Gallery(label=t("audit_head"), columns=8, height=260, object_fit="contain",
                                        elem_id="audit-gallery", visible=False, allow_preview=False)
        with gr.Row(equal_height=True):
            page.audit_item = gr.Dropdown([], value=None, label=t("audit_item_label"), elem_id="audit-item", scale=3)
            page.audit_action = gr.Dropdown([], value=None, label=t("audit_action_label"), elem_id="audit-action",
                                            scale=2)
        page.audit_decisions = gr.Markdown("", elem_id="audit-decisions")
        page.audit_save = gr.Button(t("audit_save"), elem_id="audit-save-btn", variant="primary")
        page.audit_state = gr.State(None)


def outputs(page) -> list:
    return [page.audit_state, page.audit_msg, page.audit_gallery, page.audit_item, page.audit_action,
            page.audit_decisions]


def cleared(page) -> dict:
    """A run shown anew: no earlier run's label check stays on screen."""
    return {page.audit_state: None, page.audit_msg: "", page.audit_gallery: gr.Gallery(value=None, visible=False),
            page.audit_item: gr.Dropdown(choices=[], value=None),
            page.audit_action: gr.Dropdown(choices=[], value=None), page.audit_decisions: ""}


def actions(issue: dict, classes: list[str]) -> list[tuple[str, str]]:
    return ([(t("audit_keep", given=issue["given"]), KEEP), (t("audit_relabel", cls=issue["suggested"]),
                                                               TO + issue["suggested"])]
            + [(t("audit_relabel", cls=c), TO + c) for c in classes if c not in (issue["given"], issue["suggested"])]
            + [(t("audit_remove"), REMOVE)])


def changes_of(state: dict) -> dict[int, str | None]:
    """The decisions as the dataset copy takes them: example index -> new class, or None to leave it out."""
    out = {}
    for k, decision in state["decisions"].items():
        index = state["issues"][int(k)]["index"]
        if decision == REMOVE:
            out[index] = None
        elif decision.startswith(TO):
            out[index] = decision[len(TO):]
    return out


def decisions_line(state: dict) -> str:
    changes = changes_of(state)
    removed = sum(v is None for v in changes.values())
    return t("audit_decisions", relabelled=len(changes) - removed, removed=removed)


def wire(page, ctx: AppContext) -> None:
    _wire_find(page, ctx)
    _wire_review(page)
    _wire_save(page, ctx)


def _wire_find(page, ctx: AppContext) -> None:
    """Find: the audit of the shown run's data, its suspects as pictures and as a list."""

    @guarded(page.audit_msg)
    def find(run_id: str | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not run_id:
            raise TlguiError(t("audit_run_first"))
        folder = ctx.run_folder(run_id, request, owner_key)
        if not (folder / "model.zip").exists():
            raise TlguiError(t("audit_run_first"))
        source = (run_folders.read_meta(folder) or {}).get("source")
        try:
            ds = ctx.store.get(source)
        except (TlguiError, TypeError):
            raise TlguiError(t("audit_no_data")) from None
        issues = audit(RunConfig.load(folder / "config.json"), ds, work_dir=folder / "audit")
        state = {"run": run_id, "source": source, "classes": list(ds.classes), "issues": issues[:SHOWN],
                 "decisions": {}}
        pictures = None
        if ds.task == "image":
            pictures = []
            for k, it in enumerate(state["issues"], start=1):
                img = ds.load_image(it["index"], draft=THUMB)
                img.thumbnail((THUMB, THUMB))
                pictures.append((img, t("audit_caption", k=k, given=it["given"], suggested=it["suggested"])))
        items = [(t("audit_item", k=k, path=it["path"], given=it["given"], suggested=it["suggested"],
                    score=f"{it['score']:.2f}"), k - 1) for k, it in enumerate(state["issues"], start=1)]
        first = state["issues"][0] if issues else None
        return {page.audit_state: state,
                page.audit_msg: t("audit_found", n=len(issues)) if issues else t("audit_none"),
                page.audit_gallery: gr.Gallery(value=pictures, visible=bool(pictures)),
                page.audit_item: gr.Dropdown(choices=items, value=0 if first else None),
                page.audit_action: gr.Dropdown(choices=actions(first, ds.classes) if first else [],
                                               value=KEEP if first else None),
                page.audit_decisions: ""}

    page.audit_btn.click(find, [page.run_state, page.owner], outputs(page), api_name="find_label_errors")


def _wire_review(page) -> None:
    """A suspect picked in the gallery or the list, and the decision taken on it."""

    def pick(evt: gr.SelectData) -> int:
        return evt.index

    page.audit_gallery.select(pick, None, [page.audit_item], api_visibility="private", show_progress="hidden")

    def show_item(state: dict | None, k: int | None) -> dict:
        if not state or k is None or not 0 <= int(k) < len(state["issues"]):
            return {page.audit_action: gr.Dropdown(choices=[], value=None)}
        issue = state["issues"][int(k)]
        return {page.audit_action: gr.Dropdown(choices=actions(issue, state["classes"]),
                                               value=state["decisions"].get(str(k), KEEP))}

    page.audit_item.change(show_item, [page.audit_state, page.audit_item], [page.audit_action],
                           api_visibility="private", show_progress="hidden")

    def decide(state: dict | None, k: int | None, decision: str | None) -> dict:
        if not state or k is None or not decision:
            return {page.audit_decisions: gr.skip()}
        state = {**state, "decisions": {**state["decisions"], str(k): decision}}
        return {page.audit_state: state, page.audit_decisions: decisions_line(state)}

    page.audit_action.input(decide, [page.audit_state, page.audit_item, page.audit_action],
                            [page.audit_state, page.audit_decisions], api_visibility="private", show_progress="hidden")


def _wire_save(page, ctx: AppContext) -> None:
    """Save: the decisions applied to a copy of the data set, which the page then opens."""
    changed = [page.dataset_state, page.summary, page.builder_msg, page.builder_counts, page.class_pick,
               page.builder_download]

    @guarded(page.audit_msg)
    def save(state: dict | None, owner_key: str | None = None, request: gr.Request = None) -> dict:
        if not state:
            raise TlguiError(t("audit_find_first"))
        ctx.run_folder(state["run"], request, owner_key)  # still the caller's run
        changes = changes_of(state)
        if not changes:
            raise TlguiError(t("audit_no_changes"))
        ds = ctx.store.get(state["source"])
        path, n = built.copy_as_new(ctx.settings.runs_root, ctx.owner(request, owner_key), ds, f"{ds.name}-corrected", changes)
        removed = sum(v is None for v in changes.values())
        message = t("audit_saved", name=path.stem, relabelled=len(changes) - removed, removed=removed)
        if ds.task == "image":
            return {**builder_step.shown(page, ctx, path, ""), page.audit_msg: message}
        state = {"path": str(path), "name": path.stem, "origin": "built", "task": "text", "size": n,
                 "cli_path": path.name}
        return {page.dataset_state: state, page.summary: summary_markdown(ctx.store.get(path), "built"),
                page.audit_msg: message}

    page.after_load(page.audit_save.click(save, [page.audit_state, page.owner], [page.audit_msg, *changed],
                                          api_name="save_corrected"))
