"""Pictures for the model at any data set size: held in memory, in a decode-once file on disk, or
decoded batch by batch (in DataLoader worker processes where there are cores to spare).

A decoded 224 px picture is 150 KB, so holding a whole split in RAM stops at a few ten thousand
pictures. Small sets keep today's decode-once tensor (fastest); larger ones are decoded once into
a flat uint8 file under the run folder and read back per batch, or, where the disk is short,
decoded again every epoch. Every store answers `take(idx) -> uint8 (B, 3, S, S)`; a streamed one
also takes `plan(batches)`, the batches to come, and decodes them ahead.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .batches import decode_images
from .datasets import Dataset
from .images import square_tensor_bytes

MEMORY_MB = 1024  # TLGUI_DECODE_MB: decoded pictures a run may hold in RAM
KINDS = ("memory", "disk", "stream")  # TLGUI_PICTURES forces one
DISK_BLOCK = 256  # pictures decoded and written at a time while building the file
PREFETCH = 4  # batches each DataLoader worker decodes ahead


def loader_workers(device: torch.device) -> int:
    """Decoding processes beside the training one. On a CPU the forward pass already uses every
    core and decoding runs in threads of the main process; a GPU leaves the cores idle."""
    raw = os.environ.get("TLGUI_LOADER_WORKERS", "").strip()
    if raw.isdigit():
        return int(raw)
    return max(0, min(8, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 0


def _budget() -> float:
    return float(os.environ.get("TLGUI_DECODE_MB", MEMORY_MB) or MEMORY_MB) * 1024**2


def choose_kind(n: int, size: int, folder: Path) -> str:
    """memory where the decoded pictures fit the budget, else a file on disk where it has room
    (twice the file: the run needs space besides), else decoding every epoch."""
    forced = os.environ.get("TLGUI_PICTURES", "").strip()
    if forced in KINDS:
        return forced
    need = n * size * size * 3
    if need <= _budget():
        return "memory"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    return "disk" if free > 2 * need else "stream"


def pictures(ds: Dataset, indices: np.ndarray, size: int, kind: str, folder: Path, device: torch.device,
             progress=None):
    """The pictures `indices` of `ds` at `size`, as `kind` (memory, disk or stream) says."""
    if kind == "memory":
        return decode_images(ds, indices, size, progress)
    if kind == "disk":
        return DiskPictures.build(ds, indices, size, folder, progress)
    return StreamedPictures(ds, indices, size, loader_workers(device), device.type == "cuda")


class PictureSet(torch.utils.data.Dataset):
    """Picture k of `indices`, decoded in whichever process asks (a DataLoader worker)."""

    def __init__(self, ds: Dataset, indices: np.ndarray, size: int):
        self.ds, self.indices, self.size = ds, np.asarray(indices), size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        try:
            arr = square_tensor_bytes(self.ds.load_image(int(self.indices[k]), draft=self.size), self.size)
        except Exception:  # a file changed or vanished since it was checked: a grey picture, not a crash
            arr = np.full((self.size, self.size, 3), 128, dtype=np.uint8)
        return torch.from_numpy(arr).permute(2, 0, 1)


class StreamedPictures:
    """Pictures decoded when a batch is needed: nothing but the batches in flight stays in memory."""

    def __init__(self, ds: Dataset, indices: np.ndarray, size: int, workers: int, pin: bool):
        self.set, self.workers, self.pin = PictureSet(ds, indices, size), workers, pin
        self._ahead = None  # iterator over the planned batches' pictures
        self._current: tuple[torch.Tensor, torch.Tensor] | None = None  # (idx, pixels) last handed out

    def __len__(self) -> int:
        return len(self.set)

    def plan(self, batches: list[torch.Tensor]) -> None:
        """The batches `take` will be asked for next, in order: workers (or threads) decode them ahead."""
        if not self.workers:
            self._ahead = _decoded_ahead(self.set, batches)
            return
        loader = torch.utils.data.DataLoader(
            self.set, batch_sampler=[b.tolist() for b in batches], num_workers=self.workers,
            pin_memory=self.pin, prefetch_factor=PREFETCH, persistent_workers=False)
        self._ahead = zip(batches, iter(loader))

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        current = self._current
        if current is not None and _within(idx, current[0]):  # a piece of the batch at hand (out of GPU memory)
            pos = {int(v): k for k, v in enumerate(current[0].tolist())}
            return current[1][[pos[int(v)] for v in idx.tolist()]]
        if self._ahead is not None:
            for planned, pixels in self._ahead:
                if torch.equal(planned, idx):
                    self._current = (idx, pixels)
                    return pixels
                break  # the plan was left: decode here from now on
            self._ahead = None
        pixels = decode_images(self.set.ds, self.set.indices[idx.numpy()], self.set.size)
        self._current = (idx, pixels)
        return pixels


def _decoded_ahead(pictures: PictureSet, batches: list[torch.Tensor]):
    """(batch, pixels) in order, each batch decoded in a thread of this process while the ones
    before it are used: the model's forward pass and the decoding overlap (both release the GIL)."""
    pool = ThreadPoolExecutor(max_workers=1)

    def submit(idx: torch.Tensor):
        return idx, pool.submit(decode_images, pictures.ds, pictures.indices[idx.numpy()], pictures.size)

    todo = iter(batches)
    pending = deque(submit(idx) for idx in itertools.islice(todo, PREFETCH))
    try:
        while pending:
            idx, future = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(submit(nxt))
            yield idx, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _within(part: torch.Tensor, whole: torch.Tensor) -> bool:
    return len(part) < len(whole) and bool(torch.isin(part, whole).all())


class DiskPictures:
    """Pictures decoded once into a flat uint8 file (N x S x S x 3) and read back per batch with
    `os.pread`: the page cache keeps hot rows fast, and unlike a memory map the rows read are not
    counted as this process's memory."""

    def __init__(self, path: Path, n: int, size: int):
        self.path, self.n, self.size = Path(path), n, size
        self.row = size * size * 3
        self._fd: int | None = None
        self._pid = -1

    @classmethod
    def build(cls, ds: Dataset, indices: np.ndarray, size: int, folder: Path, progress=None) -> DiskPictures:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pictures-{size}px-{os.getpid()}-{id(indices):x}.u8"
        with open(path, "wb") as f:
            for start in range(0, len(indices), DISK_BLOCK):
                block = decode_images(ds, indices[start:start + DISK_BLOCK], size)
                f.write(block.permute(0, 2, 3, 1).contiguous().numpy().tobytes())
                if progress:
                    progress(min(start + DISK_BLOCK, len(indices)), len(indices))
        return cls(path, len(indices), size)

    def __len__(self) -> int:
        return self.n

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        fd, out = self._handle(), np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        rows, where = out.reshape(len(idx), self.row), idx.tolist()
        for k in sorted(range(len(where)), key=where.__getitem__):  # in file order; straight into place
            os.preadv(fd, [rows[k]], where[k] * self.row)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def close(self) -> None:
        """Close and delete the file: it is the run's scratch, never a result."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
        self.path.unlink(missing_ok=True)


STORES = (StreamedPictures, DiskPictures)


def close_all(*stores) -> None:
    for s in stores:
        if isinstance(s, DiskPictures):
            s.close()


def memory_mb() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


class Throughput:
    """Pictures (or rows) per second, seconds left and memory, for progress events of long work."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.start_done, self.t0 = total, done, time.perf_counter()

    def update(self, done: int) -> dict:
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else None
        return {"rate": round(rate, 2), "eta": None if left is None else round(left, 1), "memory_mb": round(memory_mb())}
