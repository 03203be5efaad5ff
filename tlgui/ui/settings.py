"""The app's deployment settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
DEFAULT_EXAMPLE = "fashion-mnist"


@dataclass(frozen=True)
class AppSettings:
    runs_root: Path  # every run's folder lives here and survives restarts
    max_jobs: int  # runs training at once; the others wait in a queue
    max_upload_mb: int
    examples_dir: Path = EXAMPLES_DIR

    @classmethod
    def from_env(cls) -> AppSettings:
        return cls(
            runs_root=Path(os.environ.get("TLGUI_RUNS_DIR", "runs")).resolve(),
            max_jobs=max(1, int(os.environ.get("TLGUI_MAX_JOBS", "1"))),
            max_upload_mb=max(1, int(os.environ.get("TLGUI_MAX_UPLOAD_MB", "500"))),
        )
