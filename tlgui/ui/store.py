"""Datasets read once and kept while pages use them, keyed by their file."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ..data.datasets import Dataset, read_dataset
from ..errors import TlguiError

KEEP = 16  # datasets kept in memory; an evicted one is read again (an upload removed once read: uploaded again)


class DatasetStore:
    def __init__(self) -> None:
        self._cache: OrderedDict[tuple, Dataset] = OrderedDict()
        self._by_path: dict[str, Dataset] = {}  # the latest read of each path, also once its file is removed
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> Dataset:
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            with self._lock:
                kept = self._by_path.get(str(path))
            if kept is not None:  # an upload removed once read: its dataset (and open zip handle) stays
                return kept
            raise TlguiError(f"the dataset file {path.name} is gone: upload it again") from None
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        ds = read_dataset(path)
        with self._lock:
            self._cache[key] = ds
            self._by_path[str(path)] = ds
            while len(self._cache) > KEEP:
                (old, *_), gone = self._cache.popitem(last=False)
                if self._by_path.get(old) is gone:
                    del self._by_path[old]
        return ds
