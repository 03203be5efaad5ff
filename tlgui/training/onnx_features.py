"""Frozen features through onnxruntime on a CPU: 1.6-4x PyTorch's eager speed for the same network.

While a run computes frozen features, each backbone's `core` (the network from tensors to
features, `nets/backbones/base.py`) is exported to ONNX once per weights and input size, kept in
`~/.cache/tlgui/onnx/` (TLGUI_ONNX_DIR moves it; the KEEP most recently used stay) for the next
run, and run by an onnxruntime session with the run's threads. The first inputs of its first
batch also go through PyTorch: where the two differ beyond TOLERANCE, or the export or the
session fails, that backbone stays with PyTorch for the run and one note says so. A GPU keeps
PyTorch (with mixed precision). TLGUI_ONNX=0 turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from .featcache import weights_digest

log = logging.getLogger("tlgui")
_exporting = threading.Lock()
FORMAT = 1  # bump when the exported graph changes for the same weights
KEEP = 8  # exported files kept; the least recently used go first
# an export costs about as much as PyTorch embedding this many inputs (1-5 s): fewer use a cached file only
EXPORT_FROM = 200
TOLERANCE = 1e-3
CHECKED = 4  # inputs of the first batch whose features PyTorch computes too  # largest difference from PyTorch's features allowed, relative to their largest size


def wanted(device: torch.device) -> bool:
    return device.type == "cpu" and os.environ.get("TLGUI_ONNX", "1") != "0"


def _key(backbone) -> str:
    import onnxruntime

    head = {"format": FORMAT, "class": type(backbone).__qualname__, "exporter": backbone.exporter,
            "size": getattr(backbone, "input_size", None), "torch": torch.__version__, "ort": onnxruntime.__version__,
            "example": [tuple(t.shape) for t in backbone.core_example()[0]]}
    h = hashlib.blake2b(json.dumps(head, sort_keys=True).encode(), digest_size=16)
    h.update(weights_digest(backbone).encode())
    return h.hexdigest()


class _Core(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, *tensors):
        return self.backbone.core(*tensors)


def export(backbone) -> bytes:
    """`backbone.core` as ONNX bytes: its batch (and token) axes free, its weights inside."""
    args, axes = backbone.core_example()
    names = [f"input{k}" for k in range(len(args))]
    module = _Core(backbone).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' advice is for the library's authors
        if backbone.exporter == "dynamo":
            dims: dict[str, torch.export.Dim] = {}
            shapes = tuple({d: dims.setdefault(n, torch.export.Dim(n, min=1)) for d, n in a.items()} for a in axes)
            program = torch.onnx.export(module, args, input_names=names, output_names=["features"],
                                        dynamic_shapes=(shapes,), dynamo=True, verbose=False)  # one *args
            return program.model_proto.SerializeToString()
        buf = io.BytesIO()
        torch.onnx.export(module, args, buf, input_names=names, output_names=["features"], opset_version=17,
                          dynamic_axes={**dict(zip(names, axes)), "features": {0: "batch"}}, dynamo=False)
        return buf.getvalue()


def _folder() -> Path:
    return Path(os.environ.get("TLGUI_ONNX_DIR") or Path.home() / ".cache" / "tlgui" / "onnx").expanduser()


def onnx_bytes(backbone, export_new: bool = True) -> bytes | None:
    """The backbone's core as ONNX: read from the cache where an earlier run exported it, else
    exported here (None where `export_new` is false)."""
    folder = _folder()
    path = folder / f"{_key(backbone)}.onnx"
    data = _read(path)
    if data is not None or not export_new:
        return data
    with _exporting:  # one export at a time: a run may ask for the file the server's warm-up is writing
        data = _read(path)
        if data is not None:
            return data
        data = export(backbone)
        _write(folder, path, data)
    return data


def _read(path: Path) -> bytes | None:
    try:
        os.utime(path)
        return path.read_bytes()
    except OSError:
        return None


def _write(folder: Path, path: Path, data: bytes) -> None:
    with contextlib.suppress(OSError):  # a read-only or full disk: the run goes on, uncached
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tlgui-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        _keep_newest(folder)


def warm(names: list[str]) -> None:
    """Export these backbones (at their own input sizes) where no file is kept yet. A server does it
    in the background as it starts, so that its first run finds them; a failure waits for that run."""
    from ..nets.backbones import build_backbone
    from .device import pick_device

    if not wanted(pick_device("auto")):  # a GPU server's runs keep PyTorch: nothing to export
        return
    for name in names:
        try:
            backbone = build_backbone(name, True).eval()
            if backbone.core_example() is not None:
                onnx_bytes(backbone)
        except Exception:  # noqa: BLE001 - the run exports (or falls back) and says why
            log.debug("no ONNX warm-up for %s", name, exc_info=True)


def _keep_newest(folder: Path) -> None:
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[KEEP:]:
        old.unlink(missing_ok=True)


class Runtime:
    """A backbone's core in an onnxruntime session; the first batch is checked against PyTorch."""

    def __init__(self, backbone, data: bytes, threads: int, note):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # threads that spin between calls take the cores the decoding threads need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.backbone, self.note, self.max_diff, self.kept = backbone, note, None, True

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().contiguous().numpy() for n, t in zip(self.names, tensors)}
        out = torch.from_numpy(self.session.run(None, feeds)[0])
        if self.max_diff is None:
            self.max_diff, out = self._check(out, tensors)
        return out

    def _check(self, out: torch.Tensor, tensors) -> tuple[float, torch.Tensor]:
        """The first inputs' features from PyTorch too (a few: PyTorch is the slow one); all of the
        batch's from PyTorch where they differ."""
        reference = self.backbone.core(*(t[:CHECKED] for t in tensors)).float()
        same = out.shape[1:] == reference.shape[1:]
        diff = float((out[:CHECKED] - reference).abs().max()) if same else float("inf")
        if diff <= TOLERANCE * max(float(reference.abs().max()), 1.0):
            return diff, out
        self.backbone.runtime, self.kept = None, False
        self.note(f"{self.backbone.name}: onnxruntime's features differ from PyTorch's (by {diff:.2g}); "
                  "PyTorch computes them")
        return diff, self.backbone.core(*tensors).float()

    def record(self) -> dict:
        return {"runtime": "onnxruntime" if self.kept else "pytorch", "max_abs_diff": self.max_diff}


@contextlib.contextmanager
def onnxruntime_features(backbones, device: torch.device, count: int, note, record: dict):
    """Within the block, frozen features of `count` inputs through `backbones` on a CPU come from
    onnxruntime where the export works; `record` gets, by backbone, which runtime computed them and
    the check's difference."""
    runtimes: dict[str, Runtime] = {}
    if wanted(device):
        for b in backbones:
            if b.core_example() is None:
                continue
            try:
                data = onnx_bytes(b, export_new=count >= EXPORT_FROM)
                if data is not None:
                    b.runtime = runtimes[b.name] = Runtime(b, data, torch.get_num_threads(), note)
            except Exception as e:  # noqa: BLE001 - an architecture the exporter or the runtime cannot take
                note(f"{b.name}: no ONNX export ({type(e).__name__}); PyTorch computes its features")
                record[b.name] = {"runtime": "pytorch", "max_abs_diff": None}
    try:
        yield
    finally:
        for b in backbones:
            b.runtime = None
        record.update({name: r.record() for name, r in runtimes.items() if r.max_diff is not None})
