"""Exports of an image classifier that run without tlgui: ONNX and TorchScript.

Each takes a float32 batch of RGB pictures in [0, 1], N x 3 x S x S (S the bundle's image
size, any N), and gives softmax probabilities in the bundle's class order. The backbones' own
resizing and normalisation are inside the graph, so a user needs only the class list.
"""

from __future__ import annotations

import io
import json
import warnings

import torch
from torch import nn

from .config import check_exports
from .errors import TlguiError

FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
INPUT, OUTPUT = "pixels", "probabilities"


def check_task(task: str) -> None:
    if task != "image":
        raise TlguiError("a text model cannot be exported to ONNX or TorchScript: its tokenizer is not part of the "
                         "network's graph; use the model.zip with tlgui instead")


class _Probabilities(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # the argument's name is the files' input name
        return self.model(pixels).softmax(1)


def export_bytes(model: nn.Module, fmt: str, image_size: int, classes: list[str]) -> tuple[bytes, dict]:
    """The file for `fmt` and its entry in tlgui.json's `exports`. Leaves the model's mode as it was."""
    check_exports([fmt])
    check_task(model.task)
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)  # else a TorchScript file's outputs require grad, and .numpy() on them fails
    net = _Probabilities(model).eval()
    # batch 2, not 1: tracing and torch.export treat a size-1 dimension as fixed
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation and tracer notices are not the user's concern
            data, extra = (_onnx if fmt == "onnx" else _torchscript)(net, example, classes)
    except ImportError as e:
        raise TlguiError(f"the {fmt} export needs {e.name or 'a package'}: pip install -r requirements.txt") from None
    except TlguiError:
        raise
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TlguiError(f"the {fmt} export failed: {reason}") from None
    finally:
        model.train(was_training)
        for p in trainable:
            p.requires_grad_(True)
    return data, describe(fmt, image_size, classes, extra)


def _onnx(net: nn.Module, example: torch.Tensor, classes: list[str]) -> tuple[bytes, dict]:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(net, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes={INPUT: {0: batch}}, dynamo=True,
                                verbose=False)  # else it prints its progress on stdout
    program.model.metadata_props["classes"] = json.dumps(classes)  # shown by ONNX viewers such as Netron
    opset = program.model.opset_imports.get("", None)
    return program.model_proto.SerializeToString(), {"opset": opset}


def _torchscript(net: nn.Module, example: torch.Tensor, classes: list[str]) -> tuple[bytes, dict]:
    traced = torch.jit.trace(net, example)
    other = torch.rand(3, *example.shape[1:])
    if not torch.allclose(traced(other), net(other), atol=1e-5):  # a trace can freeze the batch size it saw
        raise TlguiError("the torchscript export does not hold for other batch sizes with this backbone; "
                         "export onnx instead")
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue(), {}


def describe(fmt: str, image_size: int, classes: list[str], extra: dict | None = None) -> dict:
    """What the exported file takes and gives, for tlgui.json and the model card."""
    file = FILES[fmt]
    return {
        "file": file,
        "load": f"onnxruntime.InferenceSession('{file}')" if fmt == "onnx" else f"torch.jit.load('{file}')",
        "input": {"name": INPUT, "dtype": "float32", "shape": ["batch", 3, image_size, image_size],
                  "range": [0.0, 1.0], "layout": "RGB, channels first",
                  "preprocessing": f"the whole picture squashed to {image_size}x{image_size} (bilinear), divided by "
                                   "255; the model resizes and normalises it further itself"},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", len(classes)],
                   "meaning": "softmax probabilities, one column per class in the order of classes"},
        "classes": list(classes),
        "torch": torch.__version__.split("+")[0],
        **(extra or {}),
    }


def usage(meta: dict) -> list[str]:
    """The model card's lines on running the exported files with onnxruntime or plain torch."""
    exports = meta.get("exports") or {}
    if not exports:
        return []
    size = meta["preprocessing"]["image_size"]
    lines = ["## Use it without tlgui", "",
             f"Unzip model.zip. The exported files take a float32 batch N x 3 x {size} x {size} of RGB pictures "
             "scaled to [0, 1] and give class probabilities in the order of `classes` in tlgui.json "
             "(its `exports` entry says the same).", "", "```python", "import json", "import numpy as np",
             "from PIL import Image, ImageOps", "", "classes = json.load(open('tlgui.json'))['classes']",
             "img = ImageOps.exif_transpose(Image.open('picture.jpg')).convert('RGB')",
             f"x = np.asarray(img.resize(({size}, {size}), Image.BILINEAR), dtype=np.float32)[None] / 255",
             "x = x.transpose(0, 3, 1, 2).copy()  # N x 3 x H x W", "```"]
    if "onnx" in exports:
        lines += ["", "With onnxruntime:", "", "```python", "import onnxruntime", "",
                  f"probs = onnxruntime.InferenceSession('{FILES['onnx']}').run(None, {{'{INPUT}': x}})[0]",
                  "print(classes[probs[0].argmax()], probs[0].max())", "```"]
    if "torchscript" in exports:
        lines += ["", "With PyTorch alone:", "", "```python", "import torch", "",
                  f"probs = torch.jit.load('{FILES['torchscript']}')(torch.from_numpy(x)).numpy()",
                  "print(classes[probs[0].argmax()], probs[0].max())", "```"]
    return lines + [""]
