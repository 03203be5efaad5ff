"""The model card's Hugging Face parts: the metadata block it starts with (library, tags, data
set, metrics in the model-index format, as `huggingface_hub.ModelCard` reads them), and the
table of exported files with how closely each matches the model."""

from __future__ import annotations

import re

PIPELINES = {"image": "image-classification", "text": "text-classification"}


def _slug(text: str) -> str:
    """A name the Hub accepts as a data set or model name: letters, digits, `-`, `_`, `.`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "dataset"


def hub_metadata(meta: dict, metrics: dict) -> list[str]:
    """The card's first lines: YAML between `---` lines."""
    from huggingface_hub import EvalResult, ModelCardData

    task = PIPELINES[meta["task"]]
    dataset = _slug(meta["dataset"]["name"])
    backbones = [_slug(b["name"]) for b in meta["backbones"]]
    results = []
    if metrics.get("per_class"):
        common = dict(task_type=task, dataset_type=dataset, dataset_name=dataset, dataset_split="validation")
        results = [EvalResult(metric_type="accuracy", metric_value=round(float(metrics["accuracy"]), 4),
                              metric_name="Validation accuracy", **common),
                   EvalResult(metric_type="f1", metric_value=round(float(metrics["macro_f1"]), 4),
                              metric_name="Validation macro F1", metric_args={"average": "macro"}, **common)]
    data = ModelCardData(
        library_name="tlgui", pipeline_tag=task, datasets=[dataset], metrics=["accuracy", "f1"],
        tags=["tlgui", task, "transfer-learning", *backbones, *(["onnx"] if any("onnx" in f for f in meta.get("exports", {}))
                                                                  else [])],
        model_name=f"tlgui-{meta['task']}-classifier-{dataset}", eval_results=results or None)
    return ["---", data.to_yaml(), "---", ""]


def exports_table(meta: dict) -> list[str]:
    """How each exported file was checked against the model, for the card."""
    exports = meta.get("exports") or {}
    if not exports:
        return []
    lines = ["## Exported files", "",
             "Each file was run beside the PyTorch model on the inputs named below when it was saved.", "",
             "| file | checked on | top-1 agreement | largest probability difference |", "|---|---|---|---|"]
    for entry in exports.values():
        if "agreement" in entry:
            lines.append(f"| `{entry['file']}` | {entry.get('checked', '?')} {entry.get('checked_on', '')} | "
                         f"{entry['agreement']:.2%} | {entry['max_abs_diff']:.2g} |")
    int8 = exports.get("onnx-int8")
    if int8 and "size_ratio" in int8:
        lines += ["", f"`{int8['file']}` ({int8['quantization']}) is {int8['size_bytes'] / 1e6:.1f} MB against "
                      f"{int8['fp32_size_bytes'] / 1e6:.1f} MB for float32 ({int8['size_ratio']:.2f}x) and ran at "
                      f"{int8['ms_per_input']:.2f} ms per input against {int8['fp32_ms_per_input']:.2f} ms "
                      f"({int8['speedup']:.2f}x as fast) when it was checked."]
    return lines + [""]
