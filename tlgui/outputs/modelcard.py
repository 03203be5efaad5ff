"""The model card, the bundle's `README.md`: the Hugging Face metadata it starts with (library, tags,
data set, metrics in the model-index format, as `huggingface_hub.ModelCard` reads them), how the
model was trained and scored, which recipe `auto` kept and why, and the table of exported files
with how closely each matches the model."""

from __future__ import annotations

import re

from ..events import format_seconds
from .export import usage

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
        model_name=f"tlgui-{meta['task']}-classifier-{dataset}", eval_results=results or None,
        base_model=[b["repo"] for b in meta["backbones"] if b.get("family") == "hub" and b.get("repo")] or None)
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


def model_card(meta: dict, metrics: dict) -> str:
    """`README.md` of the bundle: Hub metadata, classes, how it was trained, validation metrics, how to use it."""
    cfg = meta["config"]
    lines = [
        *hub_metadata(meta, metrics),
        f"# tlgui {meta['task']} classifier",
        "",
        f"Classes ({len(meta['classes'])}): {', '.join(meta['classes'])}",
        "",
        "## Training",
        f"- Backbones: {', '.join(b['name'] for b in meta['backbones'])}"
        + (f" fused by `{meta['fusion']}`" if len(meta["backbones"]) > 1 else ""),
        f"- Transfer: {meta['transfer']}",
        f"- Freeze: `{cfg['freeze']}`, epochs run: {meta['epochs_run']} of {cfg['epochs']}, batch size {cfg['batch_size']}, "
        f"learning rate {cfg['lr']}, optimizer {cfg['optimizer']}, seed {cfg['seed']}",
        f"- Data: {meta['dataset']['name']}, {meta['dataset']['used']} examples used, {meta['dataset']['skipped']} skipped",
    ]
    for c in meta["dataset"]["classes"]:
        lines.append(f"  - {c['name']}: {c['count']}")
    if metrics.get("per_class"):
        lines += ["", "## Validation metrics", "",
                  f"Accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} on {metrics['count']} examples.", "",
                  "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                  for r in metrics["per_class"]]
    lines += fit_lines(metrics)
    if metrics.get("fusion_weights"):
        lines += ["", "Learned fusion weights: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics["fusion_weights"].items())]
    lines += ["", "## How to use", "", "```bash", "python -m tlgui predict model.zip picture.jpg" if meta["task"] == "image"
              else 'python -m tlgui predict model.zip --text "some text"', "```", "", "```python",
              "from tlgui.outputs import load_bundle", "", "model = load_bundle('model.zip')",
              f"print(model.predict([{'picture.jpg' if meta['task'] == 'image' else 'some text'!r}], top_k=3))",
              "```", ""]
    return "\n".join(lines + exports_table(meta) + usage(meta))


def fit_lines(metrics: dict) -> list[str]:
    """The model card's lines on how the head was fitted and which recipe `auto` kept."""
    lines = []
    if metrics.get("fit_steps"):
        lines += ["", f"Head: fitted to convergence on standardised features in {metrics['fit_steps']} L-BFGS steps, "
                      f"C = {metrics['c']:g} chosen on validation"
                  + ("; then refitted on every labelled example." if metrics.get("refit_on_all") else ".")]
    if metrics.get("folds"):
        lines.append(f"{len(metrics['folds'])}-fold cross-validation accuracy {100 * metrics['folds_mean']:.1f}% "
                     f"± {100 * metrics['folds_std']:.1f} (folds: "
                     + ", ".join(f"{100 * a:.1f}%" for a in metrics["folds"]) + ").")
    if metrics.get("class_weights"):
        lines.append("Loss weighted by inverse class frequency: " + ", ".join(f"{w:.2f}" for w in metrics["class_weights"]))
    if metrics.get("recipe"):
        lines += ["", describe(metrics["recipe"]) + "."] + leaderboard_lines(metrics["recipe"])
    return lines


def leaderboard_lines(record: dict) -> list[str]:
    """The card's table of the candidates auto tried: each one's held-out accuracy and fit time."""
    rows = record.get("candidates") or []
    if not rows:
        return []
    lines = ["", f"| candidate | accuracy ({record['by']}) | fit (s) | kept |", "|---|---|---|---|"]
    return lines + [f"| {candidate_name(r)} | {100 * (r['accuracy'] or 0):.1f}% | {r['seconds']:.2f} | "
                    f"{'yes' if r.get('chosen') else ''} |" for r in rows]


def describe(record: dict) -> str:
    """One sentence: which backbones auto kept among those it tried, which recipe (probe or LP-FT),
    by how much, and what a larger budget would add."""
    parts = [_search_words(record)] if record.get("candidates") or record.get("left_out") else []
    if "lpft_ran" in record:
        parts.append(_lpft_words(record))
    return "auto: " + "; ".join(parts)


def candidate_name(row: dict) -> str:
    """A candidate of auto's leaderboard in words: its backbones, and how they are joined."""
    return " + ".join(row["backbones"]) + (f" ({row['fusion']})" if row.get("fusion") else "")


def _search_words(record: dict) -> str:
    best = next((r for r in record["candidates"] if r.get("chosen")), None)
    if best is None:  # the first candidate alone: the others' features would not fit
        best = record
        text = f"{candidate_name(record)} alone"
    else:
        text = (f"{candidate_name(best)} kept, {100 * (best['accuracy'] or 0):.1f}% by {record['by']}, the best of "
                f"{len(record['candidates'])} candidates")
    if len(best["backbones"]) > 1:
        alone = 100 * (record["best_single_accuracy"] or 0)
        text += f" (the best backbone alone, {record['best_single']}: {alone:.1f}%)"
    for gone in record.get("left_out") or []:
        cost = format_seconds(gone["seconds"])
        text += f"; {gone['backbone']} left out (its features: about {cost}, past a twelfth of the budget)"
    return text


def _lpft_words(record: dict) -> str:
    est = record.get("lpft_estimate_s")
    if not record["lpft_ran"]:
        if est is None:
            return "linear probe (fine-tuning could not be estimated)"
        left = record.get("budget_left_s")
        spent = record["budget_s"] - left if left is not None else 0.0
        had = f"the {format_seconds(left)} left of the " if left is not None else "the "
        return (f"linear probe; fine-tuning (LP-FT) would take about {format_seconds(est)}, over {had}"
                f"{format_seconds(record['budget_s'])} budget: a budget of {int(spent + est) + 1} s or more adds it")
    plan = record.get("lpft_plan") or {}
    cut = []
    if plan and plan["epochs"] < plan["of"]:
        cut.append(f"{plan['epochs']} of {plan['of']} epochs")
    if plan.get("image_size"):
        cut.append(f"at {plan['image_size']} px")
    tuned = "LP-FT" + (f" ({', '.join(cut)}, to fit the budget)" if cut else "")
    margin = 100 * (record["margin"] or 0.0)
    if record["chosen"] == "lp-ft":
        return f"{tuned} kept, {margin:+.1f} points of validation accuracy over the linear probe"
    if margin > 0:  # ahead, but within the validation set's noise
        return (f"linear probe kept, {tuned} scored {margin:+.1f} points on validation, within chance "
                f"(validation examples only LP-FT got right: {record.get('lpft_wins', 0)}, only the probe: "
                f"{record.get('probe_wins', 0)})")
    return f"linear probe kept, {tuned} scored {margin:+.1f} points on validation"
