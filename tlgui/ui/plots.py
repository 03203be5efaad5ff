"""Plotly figures for the page: class counts, learning curves, confusion matrix, comparisons."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .text import t

TRAIN_COLOR, VAL_COLOR = "#6366f1", "#f97316"
PALETTE = ["#6366f1", "#f97316", "#10b981", "#ef4444", "#0ea5e9", "#a855f7", "#eab308", "#64748b"]


def _style(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(template="plotly_white", height=height, margin=dict(l=50, r=20, t=70, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="center", x=0.5),
                      font=dict(size=12))
    return fig


def class_counts(report: dict) -> go.Figure:
    names = [c["name"] for c in report["classes"]]
    counts = [c["count"] for c in report["classes"]]
    fig = go.Figure(go.Bar(x=names, y=counts, marker_color=TRAIN_COLOR, text=counts, textposition="outside",
                           cliponaxis=False))
    fig.update_yaxes(title_text=t("plot_count"))
    return _style(fig, 260)


def curves(history: list[dict], metrics: tuple[str, ...] = ("loss", "accuracy")) -> go.Figure:
    """Loss and accuracy (or just `metrics`) by epoch, training and validation, side by side."""
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[t(f"plot_{m}") for m in metrics],
                        horizontal_spacing=0.12)
    epochs = [h["epoch"] for h in history]
    for col, metric in enumerate(metrics, start=1):
        for split, color, name in (("train", TRAIN_COLOR, t("plot_train")), ("val", VAL_COLOR, t("plot_val"))):
            ys = [h.get(f"{split}_{metric}") for h in history]
            if any(y is not None for y in ys):
                fig.add_trace(go.Scatter(x=epochs, y=ys, mode="lines+markers", name=name, legendgroup=split,
                                         showlegend=col == 1, line=dict(color=color, width=2)), row=1, col=col)
    fitted = any(h.get("fit") for h in history)  # a converged fit: points are L-BFGS steps, not epochs
    fig.update_xaxes(title_text=t("plot_fit_step" if fitted else "plot_epoch"),
                     dtick=1 if len(epochs) <= 20 and not fitted else None, rangemode="tozero")
    if "accuracy" in metrics:
        fig.update_yaxes(range=[0, 1.02], row=1, col=metrics.index("accuracy") + 1)
    if not history:
        fig.add_annotation(text=t("plot_waiting"), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return _style(fig, 370)


def confusion(metrics: dict) -> go.Figure:
    classes, matrix = metrics["classes"], metrics["confusion"]
    fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", texttemplate="%{z}",
                               hovertemplate=f"{t('plot_true')} %{{y}}<br>{t('plot_predicted')} %{{x}}<br>%{{z}}<extra></extra>",
                               showscale=False))
    fig.update_xaxes(title_text=t("plot_predicted"), side="bottom", tickangle=-35)
    fig.update_yaxes(title_text=t("plot_true"), autorange="reversed")
    size = max(320, min(640, 60 + 34 * len(classes)))
    return _style(fig, size)


def fusion_weights(weights: dict[str, float]) -> go.Figure:
    names, values = list(weights), list(weights.values())
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=PALETTE[: len(names)],
                           text=[f"{v:.0%}" for v in values], textposition="auto"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    return _style(fig, 80 + 40 * len(names))


def compare(series: list[tuple[str, list[dict]]]) -> go.Figure:
    """Validation curves of several runs overlaid: (label, history) pairs."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(t("plot_loss"), t("plot_accuracy")), horizontal_spacing=0.12)
    for k, (label, history) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        epochs = [h["epoch"] for h in history]
        for col, metric in ((1, "val_loss"), (2, "val_accuracy")):
            fig.add_trace(go.Scatter(x=epochs, y=[h.get(metric) for h in history], mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=col == 1, line=dict(color=color, width=2)),
                          row=1, col=col)
    fig.update_xaxes(title_text=t("plot_epoch"))
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    return _style(fig, 360)


def lr_sweep(lrs: list[float], losses: list[float], suggested: float) -> go.Figure:
    """The learning-rate finder's loss by rate (log axis), the suggestion marked."""
    fig = go.Figure(go.Scatter(x=lrs, y=losses, mode="lines", line=dict(color=TRAIN_COLOR, width=2), name=t("plot_loss")))
    fig.add_vline(x=suggested, line=dict(color=VAL_COLOR, dash="dash"))
    fig.update_xaxes(type="log", title_text=t("plot_lr"))
    fig.update_yaxes(title_text=t("plot_loss"))
    return _style(fig, 300)
