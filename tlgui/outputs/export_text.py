"""Text models outside tlgui: the network from token ids to probabilities as ONNX, and each
backbone's tokenizer as a `tokenizer.json` that the `tokenizers` package reads.

A user encodes texts with the tokenizer file (truncation and padding are set in it), feeds the
ids and attention mask to onnxruntime, and gets the class probabilities.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from ..errors import TlguiError


def names(count: int) -> list[tuple[str, str, str]]:
    """(tokenizer file, ids input, mask input) per backbone: plain names for one backbone, numbered for several."""
    if count == 1:
        return [("tokenizer.json", "input_ids", "attention_mask")]
    return [(f"tokenizer_{i}.json", f"input_ids_{i}", f"attention_mask_{i}") for i in range(count)]


class TextNetwork(nn.Module):
    """Token ids and attention masks, one pair per backbone, to softmax probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *pairs: torch.Tensor) -> torch.Tensor:
        feats = []
        for k, b in enumerate(self.model.backbones):
            ids, mask = pairs[2 * k], pairs[2 * k + 1]
            if b.name == "glove_bilstm":
                feats.append(_glove_features(b, ids, mask))
            else:
                feats.append(b.from_ids(ids, mask))
        return self.model.classify(feats).softmax(1)


def _glove_features(b, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """As tlgui reads a text: an empty one is the single word `<unk>` (id 1)."""
    pad = torch.zeros_like(ids[:, :1])
    ids, mask = torch.cat([ids, pad], 1), torch.cat([mask, pad], 1)  # at least one column, even for empty texts
    lengths = mask.sum(1)
    first = torch.where(lengths == 0, torch.ones_like(ids[:, 0]), ids[:, 0])
    ids = torch.cat([first.unsqueeze(1), ids[:, 1:]], 1)
    return b.from_ids(ids, lengths.clamp(min=1))


def tokenizer_json(backbone) -> str:
    """The backbone's tokenizer as a `tokenizers` file that truncates as tlgui does and pads batches."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    if backbone.name == "glove_bilstm":
        from ..nets.backbones.text import _TOKEN, PAD, UNK

        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(backbone.vocab)}, unk_token=UNK))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_TOKEN.pattern), behavior="isolated")])
        pad = PAD
    elif hasattr(backbone, "tokenizer_json"):  # a sentence encoder: minilm_l6, or one of the Hub
        tok = Tokenizer.from_str(backbone.tokenizer_json)
        pad = backbone.pad_token
    else:
        raise TlguiError(f"the text backbone {backbone.name} cannot be exported: use the model.zip with tlgui")
    tok.enable_truncation(backbone.max_length)
    tok.enable_padding(pad_id=getattr(backbone, "pad_id", 0), pad_token=pad)
    return tok.to_str()


def encode(tokenizers: list[str], texts: list[str]) -> dict[str, np.ndarray]:
    """The ONNX inputs for `texts`, made with the exported tokenizer files alone."""
    from tokenizers import Tokenizer

    feeds = {}
    for data, (_, ids, mask) in zip(tokenizers, names(len(tokenizers))):
        encoded = Tokenizer.from_str(data).encode_batch([str(t) for t in texts])
        width = max([len(e.ids) for e in encoded] + [1])  # a batch of empty texts still has one (padding) column
        feeds[ids] = np.zeros((len(texts), width), dtype=np.int64)
        feeds[mask] = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            feeds[ids][row, : len(e.ids)], feeds[mask][row, : len(e.ids)] = e.ids, e.attention_mask
    return feeds


def export_onnx(model: nn.Module, classes: list[str]) -> tuple[bytes, dict[str, bytes]]:
    """The ONNX file of the network and its tokenizer files by name."""
    files = {name: tokenizer_json(b).encode() for b, (name, _, _) in zip(model.backbones, names(len(model.backbones)))}
    example = encode([f.decode() for f in files.values()], ["an example text to trace", "another one"])
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=1)
    dynamic = {k: {0: batch, 1: length} for k in example}
    args = tuple(torch.from_numpy(v) for v in example.values())
    program = torch.onnx.export(TextNetwork(model).eval(), args, input_names=list(example), output_names=["probabilities"],
                                dynamic_shapes=(tuple(dynamic.values()),), dynamo=True, verbose=False)
    program.model.metadata_props["classes"] = json.dumps(classes)
    return program.model_proto.SerializeToString(), files


def describe(model: nn.Module, fmt: str, file: str, classes: list[str]) -> dict:
    inputs = [{"name": ids, "mask": mask, "tokenizer": tok, "backbone": b.name, "dtype": "int64",
               "shape": ["batch", "length"], "max_length": b.max_length}
              for b, (tok, ids, mask) in zip(model.backbones, names(len(model.backbones)))]
    return {"file": file, "load": f"onnxruntime.InferenceSession('{file}')", "inputs": inputs,
            "tokenizers": [i["tokenizer"] for i in inputs],
            "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", len(classes)],
                       "meaning": "softmax probabilities, one column per class in the order of classes"},
            "classes": list(classes)}


def usage(meta: dict, exports: dict) -> list[str]:
    """The model card's lines on running the text export with onnxruntime and tokenizers."""
    fmt = "onnx" if "onnx" in exports else "onnx-int8"
    entry = exports[fmt]
    lines = ["## Use it without tlgui", "",
             f"Unzip model.zip. `{entry['file']}` takes token ids and attention masks made by the tokenizer "
             "file(s) below (truncation and padding are set in them) and gives class probabilities in the "
             "order of `classes` in tlgui.json.", "", "```python", "import json", "import numpy as np",
             "import onnxruntime", "from tokenizers import Tokenizer", "",
             "classes = json.load(open('tlgui.json'))['classes']", "texts = ['some text']", "feeds = {}"]
    for i in entry["inputs"]:
        lines += [f"enc = Tokenizer.from_file('{i['tokenizer']}').encode_batch(texts)",
                  f"feeds['{i['name']}'] = np.array([e.ids for e in enc], dtype=np.int64)",
                  f"feeds['{i['mask']}'] = np.array([e.attention_mask for e in enc], dtype=np.int64)"]
    lines += [f"probs = onnxruntime.InferenceSession('{entry['file']}').run(None, feeds)[0]",
              "print(classes[probs[0].argmax()], probs[0].max())", "```", ""]
    return lines
