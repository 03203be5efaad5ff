"""Checking an exported file against the PyTorch model, and the int8 ONNX.

An export is run on real inputs (the run's validation pictures or texts) beside the model it
came from; the share of inputs whose top class agrees and the largest probability difference
go into tlgui.json. A float export that strays further than rounding fails; the int8 one must
keep the top class on at least 97% of the inputs.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TlguiError

FLOAT_TOLERANCE = 1e-3  # largest probability difference a float export may show (rounding is ~1e-5)
INT8_AGREEMENT = 0.97  # least top-1 agreement of the int8 ONNX
CHECK_LIMIT = 500  # inputs checked at most: enough to measure 97%, quick enough at save time
CALIBRATION_LIMIT = 128  # training pictures that set the int8 activation ranges
CHUNK = 32


@dataclass
class Probe:
    """Inputs to check an export on: uint8 pictures (N, 3, S, S) or texts; `calibration` alike."""

    task: str
    inputs: object
    source: str  # what they are, in words: "validation pictures", ...
    calibration: object = None

    def __len__(self) -> int:
        return len(self.inputs)


def probe_from_dataset(dataset, image_size: int | None, limit: int = CHECK_LIMIT) -> Probe:
    """The dataset's validation inputs (its training ones where it has none), evenly picked up to
    `limit`, and up to CALIBRATION_LIMIT training inputs for int8 calibration."""
    val, train = dataset.indices("val"), dataset.indices("train")
    check, source = (val, "validation") if len(val) else (train, "training") if len(train) else \
        (np.arange(len(dataset)), "labelled")
    pick = lambda idx, n: idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).round().astype(int)] if len(idx) else idx
    check, calib = pick(check, limit), pick(train if len(train) else check, CALIBRATION_LIMIT)
    if dataset.task == "image":
        from ..data.batches import decode_images

        return Probe("image", decode_images(dataset, check, image_size), f"{source} pictures",
                     decode_images(dataset, calib, image_size))
    return Probe("text", [dataset.inputs[i] for i in check], f"{source} texts", [dataset.inputs[i] for i in calib])


def random_probe(image_size: int, count: int = 64) -> Probe:
    """Seeded noise pictures, for checking a bundle's float export when no data were given."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (count, 3, image_size, image_size), generator=g, dtype=torch.uint8)
    return Probe("image", x, "random pictures (no data given)", x)


def pixels(x: torch.Tensor) -> np.ndarray:
    return (x.float() / 255).numpy()


@torch.inference_mode()
def reference(model, probe: Probe) -> np.ndarray:
    """The PyTorch model's own probabilities, as tlgui predicts (eval mode, float32, CPU)."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(probe), CHUNK):
            part = probe.inputs[start : start + CHUNK]
            x = torch.from_numpy(pixels(part)) if probe.task == "image" else [str(t) for t in part]
            out.append(model(x).float().softmax(1).numpy())
        return np.concatenate(out)
    finally:
        model.train(was_training)


def onnx_session(data: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its notices are not the user's concern
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def feeds(probe: Probe, inputs, tokenizers: list[str] | None = None) -> dict[str, np.ndarray]:
    if probe.task == "image":
        return {"pixels": pixels(inputs)}
    from .export_text import encode

    return encode(tokenizers, list(inputs))


def run_onnx(data: bytes, probe: Probe, tokenizers: list[str] | None = None) -> tuple[np.ndarray, float]:
    """Probabilities of an ONNX file on the probe, and seconds per input (after one warm-up batch)."""
    session = onnx_session(data)
    batches = [feeds(probe, probe.inputs[s : s + CHUNK], tokenizers) for s in range(0, len(probe), CHUNK)]
    session.run(None, batches[0])
    t0 = time.perf_counter()
    out = [session.run(None, b)[0] for b in batches]
    return np.concatenate(out), (time.perf_counter() - t0) / len(probe)


def run_torchscript(data: bytes, probe: Probe) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        net = torch.jit.load(io.BytesIO(data))
    with torch.inference_mode():
        return np.concatenate([net(torch.from_numpy(pixels(probe.inputs[s : s + CHUNK]))).numpy()
                               for s in range(0, len(probe), CHUNK)])


def compare(fmt: str, expected: np.ndarray, got: np.ndarray, probe: Probe) -> dict:
    """The check's record; raises with one sentence when the export does not give the model's answers."""
    agreement = float((expected.argmax(1) == got.argmax(1)).mean())
    diff = float(np.abs(expected - got).max())
    record = {"agreement": round(agreement, 4), "max_abs_diff": float(f"{diff:.3g}"),
              "checked": len(probe), "checked_on": probe.source}
    if fmt == "onnx-int8":
        failed = agreement < INT8_AGREEMENT
        rule = f"at least {INT8_AGREEMENT:.0%} were needed"
    else:
        failed = not diff <= FLOAT_TOLERANCE  # also NaN
        rule = f"at most {FLOAT_TOLERANCE:g} was allowed"
    if failed:
        raise TlguiError(f"the {fmt} export does not give the model's answers: the top class agrees on "
                         f"{agreement:.1%} of {len(probe)} {probe.source} and probabilities differ by up to "
                         f"{diff:.3g} ({rule}); use the model.zip or another format")
    return record


def int8_candidates(fp32: bytes, probe: Probe, tokenizers: list[str] | None = None):
    """int8 versions of a float ONNX, in order of preference, each with how it was made; the caller
    keeps the first that agrees well enough with the model. Pictures: static quantisation (QDQ,
    weights per channel) with activation ranges calibrated on training pictures, first with the head
    kept in float32, then all layers (on small models either can be the closer one); dynamic
    quantisation made convolutions 13x slower and kept the top class on only 66% of pictures.
    Texts: dynamic quantisation of the matrix products (the usual choice for transformers and LSTMs),
    weights per tensor, then per channel."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="tlgui-int8-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=probe.task == "text")
        except Exception:  # noqa: BLE001 - an optimisation only: quantise the file as exported
            pre = src
        if probe.task != "image":  # per tensor is the faster; per channel kept MiniLM's answers (90% -> 99%)
            for per_channel, how in ((False, ""), (True, " per channel")):
                quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
                yield dst.read_bytes(), f"dynamic, int8 weights{how}, activations quantised at run time"
            return
        calibration = probe.calibration if probe.calibration is not None else probe.inputs

        class Calibration(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"pixels": pixels(calibration[s : s + 16])} for s in range(0, len(calibration), 16)])

            def get_next(self):
                return next(self.batches, None)

        static = "static, QDQ, int8 weights per channel, uint8 activations calibrated on training pictures"
        for exclude, how in ((_head_nodes(pre), f"{static}; the head in float32"), ([], static)):
            quantize_static(str(pre), str(dst), Calibration(), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_exclude=exclude)
            yield dst.read_bytes(), how


def _head_nodes(path) -> list[str]:
    """The fully connected layers and the softmax: kept in float32, they are a tiny share of the file,
    and in uint8 the probabilities would be rounded to steps of 1/255, turning near ties into flips."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul", "Softmax")]
