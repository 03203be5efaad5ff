"""Data: reading a labelled set (class folders, tables, texts; zips, folders, server folders), the
checks and limits on what one upload may cost, and decoding pictures into batches. Imports nothing
of the networks, the training or what a run leaves."""

from .datasets import Dataset, read_dataset

__all__ = ["Dataset", "read_dataset"]
