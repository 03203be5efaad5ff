"""What a run leaves: the `model.zip` bundle and its loader, exports and their checks, the model
card, metrics and evaluation, TensorBoard and MLflow logs, publishing to the Hugging Face Hub."""

from .bundle import LoadedModel, load_bundle
from .evaluate import evaluate

__all__ = ["LoadedModel", "evaluate", "load_bundle"]
