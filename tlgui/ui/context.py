"""What every handler shares: settings, the job manager, datasets, sessions, loaded models."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..errors import TlguiError
from ..outputs.bundle import LoadedModel, load_bundle
from ..public import Policy
from . import run_folders
from .estimate import SpeedProbe
from .jobs import JobManager
from .sessions import Sessions, is_owner_key
from .settings import AppSettings
from .store import DatasetStore
from .text import t

MODELS_KEPT = 2


@dataclass
class AppContext:
    settings: AppSettings
    jobs: JobManager
    store: DatasetStore = field(default_factory=DatasetStore)
    sessions: Sessions = field(default_factory=Sessions)
    probe: SpeedProbe = field(default_factory=SpeedProbe)
    _models: OrderedDict = field(default_factory=OrderedDict)
    _models_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, settings: AppSettings) -> AppContext:
        return cls(settings, JobManager(settings.runs_root, settings.max_jobs, Policy.from_env()))

    def owner(self, request: gr.Request | None, key: str | None = None) -> str:
        """The caller. Every handler gets the browser's stored key (`page.owner`) as an input and
        passes it here: a server restart with the tab open, or a click before the page's load
        event ended, then still finds the browser's runs. Without a key (a program), the session's."""
        return key if is_owner_key(key) else self.sessions.owner(request)

    def run_folder(self, run_id: str | None, request: gr.Request | None, key: str | None = None) -> Path:
        """The folder of one of the caller's runs; anyone else's run does not exist for them."""
        if not run_id:
            raise TlguiError(t("status_no_run"))
        folder = run_folders.folder_of(self.settings.runs_root, run_id, self.owner(request, key))
        if folder is None:
            raise TlguiError(t("status_run_missing"))
        return folder

    def model(self, run_id: str, folder: Path) -> LoadedModel:
        """A run's model.zip, loaded once and kept for the next predictions."""
        with self._models_lock:
            if run_id in self._models:
                self._models.move_to_end(run_id)
                return self._models[run_id]
        loaded = load_bundle(folder / "model.zip")
        with self._models_lock:
            self._models[run_id] = loaded
            while len(self._models) > MODELS_KEPT:
                self._models.popitem(last=False)
        return loaded

    def drop_model(self, run_id: str) -> None:
        with self._models_lock:
            self._models.pop(run_id, None)
