"""Any model of the Hugging Face Hub as a backbone, named `hf:OWNER/NAME`.

The library its repository is made for builds it: timm (a config.json with `architecture`) gives
its pooled features (`num_classes=0`) and its data config; sentence-transformers (a `modules.json`)
gives a text encoder with its own pooling and normalisation (`text.SentenceEncoder`); any other
config.json is a transformers vision model (the vision tower of CLIP and SigLIP), whose pooled
output is the feature.

Files come through huggingface_hub, so `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE=1` hold as for
any Hub library: online it downloads into the Hugging Face cache (with progress bars), offline it
reads that cache. Weights are read from safetensors only. The bundle carries the architecture's
config (and a text encoder's tokenizer), so a saved model rebuilds with no network and an empty cache.
"""

from __future__ import annotations

import inspect
import json
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import TlguiError
from .base import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, Family, FeatureExtractor, ImageBackbone, Reader
from .stages import split_stages
from .text import _IMPORT, DEFAULT_MAX_LENGTH, SentenceEncoder
from .torchvision import on_meta

PREFIX = "hf:"
_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
SMALL_FILES = ["*.json", "*.txt", "*.model"]  # configs, tokenizers, vocabularies: a few MB at most
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
SENTENCE_MODULES = ("Transformer", "Pooling", "Normalize")
POOLINGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}
RESAMPLE = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}  # PIL's numbers, timm's words
BLOCK_LISTS = ("layer", "layers", "stages", "blocks")  # transformers' names for an encoder's blocks
MAX_PARAMS = 3_000_000_000  # a bundle describing a larger network is damaged or forged
# what a bundle entry records beside the config, by library, with the value an entry without it means
ENTRY_KEYS = {"timm": {"dynamic": False}, "transformers": {"no_pooler": False},
              "sentence-transformers": {"pooling": "mean", "normalize": True, "limit": 512, "pad_id": 0}}


@dataclass(frozen=True)
class Suggestion:
    """A Hub backbone the page and the README recommend, with what it costs."""

    repo: str
    task: str
    params: float  # millions, the backbone alone
    size: str  # native input
    cpu_ms: int  # one forward pass per input (a text: 128 tokens) on 2 CPU cores, batch 16, random weights of its shape
    note: str


RECOMMENDED = (
    Suggestion("facebook/dinov2-small", "image", 22.1, "224 px", 70, "DINOv2 ViT-S/14: strong frozen features"),
    Suggestion("timm/vit_small_patch14_dinov2.lvd142m", "image", 22.1, "518 px", 1200,
               "the same DINOv2 in timm, at 518 px; `--image-size 224` runs it in about 70 ms"),
    Suggestion("timm/convnext_tiny.fb_in22k", "image", 27.8, "224 px", 60, "ConvNeXt-T trained on ImageNet-22k"),
    Suggestion("google/siglip-base-patch16-224", "image", 92.9, "224 px", 190, "SigLIP's vision tower (ViT-B/16)"),
    Suggestion("sentence-transformers/all-MiniLM-L6-v2", "text", 22.6, "256 tokens", 30,
               "the encoder of minilm_l6 (6 layers)"),
    Suggestion("BAAI/bge-small-en-v1.5", "text", 33.2, "512 tokens", 110, "BGE small: 12 layers, CLS-pooled"),
)


def repo_of(name: str) -> str | None:
    """The repository id of an `hf:` name; None for any other name."""
    if not str(name).startswith(PREFIX):
        return None
    repo = str(name)[len(PREFIX):].strip()
    if not _ID.fullmatch(repo) or ".." in repo or "--" in repo or repo.endswith(".git"):
        raise TlguiError(f"{name!r} is not a Hugging Face model id: write hf:OWNER/NAME, for example "
                         "hf:facebook/dinov2-small")
    return repo


def as_name(text: str) -> str:
    """What a person typed (`OWNER/NAME`, `hf:OWNER/NAME`, or the model page's address) as a backbone name."""
    text = str(text or "").strip()
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", PREFIX):
        text = text.removeprefix(prefix)
    return PREFIX + text.strip("/")


# -- the Hub and its cache ---------------------------------------------------------------------
def fetch(repo: str, weights: str | None = None) -> Path:
    """The repository's snapshot folder in the Hugging Face cache with its small files, and with the
    safetensors weights under the folder `weights` ("" for the top) where given; offline, the cache's."""
    from huggingface_hub import errors, snapshot_download

    patterns = SMALL_FILES + ([weights + w for w in WEIGHTS] if weights is not None else [])
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except errors.GatedRepoError:
        raise TlguiError(f"hf:{repo} is gated: accept its terms on huggingface.co/{repo}, then log in "
                         "(`hf auth login`, or set HF_TOKEN)") from None
    except errors.RepositoryNotFoundError:
        raise TlguiError(f"hf:{repo} is not on the Hugging Face Hub, or it is private: check the id, or log in "
                         "(`hf auth login`, or set HF_TOKEN) if you may read it") from None
    except errors.LocalEntryNotFoundError:
        raise TlguiError(f"hf:{repo} is not in the Hugging Face cache and the Hub cannot be reached: connect "
                         "once (without HF_HUB_OFFLINE=1) to download it, or pick another backbone") from None
    except errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "an error")
        raise TlguiError(f"the Hugging Face Hub answered {status} for hf:{repo}: try again later") from None


def weights_cached(repo: str, sub: str = "") -> bool:
    """Whether the safetensors weights are in the Hugging Face cache (usable with no network)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, sub + w), str) for w in WEIGHTS[:2])


def _has_weights(folder: Path) -> bool:
    return any((folder / w).exists() for w in WEIGHTS[:2])


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- what a repository holds -------------------------------------------------------------------
@dataclass
class Spec:
    """A repository as tlgui builds it: its library, the architecture's config and the settings
    the bundle records beside it. `folder` is its snapshot in the cache (None: from a bundle)."""

    repo: str
    library: str  # timm, transformers or sentence-transformers
    config: dict  # timm's or transformers' config.json (a vision tower's alone, for CLIP and SigLIP)
    settings: dict  # input size, mean, std and resizing; or pooling, normalisation, token limit, padding
    folder: Path | None = None
    sub: str = ""  # where a sentence-transformers model keeps its transformer ("" or "0_Transformer/")
    tokenizer: str = ""  # texts: tokenizer.json

    @property
    def task(self) -> str:
        return "text" if self.library == "sentence-transformers" else "image"


def _unsupported(repo: str, what: str) -> TlguiError:
    return TlguiError(f"hf:{repo} is {what}, which tlgui does not run as a backbone: pick a timm model, a "
                      "transformers vision model or a sentence-transformers model")


def read_spec(repo: str, folder: Path) -> Spec:
    """The kind of model a snapshot holds, told from its files."""
    modules = _json(folder / "modules.json")
    if isinstance(modules, list) or (folder / "config_sentence_transformers.json").exists():
        return _sentence_spec(repo, folder, modules if isinstance(modules, list) else [])
    config = _json(folder / "config.json")
    if not isinstance(config, dict):
        raise _unsupported(repo, "a repository without a config.json (not a model of timm or transformers)")
    if "architecture" in config:
        return _timm_spec(repo, folder, config)
    if "model_type" in config:
        return _vision_spec(repo, folder, config)
    raise _unsupported(repo, "a model of another library")


def _timm_spec(repo: str, folder: Path, config: dict) -> Spec:
    import timm

    if not timm.is_model(config["architecture"]):
        raise _unsupported(repo, f"a timm {config['architecture']} that this timm {timm.__version__} does not know "
                                 "(upgrade timm)")
    data = config.get("pretrained_cfg", config)
    settings = {"input_size": int(data.get("input_size", [3, 224, 224])[-1]),
                "mean": list(data.get("mean", IMAGENET_MEAN)), "std": list(data.get("std", IMAGENET_STD)),
                "interpolation": RESAMPLE.get(data.get("interpolation"), "bilinear"),
                "dynamic": bool(data.get("fixed_input_size"))}  # runs at other sizes; cleared where it cannot
    return Spec(repo, "timm", config, settings, folder)


def _hf_config(config: dict, repo: str):
    with _IMPORT:
        from transformers import AutoConfig
    try:
        return AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    except (ValueError, KeyError, TypeError):
        raise _unsupported(repo, f"a {config.get('model_type')!r} model that this transformers does not know") from None


def _vision_spec(repo: str, folder: Path, config: dict) -> Spec:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    cfg = _hf_config(config, repo)
    vision = getattr(cfg, "vision_config", None) or cfg  # CLIP, SigLIP: the vision tower alone
    if not hasattr(vision, "num_channels") or vision.model_type not in MODEL_MAPPING_NAMES:
        what = "a text model without a sentence-transformers pooling" if hasattr(cfg, "vocab_size") else "a model"
        raise _unsupported(repo, f"{what} ({cfg.model_type}), not one that reads pictures")
    pre = _json(folder / "preprocessor_config.json") or {}
    settings = {"input_size": _input_size(pre, vision), "mean": list(pre.get("image_mean") or IMAGENET_MEAN),
                "std": list(pre.get("image_std") or IMAGENET_STD),
                "interpolation": RESAMPLE.get(pre.get("resample"), "bilinear"), "no_pooler": False}
    return Spec(repo, "transformers", vision.to_dict(), settings, folder)


def _input_size(pre: dict, vision) -> int:
    """The side of the picture the model sees: its processor's crop, else its resize, else its config's."""
    for key in (("crop_size",) if pre.get("do_center_crop", True) else ()) + ("size",):
        size = pre.get(key)
        if isinstance(size, int):
            return size
        if isinstance(size, dict):
            side = size.get("height") or size.get("shortest_edge")
            if side:
                return int(side)
    size = getattr(vision, "image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _sentence_spec(repo: str, folder: Path, modules: list) -> Spec:
    kinds = {str(m.get("type", "")).rpartition(".")[2]: str(m.get("path", "")) for m in modules if isinstance(m, dict)}
    other = [k for k in kinds if k not in SENTENCE_MODULES]
    if other:
        raise _unsupported(repo, f"a sentence-transformers model with a {other[0]} module")
    sub = kinds.get("Transformer", "").strip("/")
    sub = sub + "/" if sub else ""
    config = _json(folder / sub / "config.json")
    if not isinstance(config, dict) or "model_type" not in config:
        raise _unsupported(repo, "a sentence-transformers model without a transformers config")
    cfg = _hf_config(config, repo)
    pooling = _pooling(repo, _json(folder / kinds.get("Pooling", "1_Pooling") / "config.json") or {})
    st = _json(folder / sub / "sentence_bert_config.json") or {}
    limit = int(st.get("max_seq_length") or min(getattr(cfg, "max_position_embeddings", 512), 512))
    settings = {"pooling": pooling, "normalize": "Normalize" in kinds, "limit": limit,
                "pad_id": int(getattr(cfg, "pad_token_id", None) or 0)}
    return Spec(repo, "sentence-transformers", config, settings, folder, sub,
                _tokenizer(repo, folder / sub, bool(st.get("do_lower_case"))))


def _pooling(repo: str, config: dict) -> str:
    modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v is True]
    if len(modes) > 1 or (modes and modes[0] not in POOLINGS):
        raise _unsupported(repo, f"a sentence-transformers model pooled by {' + '.join(modes)}")
    return POOLINGS[modes[0]] if modes else "mean"


def _tokenizer(repo: str, folder: Path, lower: bool) -> str:
    """The model's fast tokenizer as a tokenizer.json, lowercasing first where its recipe says so."""
    from tokenizers import Tokenizer, normalizers

    path = folder / "tokenizer.json"
    if path.exists():
        data = path.read_text()
    else:
        with _IMPORT:
            from transformers import AutoTokenizer
        try:
            data = AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer.to_str()
        except Exception:  # no tokenizer files, or one with no fast version
            raise _unsupported(repo, "a model without a fast tokenizer (tokenizer.json)") from None
    if not lower:
        return data
    tok = Tokenizer.from_str(data)
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase()] + ([tok.normalizer] if tok.normalizer else []))
    return tok.to_str()


# -- the network -------------------------------------------------------------------------------
class _Pooled(nn.Module):
    """A transformers vision model as a plain network: pictures in, its pooled output out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # ViTs, CLIP and SigLIP read other sizes than their own only when asked to
        self.resizes = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x, **({"interpolate_pos_encoding": True} if self.resizes else {}))
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:  # no pooled output: the average of the last layer's tokens or positions
            hidden = out.last_hidden_state
            pooled = hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(1)
        return pooled.flatten(1)


class _FromHub:
    """What a Hub backbone adds to its kind: the repository in its description, its files in the bundle."""

    entry: dict
    files: dict[str, bytes]

    def describe(self) -> dict:
        return {**super().describe(), **self.entry}

    def bundle_files(self) -> dict[str, bytes]:
        return dict(self.files)


class HubImageBackbone(_FromHub, ImageBackbone):
    def __init__(self, spec: Spec, body: nn.Module, out_dim: int, stages: list[list[nn.Module]], entry: dict,
                 files: dict[str, bytes]):
        s = spec.settings
        super().__init__(PREFIX + spec.repo, body, out_dim, s["mean"], s["std"], s["input_size"])
        self.stages, self.interpolation, self.entry, self.files = stages, s["interpolation"], entry, files
        data = spec.config.get("pretrained_cfg", spec.config)
        self.resizes = spec.library != "timm" or bool(s.get("dynamic")) or not data.get("fixed_input_size")

    def run_at(self, size: int) -> None:
        """Take pictures of `size` pixels (`--image-size`), where the model reads other sizes than its own."""
        if self.resizes:
            self.input_size = int(size)


class HubTextBackbone(_FromHub, SentenceEncoder):
    def __init__(self, spec: Spec, body: nn.Module, stages: list[list[nn.Module]], entry: dict,
                 files: dict[str, bytes], max_length: int = DEFAULT_MAX_LENGTH):
        s = spec.settings
        super().__init__(PREFIX + spec.repo, body, spec.tokenizer, max_length, limit=s["limit"], pooling=s["pooling"],
                         normalize=s["normalize"], pad_id=s["pad_id"], stages=stages)
        self.entry, self.files = entry, files

    def describe(self) -> dict:
        return {**super().describe(), "max_length": self.max_length}


def _timm_body(spec: Spec, folder: Path | None) -> tuple[nn.Module, list[nn.Module], int]:
    import timm

    with tempfile.TemporaryDirectory() as tmp:
        source = folder
        if source is None:  # the architecture alone, from the config the bundle carries
            source = Path(tmp)
            (source / "config.json").write_text(json.dumps(spec.config))
        make = lambda **kw: timm.create_model(f"local-dir:{source}", pretrained=folder is not None,  # noqa: E731
                                              num_classes=0, **kw)
        try:
            model = make(dynamic_img_size=True) if spec.settings.get("dynamic") else make()
        except TypeError:  # a fixed-size model that cannot resize: it runs at its own size
            spec.settings["dynamic"] = False
            model = make()
    blocks = [model.get_submodule(f["module"]) for f in getattr(model, "feature_info", None) or []
              if isinstance(f, dict) and f.get("module")]
    blocks = [b for b in dict.fromkeys(blocks) if any(True for _ in b.parameters())]
    return model, blocks, int(getattr(model, "head_hidden_size", None) or model.num_features)


def _transformers_model(spec: Spec, folder: Path | None) -> nn.Module:
    """The model with random weights (`folder` None), or with the snapshot's, every tensor of it there but
    a pooler's (CLIP's text tower and the like are left out, as they should be)."""
    with _IMPORT:
        from transformers import AutoModel
        from transformers.utils import logging
    cfg = _hf_config(spec.config, spec.repo)
    if folder is None:
        model = AutoModel.from_config(cfg)
    else:
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # its load report lists the tensors of the towers left out
        try:
            model, report = AutoModel.from_pretrained(str(folder / spec.sub), config=cfg, dtype=torch.float32,
                                                      output_loading_info=True)
        finally:
            logging.set_verbosity(verbosity)
        missing = [k for k in report.get("missing_keys", []) if not k.startswith("pooler.")]
        if missing:
            raise TlguiError(f"the weights of hf:{spec.repo} do not fit its config (no "
                             f"{', '.join(sorted(missing)[:3])}): pick another model")
        spec.settings["no_pooler"] = any(k.startswith("pooler.") for k in report.get("missing_keys", []))
    if spec.settings.get("no_pooler") and getattr(model, "pooler", None) is not None:
        model.pooler = None  # never trained: the tokens' average stands in for it
    return model


def _hf_blocks(model: nn.Module) -> list[nn.Module]:
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) and name.rpartition(".")[2] in BLOCK_LISTS:
            return list(m)
    return []


def _vision_body(spec: Spec, folder: Path | None) -> tuple[nn.Module, list[nn.Module], int]:
    model = _transformers_model(spec, folder)
    cfg = model.config
    width = getattr(cfg, "hidden_size", None) or list(getattr(cfg, "hidden_sizes", [0]))[-1]
    return _Pooled(model), _hf_blocks(model), int(width)


def _text_body(spec: Spec, folder: Path | None) -> tuple[nn.Module, list[nn.Module], int]:
    model = _transformers_model(spec, folder)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # unused: the sentence pooling reads every token
    return model, _hf_blocks(model), int(model.config.hidden_size)


BODIES = {"timm": _timm_body, "transformers": _vision_body, "sentence-transformers": _text_body}


def stages_of(model: nn.Module, blocks: list[nn.Module]) -> list[list[nn.Module]]:
    """The stem (what comes before the first block), then one stage per block; what follows a block
    goes with it (a final norm, a pooling head). Loose parameters of a module that holds blocks
    (a ViT's class token) go with the stem, as `FeatureExtractor.freeze` does with them."""
    if not blocks:
        return split_stages(model)
    index = {id(b): i for i, b in enumerate(blocks)}
    named = list(model.named_modules())
    holders = [n for n, m in named if id(m) in index]
    stages: list[list[nn.Module]] = [[] for _ in range(len(blocks) + 1)]
    current, skip = 0, None
    for name, m in named:
        if skip is not None and name.startswith(skip):
            continue
        if id(m) in index:
            current = index[id(m)] + 1
        elif not name or any(h.startswith(name + ".") for h in holders) or not any(True for _ in m.parameters()):
            continue  # it holds blocks (its other parts are placed one by one), or nothing that trains
        stages[current].append(m)
        skip = name + "."
    return [s for s in stages if s]


def assemble(spec: Spec, folder: Path | None, max_length: int = DEFAULT_MAX_LENGTH) -> FeatureExtractor:
    """The backbone of `spec`, with the weights of the snapshot `folder` (None: random, to be loaded)."""
    body, blocks, width = BODIES[spec.library](spec, folder)
    inner = body.model if isinstance(body, _Pooled) else body
    stages = stages_of(inner, blocks)
    revision = spec.folder.name if spec.folder is not None else spec.settings.get("revision")
    entry = {"repo": spec.repo, "library": spec.library, "revision": revision,
             **{k: spec.settings[k] for k in ENTRY_KEYS[spec.library]}}
    if spec.library == "sentence-transformers":
        files = {"config.json": json.dumps(spec.config).encode(), "tokenizer.json": spec.tokenizer.encode()}
        return HubTextBackbone(spec, body, stages, entry, files, max_length)
    entry["interpolation"] = spec.settings["interpolation"]
    return HubImageBackbone(spec, body, width, stages, entry, {"config.json": json.dumps(spec.config).encode()})


def build(spec: Spec, pretrained: bool) -> FeatureExtractor:
    """The backbone with its pretrained weights, downloaded first where the cache lacks them."""
    if not pretrained:
        return assemble(spec, None)
    folder = fetch(spec.repo, weights=spec.sub)
    if folder != spec.folder:  # the repository moved on since its record was read
        spec = read_spec(spec.repo, folder)
    if not _has_weights(folder / spec.sub):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise TlguiError(f"the weights of hf:{spec.repo} are not in the Hugging Face cache and HF_HUB_OFFLINE=1 "
                             "keeps the Hub out of reach: download them once online")
        raise TlguiError(f"hf:{spec.repo} has no safetensors weights (model.safetensors), the only kind tlgui "
                         "loads: pick another model")
    return assemble(spec, folder)


def restore(entry: dict, read: Reader) -> FeatureExtractor:
    """A Hub backbone from its bundle entry and files alone: no network, no cache."""
    from ...data.limits import check_numbers

    try:
        library = entry["library"]
        config = json.loads(read("config.json"))
        settings = {k: entry.get(k, default) for k, default in ENTRY_KEYS[library].items()}
        if library == "sentence-transformers":
            tokenizer = read("tokenizer.json").decode()
        else:
            tokenizer = ""
            settings.update(input_size=int(entry["input_size"]), mean=entry["mean"], std=entry["std"],
                            interpolation=entry.get("interpolation", "bilinear"))
        repo = str(entry["repo"])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        raise TlguiError("the bundle's Hugging Face backbone is described incompletely: the file is damaged; "
                         "export the model again") from None
    check_numbers(config, "the bundle's Hugging Face backbone")  # sizes bounded before anything is built
    spec = Spec(repo, library, config, {**settings, "revision": entry.get("revision")}, tokenizer=tokenizer)
    if measure(spec, flops=False)["params"] > MAX_PARAMS:
        raise TlguiError("the bundle's Hugging Face backbone describes an impossibly large network: the file is "
                         "damaged or not made by tlgui")
    return assemble(spec, None, entry.get("max_length", DEFAULT_MAX_LENGTH))


# -- registry records ----------------------------------------------------------------------------
def measure(spec: Spec, flops: bool = True) -> dict:
    """Size, stages and cost of the network, from an instance without memory (no weights read)."""
    from torch.utils.flop_counter import FlopCounterMode

    with on_meta():
        net = assemble(spec, None)
    net = net.to("meta")
    gflops = 0.0
    if spec.task == "image" and flops:
        try:
            with FlopCounterMode(display=False) as counter:
                s = spec.settings["input_size"]
                net.body(torch.empty(1, 3, s, s, device="meta"))
            gflops = counter.get_total_flops() / 2e9  # multiply-adds, as torchvision counts
        except Exception:  # an operation without a meta kernel: the estimate falls back on the size
            gflops = 0.0
    return {"params": sum(p.numel() for p in net.parameters()), "stages": len(net.stages), "feature_dim": net.out_dim,
            "gflops": gflops}


_SEEN: dict[str, tuple[BackboneInfo, Spec]] = {}  # repositories looked up in this process: the page lists them
_LOCK = threading.Lock()


def _record(spec: Spec) -> BackboneInfo:
    numbers = measure(spec)
    image = spec.task == "image"
    s = spec.settings
    return BackboneInfo(
        name=PREFIX + spec.repo, task=spec.task, params=numbers["params"],
        input_size=s["input_size"] if image else s["limit"], stages=numbers["stages"],
        feature_dim=numbers["feature_dim"], offline=False, gflops=numbers["gflops"],
        mean=tuple(s["mean"]) if image else (), std=tuple(s["std"]) if image else (),
        source=f"Hugging Face Hub ({spec.library})", description=f"{spec.repo}, a {spec.library} model of the Hub",
        build=lambda pretrained: build(spec, pretrained))


def lookup(name: str) -> BackboneInfo | None:
    """The record of an `hf:` name, its repository's small files read (and fetched where the cache
    lacks them) the first time; `offline` says whether its weights are in the cache now."""
    repo = repo_of(name)
    if repo is None:
        return None
    with _LOCK:
        seen = _SEEN.get(PREFIX + repo)
    if seen is None:
        spec = read_spec(repo, fetch(repo))
        seen = (_record(spec), spec)
        with _LOCK:
            _SEEN[PREFIX + repo] = seen
    info, spec = seen
    info.offline = weights_cached(repo, spec.sub)
    return info


def fetch_weights(name: str) -> BackboneInfo:
    """Download a Hub backbone's weights into the cache now (its record first), so that a run starts at once."""
    lookup(name)
    spec = _SEEN[PREFIX + repo_of(name)][1]
    fetch(spec.repo, weights=spec.sub)
    return lookup(name)


def infos() -> list[BackboneInfo]:
    """The repositories looked up in this process, `offline` as their weights lie in the cache now."""
    with _LOCK:
        seen = list(_SEEN.values())
    for info, spec in seen:
        info.offline = weights_cached(spec.repo, spec.sub)
    return [info for info, _ in seen]


FAMILY = Family("hub", infos, restore, lookup, downloads=True)
