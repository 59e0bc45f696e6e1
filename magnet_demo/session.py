"""The run/history model behind the UI: loaded models, sessions, runs and the files they leave.

- A :class:`Session` (one per browser tab or API client) keeps every :class:`Run` it made, in
  order, with their records; nothing is dropped while the session lives, and every run's WAV and
  trace files stay on disk in the session's folder.
- A :class:`Run` is one decoding: a fresh one, or a fork that resumes from a step of another run
  (its records start with the parent's records up to that step). It owns its live controls and
  its stop flag (:mod:`magnet_demo.channel`: they reach a worker in another process too), so
  Stop and live steering reach exactly that run.

No Gradio here: the UI maps these objects to components.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magnet_demo import viz
from magnet_demo.audio import preview_codes, write_wav
from magnet_demo.budgets import FileBudget, MemoryBudget
from magnet_demo.canvas_feed import CanvasFeed
from magnet_demo.channel import SharedControls, StopFlag, remove_channel
from magnet_demo.controls import METHOD_MAGNET, DecodingConfig, Limits
from magnet_demo.form import whole
from magnet_demo.lab import LabPlan, planned_schedules
from magnet_demo.models import EMBEDDED_NAME, HUB_MODELS, LoadedModel
from magnet_demo.records import StepRecord

log = logging.getLogger(__name__)

#: where sessions write their files unless told otherwise: private to this user (0700)
DEFAULT_OUTPUT_ROOT = Path(tempfile.gettempdir()) / f"magnet-demo-{os.getuid()}"
#: sessions kept in memory (least recently used ones without a decoding run are forgotten first;
#: their files stay until the file budget deletes them)
MAX_SESSIONS = 64
#: runs a session keeps in memory (older ones are forgotten)
MAX_RUNS_PER_SESSION = 20
#: previews (decoded audio of a step) kept per session
PREVIEW_CACHE = 2
#: hex characters of a session folder's random name
SESSION_NAME_HEX = 12
#: what the page says of a run whose steps were released
RELEASED_NOTE = (
    "its steps were released to keep this server's memory bounded (the least recently used runs go "
    "first); its audio file, trace file, settings and seed stay"
)

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"


def private_root(path: str | Path) -> Path:
    """``path`` as a folder only this user can enter: made with mode 0700, or an existing one
    this user owns (its group and other bits are cleared). ValueError when another user owns it
    or it is a link (someone planted it to read or forge what the server writes)."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ValueError(
            f"The output folder {path} is a link or not a folder: choose another with --output-dir."
        )
    if info.st_uid != os.geteuid():
        raise ValueError(
            f"The output folder {path} belongs to another user: choose another with --output-dir."
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)
    return path


# ---------------------------------------------------------------------------------------------
# models


def model_domain(name: str, model: LoadedModel | None = None) -> str:
    """Which example prompts suit a model: 'music', 'sound' or 'embedded'."""
    name = (name or "").strip()
    if name in HUB_MODELS:
        return HUB_MODELS[name]["domain"]
    if name in ("", EMBEDDED_NAME) or (model is not None and "conditioner" in model.custom_parts):
        return "embedded"
    return "music"


# ---------------------------------------------------------------------------------------------
# runs and sessions


def lab_feed(plan: LabPlan | None, config: DecodingConfig) -> dict:
    """The canvas feed's options of an autoregressive or Hybrid run, or a long clip (none for a
    MAGNeT run of one window): its segments, its rows and its planned schedules."""
    if plan is None or (plan.method == METHOD_MAGNET and not plan.windows):
        return {}
    anneal = config.anneal_temp
    return {
        "decoding_steps": plan.segments,
        "codebooks": len(config.decoding_steps),
        "planner": lambda controls: planned_schedules(plan, controls, anneal),
    }


@dataclass(eq=False)
class Run:
    """One decoding (fresh, or forked from a step of ``parent``) and everything it produced."""

    number: int
    model_name: str
    prompts: tuple[str, ...]
    config: DecodingConfig
    seed: int
    sample_rate: int
    frame_rate: int
    directory: Path
    parent: Run | None = None
    fork_index: int | None = None  # index in parent.records this run resumes after
    notes: tuple[str, ...] = ()
    source: str = ""  # what the run does with input audio ("continues the first 3 s of 'a.wav'")
    num_frames: int = 0  # T, frames decoded
    plan: LabPlan | None = None  # an autoregressive or Hybrid run's segments (None: MAGNeT's steps)
    given: np.ndarray | None = None  # [B, K, T] bool: tokens given by input audio
    given_tokens: np.ndarray | None = None  # [B, K, T] their ids
    limits: Limits | None = None  # the server's: a worker reads the live controls within them
    controls: SharedControls = field(init=False)
    cancel: StopFlag = field(init=False)
    records: list[StepRecord] = field(default_factory=list)
    status: str = RUNNING
    message: str = ""
    audio: np.ndarray | None = None  # [B, samples]
    files: list[Path] = field(default_factory=list)
    files_deleted: bool = False
    steps_released: bool = False
    stop_reason: str = ""  # why the server stopped the run ("" = a person did, or it finished)
    started: float = field(default_factory=time.time)
    files_job: Future | None = field(default=None, repr=False)  # the trace and GIF, written after the audio
    files_shown: bool = False  # the page was given the files of files_job
    _record_bytes: int = field(default=0, repr=False)
    _feed: CanvasFeed | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.controls = SharedControls(self.channel, self.config.controls(), self.limits)
        self.cancel = StopFlag(self.channel)
        if self.parent is not None:
            self.add_records(self.parent.records[: self.fork_index + 1])

    # --- memory
    def add_records(self, records: list[StepRecord]) -> None:
        self.records.extend(records)
        self._record_bytes += sum(record.nbytes for record in records)

    def memory_bytes(self) -> int:
        """What this run holds in memory: records, canvas feed, final audio, given tokens."""
        feed = 0 if self._feed is None else len(self._feed.text)
        audio = 0 if self.audio is None else self.audio.nbytes
        given = sum(a.nbytes for a in (self.given, self.given_tokens) if a is not None)
        return self._record_bytes + feed + audio + given

    @property
    def is_running(self) -> bool:
        return self.status == RUNNING

    @property
    def is_busy(self) -> bool:
        """Decoding, or writing its files from its steps (the memory budget leaves it alone)."""
        return self.is_running or (self.files_job is not None and not self.files_job.done())

    def release(self) -> None:
        """Free the steps, feed and audio (the memory budget's choice); files, settings and seed stay."""
        with self._lock:
            self.records = []
            self._record_bytes = 0
            self._feed = None
            self.audio = None
            self.steps_released = True

    # --- description
    @property
    def total_steps(self) -> int:
        return sum(self.config.decoding_steps) if self.plan is None else self.plan.total_steps

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def fork_depth(self) -> int:
        """0 for a fresh run, 1 for a fork of one, and so on."""
        return 0 if self.parent is None else self.parent.fork_depth + 1

    @property
    def first_new_index(self) -> int:
        """Index of this run's first own record (after the parent's prefix)."""
        return 0 if self.fork_index is None else self.fork_index + 1

    @property
    def name(self) -> str:
        return f"run{self.number:02d}"

    @property
    def channel(self) -> Path:
        """The folder of this run's live controls and stop flag (removed when the run ends)."""
        return self.directory / f".{self.name}-channel"

    def label(self) -> str:
        """One line for the history menu."""
        prompt = self.prompts[0] if len(self.prompts[0]) <= 40 else self.prompts[0][:39] + "…"
        origin = "" if self.parent is None else f" ← #{self.parent.number} step {self.fork_index + 1}"
        samples = f" ×{len(self.prompts)}" if len(self.prompts) > 1 else ""
        source = f" · {self.source}" if self.source else ""
        return (
            f"#{self.number}{origin} · {prompt}{samples}{source} · seed {self.seed} · "
            f"{self.steps_shown()}/{self.total_steps} steps · {self.status}"
        )

    def steps_shown(self) -> str:
        return "released" if self.steps_released else str(len(self.records))

    def wav_files(self) -> list[Path]:
        """This run's WAV files still on disk (one per sample)."""
        return [path for path in self.files if path.suffix == ".wav" and path.is_file()]

    def record_summary(self, index: int | None = None) -> dict:
        """A JSON-able summary of one step (default: the last one)."""
        record = self.records[-1 if index is None else index]
        return {
            "run": self.number,
            "stage": record.stage,
            "step": record.step,
            "steps_in_stage": record.steps_in_stage,
            "global_step": record.global_step,
            "total_steps": record.total_steps,
            "mask_rate": round(record.mask_rate, 6),
            "num_masked": record.num_masked,
            "num_units": record.num_units,
            "newly_fixed": [int(n) for n in record.newly_fixed.sum(axis=-1)],
            "cfg_coef": round(record.cfg_coef, 6),
            "temperature": round(record.temperature, 6),
            "rescore_weight": record.rescore_weight,
            "step_seconds": round(record.step_seconds, 4),
            "elapsed": round(record.elapsed, 3),
        }

    def summary(self) -> dict:
        """A JSON-able summary of the run (status, settings and files)."""
        return {
            "run": self.number,
            "status": self.status,
            "message": self.message,
            "model": self.model_name,
            "prompts": list(self.prompts),
            "seed": self.seed,
            "steps_done": len(self.records),
            "steps_released": self.steps_released,
            "total_steps": self.total_steps,
            "forked_from": None if self.parent is None else [self.parent.number, self.fork_index],
            "audio_in": self.source or None,
            "config": dataclasses.asdict(self.config),
            "files": [p.name for p in self.files],  # names only: no server path reaches a visitor
        }

    # --- pictures and sound
    def feed(self, sample: int = 0) -> CanvasFeed:
        """The page's canvas data of sample ``sample`` (0-based), brought up to the last record.

        One feed is kept per run (the sample last asked for); it only grows while the run decodes.
        """
        sample = min(sample, len(self.prompts) - 1)
        with self._lock:
            if self._feed is None or self._feed.sample != sample:
                options = {"decoding_steps": self.config.decoding_steps, **lab_feed(self.plan, self.config)}
                self._feed = CanvasFeed(
                    self.number,
                    num_frames=self.num_frames,
                    frame_rate=self.frame_rate,
                    sample=sample,
                    samples=len(self.prompts),
                    anneal=self.config.anneal_temp,
                    given=None if self.given is None else self.given[sample],
                    given_tokens=None if self.given_tokens is None else self.given_tokens[sample],
                    revision=self.config.revision_share > 0,
                    **options,
                )
            feed = self._feed
        feed.sync(list(self.records), self.controls.snapshot())
        return feed

    # --- the end of a run
    def finish(self, audio: np.ndarray | None) -> None:
        """Record how the run ended and write its WAV files from ``audio`` ``[B, samples]`` (the
        finished tokens' audio, or a stopped run's last preview; None when no step ran)."""
        remove_channel(self.channel)
        why = f" ({self.stop_reason})" if self.stop_reason else ""
        if not self.records or audio is None:
            self.status = STOPPED
            self.message = "stopped before the first step" + why
            return
        last = self.records[-1]
        self.status = FINISHED if last.is_last else STOPPED
        if not last.is_last:
            self.message = f"stopped after step {last.global_step + 1} of {last.total_steps}{why}"
        self.audio = np.asarray(audio)
        for b, wav in enumerate(self.audio):
            suffix = "" if len(self.audio) == 1 else f"-sample{b + 1}"
            self.files.append(write_wav(self.directory / f"{self.name}{suffix}.wav", wav, self.sample_rate))

    def delete_files(self) -> None:
        """Delete this run's files (the server's budget); records, audio, settings and seed stay."""
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files = []
        self.files_deleted = True

    def fail(self, message: str) -> None:
        """The run ended with an error; its records so far stay viewable."""
        remove_channel(self.channel)
        self.status, self.message = FAILED, message

    def write_trace(self) -> Path | None:
        """Save the records as ``.npz`` (None when the trace module is missing)."""
        try:
            from magnet_demo.trace import save_trace
        except ImportError:
            return None
        meta = {
            "model": self.model_name,
            "prompts": list(self.prompts),
            "seed": self.seed,
            "config": dataclasses.asdict(self.config),
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "status": self.status,
            "source": self.source or None,  # input audio, or the run an extension continues
            "forked_from": None
            if self.parent is None
            else {"run": self.parent.number, "index": self.fork_index},
        }
        path = save_trace(self.records, self.directory / f"{self.name}-trace.npz", meta=meta)
        self.files.append(path)
        return path

    def write_gif(self, sample: int = 0) -> Path:
        """Save the animation of the decoding of one sample."""
        suffix = "" if len(self.prompts) == 1 else f"-sample{sample + 1}"
        path = viz.animation_gif(
            self.records,
            self.directory / f"{self.name}{suffix}.gif",
            sample=sample,
            frame_rate=self.frame_rate,
        )
        self.files.append(path)
        return path


class Session:
    """The runs of one person (browser tab or API client), in order; files in ``directory``.

    The folder has a random name of the server's (never the visitor's key) and is made, private,
    when the first run starts. At most ``max_runs`` runs stay in memory (older ones are
    forgotten; a fork keeps its parent), and at most :data:`PREVIEW_CACHE` step previews.
    """

    def __init__(self, key: str, directory: Path, max_runs: int = MAX_RUNS_PER_SESSION):
        self.key = key
        self.directory = directory
        self.max_runs = max_runs
        self.runs: list[Run] = []
        self.shown: int | None = None  # the number of the run the page shows: the newest, or one put back
        self._made = 0
        self._previews: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The session's folder name: what the log calls it (the key stays out of logs)."""
        return self.directory.name

    def new_run(self, **kwargs) -> Run:
        with self._lock:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made += 1
            run = Run(number=self._made, directory=self.directory, **kwargs)
            self.runs.append(run)
            del self.runs[: max(0, len(self.runs) - self.max_runs)]
            self.shown = run.number
        return run

    def run(self, number: object = None) -> Run | None:
        """Run ``number`` (1-based), the latest one when ``number`` is None; None without runs.

        Raises ValueError with a readable message for a number this session does not hold.
        """
        runs = self.runs
        if not runs or number is None or number == "":
            return runs[-1] if runs else None
        wanted = whole(number, "Run number", 1, 10**9)
        for run in runs:
            if run.number == wanted:
                return run
        if wanted <= self._made:
            raise ValueError(
                f"Run #{wanted} is no longer kept: this session keeps its last {self.max_runs} runs."
            )
        held = f"runs #{runs[0].number}-#{runs[-1].number}" if runs else "no runs yet"
        raise ValueError(f"This session has no run #{wanted} ({held}).")

    @property
    def active(self) -> Run | None:
        """The run still decoding, if any."""
        return next((r for r in reversed(self.runs) if r.status == RUNNING), None)

    def preview(self, run: Run, index: int, decode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Audio ``[B, samples]`` of step ``index`` of ``run`` (finished codebooks + current
        proposals), cached: the session's last :data:`PREVIEW_CACHE` previews are kept.

        ``decode`` turns codes ``[B, K', T]`` into audio (the worker's codec).
        """
        key = (run.number, index)
        with self._lock:
            if key in self._previews:
                self._previews.move_to_end(key)
                return self._previews[key]
        audio = decode(preview_codes(run.records[index]))
        with self._lock:
            self._previews[key] = audio
            while len(self._previews) > PREVIEW_CACHE:
                self._previews.popitem(last=False)
        return audio

    def files(self) -> list[str]:
        """Every file of every run, oldest first."""
        return [str(p) for run in self.runs for p in run.files if p.exists()]

    def choices(self) -> list[tuple[str, int]]:
        """(label, number) of every run, newest first."""
        return [(run.label(), run.number) for run in reversed(self.runs)]


class SessionStore:
    """Sessions by key (Gradio's session hash).

    Only :meth:`open` (a run endpoint) makes a session; :meth:`get` only looks one up, so calls
    with made-up keys cost nothing. Beyond ``capacity`` the least recently used sessions without
    a decoding run are forgotten (their files stay until the file budget deletes them).
    """

    def __init__(
        self,
        root: str | Path = DEFAULT_OUTPUT_ROOT,
        capacity: int = MAX_SESSIONS,
        files: FileBudget | None = None,
        memory: MemoryBudget | None = None,
    ):
        self.root = Path(root)
        self.capacity = capacity
        self.budget = files or FileBudget()
        self.memory = memory or MemoryBudget()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> Session | None:
        """The session of ``key``, or None: nothing is made."""
        with self._lock:
            session = self._sessions.get(key or "local")
            if session is not None:
                self._sessions.move_to_end(session.key)
            return session

    def open(self, key: str | None) -> Session:
        """The session of ``key``, made (with a random folder name) when new."""
        key = key or "local"
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                name = secrets.token_hex(SESSION_NAME_HEX // 2)
                session = self._sessions[key] = Session(key, self.root / f"{time.strftime('%Y%m%d')}-{name}")
            self._sessions.move_to_end(key)
            idle = [k for k, kept in self._sessions.items() if kept.active is None and k != key]
            for old in idle[: max(0, len(self._sessions) - self.capacity)]:
                del self._sessions[old]
            return session

    def forget(self, key: str | None) -> None:
        """Drop a session's runs from memory, unless one is decoding (files stay until the budget
        deletes them)."""
        with self._lock:
            session = self._sessions.get(key or "local")
            if session is not None and session.active is None:
                del self._sessions[session.key]
