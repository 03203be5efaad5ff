"""Training runs in background threads, a queue in front of them, and their live progress.

A request only starts or stops a run and reads its progress: the run itself lives in a thread
of the server, so closing the browser tab does not end it. At most `max_jobs` runs train at a
time (training is CPU- or GPU-bound; two at once are each slower than one after the other);
the others wait in order. A job carries the work it does, so classifier runs and the
pretraining of own encoders share that one queue.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from ..data.datasets import Dataset
from ..errors import TlguiError
from ..public import Policy
from ..runs import checkpoint_epoch, remove_partial_writes
from . import run_folders
from .guard import hide_paths
from .text import duration, t

log = logging.getLogger("tlgui.ui")


@dataclass
class Progress:
    """What a page needs to draw a run: a snapshot, safe to read while the run goes on."""

    run_id: str
    state: str  # queued, running, finished, stopped, failed, interrupted
    history: list[dict] = field(default_factory=list)
    phase: dict | None = None  # the latest `preparing` event
    batch: dict | None = None  # the latest `batch` event
    ahead: int = 0  # runs before this one while it is queued
    error: str | None = None
    warning: str | None = None  # the engine's latest warning (a halved batch size, say)
    estimate: float | None = None  # the engine's own estimate of the whole run, in seconds
    stopping: bool = False
    has_model: bool = False
    metrics: dict = field(default_factory=dict)
    elapsed: float | None = None
    resumable_from: int | None = None  # the epoch a stopped or interrupted run would go on after

    @property
    def done(self) -> bool:
        return self.state in run_folders.TERMINAL


def train_work(job: Job) -> str:
    """A classifier run: the engine's trainer (which draws its mistakes too). Returns how it ended."""
    from ..training.train import Trainer

    result = Trainer(job.config, job.dataset, job.folder, [job.listen], job.stop, job.resume).run()
    job.has_model = result.bundle is not None
    return result.status


@dataclass
class Job:
    run_id: str
    folder: Path
    config: object  # the settings `work` reads (a RunConfig for a classifier)
    dataset: Dataset
    work: Callable[[Job], str] = train_work  # does the run in the job's thread; returns "finished" or "stopped"
    stop: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"
    history: list[dict] = field(default_factory=list)
    phase: dict | None = None
    batch: dict | None = None
    error: str | None = None
    warning: str | None = None
    estimate: float | None = None
    metrics: dict = field(default_factory=dict)
    elapsed: float | None = None
    has_model: bool = False
    resume: bool = False  # go on from the folder's last checkpoint
    owner: str = ""  # the owner's hash, for the per-browser queue limit
    note: str | None = None  # why the server itself stopped the run (its time limit)

    def listen(self, e: dict) -> None:
        """The engine's listener: keep the latest of each kind; drawing is the page's business."""
        kind = e["event"]
        if kind == "started":
            self.estimate = (e.get("estimate") or {}).get("total")
        elif kind == "estimate":
            self.estimate = e["total"]
        elif kind in ("warning", "note"):  # a note: what the run decided (auto's choice, LP-FT's probe)
            self.warning = e.get("message")
        elif kind == "preparing":
            self.phase = e
        elif kind == "batch":
            self.batch = e
        elif kind == "epoch":
            self.history.append(e)
        elif kind in ("finished", "stopped"):
            self.metrics = e.get("metrics") or {}
            self.elapsed = e.get("elapsed")
        elif kind == "failed":
            self.error = e.get("error")


class JobManager:
    def __init__(self, root: Path, max_jobs: int = 1, policy: Policy | None = None):
        self.root, self.max_jobs = Path(root), max_jobs
        self.policy = policy or Policy(False, None, None, None, None, None, None)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running: set[str] = set()
        self._mark_interrupted()

    def _mark_interrupted(self) -> None:
        """Runs that were queued or training when the server last stopped: they can be resumed."""
        for folder, meta in run_folders.all_runs(self.root):
            if meta.get("state") not in run_folders.TERMINAL:
                remove_partial_writes(folder)
                run_folders.update_meta(folder, state="interrupted")

    # -- starting and stopping -----------------------------------------------------------
    def submit(self, owner: str, config: object, dataset: Dataset, meta: dict,
               work: Callable[[Job], str] = train_work) -> str:
        # each run splits its own copy: the engine writes the split into the dataset it is given
        own = dataclasses.replace(dataset, splits=list(dataset.splits))
        with self._lock:
            self._admit(run_folders.owner_hash(owner))
            run_id, folder = run_folders.create(self.root, owner, meta)
            job = Job(run_id, folder, config, own, work, owner=run_folders.owner_hash(owner))
            self._jobs[run_id] = job
            self._queue.append(job)
            self._pump()
        return run_id

    def resume(self, run_id: str, folder: Path, dataset: Dataset) -> None:
        """Queue a stopped or interrupted run again; it goes on from its last epoch checkpoint."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and job.state not in run_folders.TERMINAL:
                return  # already queued or training
            owner = (run_folders.read_meta(folder) or {}).get("owner", "")
            self._admit(owner)
            config = RunConfig.load(folder / "config.json")
            job = Job(run_id, folder, config, dataclasses.replace(dataset, splits=list(dataset.splits)), resume=True,
                      owner=owner)
            run_folders.update_meta(folder, state="queued", error=None)
            self._jobs[run_id] = job
            self._queue.append(job)
            self._pump()

    def stop(self, run_id: str) -> None:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.state in run_folders.TERMINAL:
                return
            job.stop.set()
            if job in self._queue:  # never started: nothing to keep
                self._queue.remove(job)
                self._end(job, "stopped")

    def _admit(self, owner: str) -> None:
        """The queue limits of the server's policy (called with the lock held)."""
        active = [j for j in self._jobs.values() if j.state not in run_folders.TERMINAL]
        self.policy.check_queue(sum(j.owner == owner for j in active), len(active))

    def active_count(self) -> int:
        with self._lock:
            return sum(j.state not in run_folders.TERMINAL for j in self._jobs.values())

    def _pump(self) -> None:
        """Start queued runs while there is room (called with the lock held)."""
        while self._queue and len(self._running) < self.max_jobs:
            job = self._queue.popleft()
            self._running.add(job.run_id)
            job.state = "running"
            run_folders.update_meta(job.folder, state="running")
            threading.Thread(target=self._work, args=(job,), name=f"train-{job.run_id}", daemon=True).start()

    def _work(self, job: Job) -> None:
        state = "failed"
        cap = self.policy.max_run_s
        timer = threading.Timer(cap, self._time_up, args=(job, cap)) if cap else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            state = job.work(job)
        except TlguiError as e:
            job.error = hide_paths(str(e))
        except Exception as e:  # a bug: log it whole, show one line
            log.exception("run %s failed", job.run_id)
            job.error = t("unexpected", kind=type(e).__name__, detail=hide_paths(str(e))[:200])
        finally:
            if timer:
                timer.cancel()
            with self._lock:
                self._running.discard(job.run_id)
                self._end(job, state)
                self._pump()

    def _time_up(self, job: Job, cap: float) -> None:
        """The run reached the server's time limit: stop it as Stop would, keeping its best epoch."""
        job.warning = job.note = t("time_limit_reached", time=duration(cap))
        job.stop.set()

    def _end(self, job: Job, state: str) -> None:
        job.state = state
        run_folders.update_meta(job.folder, state=state, error=job.error, ended=time.time(),
                         note=job.note)
        job.dataset = None  # type: ignore[assignment]  # let the pictures go

    # -- reading -------------------------------------------------------------------------
    def progress(self, run_id: str, folder: Path) -> Progress:
        """The live state of a run of this server, or what its folder says."""
        with self._lock:
            job = self._jobs.get(run_id)
            ahead = 0
            if job is not None and job.state == "queued":
                ahead = len(self._running) + list(self._queue).index(job)
        if job is not None and job.state not in run_folders.TERMINAL:
            return Progress(run_id, job.state, list(job.history), job.phase, job.batch, ahead, warning=job.warning,
                            estimate=job.estimate, stopping=job.stop.is_set())
        return progress_from_disk(run_id, folder)

    def active_run(self, owner_runs: list[dict]) -> str | None:
        """The newest of these runs that is queued or training on this server."""
        with self._lock:
            for meta in owner_runs:
                job = self._jobs.get(meta["id"])
                if job is not None and job.state not in run_folders.TERMINAL:
                    return job.run_id
        return None

    def is_active(self, run_id: str) -> bool:
        job = self._jobs.get(run_id)
        return job is not None and job.state not in run_folders.TERMINAL

    def forget(self, run_id: str) -> None:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and job.state in run_folders.TERMINAL:
                del self._jobs[run_id]


def progress_from_disk(run_id: str, folder: Path) -> Progress:
    meta = run_folders.read_meta(folder) or {}
    res = run_folders.results(folder) or {}
    state = meta.get("state", "failed")
    saved = checkpoint_epoch(folder)
    return Progress(run_id, state, res.get("history") or run_folders.history(folder), error=meta.get("error"),
                    warning=meta.get("note"),
                    has_model=(folder / "model.zip").exists(), metrics=res.get("metrics", {}),
                    elapsed=res.get("elapsed"),
                    resumable_from=(saved or 0) if state == "interrupted" else saved if state == "stopped" else None)

