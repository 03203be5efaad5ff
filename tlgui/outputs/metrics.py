"""Classification metrics in the shape the CLI, the bundle's card and the app all use."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = s > 0
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f[present].mean()) if present.any() else 0.0,
        "count": int(len(y_true)),
        "per_class": [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def format_metrics(m: dict) -> str:
    lines = [f"accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  ({m['count']} examples)",
             f"{'class':<24} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for row in m["per_class"]:
        lines.append(f"{row['class'][:24]:<24} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>8}")
    return "\n".join(lines)
