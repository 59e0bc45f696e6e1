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
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magnet_demo import viz
from magnet_demo.audio import preview_codes, write_wav
from magnet_demo.channel import SharedControls, StopFlag, remove_channel
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import MAX_BATCH
from magnet_demo.models import EMBEDDED_NAME, HUB_MODELS, LoadedModel
from magnet_demo.records import StepRecord

log = logging.getLogger(__name__)

#: where sessions write their files unless told otherwise
DEFAULT_OUTPUT_ROOT = Path(tempfile.gettempdir()) / "magnet-demo"
#: sessions kept in memory (least recently used ones are forgotten first; their files stay)
MAX_SESSIONS = 256
#: previews (decoded audio of a step) kept per run
PREVIEW_CACHE = 8
#: largest seed offered by "random"
MAX_SEED = 2**31 - 1
#: codebook 1 gets more steps than the others by default (audiocraft: 20, 10, 10, 10)
FIRST_STAGE_STEPS = 20
LATER_STAGE_STEPS = 10

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"


# ---------------------------------------------------------------------------------------------
# settings


def parse_numbers(text: str, what: str, kind: type = float) -> tuple:
    """``"20, 10 10"`` -> ``(20, 10, 10)``; ValueError naming ``what`` when a value is not a number."""
    values = []
    for item in str(text).replace(",", " ").split():
        try:
            values.append(kind(item))
        except ValueError:
            noun = "whole number" if kind is int else "number"
            raise ValueError(f"{what}: '{item}' is not a {noun}.") from None
    return tuple(values)


def default_steps(num_codebooks: int) -> tuple[int, ...]:
    """audiocraft's default step counts, for any number of codebooks."""
    return (FIRST_STAGE_STEPS,) + (LATER_STAGE_STEPS,) * (num_codebooks - 1)


def steps_text(steps: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in steps)


@dataclass(frozen=True)
class Settings:
    """What a person set in the page, before validation (see :meth:`config`)."""

    prompt: str
    model: str = EMBEDDED_NAME
    duration: float = 10.0
    decoding_steps: str = steps_text(default_steps(4))
    span_arrangement: str = "nonoverlap"
    span_scoring: str = "max"
    temperature: float = 3.0
    top_p: float = 0.9
    top_k: int = 0
    max_cfg_coef: float = 10.0
    min_cfg_coef: float = 1.0
    cfg_schedule: str = "linear"
    cfg_curve: str = ""
    rescore_weight: float = 0.0
    seed: int = 0
    random_seed: bool = False
    samples: int = 1

    def prompts(self) -> tuple[str, ...]:
        """The prompt repeated once per sample; ValueError when empty or too many samples."""
        prompt = (self.prompt or "").strip()
        if not prompt:
            raise ValueError("The prompt is empty: describe the music or sound you want.")
        samples = int(self.samples)
        if not 1 <= samples <= MAX_BATCH:
            raise ValueError(f"Number of samples must be between 1 and {MAX_BATCH}, got {samples}.")
        return (prompt,) * samples

    def pick_seed(self) -> int:
        if self.random_seed:
            return secrets.randbelow(MAX_SEED)
        try:
            seed = int(self.seed)
        except (TypeError, ValueError):
            raise ValueError(f"Seed must be a whole number, got {self.seed!r}.") from None
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"Seed must be between 0 and {MAX_SEED}, got {seed}.")
        return seed

    def config(self, model: LoadedModel) -> DecodingConfig:
        """The validated DecodingConfig for ``model``; ValueError with a readable message."""
        steps = parse_numbers(self.decoding_steps, "Decoding steps", int)
        if len(steps) != model.num_codebooks:
            raise ValueError(
                f"Decoding steps: give one step count per codebook; this model has {model.num_codebooks} "
                f"codebooks (e.g. '{steps_text(default_steps(model.num_codebooks))}'), got {len(steps)}."
            )
        config = DecodingConfig(
            decoding_steps=steps,
            duration=float(self.duration),
            temperature=float(self.temperature),
            top_p=float(self.top_p),
            top_k=int(self.top_k),
            max_cfg_coef=float(self.max_cfg_coef),
            min_cfg_coef=float(self.min_cfg_coef),
            cfg_schedule=self.cfg_schedule,
            cfg_curve=parse_numbers(self.cfg_curve, "CFG curve") if self.cfg_schedule == "curve" else (),
            span_scoring=self.span_scoring,
            span_arrangement=self.span_arrangement,
            rescore_weight=float(self.rescore_weight),
        )
        config.check_model(model.num_codebooks, model.max_duration, model.lm.card)
        return config

    def fork_config(self, parent: DecodingConfig, record: StepRecord) -> tuple[DecodingConfig, list[str]]:
        """Settings for re-decoding after ``record`` of a run made with ``parent``.

        The canvas fixes the duration and span arrangement, and the stages already decoded fix
        their step counts; everything else comes from these settings. Returns the config and
        notes on what was kept from the parent.
        """
        notes = []
        steps = parent.decoding_steps
        try:
            wanted = parse_numbers(self.decoding_steps, "Decoding steps", int)
        except ValueError:
            wanted = steps
        done = record.stage + 1
        if len(wanted) == len(steps) and wanted[:done] != steps[:done]:
            notes.append(f"kept the decoding steps of codebooks 1-{done} ({steps_text(steps[:done])})")
        if len(wanted) == len(steps):
            steps = steps[:done] + tuple(wanted[done:])
        if float(self.duration) != parent.duration:
            notes.append(f"kept the duration ({parent.duration:g} s)")
        if self.span_arrangement != parent.span_arrangement:
            notes.append(f"kept the span arrangement ({parent.span_arrangement})")
        config = parent.replace(
            decoding_steps=steps,
            temperature=float(self.temperature),
            top_p=float(self.top_p),
            top_k=int(self.top_k),
            max_cfg_coef=float(self.max_cfg_coef),
            min_cfg_coef=float(self.min_cfg_coef),
            cfg_schedule=self.cfg_schedule,
            cfg_curve=parse_numbers(self.cfg_curve, "CFG curve") if self.cfg_schedule == "curve" else (),
            span_scoring=self.span_scoring,
            rescore_weight=float(self.rescore_weight),
        )
        return config, notes


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
    controls: SharedControls = field(init=False)
    cancel: StopFlag = field(init=False)
    records: list[StepRecord] = field(default_factory=list)
    status: str = RUNNING
    message: str = ""
    audio: np.ndarray | None = None  # [B, samples]
    files: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    _plot: viz.SchedulePlot | None = field(default=None, repr=False)
    _previews: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.controls = SharedControls(self.channel, self.config.controls())
        self.cancel = StopFlag(self.channel)
        if self.parent is not None:
            self.records.extend(self.parent.records[: self.fork_index + 1])

    # --- description
    @property
    def total_steps(self) -> int:
        return sum(self.config.decoding_steps)

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
        return (
            f"#{self.number}{origin} · {prompt}{samples} · seed {self.seed} · "
            f"{len(self.records)}/{self.total_steps} steps · {self.status}"
        )

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
            "total_steps": self.total_steps,
            "forked_from": None if self.parent is None else [self.parent.number, self.fork_index],
            "config": dataclasses.asdict(self.config),
            "files": [str(p) for p in self.files],
        }

    # --- pictures and sound
    def schedule_image(self, index: int | None = None) -> np.ndarray:
        """The schedules plot with the cursor at record ``index`` (default: the last one)."""
        with self._lock:
            if self._plot is None:
                self._plot = viz.SchedulePlot(self.config.decoding_steps, self.config.anneal_temp)
        records = list(self.records)
        if not records:
            return self._plot.render([], controls=self.controls.snapshot())
        return self._plot.render(records, len(records) - 1 if index is None else index)

    def step_image(self, index: int | None = None, sample: int = 0) -> np.ndarray:
        record = self.records[-1 if index is None else index]
        return viz.step_image(record, min(sample, len(self.prompts) - 1), frame_rate=self.frame_rate)

    def preview(self, index: int, decode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Audio ``[B, samples]`` of step ``index`` (finished codebooks + current proposals), cached.

        ``decode`` turns codes ``[B, K', T]`` into audio (the worker's codec).
        """
        with self._lock:
            if index in self._previews:
                self._previews.move_to_end(index)
                return self._previews[index]
        audio = decode(preview_codes(self.records[index]))
        with self._lock:
            self._previews[index] = audio
            while len(self._previews) > PREVIEW_CACHE:
                self._previews.popitem(last=False)
        return audio

    # --- the end of a run
    def finish(self, audio: np.ndarray | None) -> None:
        """Record how the run ended and write its WAV files from ``audio`` ``[B, samples]`` (the
        finished tokens' audio, or a stopped run's last preview; None when no step ran)."""
        remove_channel(self.channel)
        if not self.records or audio is None:
            self.status = STOPPED
            self.message = "stopped before the first step"
            return
        last = self.records[-1]
        self.status = FINISHED if last.is_last else STOPPED
        if not last.is_last:
            self.message = f"stopped after step {last.global_step + 1} of {last.total_steps}"
        self.audio = np.asarray(audio)
        for b, wav in enumerate(self.audio):
            suffix = "" if len(self.audio) == 1 else f"-sample{b + 1}"
            self.files.append(write_wav(self.directory / f"{self.name}{suffix}.wav", wav, self.sample_rate))

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
    """The runs of one person (browser tab or API client), in order; files in ``directory``."""

    def __init__(self, key: str, directory: Path):
        self.key = key
        self.directory = directory
        self.runs: list[Run] = []
        self._lock = threading.Lock()

    def new_run(self, **kwargs) -> Run:
        with self._lock:
            run = Run(number=len(self.runs) + 1, directory=self.directory, **kwargs)
            self.runs.append(run)
        return run

    def run(self, number: int | str | None) -> Run | None:
        """Run ``number`` (1-based), or the latest one when ``number`` is None or unknown."""
        try:
            index = int(number) - 1
        except (TypeError, ValueError):
            index = -1
        runs = self.runs
        if not runs:
            return None
        return runs[index] if 0 <= index < len(runs) else runs[-1]

    @property
    def active(self) -> Run | None:
        """The run still decoding, if any."""
        return next((r for r in reversed(self.runs) if r.status == RUNNING), None)

    def files(self) -> list[str]:
        """Every file of every run, oldest first."""
        return [str(p) for run in self.runs for p in run.files if p.exists()]

    def choices(self) -> list[tuple[str, int]]:
        """(label, number) of every run, newest first."""
        return [(run.label(), run.number) for run in reversed(self.runs)]


class SessionStore:
    """Sessions by key (Gradio's session hash), least recently used forgotten beyond a limit."""

    def __init__(self, root: str | Path = DEFAULT_OUTPUT_ROOT, capacity: int = MAX_SESSIONS):
        self.root = Path(root)
        self.capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> Session:
        key = key or "local"
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                safe = "".join(c for c in key if c.isalnum() or c in "-_")[:64] or "session"
                directory = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"
                directory.mkdir(parents=True, exist_ok=True)
                session = self._sessions[key] = Session(key, directory)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
            return session

    def forget(self, key: str | None) -> None:
        """Drop a session's runs from memory (its files stay on disk)."""
        with self._lock:
            self._sessions.pop(key or "local", None)
