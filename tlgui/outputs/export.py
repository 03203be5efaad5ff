"""Exports that run without tlgui: ONNX (float or int8) and TorchScript of an image classifier;
a text classifier's ONNX, with its tokenizer files, comes from `export_text`. Each is checked
against the model at save time (`export_check`).

An image export takes a float32 batch of RGB pictures in [0, 1], N x 3 x S x S (S the bundle's image
size, any N), and gives softmax probabilities in the bundle's class order. The backbones' own
resizing and normalisation are inside the graph, so a user needs only the class list.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..config import check_exports
from ..errors import TlguiError
from . import export_text
from .export_check import INT8_AGREEMENT, Probe, compare, int8_candidates, reference, run_onnx, run_torchscript

FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "torchscript": "model.torchscript.pt"}
INPUT, OUTPUT = "pixels", "probabilities"


def check_task(task: str, formats=("torchscript",)) -> None:
    if task != "image" and "torchscript" in formats:
        raise TlguiError("a text model cannot be exported to TorchScript: its tokenizer is not part of the "
                         "network's graph; export onnx, which comes with its tokenizer files")


class _Probabilities(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # the argument's name is the files' input name
        return self.model(pixels).softmax(1)


def export_all(model: nn.Module, formats: list[str], meta: dict, probe: Probe,
               warn: Callable[[str], None] | None = None) -> tuple[dict[str, bytes], dict[str, dict]]:
    """The files for `formats` and their entries in tlgui.json's `exports`, each checked against the
    model on `probe`. With `warn`, a format that fails is left out and warned about; else it raises."""
    check_exports(formats)
    check_task(model.task, formats)
    files, entries, shared = {}, {}, {}
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)  # else a TorchScript file's outputs require grad, and .numpy() on them fails
    model.eval()
    try:
        for fmt in formats:
            try:
                out, entries[fmt] = _export(model, fmt, meta, probe, shared)
                files.update(out)
            except TlguiError as e:
                if warn is None:
                    raise
                warn(f"{e}; the model was saved without it")
    finally:
        model.train(was_training)
        for p in trainable:
            p.requires_grad_(True)
    return files, entries


def _export(model: nn.Module, fmt: str, meta: dict, probe: Probe, shared: dict) -> tuple[dict[str, bytes], dict]:
    """One format: its files and entry. `shared` keeps the float ONNX and the model's own answers
    for the next format of the same save."""
    classes, text = meta["classes"], model.task == "text"
    size = None if text else meta["preprocessing"]["image_size"]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation and tracer notices are not the user's concern
            if "expected" not in shared:
                shared["expected"] = reference(model, probe)
            if fmt == "torchscript":
                data = _torchscript(_Probabilities(model).eval(), _example(size))
                record = compare(fmt, shared["expected"], run_torchscript(data, probe), probe)
                return {FILES[fmt]: data}, {**describe(fmt, size, classes), **record}
            if "onnx" not in shared:
                shared["onnx"] = export_text.export_onnx(model, classes) if text else \
                    (_onnx(_Probabilities(model).eval(), _example(size), classes), {})
            fp32, tokenizer_files = shared["onnx"]
            tokenizers = [f.decode() for f in tokenizer_files.values()] or None
            if "onnx_run" not in shared:
                shared["onnx_run"] = run_onnx(fp32, probe, tokenizers)
            got, seconds = shared["onnx_run"]
            extra = {"opset": _opset(fp32)}
            data = fp32
            if fmt == "onnx-int8":
                data, how, got, seconds_int8 = _closest_int8(fp32, probe, tokenizers, shared["expected"])
                extra.update(quantization=how, size_bytes=len(data), fp32_size_bytes=len(fp32),
                             size_ratio=round(len(data) / len(fp32), 3), ms_per_input=round(seconds_int8 * 1e3, 3),
                             fp32_ms_per_input=round(seconds * 1e3, 3), speedup=round(seconds / seconds_int8, 2))
            record = compare(fmt, shared["expected"], got, probe)
    except ImportError as e:
        raise TlguiError(f"the {fmt} export needs {e.name or 'a package'}: pip install -r requirements.txt") from None
    except TlguiError:
        raise
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TlguiError(f"the {fmt} export failed: {reason}") from None
    entry = export_text.describe(model, fmt, FILES[fmt], classes) if text else describe(fmt, size, classes)
    return {FILES[fmt]: data, **tokenizer_files}, {**entry, **extra, **record}


def _closest_int8(fp32: bytes, probe: Probe, tokenizers, expected):
    """The first int8 candidate that keeps the top class often enough, else the closest one (which
    `compare` then refuses): its bytes, how it was made, its answers and seconds per input."""
    best = None
    for data, how in int8_candidates(fp32, probe, tokenizers):
        got, seconds = run_onnx(data, probe, tokenizers)
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        if best is None or agreement > best[0]:
            best = (agreement, data, how, got, seconds)
        if agreement >= INT8_AGREEMENT:
            break
    return best[1:]


def _example(image_size: int) -> torch.Tensor:
    # batch 2, not 1: tracing and torch.export treat a size-1 dimension as fixed
    return torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


def _opset(data: bytes) -> int | None:
    import onnx

    model = onnx.load_model_from_string(data)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _onnx(net: nn.Module, example: torch.Tensor, classes: list[str]) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(net, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes={INPUT: {0: batch}}, dynamo=True,
                                verbose=False)  # else it prints its progress on stdout
    program.model.metadata_props["classes"] = json.dumps(classes)  # shown by ONNX viewers such as Netron
    return program.model_proto.SerializeToString()


def _torchscript(net: nn.Module, example: torch.Tensor) -> bytes:
    traced = torch.jit.trace(net, example)
    other = torch.rand(3, *example.shape[1:])
    if not torch.allclose(traced(other), net(other), atol=1e-5):  # a trace can freeze the batch size it saw
        raise TlguiError("the torchscript export does not hold for other batch sizes with this backbone; "
                         "export onnx instead")
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


def describe(fmt: str, image_size: int, classes: list[str]) -> dict:
    """What the exported file takes and gives, for tlgui.json and the model card."""
    file = FILES[fmt]
    return {
        "file": file,
        "load": f"torch.jit.load('{file}')" if fmt == "torchscript" else f"onnxruntime.InferenceSession('{file}')",
        "input": {"name": INPUT, "dtype": "float32", "shape": ["batch", 3, image_size, image_size],
                  "range": [0.0, 1.0], "layout": "RGB, channels first",
                  "preprocessing": f"the whole picture squashed to {image_size}x{image_size} (bilinear), divided by "
                                   "255; the model resizes and normalises it further itself"},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", len(classes)],
                   "meaning": "softmax probabilities, one column per class in the order of classes"},
        "classes": list(classes),
        "torch": torch.__version__.split("+")[0],
    }


def usage(meta: dict) -> list[str]:
    """The model card's lines on running the exported files with onnxruntime or plain torch."""
    exports = meta.get("exports") or {}
    if not exports:
        return []
    if meta["task"] == "text":
        return export_text.usage(meta, exports)
    size = meta["preprocessing"]["image_size"]
    lines = ["## Use it without tlgui", "",
             f"Unzip model.zip. The exported files take a float32 batch N x 3 x {size} x {size} of RGB pictures "
             "scaled to [0, 1] and give class probabilities in the order of `classes` in tlgui.json "
             "(its `exports` entry says the same).", "", "```python", "import json", "import numpy as np",
             "from PIL import Image, ImageOps", "", "classes = json.load(open('tlgui.json'))['classes']",
             "img = ImageOps.exif_transpose(Image.open('picture.jpg')).convert('RGB')",
             f"x = np.asarray(img.resize(({size}, {size}), Image.BILINEAR), dtype=np.float32)[None] / 255",
             "x = x.transpose(0, 3, 1, 2).copy()  # N x 3 x H x W", "```"]
    for fmt in ("onnx", "onnx-int8"):
        if fmt in exports:
            lines += ["", "With onnxruntime" + (" (int8: smaller and faster, nearly the same answers)" if "int8" in fmt
                                                else "") + ":", "", "```python", "import onnxruntime", "",
                      f"probs = onnxruntime.InferenceSession('{FILES[fmt]}').run(None, {{'{INPUT}': x}})[0]",
                      "print(classes[probs[0].argmax()], probs[0].max())", "```"]
    if "torchscript" in exports:
        lines += ["", "With PyTorch alone:", "", "```python", "import torch", "",
                  f"probs = torch.jit.load('{FILES['torchscript']}')(torch.from_numpy(x)).numpy()",
                  "print(classes[probs[0].argmax()], probs[0].max())", "```"]
    return lines + [""]
