"""The studio as a service: sessions, runs, the decoding worker and the server's limits, with plain
values in and plain values out. No Gradio here: :mod:`magnet_demo.studio.handlers` calls it and
turns what it returns into the page's updates (:mod:`magnet_demo.studio.screens`).

Refusals are :class:`~magnet_demo.incidents.Refusal` (a ValueError with a title) whose messages
are for people. A visitor's key is Gradio's session hash; only :meth:`Studio.new_run` makes a
session, everything else only looks one up.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magnet_demo.audio_modes import AudioRequest
from magnet_demo.budgets import FileBudget, MemoryBudget
from magnet_demo.controls import (
    DEFAULT_KEEP_RUNS,
    DEFAULT_KEEP_RUNS_PER_SESSION,
    DEFAULT_MEMORY_MB,
    METHOD_MAGNET,
    DecodingConfig,
    Limits,
)
from magnet_demo.costs import CostModel, expected_line
from magnet_demo.engine import MAX_BATCH
from magnet_demo.form import Settings, live_values, whole
from magnet_demo.incidents import Refusal
from magnet_demo.lab import METHOD_LABELS
from magnet_demo.model_cache import ModelCache
from magnet_demo.models import EMBEDDED_NAME
from magnet_demo.session import (
    DEFAULT_OUTPUT_ROOT,
    RUNNING,
    Run,
    Session,
    SessionStore,
)
from magnet_demo.sources import ModelSources
from magnet_demo.studio.catalog import Catalog
from magnet_demo.studio.decoding import Decoding, decode_audio, probe_records
from magnet_demo.studio.followups import check_extendable, check_parent, extension_of, fork_of
from magnet_demo.workers import InProcessWorker

log = logging.getLogger(__name__)

#: threads that write runs' traces and animations once their audio is out, outside the decoding slot
FILE_WRITERS = 1


@dataclass(frozen=True)
class RunStart:
    """A run about to decode: where it belongs, what it is compared with, what the page notes."""

    session: Session
    run: Run
    previous: Run | None
    notes: tuple[str, ...]
    rescorer_offered: bool


def _still_decoding(run: Run) -> str:
    """Why a visitor's second run waits for nothing: their run ``run`` decodes."""
    return (
        f"Run #{run.number} of this session is still decoding: stop it or wait for it to finish "
        "before starting another."
    )


def refuse_audio(method: object) -> None:
    """A Refusal when ``method`` (a raw value) is not MAGNeT's: only MAGNeT takes input audio."""
    if method in METHOD_LABELS and method != METHOD_MAGNET:
        raise Refusal(
            f"{METHOD_LABELS[method]} runs write from the prompt alone: choose the mode 'generate', "
            "or the method MAGNeT to continue or re-decode audio.",
            "Check the settings",
        )


def check_method(models: ModelCache, model: str, config: DecodingConfig, audio: AudioRequest | None) -> None:
    """A Refusal for an autoregressive or Hybrid run this server cannot make, or input audio
    for a clip longer than one window."""
    if config.clip_seconds > config.duration and audio is not None:
        raise Refusal(
            f"Input audio is continued or re-decoded within one window ({config.duration:g} s): "
            "ask for at most that duration, or generate the long clip from the prompt.",
            "Check the settings",
        )
    if config.method == METHOD_MAGNET:
        return
    label = METHOD_LABELS[config.method]
    if audio is not None:
        refuse_audio(config.method)
    partner, why = models.rescorer_name(model)
    if partner is None:
        raise Refusal(
            f"{label} runs need the model's autoregressive partner, and none reads this "
            f"model's tokens ({why}). Choose MAGNeT.",
            "Check the settings",
        )


def sample_index(run: Run | None, sample: object) -> int:
    """0-based sample index from the 1-based 'sample shown' control (a run with fewer samples
    shows its last); a Refusal for a value that is not a sample number."""
    try:
        value = whole(1 if sample in (None, "") else sample, "Sample shown", 1, MAX_BATCH) - 1
    except ValueError as error:
        raise Refusal(str(error), "Check the settings") from None
    return 0 if run is None else min(value, len(run.prompts) - 1)


class Studio:
    """Sessions of runs on a server. Args as :class:`~magnet_demo.studio.handlers.DemoApp`'s."""

    def __init__(
        self,
        default_model: str = EMBEDDED_NAME,
        output_root: str | Path = DEFAULT_OUTPUT_ROOT,
        models: ModelCache | None = None,
        worker=None,
        examples: dict[str, list[str]] | None = None,
        model_note: str = "",
        limits: Limits | None = None,
        sources: ModelSources | None = None,
        keep_runs: int = DEFAULT_KEEP_RUNS,
        keep_runs_per_session: int = DEFAULT_KEEP_RUNS_PER_SESSION,
        memory_mb: float = DEFAULT_MEMORY_MB,
    ):
        models = models or ModelCache()
        self.catalog = Catalog(
            default_model, models, sources or ModelSources(extra=(default_model,)), examples
        )
        self.worker = worker or InProcessWorker(models)
        self.model_note = model_note
        self.limits = limits or Limits()
        files = FileBudget(keep_runs, keep_runs_per_session)
        self.sessions = SessionStore(output_root, files=files, memory=MemoryBudget(int(memory_mb * 2**20)))
        self._writers = ThreadPoolExecutor(FILE_WRITERS, thread_name_prefix="magnet-files")
        self.costs = CostModel()

    @property
    def models(self) -> ModelCache:
        return self.catalog.models

    # ----------------------------------------------------------------- sessions
    def admit(self, key: str | None, waiting: int) -> str | None:
        """Why a new run of ``key``'s session may not join the queue (None: it may).

        ``waiting`` counts the session's runs already waiting in the queue. One run per visitor,
        decoding or waiting: the page's own button waits for the pending run and then sends only
        the last click, so this refuses API clients and a fork sent while a run is pending.
        """
        session = self.sessions.get(key)
        if session is not None and session.active is not None:
            return _still_decoding(session.active)
        if waiting:
            return (
                "This session already has a run waiting in the queue: wait for it, or stop it once it starts."
            )
        return None

    def run_of(self, key: str | None, number: object) -> tuple[Session | None, Run | None]:
        """``key``'s session and its run ``number`` (None: the latest); a Refusal for one it lacks."""
        session = self.sessions.get(key)
        if session is None:
            return None, None
        try:
            return session, session.run(number)
        except ValueError as error:
            raise Refusal(str(error), "No such run") from None

    # ----------------------------------------------------------------- new runs
    def new_run(self, key: str | None, settings: Settings, audio: AudioRequest | None = None) -> RunStart:
        """A new run of ``settings`` (given tokens from ``audio`` when set), ready to decode."""
        session = self.sessions.open(key)
        self._one_at_a_time(session)
        loaded = self.catalog.load(settings.model)
        try:
            prompts = settings.prompts(self.limits)
            config = settings.config(loaded, self.limits)
            seed = settings.pick_seed()
            given = None if audio is None else audio.given(loaded, config)
            plan = settings.plan(config, loaded)
        except ValueError as error:
            raise Refusal(str(error), "Check the settings") from None
        kept = given if given is not None and given.mask.any() else None  # all-False: plain generation
        check_method(self.models, self.catalog.name(settings.model), config, audio)
        previous = session.run(None)
        run = session.new_run(
            model_name=self.catalog.name(settings.model),
            prompts=prompts,
            config=config,
            seed=seed,
            sample_rate=loaded.sample_rate,
            frame_rate=loaded.frame_rate,
            num_frames=plan.frames,
            plan=None if config.method == METHOD_MAGNET and not plan.windows else plan,
            notes=() if given is None else given.notes,
            source="" if given is None else given.source,
            given=None if kept is None else kept.mask,
            given_tokens=None if kept is None else kept.tokens,
            limits=self.limits,
        )
        return self._start(session, run, previous)

    def fork_run(self, key: str | None, run_number: object, step: object, settings: Settings) -> RunStart:
        """Re-decode from step ``step`` (1-based) of run ``run_number`` with ``settings``.

        Prompt, model, seed (the generator state at that step), duration and the step counts of
        the codebooks already decoded come from the parent run; the parent stays as it was.
        """
        session, parent = self.run_of(key, run_number)
        check_parent(parent, self.limits)
        self._one_at_a_time(session)
        index = self.step_index(parent, step)
        record = parent.records[index]
        if record.is_last:
            raise Refusal("That is the last step: nothing is left to re-decode. Pick an earlier step.")
        loaded = self.catalog.load(parent.model_name)
        run = session.new_run(**fork_of(parent, index, settings, self.limits, loaded))
        return self._start(session, run, parent)

    def extend_run(self, key: str | None, run_number: object, seconds: object) -> RunStart:
        """Continue run ``run_number`` (finished) by ``seconds``, window after window, the same way.

        Model, prompts, seed and settings come from the run; the first new window continues its
        last ``overlap_seconds`` and windows go on counting the run's (so seeds carry on). The run
        stays as it was; the extension is a new run whose canvas starts with it, as given tokens.
        """
        session, parent = self.run_of(key, run_number)
        check_extendable(parent)
        self._one_at_a_time(session)
        loaded = self.catalog.load(parent.model_name)
        run = session.new_run(**extension_of(parent, seconds, self.limits, loaded))
        return self._start(session, run, parent)

    @staticmethod
    def _one_at_a_time(session: Session) -> None:
        """A Refusal when ``session`` already has a run decoding: one run per visitor at a time."""
        if session.active is not None:
            raise Refusal(_still_decoding(session.active), "One run at a time")

    def _start(self, session: Session, run: Run, previous: Run | None) -> RunStart:
        rescorer_offered = self.models.rescorer_name(run.model_name)[0] is not None
        notes = list(run.notes)
        if run.config.rescore_weight > 0 and not rescorer_offered:
            notes.append("rescoring off: no rescorer reads this model's tokens")
        return RunStart(session, run, previous, tuple(notes), rescorer_offered)

    def decoding(self, start: RunStart, readable: tuple[type, ...] = ()) -> Decoding:
        """The decoding of a started run (iterate it for batches of records); ``readable``: more
        exception types whose messages are for people."""
        return Decoding(
            start.session,
            start.run,
            self.worker,
            self.sessions,
            self.limits,
            start.rescorer_offered,
            readable,
            self.costs,
        )

    def write_files_later(self, decoding: Decoding, sample: int) -> None:
        """Write the trace and animation of a decoded run in the background: the decoding slot is
        free for the next run as soon as the audio is out (:meth:`written_files` waits for them)."""
        decoding.run.files_job = self._writers.submit(decoding.write_files, sample)

    def files_pending(self, key: str | None) -> tuple[Session | None, list[Run]]:
        """``key``'s session and its runs whose files are written in the background and were not
        shown yet, oldest first (marked shown now); a run's ``files_job.result()`` waits for them
        and says what could not be written."""
        session = self.sessions.get(key)
        pending = [] if session is None else [r for r in session.runs if r.files_job and not r.files_shown]
        for run in pending:
            run.files_shown = True
        return session, pending

    def expected_time(self, settings: Settings) -> str:
        """What a run of ``settings`` will cost here, for the page (a probe measures the model's
        speed the first time one is asked for, unless the worker spends a visitor's GPU quota)."""
        try:
            loaded = self.catalog.load(settings.model)
            name = self.catalog.name(settings.model)
            config, samples = settings.config(loaded, self.limits), settings.sample_count()
            plan = settings.plan(config, loaded)
        except ValueError as error:
            return f"Expected time: — ({error})"
        if self.costs.rate(name, METHOD_MAGNET) is None and getattr(self.worker, "probes", True):
            records = probe_records(self.worker, name, loaded.num_codebooks, loaded.max_duration)
            self.costs.probe(name, records, loaded.max_duration)
        estimate = self.costs.estimate(name, plan, config, samples)
        return expected_line(estimate, plan, config, samples)

    # ----------------------------------------------------------------- live controls
    def stop(self, key: str | None) -> str:
        """Ask the running decoding of ``key``'s session to stop before its next step."""
        session = self.sessions.get(key)
        run = None if session is None else session.active
        if run is None:
            return "Nothing is decoding."
        run.cancel.set()
        return f"Stopping run #{run.number} after its current step…"

    def steer(self, key: str | None, values: dict) -> str:
        """Apply the live controls (``form.LIVE_FIELDS``, raw) to the running decoding."""
        session = self.sessions.get(key)
        run = None if session is None else session.active
        try:
            checked = live_values(values, self.limits)
        except ValueError as error:
            return f"⚠️ {error}"
        if run is None:
            return "Live controls: used by the next run."
        try:
            applied = run.controls.update(**checked)
        except ValueError as error:
            return f"⚠️ {error}"
        note = ""
        if applied.rescore_weight > 0 and self.models.rescorer_name(run.model_name)[0] is None:
            note = " Rescoring stays off: no rescorer reads this model's tokens."
        return f"Applied to run #{run.number} from its next step." + note

    # ----------------------------------------------------------------- looking back
    @staticmethod
    def step_index(run: Run, step: object) -> int:
        """0-based record index of a 1-based step (None: the last); a Refusal for one not decoded."""
        if step is None or step == "":
            return len(run.records) - 1
        try:
            wanted = whole(step, "Step", 1, 10**9)
        except ValueError as error:
            raise Refusal(str(error), "No such step") from None
        if wanted > len(run.records):
            so_far = " so far" if run.status == RUNNING else ""
            raise Refusal(
                f"Step {wanted} of run #{run.number} is not decoded: it has {len(run.records)} steps{so_far}.",
                "No such step",
            )
        return wanted - 1

    def step_audio(self, session: Session, run: Run, index: int) -> np.ndarray:
        """Audio ``[B, samples]`` of step ``index`` of ``run`` (cached in the session)."""
        return session.preview(run, index, lambda codes: decode_audio(self.worker, run.model_name, codes))

    def run_wav(self, key: str | None, run_number: object, sample: object) -> str:
        """The WAV file of a run of ``key``'s session (to use it as input audio)."""
        _, run = self.run_of(key, run_number)
        wavs = run.wav_files() if run else []
        if not wavs:
            raise Refusal("That run has no audio file (yet, or any more): pick a finished run.")
        return str(wavs[min(sample_index(run, sample), len(wavs) - 1)])
