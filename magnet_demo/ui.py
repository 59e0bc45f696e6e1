"""The Gradio page: watch MAGNeT decode, steer it live, scrub back, fork, listen and download.

:class:`DemoApp` holds the handlers (plain methods, callable without a browser: the tests call
them directly); :mod:`magnet_demo.layout` lays out the page and wires the events. Data flows one way:
settings -> :mod:`magnet_demo.session` (runs, engine) -> :mod:`magnet_demo.viz` / audio -> here.

Named API endpoints (``gradio_client``): ``/generate`` and ``/fork`` stream one update per decoding
step (the ``step`` JSON output says which), ``/stop``, ``/steer`` (live controls), ``/step``
(inspect / listen to a step), ``/show_run`` and ``/model_info``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
from gradio import utils as gradio_utils

from magnet_demo import audio_in, texts, viz
from magnet_demo.audio_modes import (
    CONTINUE,
    DEFAULT_KEEP_SECONDS,
    DEFAULT_REGION,
    GENERATE,
    REGION,
    AudioRequest,
)
from magnet_demo.budgets import FileBudget, MemoryBudget
from magnet_demo.canvas_feed import CanvasFeed
from magnet_demo.controls import DEFAULT_KEEP_RUNS_PER_SESSION, DEFAULT_MEMORY_MB, DecodingConfig, Limits
from magnet_demo.engine import MAX_BATCH
from magnet_demo.form import (
    Settings,
    check_cfg_range,
    default_steps,
    number,
    parse_numbers,
    steps_text,
    uploaded_file,
    whole,
)
from magnet_demo.incidents import visitor_message, without_paths
from magnet_demo.model_cache import ModelCache
from magnet_demo.models import EMBEDDED_NAME, HUB_MODELS, SETTINGS_FIELDS, LoadedModel
from magnet_demo.schedules import CFG_LINEAR, CFGSchedule
from magnet_demo.session import (
    DEFAULT_KEEP_RUNS,
    DEFAULT_OUTPUT_ROOT,
    RELEASED_NOTE,
    RUNNING,
    Run,
    Session,
    SessionStore,
    model_domain,
)
from magnet_demo.sources import AUTO_NAME, ModelSources
from magnet_demo.workers import AudioJob, DecodeJob, FinalAudio, InProcessWorker, batches_in_thread

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from magnet_demo.layout import MainView

EXAMPLES_PATH = Path(__file__).resolve().parent.parent / "assets" / "examples.json"
TITLE = "MAGNeT, step by step"
#: 16-bit PCM full scale, for audio handed to Gradio as numbers
PCM_SCALE = 32767

INTRO = """
# MAGNeT, step by step
[MAGNeT](https://arxiv.org/abs/2401.04577) writes all the audio tokens of a clip at once, then
re-masks the least confident spans and predicts them again, a few steps per codebook, coarse to
fine. Type a prompt and **Generate**: every step shows which spans were unmasked, per codebook.
Change the CFG, temperature or rescoring weight while it runs (they apply from the next step),
scrub back to any step to hear it, and **re-decode from that step** with other settings.
"""
RESCORING_HELP = (
    "Span confidence = (1 − w) · MAGNeT + w · rescorer (the paper's figure). w = 0 is plain MAGNeT."
)


class _NeverStop:
    """The stop flag of a job nobody stops (a step's audio)."""

    def set(self) -> None:
        pass

    def is_set(self) -> bool:
        return False


_NEVER_STOP = _NeverStop()


def load_examples(path: Path = EXAMPLES_PATH) -> dict[str, list[str]]:
    """Example prompts by model domain ('embedded', 'music', 'sound'); empty lists if missing."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = {}
    return {key: list(data.get(key, [])) for key in ("embedded", "music", "sound")}


def _pcm(audio: np.ndarray) -> np.ndarray:
    """Float audio -> int16, peak-normalised (what gr.Audio plays without conversion warnings)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    scaled = audio / peak if peak > 0 else audio
    return (np.clip(scaled, -1.0, 1.0) * PCM_SCALE).astype(np.int16)


class DemoApp:
    """Handlers of the page. ``request`` (injected by Gradio) selects the session; None = 'local'.

    Args:
        default_model: model selected when the page opens.
        output_root: where sessions write their WAV, trace and GIF files.
        models: a shared :class:`ModelCache` (one load per model name).
        worker: where decodings run (:mod:`magnet_demo.workers`; default: in this process).
        model_note: a line on how the model was chosen, shown under the model menu.
        limits: the caps on one request (steps, prompt length, CFG points, fork depth).
        sources: which model names visitors may load (default: the embedded and released ones).
        keep_runs: runs whose files the server keeps on disk (the largest holder's oldest go first).
        keep_runs_per_session: runs whose files one session keeps (its oldest go first).
        memory_mb: what all runs keep in memory, MiB (least recently used runs release their steps).
    """

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
        self.default_model = default_model
        self.models = models or ModelCache()
        self.worker = worker or InProcessWorker(self.models)
        self.model_note = model_note
        self.limits = limits or Limits()
        self.sources = sources or ModelSources(extra=(default_model,))
        self.sessions = SessionStore(
            output_root,
            files=FileBudget(keep_runs, keep_runs_per_session),
            memory=MemoryBudget(int(memory_mb * 2**20)),
        )
        self.examples = load_examples() if examples is None else examples
        #: the components run handlers update, handed over by :func:`magnet_demo.layout.build_ui`
        self.components: MainView | None = None

    # ----------------------------------------------------------------- helpers
    def session(self, request: gr.Request | None) -> Session | None:
        """The session of ``request``, or None: looking one up never makes one."""
        return self.sessions.get(getattr(request, "session_hash", None))

    def open_session(self, request: gr.Request | None) -> Session:
        """The session of ``request``, made if new (only the run endpoints call this)."""
        return self.sessions.open(getattr(request, "session_hash", None))

    def model_choices(self) -> list[str]:
        choices = [EMBEDDED_NAME, *(HUB_MODELS if self.sources.hub_offered else ())]
        if self.default_model not in choices:
            choices.insert(0, self.default_model)
        return choices

    def model_name(self, name: object) -> str:
        """The name a visitor chose, resolved ('auto' is this page's default) and allowed by the
        server's :class:`ModelSources`; ValueError (refused unread) otherwise."""
        name = self.sources.check(name)
        return self.default_model if name == AUTO_NAME else name

    def load(self, name: object) -> LoadedModel:
        """The model, or gr.Error with a readable message (refused, or the loader's)."""
        try:
            return self.models.get(self.model_name(name))
        except ValueError as error:
            raise gr.Error(without_paths(str(error)), title="Model not available") from None

    def run_of(self, session: Session | None, number: object) -> Run | None:
        """Run ``number`` of ``session`` (None: the latest), or gr.Error for one it does not hold."""
        if session is None:
            return None
        try:
            return session.run(number)
        except ValueError as error:
            raise gr.Error(str(error), title="No such run") from None

    def examples_for(self, name: str, model: LoadedModel | None = None) -> list[list[str]]:
        return [[text] for text in self.examples.get(model_domain(name, model), [])]

    # ----------------------------------------------------------------- model picker
    def model_changed(self, model_name: str, duration: float | None = None):
        """Load the chosen model; returns (info, steps, duration, examples, rescoring info, then one
        update per field of :data:`SETTINGS_FIELDS`: the model's recommended sampling settings).

        A model that cannot be loaded leaves the settings alone and says why in the info box.
        """
        try:
            name = self.model_name(model_name)
            model = self.models.get(name)
        except ValueError as error:
            name = without_paths(str(model_name)[:60])
            message = without_paths(str(error))
            gr.Warning(message)
            return (
                f"⚠️ **{name}** cannot be used: {message}",
                gr.update(),
                gr.update(),
                gr.Dataset(samples=self.examples_for(name)),
                gr.update(),
                *(gr.update() for _ in SETTINGS_FIELDS),
            )
        rescorer, why = self.models.rescorer_name(name)
        info = (
            f"**{name}** ({model.kind}{', ' + ', '.join(model.custom_parts) if model.custom_parts else ''}) · "
            f"{model.num_codebooks} codebooks × {model.lm.card} codes · {model.sample_rate / 1000:g} kHz · "
            f"{model.frame_rate} frames/s · up to {model.max_duration:g} s"
        )
        weight_info = f"{RESCORING_HELP} Rescorer: " + (
            f"**{rescorer}** ({why})." if rescorer else f"none ({why})."
        )
        if model.settings:
            shown = ", ".join(f"{key} {value}" for key, value in model.settings.items())
            info += f" · recommended sampling: {shown}"
        defaults = model.default_config()
        return (
            info,
            steps_text(default_steps(model.num_codebooks)),
            gr.update(
                maximum=model.max_duration,
                value=min(self._duration_or(duration, model.max_duration), model.max_duration),
            ),
            gr.Dataset(samples=self.examples_for(name, model)),
            gr.update(info=weight_info),
            *(gr.update(value=getattr(defaults, key)) for key in SETTINGS_FIELDS),
        )

    # ----------------------------------------------------------------- generation
    def generate(
        self,
        prompt: str,
        model: str,
        duration: float,
        decoding_steps: str,
        span_arrangement: str,
        span_scoring: str,
        temperature: float,
        top_p: float,
        top_k: int,
        max_cfg_coef: float,
        min_cfg_coef: float,
        cfg_schedule: str,
        cfg_curve: str,
        rescore_weight: float,
        seed: int,
        random_seed: bool,
        samples: int,
        sample_shown: int = 1,
        mode: str = GENERATE,
        audio: object = None,
        keep_seconds: float = DEFAULT_KEEP_SECONDS,
        region_start: float = DEFAULT_REGION[0],
        region_end: float = DEFAULT_REGION[1],
        request: gr.Request = None,
    ) -> Iterator[dict]:
        """Decode a new run; yields one update per step, then the audio and the files.

        ``mode`` 'continue' and 're-decode region' take ``audio`` (an uploaded file) as the page's
        button does; ``/continue`` and ``/inpaint`` are the same runs with only their own values.
        """
        settings = self._settings(locals())
        audio_request = self._audio_request(mode, audio, keep_seconds, region_start, region_end)
        yield from self._fresh_run(settings, sample_shown, request, audio_request)

    def continue_clip(
        self,
        audio: object,
        keep_seconds: float,
        prompt: str,
        model: str,
        duration: float,
        decoding_steps: str,
        span_arrangement: str,
        span_scoring: str,
        temperature: float,
        top_p: float,
        top_k: int,
        max_cfg_coef: float,
        min_cfg_coef: float,
        cfg_schedule: str,
        cfg_curve: str,
        rescore_weight: float,
        seed: int,
        random_seed: bool,
        samples: int,
        sample_shown: int = 1,
        request: gr.Request = None,
    ) -> Iterator[dict]:
        """Keep the first ``keep_seconds`` of ``audio`` (an uploaded file) and decode the rest."""
        settings = self._settings(locals())
        audio_request = self._audio_request(CONTINUE, audio, keep_seconds)
        yield from self._fresh_run(settings, sample_shown, request, audio_request)

    def inpaint(
        self,
        audio: object,
        region_start: float,
        region_end: float,
        prompt: str,
        model: str,
        duration: float,
        decoding_steps: str,
        span_arrangement: str,
        span_scoring: str,
        temperature: float,
        top_p: float,
        top_k: int,
        max_cfg_coef: float,
        min_cfg_coef: float,
        cfg_schedule: str,
        cfg_curve: str,
        rescore_weight: float,
        seed: int,
        random_seed: bool,
        samples: int,
        sample_shown: int = 1,
        request: gr.Request = None,
    ) -> Iterator[dict]:
        """Keep ``audio`` (an uploaded file) outside ``[region_start, region_end)`` seconds and
        re-decode inside, every codebook seeing the kept audio on both sides."""
        settings = self._settings(locals())
        audio_request = self._audio_request(REGION, audio, start=region_start, end=region_end)
        yield from self._fresh_run(settings, sample_shown, request, audio_request)

    @staticmethod
    def _upload(audio: object) -> tuple[Path, str] | None:
        """(path, name) of an audio input's raw value: only files in Gradio's upload folder."""
        return uploaded_file(audio, [gradio_utils.get_upload_folder()])

    def _audio_request(self, mode, audio, keep=None, start=None, end=None) -> AudioRequest | None:
        """The checked audio request (gr.Error for a bad one); None in mode 'generate'."""
        try:
            with_audio = mode not in (None, "", GENERATE)
            upload = self._upload(audio) if with_audio else None
            path, name = upload if upload else (None, "")
            return AudioRequest.checked(mode, path, name, keep, start, end)
        except ValueError as error:
            raise gr.Error(without_paths(str(error)), title="Check the audio") from None

    def _fresh_run(
        self, settings: Settings, sample_shown: object, request, audio: AudioRequest | None = None
    ) -> Iterator[dict]:
        """A new run of ``settings`` (given tokens from ``audio`` when set), streamed to the page."""
        session = self.open_session(request)
        self._one_at_a_time(session)
        loaded = self.load(settings.model)
        try:
            prompts = settings.prompts(self.limits)
            config = settings.config(loaded, self.limits)
            seed_used = settings.pick_seed()
            given = None if audio is None else audio.given(loaded, config)
        except ValueError as error:
            raise gr.Error(without_paths(str(error)), title="Check the settings") from None
        kept = given if given is not None and given.mask.any() else None  # all-False: plain generation
        previous = session.run(None)
        run = session.new_run(
            model_name=self.model_name(settings.model),
            prompts=prompts,
            config=config,
            seed=seed_used,
            sample_rate=loaded.sample_rate,
            frame_rate=loaded.frame_rate,
            num_frames=loaded.frames(config),
            notes=() if given is None else given.notes,
            source="" if given is None else given.source,
            given=None if kept is None else kept.mask,
            given_tokens=None if kept is None else kept.tokens,
        )
        yield from self._stream(session, run, loaded, previous, sample_shown)

    def fork(
        self,
        run_number: int,
        step: int,
        prompt: str,
        model: str,
        duration: float,
        decoding_steps: str,
        span_arrangement: str,
        span_scoring: str,
        temperature: float,
        top_p: float,
        top_k: int,
        max_cfg_coef: float,
        min_cfg_coef: float,
        cfg_schedule: str,
        cfg_curve: str,
        rescore_weight: float,
        seed: int,
        random_seed: bool,
        samples: int,
        sample_shown: int = 1,
        request: gr.Request = None,
    ) -> Iterator[dict]:
        """Re-decode from step ``step`` (1-based) of run ``run_number`` with the current settings.

        Prompt, model, seed (the generator state at that step), duration and the step counts of
        the codebooks already decoded come from the parent run; the parent stays as it was.
        """
        settings = self._settings(locals())
        session = self.session(request)
        parent = self.run_of(session, run_number)
        if parent is not None and parent.steps_released:
            raise gr.Error(
                f"Run #{parent.number}: {RELEASED_NOTE}. Make it again to re-decode from its steps."
            )
        if parent is None or not parent.records:
            raise gr.Error("Nothing to fork yet: generate a run first, then pick a step.")
        if parent.status == RUNNING:
            raise gr.Error(f"Run #{parent.number} is still decoding: stop it or wait for it to finish.")
        self._one_at_a_time(session)
        index = self._index(parent, step)
        record = parent.records[index]
        if record.is_last:
            raise gr.Error("That is the last step: nothing is left to re-decode. Pick an earlier step.")
        if parent.fork_depth >= self.limits.fork_depth:
            raise gr.Error(
                f"Run #{parent.number} is already a fork {parent.fork_depth} levels deep; this server "
                f"allows {self.limits.fork_depth}. Re-decode from one of its ancestors instead.",
                title="Check the settings",
            )
        loaded = self.load(parent.model_name)
        try:
            config, notes = settings.fork_config(
                parent.config, record, self.limits, loaded.lm.card, samples=len(parent.prompts)
            )
        except ValueError as error:
            raise gr.Error(str(error), title="Check the settings") from None
        run = session.new_run(
            model_name=parent.model_name,
            prompts=parent.prompts,
            config=config,
            seed=parent.seed,
            sample_rate=parent.sample_rate,
            frame_rate=parent.frame_rate,
            num_frames=parent.num_frames,
            source=parent.source,
            given=parent.given,
            given_tokens=parent.given_tokens,
            parent=parent,
            fork_index=index,
            notes=tuple(notes),
        )
        yield from self._stream(session, run, loaded, parent, sample_shown)

    @staticmethod
    def _settings(values: dict) -> Settings:
        fields = Settings.__dataclass_fields__
        return Settings(**{key: value for key, value in values.items() if key in fields})

    @staticmethod
    def _index(run: Run, step: object) -> int:
        """0-based record index of a 1-based step (None: the last); gr.Error for a step not decoded."""
        if step is None or step == "":
            return len(run.records) - 1
        try:
            wanted = whole(step, "Step", 1, 10**9)
        except ValueError as error:
            raise gr.Error(str(error), title="No such step") from None
        if wanted > len(run.records):
            raise gr.Error(
                f"Step {wanted} of run #{run.number} is not decoded: it has {len(run.records)} steps"
                f"{' so far' if run.status == RUNNING else ''}.",
                title="No such step",
            )
        return wanted - 1

    @staticmethod
    def _duration_or(value: object, default: float) -> float:
        try:
            return number(value, "Duration", 0) if value not in (None, "") else default
        except ValueError:
            return default

    def _job(self, run: Run, rescorer_offered: bool) -> DecodeJob:
        """What the worker needs to decode ``run`` (plain data)."""
        return DecodeJob(
            model=run.model_name,
            prompts=run.prompts,
            config=run.config,
            seed=run.seed,
            resume_from=None if run.parent is None else run.parent.records[run.fork_index],
            rescorer=rescorer_offered,
            # a fork's record carries its given tokens
            given_tokens=run.given_tokens if run.parent is None else None,
            given_mask=run.given if run.parent is None else None,
        )

    def admit(self, request: gr.Request | None, waiting: int) -> str | None:
        """Why a new run of ``request``'s session may not join the queue (None: it may).

        ``waiting`` counts the session's runs already waiting in the queue. One run per visitor,
        decoding or waiting: the page's own button waits for the pending run and then sends only
        the last click (Gradio's ``always_last``), so this refuses API clients and a fork sent
        while a run is pending.
        """
        session = self.session(request)
        active = None if session is None else session.active
        if active is not None:
            return (
                f"Run #{active.number} of this session is still decoding: stop it or wait for it to "
                "finish before starting another."
            )
        if waiting:
            return (
                "This session already has a run waiting in the queue: wait for it, or stop it once it starts."
            )
        return None

    @staticmethod
    def _one_at_a_time(session: Session) -> None:
        """gr.Error when ``session`` already has a run decoding: one run per visitor at a time."""
        active = session.active
        if active is not None:
            raise gr.Error(
                f"Run #{active.number} of this session is still decoding: stop it or wait for it to "
                "finish before starting another.",
                title="One run at a time",
            )

    def _stream(self, session: Session, run: Run, model: LoadedModel, previous: Run | None, sample: int):
        """Decode ``run`` and yield page updates: start, one per step, audio, files.

        Every update carries the canvas feed: it only grows, so Gradio sends only its new lines.
        The run is stopped like Stop after the server's ``max_run_seconds``.
        """
        sample = self._sample(run, sample)
        comp = self.components
        rescorer_offered = self.models.rescorer_name(run.model_name)[0] is not None
        yield self._start_update(session, run, previous, sample, rescorer_offered)
        audio = None
        deadline = threading.Timer(self.limits.max_run_seconds, self._out_of_time, (run,))
        deadline.daemon = True
        deadline.start()
        try:
            job = self._job(run, rescorer_offered)
            # the decoding never waits for the page: steps that arrive while the newest one is
            # drawn and sent are recorded, and only the newest of them is drawn
            for batch in batches_in_thread(
                lambda: self.worker.run(job, run.controls, run.cancel), run.cancel
            ):
                records = [item for item in batch if not isinstance(item, FinalAudio)]
                audio = next((item.audio for item in batch if isinstance(item, FinalAudio)), audio)
                run.add_records(records)
                if records:
                    self.sessions.memory.charge(run)
                    yield {
                        comp.status: texts.step_status(run, records[-1]),
                        comp.canvas: run.feed(sample).text,
                        comp.step_info: run.record_summary(),
                    }
            run.finish(audio)
        except Exception as error:  # shown in the page; the queue goes on serving others
            context = f"run {run.number} of session {session.name}"
            message = visitor_message(error, log, context, readable=(gr.Error,))
            run.fail(message)
            kept = len(run.records) - run.first_new_index
            raise gr.Error(
                f"Run #{run.number} failed after {kept} of its steps: {message} Its steps so far stay "
                "in the history: scrub them or re-decode from one.",
                title="Decoding failed",
            ) from None
        except GeneratorExit:  # the visitor went away: the worker was told to stop
            run.fail("the page or client went away during the run")
            raise
        finally:
            deadline.cancel()
        self.sessions.memory.charge(run)
        yield from self._end_updates(session, run, sample)

    def _out_of_time(self, run: Run) -> None:
        """The wall-clock limit: stop ``run`` before its next step, saying why."""
        if run.status == RUNNING:
            run.stop_reason = f"this server stops a run after {self.limits.max_run_seconds:g} s"
            run.cancel.set()

    def _start_update(
        self, session: Session, run: Run, previous: Run | None, sample: int, rescorer_offered: bool
    ) -> dict:
        """The page when ``run`` starts: its number, notes, the A/B audio and its first canvas."""
        comp = self.components
        notes = list(run.notes)
        if run.config.rescore_weight > 0 and not rescorer_offered:
            notes.append("rescoring off: no rescorer reads this model's tokens")
        origin = "" if run.parent is None else f" (from run #{run.parent.number}, step {run.fork_index + 1})"
        origin += f", {run.source}" if run.source else ""
        return {
            comp.status: f"**Run #{run.number}**{origin}: starting… " + "; ".join(notes),
            comp.scrub: gr.update(maximum=run.total_steps, value=run.total_steps),
            comp.runs: gr.update(choices=session.choices(), value=run.number),
            comp.audio: gr.update(value=None, label=f"This run: run #{run.number} (decoding…)"),
            comp.spectrogram: None,
            comp.seed: run.seed,
            comp.compare: self._audio_update(previous, sample, "A/B: "),
            comp.step_info: run.summary(),
            comp.canvas: run.feed(sample).text,  # a fork starts from its parent's step
        }

    def _end_updates(self, session: Session, run: Run, sample: int) -> Iterator[dict]:
        """The page after ``run`` decoded: the audio first; the spectrogram, trace and animation follow."""
        comp = self.components
        yield {
            comp.status: texts.run_status(run, self.sessions.budget.keep_runs)
            + " · drawing the spectrogram, writing the trace and the animation…",
            comp.audio: self._audio_update(run, sample, "This run: "),
            comp.runs: gr.update(choices=session.choices(), value=run.number),
            comp.scrub: gr.update(value=len(run.records)),
            comp.step_info: run.summary(),
            comp.canvas: run.feed(sample).text,
        }
        yield {comp.spectrogram: self._spectrogram(run, sample), comp.canvas: run.feed(sample).text}
        extras = []
        for writer in (run.write_trace, lambda: run.write_gif(sample)):
            try:
                writer()
            except Exception as error:  # a missing extra must not hide the audio
                extras.append(
                    visitor_message(error, log, f"a file of run {run.number} of session {session.name}")
                )
        self.sessions.budget.add(run)
        yield {
            comp.status: texts.run_status(run, self.sessions.budget.keep_runs)
            + (" · " + "; ".join(extras) if extras else ""),
            comp.downloads: session.files(),
            comp.step_info: run.summary(),
            comp.canvas: run.feed(sample).text,
        }

    def decode_audio(self, model_name: str, codes: np.ndarray) -> np.ndarray:
        """Audio ``[B, samples]`` of codes ``[B, K', T]``, decoded by the worker (ValueError if it cannot)."""
        items = list(self.worker.run(AudioJob(model_name, codes), None, _NEVER_STOP))
        if not items:
            raise ValueError("the worker returned no audio")
        return items[-1].audio

    @staticmethod
    def _sample(run: Run | None, sample: object) -> int:
        """0-based sample index from the 1-based 'sample shown' control (a run with fewer samples
        shows its last; the labels say which); gr.Error for a value that is not a sample number."""
        try:
            value = whole(1 if sample in (None, "") else sample, "Sample shown", 1, MAX_BATCH) - 1
        except ValueError as error:
            raise gr.Error(str(error), title="Check the settings") from None
        return 0 if run is None else min(value, len(run.prompts) - 1)

    @staticmethod
    def _audio_update(run: Run | None, sample: int, prefix: str):
        """The run's audio for a player: from memory, or from its WAV file once its steps were released."""
        wavs = [] if run is None or run.audio is not None else run.wav_files()
        if wavs:
            return gr.update(value=str(wavs[min(sample, len(wavs) - 1)]), label=f"{prefix}run #{run.number}")
        if run is None or run.audio is None:
            return gr.update(value=None, label=prefix + "no earlier run")
        index = min(sample, len(run.audio) - 1)
        return gr.update(value=(run.sample_rate, _pcm(run.audio[index])), label=f"{prefix}run #{run.number}")

    @staticmethod
    def _spectrogram(run: Run, sample: int) -> np.ndarray | None:
        if run.audio is None:
            return None
        index = min(sample, len(run.audio) - 1)
        return viz.spectrogram_image(
            run.audio[index], run.sample_rate, f"Run #{run.number}, sample {index + 1}"
        )

    # ----------------------------------------------------------------- stop and steer
    def stop(self, request: gr.Request = None) -> str:
        """Ask the running decoding of this session to stop before its next step."""
        session = self.session(request)
        run = None if session is None else session.active
        if run is None:
            return "Nothing is decoding."
        run.cancel.set()
        return f"Stopping run #{run.number} after its current step…"

    def steer(
        self,
        max_cfg_coef: float,
        min_cfg_coef: float,
        cfg_schedule: str,
        cfg_curve: str,
        temperature: float,
        rescore_weight: float,
        request: gr.Request = None,
    ) -> str:
        """Apply the live controls to the running decoding (from its next step)."""
        session = self.session(request)
        run = None if session is None else session.active
        limits = self.limits
        try:
            curve = (
                parse_numbers(cfg_curve, "CFG curve", max_items=limits.cfg_points)
                if cfg_schedule == "curve"
                else ()
            )
            max_cfg_coef = number(max_cfg_coef, "CFG max", 0, limits.max_cfg)
            min_cfg_coef = number(min_cfg_coef, "CFG min", 0, limits.max_cfg)
            if cfg_schedule == CFG_LINEAR:
                check_cfg_range(max_cfg_coef, min_cfg_coef)
            temperature = number(temperature, "Temperature", 0, limits.max_temperature)
            rescore_weight = number(rescore_weight, "Rescoring weight", 0, 1)
            CFGSchedule(cfg_schedule, max_cfg_coef, min_cfg_coef, curve)
        except ValueError as error:
            return f"⚠️ {error}"
        if run is None:
            return "Live controls: used by the next run."
        try:
            values = run.controls.update(
                max_cfg_coef=max_cfg_coef,
                min_cfg_coef=min_cfg_coef,
                cfg_schedule=cfg_schedule,
                cfg_curve=curve,
                temperature=temperature,
                rescore_weight=rescore_weight,
            )
        except ValueError as error:
            return f"⚠️ {error}"
        note = ""
        if values.rescore_weight > 0 and self.models.rescorer_name(run.model_name)[0] is None:
            note = " Rescoring stays off: no rescorer reads this model's tokens."
        return f"Applied to run #{run.number} from its next step." + note

    # ----------------------------------------------------------------- inspecting runs
    def inspect(self, run_number: int, step: int, sample_shown: int = 1, request: gr.Request = None):
        """A step of a run: (audio of that step, description). The page draws the step itself."""
        session = self.session(request)
        run = self.run_of(session, run_number)
        if run is not None and run.steps_released:
            return None, f"Run #{run.number}: {RELEASED_NOTE}."
        if run is None or not run.records:
            return None, "No step to show yet: generate a run first."
        index = self._index(run, step)
        sample = self._sample(run, sample_shown)
        record = run.records[index]
        try:
            decode = lambda codes: self.decode_audio(run.model_name, codes)  # noqa: E731
            audio = session.preview(run, index, decode)[sample]
            sound = (run.sample_rate, _pcm(audio))
        except (ValueError, RuntimeError) as error:
            sound, error_note = None, f" (cannot decode: {visitor_message(error, log, 'a step preview')})"
        else:
            error_note = ""
        origin = "" if index >= run.first_new_index else f" (inherited from run #{run.parent.number})"
        text = (
            f"Run #{run.number}, step {index + 1} of {len(run.records)} decoded{origin}: codebooks 1-{record.stage} "
            f"finished, codebook {record.stage + 1} with this step's proposals{error_note}."
        )
        if record.stage == 0:
            text = text.replace("codebooks 1-0 finished, codebook 1", "codebook 1")
        return sound, text

    def show_run(self, run_number: int, sample_shown: int = 1, request: gr.Request = None) -> dict:
        """Put a run of the history back on screen (main view) with its audio."""
        session = self.session(request)
        run = self.run_of(session, run_number)
        comp = self.components
        if run is None or not (run.records or run.steps_released):
            return {comp.status: "No run yet."}
        sample = self._sample(run, sample_shown)
        previous = run.parent or next((r for r in reversed(session.runs) if r.number < run.number), None)
        return {
            comp.status: texts.run_status(run, self.sessions.budget.keep_runs)
            if run.status != RUNNING
            else f"**Run #{run.number}** is decoding…",
            comp.canvas: run.feed(sample).text,
            comp.step_info: run.summary(),
            comp.audio: self._audio_update(run, sample, "This run: "),
            comp.compare: self._audio_update(previous, sample, "A/B: "),
            comp.spectrogram: self._spectrogram(run, sample),
            comp.downloads: session.files(),
            comp.scrub: gr.update(maximum=run.total_steps, value=len(run.records)),
        }

    def audio_preview(self, audio: object, model_name: str, duration: object) -> dict:
        """The input audio on the canvas, as given tokens, before any run: encoded with the model's
        codec and cropped to the duration (drag across it to pick a region to re-decode)."""
        comp = self.components
        if audio in (None, ""):
            return {comp.status: "Ready."}
        try:
            path, name = self._upload(audio)
            model = self.load(model_name)
            seconds = number(duration, "Duration", 0, model.max_duration)
            config = DecodingConfig(duration=seconds)
            codes, note = audio_in.audio_codes(model, path, duration=seconds)
        except (ValueError, gr.Error) as error:
            return {comp.status: f"⚠️ {without_paths(str(getattr(error, 'message', None) or error))}"}
        T = model.frames(config)
        tokens = np.zeros((model.num_codebooks, T), dtype=np.int64)
        given = np.zeros_like(tokens, dtype=bool)
        kept = min(T, codes.shape[-1])
        tokens[:, :kept], given[:, :kept] = codes[0, :, :kept].numpy(), True
        feed = CanvasFeed(
            0,
            config.decoding_steps,
            T,
            model.frame_rate,
            given=given,
            given_tokens=tokens,
            title=f"Input audio: {name}, {kept / model.frame_rate:g} s as given tokens",
        )
        return {comp.canvas: feed.text, comp.status: f"Input audio {name} ready. {note}".strip()}

    def use_run_audio(self, run_number: object, sample_shown: object = 1, request: gr.Request = None):
        """The WAV of a run of this session, for the audio input (continue it, re-decode part of it)."""
        run = self.run_of(self.session(request), run_number)
        sample = self._sample(run, sample_shown)
        wavs = run.wav_files() if run else []
        if not wavs:
            raise gr.Error("That run has no audio file (yet, or any more): pick a finished run.")
        return str(wavs[min(sample, len(wavs) - 1)])

    def forget(self, request: gr.Request = None) -> None:
        """The page was closed: drop its runs from memory (files stay on disk)."""
        self.sessions.forget(getattr(request, "session_hash", None))
