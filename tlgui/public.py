"""Public mode: what one visitor may ask of a server that anyone can reach.

On with `TLGUI_PUBLIC=1`, and by default where the app runs as a Hugging Face Space (which
sets `SPACE_ID`); `TLGUI_PUBLIC=0` turns it off there. Off, nothing here limits a run (a
private server keeps its freedom) unless its own variable is set. Each refusal is one sentence
that says which limit said no and what to do instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import AUTO
from .data.limits import env_limit
from .errors import TlguiError

# public defaults, each overridden by its environment variable
PUBLIC_MAX_BACKBONES = 3  # TLGUI_MAX_BACKBONES
PUBLIC_MAX_EPOCHS = 30  # TLGUI_MAX_EPOCHS
PUBLIC_MAX_RUN_MINUTES = 20  # TLGUI_MAX_RUN_MINUTES
PUBLIC_RUNS_PER_BROWSER = 1  # TLGUI_RUNS_PER_BROWSER: queued or training at once
PUBLIC_MAX_QUEUE = 16  # TLGUI_MAX_QUEUE: runs queued or training, all browsers together
BYTES_PER_PARAM = 400  # memory one backbone parameter costs while training (weights, grads, optimizer, activations)
MAX_PUBLIC_PARAMS = 30_000_000


def is_public() -> bool:
    flag = os.environ.get("TLGUI_PUBLIC", "").strip().lower()
    if flag:
        return flag not in ("0", "false", "no", "off")
    return bool(os.environ.get("SPACE_ID"))


def _memory_bytes() -> int:
    """The machine's memory, or the container's limit where that is smaller (a Space runs in one)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(open(limit).read().strip()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return total


def default_max_params() -> int:
    """The largest backbone a public server offers: what its memory holds with room for a few runs' data."""
    return int(min(MAX_PUBLIC_PARAMS, _memory_bytes() / BYTES_PER_PARAM))


def _limit(name: str, public_default: float | None, public: bool, scale: float = 1) -> float | None:
    """The variable's value where set (0: no limit), else the public default in public mode, else none."""
    if os.environ.get(name, "").strip():
        value = env_limit(name, 0, scale)
        return value if value > 0 else None
    return public_default * scale if public and public_default is not None else None


@dataclass(frozen=True)
class Policy:
    public: bool
    max_params: int | None
    max_backbones: int | None
    max_epochs: int | None
    max_run_s: float | None
    runs_per_browser: int | None
    max_queue: int | None
    hub_allow: tuple[str, ...] | None = None  # Hub ids (`OWNER/NAME`) a run may name; None: any

    @classmethod
    def from_env(cls) -> Policy:
        public = is_public()
        params = _limit("TLGUI_MAX_BACKBONE_MPARAMS", default_max_params() / 1e6, public, 1e6)
        return cls(public, int(params) if params else None,
                   _int(_limit("TLGUI_MAX_BACKBONES", PUBLIC_MAX_BACKBONES, public)),
                   _int(_limit("TLGUI_MAX_EPOCHS", PUBLIC_MAX_EPOCHS, public)),
                   _limit("TLGUI_MAX_RUN_MINUTES", PUBLIC_MAX_RUN_MINUTES, public, 60),
                   _int(_limit("TLGUI_RUNS_PER_BROWSER", PUBLIC_RUNS_PER_BROWSER, public)),
                   _int(_limit("TLGUI_MAX_QUEUE", PUBLIC_MAX_QUEUE, public)), hub_allowlist(public))

    def allows_backbone(self, name: str, params: int) -> bool:
        from .nets.backbones import is_own_encoder

        if not self.allows_hub(name):
            return False
        return self.max_params is None or params <= self.max_params or is_own_encoder(name)

    def allows_hub(self, name: str) -> bool:
        """Whether a Hub backbone (`hf:OWNER/NAME`) is one this server lets runs download; other names are."""
        name = str(name)
        if not name.startswith("hf:") or self.hub_allow is None:
            return True
        return name[3:].strip().lower() in {a.lower() for a in self.hub_allow}

    def check_hub(self, name: str) -> None:
        """Refuse a Hub backbone outside the allowlist, before anything of it is downloaded."""
        if not self.allows_hub(name):
            shown = ", ".join(self.hub_allow[:6]) + (", ..." if len(self.hub_allow) > 6 else "")
            raise TlguiError(f"{name} is not among the Hub models this server offers ({shown or 'none'}): "
                             "choose one of them (the operator sets TLGUI_HUB_ALLOW)")

    def check_run(self, backbones: list[str], epochs: int) -> None:
        """Refuse settings above this server's limits, before anything is queued."""
        from .nets.backbones import get_info

        if self.max_backbones is not None and len(backbones) > self.max_backbones:
            raise TlguiError(f"this server trains at most {self.max_backbones} backbones in one run: "
                             "choose fewer")
        if self.max_epochs is not None and epochs > self.max_epochs:
            raise TlguiError(f"this server trains at most {self.max_epochs} epochs in one run: choose fewer")
        for name in (n for n in backbones if n != AUTO):  # auto's candidates are installed and small
            self.check_hub(name)
            info = get_info(name)
            if not self.allows_backbone(name, info.params):
                raise TlguiError(f"{name} has {info.params / 1e6:,.0f}M parameters, more than this server offers "
                                 f"({self.max_params / 1e6:,.0f}M at most): choose a smaller backbone")

    def check_queue(self, mine: int, total: int) -> None:
        """`mine`: the caller's runs queued or training; `total`: everyone's."""
        if self.runs_per_browser is not None and mine >= self.runs_per_browser:
            raise TlguiError(f"you already have {mine} run(s) queued or training, the most this server takes "
                             "from one browser: wait for it to end, or stop it")
        if self.max_queue is not None and total >= self.max_queue:
            raise TlguiError(f"this server is busy ({total} runs queued or training): try again in a few minutes")


def hub_allowlist(public: bool) -> tuple[str, ...] | None:
    """`TLGUI_HUB_ALLOW` (ids separated by commas; `*`: any), else in public mode the recommended ones."""
    raw = os.environ.get("TLGUI_HUB_ALLOW")
    if raw is not None and raw.strip():
        ids = tuple(dict.fromkeys(i.strip().removeprefix("hf:") for i in raw.split(",") if i.strip()))
        return None if "*" in ids else ids
    if not public:
        return None
    from .nets.backbones.hub import RECOMMENDED

    return tuple(s.repo for s in RECOMMENDED)


def _int(value: float | None) -> int | None:
    return None if value is None else max(1, int(value))
