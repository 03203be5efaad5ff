"""A disk cache of frozen-backbone features, shared by every run on this machine.

A frozen backbone maps the same input to the same features every time, and computing them
is nearly all of a frozen run's cost. Entries are keyed by the backbone's identity (a hash
of its actual weights, its preprocessing, the size the pictures were decoded at and the
compute precision) and by each input's content hash, so a second run on the same data skips
the backbone, even with another split or a subset of the data.

Layout: `<root>/<backbone key>/<shard>.safetensors`. A shard holds the features of up to
SHARD_ROWS inputs; its metadata lists their digests and a checksum of the features.
Shards are written under a temporary name and renamed, so a reader never sees half a shard,
and two runs writing the same shard both succeed. A shard that fails to read or to match its
checksum is deleted, and its inputs are computed again. The cache is kept under
TLGUI_CACHE_MB megabytes (default 1024) by deleting the least recently used shards (by
modification time; a hit touches its shard). TLGUI_CACHE_DIR moves it (default
`~/.cache/tlgui/features`); TLGUI_CACHE_MB=0 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

FORMAT = 1  # bump when the meaning of stored features changes
_SHARD = re.compile(r"[0-9a-f]{24}\.safetensors")
_TMP = re.compile(r"\.tlgui-[^/]*\.tmp")
SHARD_ROWS = 256
STALE_TMP_S = 3600  # a temporary file this old belongs to a writer that died
DEFAULT_MB = 1024


def default_root() -> Path:
    return Path(os.environ.get("TLGUI_CACHE_DIR") or Path.home() / ".cache" / "tlgui" / "features").expanduser()


def default_limit_bytes() -> int:
    try:
        mb = float(os.environ.get("TLGUI_CACHE_MB", DEFAULT_MB))
    except ValueError:
        mb = DEFAULT_MB
    return int(max(mb, 0) * 1024 * 1024)


def backbone_key(backbone: torch.nn.Module, decode_size: int | None, precision: str, extra: dict | None = None) -> str:
    """What makes a backbone's features what they are: its recorded description (name,
    input size, mean, std), its actual weights and buffers (so a random initialisation, an
    encoder or an earlier bundle is told apart from the pretrained weights), the files it
    carries (a vocabulary), the size the pictures were decoded at, and the precision."""
    h = hashlib.blake2b(digest_size=16)
    describe = backbone.describe() if hasattr(backbone, "describe") else {}
    body = getattr(backbone, "body", None)
    head = {"format": FORMAT, "describe": describe, "class": type(backbone).__qualname__,
            "body": type(body).__qualname__ if body is not None else None, "decode_size": decode_size,
            "precision": precision, "torch": torch.__version__, "extra": extra or {}}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    h.update(weights_digest(backbone).encode())
    files = backbone.bundle_files() if hasattr(backbone, "bundle_files") else {}
    for name in sorted(files):
        h.update(name.encode())
        h.update(hashlib.blake2b(files[name], digest_size=16).digest())
    return h.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of a module's weights and buffers, names and shapes included."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def feature_key(model, backbone: torch.nn.Module, device: torch.device, amp_dtype, max_length: int) -> str:
    """The cache key of one backbone of a run's model, as the trainer computes its features."""
    from ..data.batches import decode_size

    extra = {"max_length": max_length} if getattr(backbone, "task", "image") == "text" else {}
    return backbone_key(backbone, decode_size(model), f"{device.type}:{amp_dtype or torch.float32}", extra)


def _checksum(feats: torch.Tensor) -> str:
    return hashlib.blake2b(feats.contiguous().view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()


class FeatureCache:
    def __init__(self, root: str | Path | None = None, max_bytes: int | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.max_bytes = default_limit_bytes() if max_bytes is None else int(max_bytes)

    @classmethod
    def from_env(cls) -> FeatureCache | None:
        """The machine's cache, or None where TLGUI_CACHE_MB=0 turns it off."""
        cache = cls()
        return cache if cache.max_bytes > 0 else None

    # -- reading -------------------------------------------------------------------------
    def _shards(self, key: str) -> list[Path]:
        folder = self.root / key
        try:
            return sorted(p for p in folder.glob("*.safetensors") if _SHARD.fullmatch(p.name))
        except OSError:
            return []

    @staticmethod
    def _digests_of(path: Path) -> list[str] | None:
        """A shard's digests from its header alone; None where the header is unreadable."""
        try:
            with open(path, "rb") as f:
                meta = _metadata(f.read(8), f.read)
        except OSError:
            return None
        if meta is None or meta.get("format") != str(FORMAT) or "digests" not in meta:
            return None
        return meta["digests"].split(",") if meta["digests"] else []

    def present(self, key: str, digests: list[str]) -> set[str]:
        """Which of `digests` have features stored (shard headers only: cheap, for estimates)."""
        want, have = set(digests), set()
        for path in self._shards(key):
            have.update(d for d in (self._digests_of(path) or ()) if d in want)
        return have

    def load(self, key: str, digests: list[str]) -> dict[str, torch.Tensor]:
        """Stored feature rows of `digests` (float32, CPU) by digest; absent ones are missing.
        A shard that is partial, corrupt or vanishes while being read is skipped (and deleted)."""
        want = set(digests)
        found: dict[str, torch.Tensor] = {}
        for path in self._shards(key):
            if want <= found.keys():
                break
            names = self._digests_of(path)
            if names is None:
                self._discard(path)
                continue
            if not any(d in want and d not in found for d in names):
                continue
            feats = self._read(path, names)
            if feats is None:
                continue
            for row, d in enumerate(names):
                if d in want:
                    found[d] = feats[row]
            _touch(path)
        return found

    def _read(self, path: Path, names: list[str]) -> torch.Tensor | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None  # evicted by another run meanwhile
        meta = _metadata(data[:8], lambda n: data[8 : 8 + n])
        try:
            feats = load_safetensors(data).get("features")
        except Exception:  # a partial or foreign file: safetensors raises several types
            feats = None
        ok = (meta is not None and names == (meta.get("digests") or "").split(",")
              and feats is not None and feats.dtype == torch.float32 and feats.ndim == 2 and len(feats) == len(names)
              and meta.get("checksum") == _checksum(feats))
        if not ok:
            self._discard(path)
            return None
        return feats

    # -- writing -------------------------------------------------------------------------
    def store(self, key: str, digests: list[str], feats: torch.Tensor) -> None:
        """Add the rows of `feats` (one per digest) in shards, then keep the cache in bounds.
        A full disk or a read-only folder leaves the run working, only uncached."""
        if self.max_bytes <= 0 or not len(digests):
            return
        feats = feats.detach().float().cpu()
        unique: dict[str, int] = {}
        for row, d in enumerate(digests):
            unique.setdefault(d, row)
        names, rows = list(unique), torch.tensor(list(unique.values()), dtype=torch.long)
        feats = feats[rows]
        folder = self.root / key
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for start in range(0, len(names), SHARD_ROWS):
                part, block = names[start : start + SHARD_ROWS], feats[start : start + SHARD_ROWS].contiguous()
                self._write_shard(folder, part, block)
        except OSError:
            return
        self.evict()

    @staticmethod
    def _write_shard(folder: Path, names: list[str], block: torch.Tensor) -> None:
        # the name follows the content: two runs writing the same rows replace each other harmlessly
        name = hashlib.blake2b(",".join(names).encode(), digest_size=12).hexdigest()
        meta = {"format": str(FORMAT), "digests": ",".join(names), "checksum": _checksum(block)}
        data = save_safetensors({"features": block}, metadata=meta)
        fd, tmp = tempfile.mkstemp(prefix=".tlgui-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, folder / f"{name}.safetensors")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- bounds --------------------------------------------------------------------------
    def entries(self) -> list[tuple[Path, int, float]]:
        """Every shard as (path, size, mtime); temporary files of dead writers are removed."""
        out = []
        now = time.time()
        for path in self.root.glob("*/*"):
            if not (_SHARD.fullmatch(path.name) or _TMP.fullmatch(path.name)):
                continue  # only this cache's own files: the root may be a folder the user shares
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_TMP_S:
                    self._discard(path)
            elif path.suffix == ".safetensors":
                out.append((path, st.st_size, st.st_mtime))
        return out

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> None:
        """Delete the least recently used shards until the cache fits its bound."""
        entries = sorted(self.entries(), key=lambda e: e[2])
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            self._discard(path)
            total -= size

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


def _metadata(prefix: bytes, read) -> dict | None:
    """The `__metadata__` of a safetensors header: 8 bytes of length, then JSON."""
    if len(prefix) != 8:
        return None
    n = int.from_bytes(prefix, "little")
    if not 2 <= n <= 64 * 1024 * 1024:
        return None
    try:
        header = json.loads(read(n))
    except (ValueError, UnicodeDecodeError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass
