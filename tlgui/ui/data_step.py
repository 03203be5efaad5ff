"""Step 1: choose a built-in example or upload a dataset, and see what was read."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import gradio as gr
import pandas as pd

from ..data.datasets import TABLE_EXTS, Dataset
from ..data.tables import check_allowed, data_dirs, server_datasets
from . import plots, retention
from .context import AppContext
from .guard import error_line
from .settings import DEFAULT_EXAMPLE
from .text import t

SAMPLES_PER_CLASS = 2
MAX_SAMPLES = 30
SKIPPED_SHOWN = 8


def example_paths(examples_dir: Path) -> dict[str, Path]:
    """The built-in datasets: folders of class folders, zips and tables under assets/examples."""
    if not examples_dir.is_dir():
        return {}
    found = {}
    for p in sorted(examples_dir.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() in TABLE_EXTS | {".zip"}:
            found[p.stem if p.is_file() else p.name] = p
    return found


def dataset_state(ds: Dataset, path: Path, origin: str, cli_path: str) -> dict:
    """What a page remembers about its dataset (plain data: the dataset itself stays in the store)."""
    return {"path": str(path), "name": ds.name, "origin": origin, "task": ds.task, "size": len(ds),
            "cli_path": cli_path}


def summary_markdown(ds: Dataset, origin: str) -> str:
    r = ds.report()
    lines = [t("summary_head", name=r["name"], origin=t(f"origin_{origin}"), task=t(f"task_{ds.task}"),
               n_classes=len(ds.classes), used=r["used"], kind=t(f"kind_{ds.task}"), skipped=r["skipped"])]
    if r["skipped"]:
        reasons = ", ".join(f"{why} ({n})" for why, n in r["skipped_reasons"].items())
        lines += ["", t("summary_skipped", n=r["skipped"], reasons=reasons)]
        lines += [t("summary_skipped_file", file=s["file"], reason=s["reason"]) for s in r["skipped_files"][:SKIPPED_SHOWN]]
        if r["skipped"] > SKIPPED_SHOWN:
            lines.append(t("summary_more_skipped", n=r["skipped"] - SKIPPED_SHOWN))
    if r["warnings"]:
        lines += [""] + [t("summary_warning", text=w) for w in r["warnings"]]
    else:
        lines += ["", t("summary_ok")]
    return "\n".join(lines)


def sample_indices(ds: Dataset, per_class: int) -> list[int]:
    picked: list[int] = []
    seen: dict[int, int] = {}
    for i, y in enumerate(ds.labels.tolist()):  # one pass, whatever the number of classes
        if seen.get(y, 0) < per_class:
            seen[y] = seen.get(y, 0) + 1
            picked.append(i)
    picked.sort(key=lambda i: ds.labels[i])  # class by class, as before
    return picked[:MAX_SAMPLES]


def image_samples(ds: Dataset) -> list[tuple]:
    out = []
    for i in sample_indices(ds, SAMPLES_PER_CLASS):
        img = ds.load_image(i, draft=128)
        img.thumbnail((128, 128))
        out.append((img, ds.classes[ds.labels[i]]))
    return out


def text_samples(ds: Dataset) -> pd.DataFrame:
    rows = [(ds.classes[ds.labels[i]], _clip(ds.inputs[i], 220)) for i in sample_indices(ds, 2)]
    return pd.DataFrame(rows, columns=[t("col_class"), t("col_text")])


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def view_values(ds: Dataset | None) -> tuple:
    """The chart of counts, picture samples (images) and text samples (texts) for a dataset."""
    if ds is None:
        return None, None, None
    image = ds.task == "image"
    return plots.class_counts(ds.report()), image_samples(ds) if image else None, None if image else text_samples(ds)


def dataset_views(ds: Dataset | None) -> tuple:
    counts, pictures, texts = view_values(ds)
    return counts, gr.Gallery(value=pictures, visible=pictures is not None), \
        gr.Dataframe(value=texts, visible=texts is not None)


def build(page, ctx: AppContext) -> None:
    examples = example_paths(ctx.settings.examples_dir)
    labels = {}
    for name, path in examples.items():
        ds = ctx.store.get(path)
        labels[name] = f"{name} ({len(ds.classes)} classes of {t(f'kind_{ds.task}')})"
    default = DEFAULT_EXAMPLE if DEFAULT_EXAMPLE in examples else next(iter(examples), None)
    page.examples = examples
    start = ctx.store.get(examples[default]) if default else None
    page.initial_dataset = (dataset_state(start, examples[default], "example", _example_cli_path(examples[default]))
                            if start else None)
    gr.Markdown(f"## {t('step_data')}")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            page.example = gr.Radio([(labels[n], n) for n in examples], value=default, label=t("example_label"),
                                    elem_id="example-picker")
            page.upload = gr.File(label=t("upload_label"), file_types=[".zip", ".csv", ".tsv"], type="filepath",
                                  elem_id="dataset-upload", height=140)
            page.server_data = gr.Dropdown(server_datasets(), value=None, label=t("server_label"), allow_custom_value=True,
                                           elem_id="server-data", visible=bool(data_dirs()))  # TLGUI_DATA_DIRS
            gr.Markdown(t("data_help"), elem_classes=["tl-help"])
        with gr.Column(scale=3):
            page.summary = gr.Markdown(summary_markdown(start, "example") if start else t("reading"),
                                       elem_id="dataset-summary", container=True, label=t("summary_label"))
            counts, pictures, texts = view_values(start)
            page.counts = gr.Plot(counts, label=t("counts_label"), elem_id="class-counts", show_label=False)
    page.gallery = gr.Gallery(pictures, label=t("samples_label"), columns=10, height=250, object_fit="contain",
                              elem_id="samples", visible=pictures is not None, allow_preview=True)
    page.text_samples = gr.Dataframe(texts, label=t("text_samples_label"), interactive=False, wrap=True,
                                     visible=texts is not None, elem_id="text-samples", max_height=260)
    page.dataset_state = gr.State(page.initial_dataset)


def _example_cli_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def take_upload(file: str, root: Path) -> Path:
    """Move an upload out of Gradio's served upload folder into the app's own, beside the runs
    (never served), where a run resumed after a restart still finds it; retention removes it
    once no run needs it."""
    path = Path(file)
    target = root / retention.UPLOADS / secrets.token_hex(8) / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
    try:
        path.parent.rmdir()  # Gradio's folder for it
    except OSError:
        pass
    return target


def wire(page, ctx: AppContext, then_refresh) -> None:
    """`then_refresh(event)` chains the model step's refresh after a dataset load."""

    def load_example(name: str | None) -> dict:
        try:
            path = page.examples[name]
            ds = ctx.store.get(path)
        except Exception as e:
            return {page.dataset_state: None, page.summary: error_line(e)}
        return {page.dataset_state: dataset_state(ds, path, "example", _example_cli_path(path)),
                page.summary: summary_markdown(ds, "example"), page.upload: None}

    def load_upload(file: str | None) -> dict:
        """Read an uploaded .zip/.csv/.tsv (a zip is read in place, never extracted)."""
        if not file:
            return {page.summary: gr.skip()}
        path = None
        try:
            path = take_upload(file, ctx.settings.runs_root)
            ds = ctx.store.get(path)
        except Exception as e:
            if path is not None:  # refused: nothing of it is kept
                shutil.rmtree(path.parent, ignore_errors=True)
            return {page.dataset_state: None, page.summary: error_line(e)}
        return {page.dataset_state: dataset_state(ds, path, "upload", path.name),
                page.summary: summary_markdown(ds, "upload")}

    def load_server(path: str | None) -> dict:
        """Read a dataset in a folder the operator allows (TLGUI_DATA_DIRS), in place."""
        if not path:
            return {page.summary: gr.skip()}
        try:
            resolved = check_allowed(path)
            ds = ctx.store.get(resolved)
        except Exception as e:
            return {page.dataset_state: None, page.summary: error_line(e)}
        return {page.dataset_state: dataset_state(ds, resolved, "server", str(resolved)),
                page.summary: summary_markdown(ds, "server")}

    def show_views(state: dict | None) -> tuple:
        try:
            return dataset_views(ctx.store.get(state["path"]) if state else None)
        except Exception:  # the summary already says what went wrong
            return dataset_views(None)

    views = dict(fn=show_views, inputs=[page.dataset_state], outputs=[page.counts, page.gallery, page.text_samples],
                 api_visibility="private", show_progress="hidden")
    page.after_load = lambda event: then_refresh(event.then(**views))  # for other steps that change the dataset
    ev = page.example.input(load_example, [page.example], [page.dataset_state, page.summary, page.upload],
                            api_visibility="private")
    then_refresh(ev.then(**views))
    ev = page.upload.upload(load_upload, [page.upload], [page.dataset_state, page.summary], api_name="load_dataset")
    then_refresh(ev.then(**views))
    ev = page.server_data.input(load_server, [page.server_data], [page.dataset_state, page.summary],
                                api_name="load_server_dataset")
    then_refresh(ev.then(**views))
    ev = page.upload.clear(load_example, [page.example], [page.dataset_state, page.summary, page.upload],
                           api_visibility="private")
    then_refresh(ev.then(**views))
