"""Training: the Trainer and its three parts (inputs, the fit of a frozen head or the epochs of
fine-tuning, the finish), LP-FT and `auto`, time estimates, the device and torchrun, the feature
cache, and the runs built on them (learning-rate sweep, pretraining, label audit)."""

from .finish import RunResult
from .train import Trainer, train

__all__ = ["RunResult", "Trainer", "train"]
