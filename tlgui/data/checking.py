"""Checking every picture of a data set: at once for small sets, in the background for big ones.

Decoding and hashing 100,000 pictures takes minutes; counting them takes a second. A big set's
report therefore comes from its file list and a sample of decoded pictures, while a thread checks
every file. Training (and `inspect`) waits for that check, then drops the files that failed and
reports them with the others skipped.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import TlguiError
from .images import BadImage, open_rgb

QUICK_FROM = 5000  # TLGUI_QUICK_FROM: data sets with more pictures than this are checked in the background
SAMPLE = 200  # pictures decoded before the report, so that a folder of junk is refused at once
THREADS = 4


def check_file(source, name: str, budget=None) -> tuple[str | None, str | None]:
    """(content digest, None) for a picture that decodes; (None, the reason) for one that does not.
    `budget` (a limits.ReadBudget) counts the pixels; past it the whole read ends."""
    try:
        if budget is not None:
            budget.check()
        data = source.read(name)
        open_rgb(data, draft=64, budget=budget)
        return hashlib.blake2b(data, digest_size=12).hexdigest(), None
    except TlguiError:
        raise  # a limit of the whole dataset: the read ends here
    except BadImage as e:
        return None, str(e)
    except Exception as e:  # a file that vanished, a damaged zip member: skip it, never crash the read
        return None, f"unreadable file ({type(e).__name__})"


def quick_from() -> int:
    raw = os.environ.get("TLGUI_QUICK_FROM", "").strip()
    return int(raw) if raw.isdigit() else QUICK_FROM


def sample_check(source, entries: list, skipped: list) -> list:
    """Decode a seeded sample; drop the failures from `entries` (into `skipped`); refuse junk."""
    pick = random.Random(0).sample(range(len(entries)), min(SAMPLE, len(entries)))
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = dict(zip(pick, pool.map(lambda k: check_file(source, entries[k][0]), pick)))
    bad = {k for k, (_, reason) in results.items() if reason}
    skipped += [(entries[k][0], results[k][1]) for k in sorted(bad)]
    if len(bad) == len(pick):
        raise TlguiError("none of the sampled images could be read: check that the files are JPEG or PNG pictures")
    return [e for k, e in enumerate(entries) if k not in bad]


class BackgroundCheck:
    """Decodes and hashes every file of a data set in a thread; `apply` waits and updates the set."""

    def __init__(self, source, names: list[str]):
        self.total, self.done = len(names), 0
        self.results: list[tuple[str | None, str | None]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(source, names), daemon=True, name="tlgui-check")
        self._thread.start()

    def _run(self, source, names: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            for result in pool.map(lambda n: check_file(source, n), names):
                self.results.append(result)
                self.done += 1

    def note(self) -> str:
        return (f"checking every file in the background ({self.done:,} of {self.total:,} so far): "
                "files that fail are skipped and reported when training starts")

    def apply(self, ds) -> None:
        """Wait for the check; keep only the files that decoded, with their content digests."""
        with self._lock:
            if ds.check is not self:
                return  # another thread applied it meanwhile
            self._thread.join()
            keep = [k for k, (_, reason) in enumerate(self.results) if not reason]
            ds.skipped += [(ds.inputs[k], reason) for k, (_, reason) in enumerate(self.results) if reason]
            if not keep:
                raise TlguiError("none of the images could be read: check that the files are JPEG or PNG pictures")
            ds.inputs = [ds.inputs[k] for k in keep]
            ds.labels = ds.labels[keep]
            ds.splits = [ds.splits[k] for k in keep]
            ds.folder_splits = [ds.folder_splits[k] for k in keep]
            ds.digests = [self.results[k][0] for k in keep]
            ds.check = None
