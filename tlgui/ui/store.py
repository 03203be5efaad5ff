"""Datasets read once and kept while pages use them, keyed by their file."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ..datasets import Dataset, read_dataset
from ..errors import TlguiError

KEEP = 8  # datasets kept in memory; an evicted one is simply read again


class DatasetStore:
    def __init__(self) -> None:
        self._cache: OrderedDict[tuple, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> Dataset:
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            raise TlguiError(f"the dataset file {path.name} is gone: upload it again") from None
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        ds = read_dataset(path)
        with self._lock:
            self._cache[key] = ds
            while len(self._cache) > KEEP:
                self._cache.popitem(last=False)
        return ds
