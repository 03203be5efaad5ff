"""Training recipes: a run's settings without its data, saved under a name by one browser and
applied to another dataset in one click (what `train --config` does on the command line)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..config import RunConfig
from ..errors import TlguiError
from ..runs import atomic_write
from . import run_folders
from .text import t

FOLDER = ".recipes"
MAX_NAME = 60
PER_OWNER = 200


def _folder(root: Path, owner: str) -> Path:
    return root / FOLDER / run_folders.owner_hash(owner)[:32]


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name.strip(), flags=re.UNICODE).strip("-.")[:MAX_NAME]


def as_recipe(config: RunConfig) -> dict:
    """The settings that carry over to other data: not the earlier model a run started from."""
    return {k: v for k, v in config.to_dict().items() if k not in ("init", "device")}


def save(root: Path, owner: str, name: str, config: RunConfig) -> str:
    slug = _slug(name or "")
    if not slug:
        raise TlguiError(t("recipe_name_needed"))
    folder = _folder(root, owner)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / f"{slug}.json").exists() and len(list(folder.glob("*.json"))) >= PER_OWNER:
        raise TlguiError(f"you have {PER_OWNER} recipes: delete some before saving more")
    atomic_write(folder / f"{slug}.json", json.dumps({"name": name.strip()[:MAX_NAME], "config": as_recipe(config)},
                                                     indent=1))
    return slug


def names(root: Path, owner: str) -> list[tuple[str, str]]:
    """(name, key) of the owner's recipes, by name."""
    found = []
    for path in _folder(root, owner).glob("*.json"):
        try:
            found.append((json.loads(path.read_text())["name"], path.stem))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda x: x[0].lower())


def load(root: Path, owner: str, key: str) -> RunConfig:
    path = _folder(root, owner) / f"{_slug(key)}.json"
    try:
        return RunConfig.from_dict(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TlguiError(t("recipe_gone")) from None
