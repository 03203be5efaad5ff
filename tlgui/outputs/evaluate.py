"""Scoring a saved model on a labelled dataset it may never have seen."""

from __future__ import annotations

import numpy as np

from ..data.datasets import Dataset
from ..errors import TlguiError
from .bundle import LoadedModel
from .metrics import classification_metrics


def evaluate(model: LoadedModel, dataset: Dataset) -> dict:
    """Metrics over every example whose class the model knows; the others are counted in `warnings`."""
    if dataset.task != model.task:
        raise TlguiError(f"this is a {model.task} model but the dataset holds {dataset.task}s")
    index = {c: i for i, c in enumerate(model.classes)}
    known = [i for i in range(len(dataset)) if dataset.classes[dataset.labels[i]] in index]
    unknown = sorted({c for c in dataset.classes if c not in index})
    if not known:
        raise TlguiError(f"none of the dataset's classes ({', '.join(dataset.classes[:5])}) is a class of the model "
                         f"({', '.join(model.classes[:5])}): check the class names")
    if dataset.task == "image":
        inputs = [dataset.load_image(i) for i in known]
    else:
        inputs = [dataset.inputs[i] for i in known]
    pred = model.probabilities(inputs).argmax(1)
    truth = np.array([index[dataset.classes[dataset.labels[i]]] for i in known])
    m = classification_metrics(truth, pred, model.classes)
    m["warnings"] = [f"{len(dataset) - len(known)} examples of classes the model does not know were left out: "
                     f"{', '.join(unknown)}"] if unknown else []
    return m
