"""The page's handlers: a Gradio request in, the studio service called, its screens out.

:class:`DemoApp` holds the handlers; each is a thin method, callable without a page (the tests
call them directly). A run endpoint yields tuples in the order of
:data:`~magnet_demo.studio.screens.MAIN_OUTPUTS` (``gr.skip()`` where an output does not
change); :func:`screen_of` reads one back by name. One decorator, :func:`readable`, turns the
service's refusals (ValueError) into ``gr.Error``.

Named API endpoints (``gradio_client``): ``/generate``, ``/continue``, ``/inpaint``, ``/fork`` and
``/extend`` stream one update per decoding step (the ``step_info`` output says which), ``/stop``, ``/steer``
(live controls), ``/step`` (inspect / listen to a step), ``/show_run`` and ``/model_info``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterator

import gradio as gr
from gradio import utils as gradio_utils

from magnet_demo import audio_in
from magnet_demo.audio_modes import (
    CONTINUE,
    DEFAULT_KEEP_SECONDS,
    DEFAULT_REGION,
    GENERATE,
    REGION,
    AudioRequest,
)
from magnet_demo.controls import METHOD_AR, METHOD_HYBRID, METHOD_MAGNET
from magnet_demo.form import Settings, fast_steps, number, steps_text, uploaded_file
from magnet_demo.incidents import Refusal, visitor_message, without_paths
from magnet_demo.models import SETTINGS_FIELDS
from magnet_demo.session import FINISHED, RELEASED_NOTE, Run, Session
from magnet_demo.studio import compare, screens
from magnet_demo.studio.inputs import input_canvas
from magnet_demo.studio.screens import MAIN_OUTPUTS, Props
from magnet_demo.studio.service import RunStart, Studio, refuse_audio, sample_index

log = logging.getLogger(__name__)

#: the compare preset's runs, in order
METHOD_SERIES = (METHOD_MAGNET, METHOD_HYBRID, METHOD_AR)


def readable(handler: Callable) -> Callable:
    """``handler`` with its refusals (ValueError) raised as ``gr.Error`` (the page's error box, a
    ValueError in ``gradio_client``), server paths cut to their last part: the one place a
    refusal's text is cleaned for a visitor. Its signature, which Gradio reads, is kept."""

    def error(refusal: ValueError) -> gr.Error:
        return gr.Error(without_paths(str(refusal)), title=getattr(refusal, "title", "Check the request"))

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except ValueError as refusal:
                raise error(refusal) from None

        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except ValueError as refusal:
            raise error(refusal) from None

    return call


def gradio_value(value):
    """A screen's value as Gradio takes it (:class:`Props` become ``gr.update``)."""
    return gr.update(**value) if isinstance(value, Props) else value


def outputs_of(screen: dict) -> tuple:
    """A screen as a run endpoint's outputs, in :data:`MAIN_OUTPUTS` order."""
    return tuple(gradio_value(screen[name]) if name in screen else gr.skip() for name in MAIN_OUTPUTS)


def _compare_outputs(screen: dict) -> tuple:
    """A compare screen as the compare view's outputs (:data:`compare.COMPARE_OUTPUTS` order)."""
    return tuple(
        gradio_value(screen[name]) if name in screen else gr.skip() for name in compare.COMPARE_OUTPUTS
    )


def screen_of(update: tuple) -> dict:
    """The outputs a run endpoint's update changes, by name (the inverse of :func:`outputs_of`)."""
    skip = gr.skip()
    pairs = zip(MAIN_OUTPUTS, update, strict=True)
    return {name: value for name, value in pairs if not (isinstance(value, dict) and value == skip)}


def _key(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _upload(audio: object):
    """(path, name) of an audio input's raw value: only files in Gradio's upload folder."""
    return uploaded_file(audio, [gradio_utils.get_upload_folder()])


def audio_request(mode, audio, keep=None, start=None, end=None, method=None) -> AudioRequest | None:
    """The checked audio request (a Refusal for a bad one, or for input audio to a ``method``
    other than MAGNeT's, before the file is looked at); None in mode 'generate'."""
    if mode not in (None, "", GENERATE):
        refuse_audio(method)
    try:
        upload = _upload(audio) if mode not in (None, "", GENERATE) else None
        path, name = upload if upload else (None, "")
        return AudioRequest.checked(mode, path, name, keep, start, end)
    except ValueError as error:
        raise Refusal(str(error), "Check the audio") from None


def _files_screens(
    session: Session, runs: list[Run], sample_shown: object, keep_runs: int
) -> Iterator[tuple]:
    """The updates of ``/run_files`` for ``runs`` (their files pending, the last one's shown).
    Files that arrive after another run came on screen (the next run started, or an older one was
    put back) join the downloads and leave that run's screen alone."""
    if not runs:
        return
    run = runs[-1]
    sample = sample_index(run, sample_shown)
    if session.shown == run.number:
        yield outputs_of({"spectrogram": screens.spectrogram(run, sample)})
    problems = [problem for pending in runs for problem in pending.files_job.result()]
    if session.shown != run.number:  # another run came on screen meanwhile: it stays there
        if problems:
            gr.Warning(f"Run #{run.number}: " + "; ".join(problems))
        yield outputs_of({"downloads": session.files()})
        return
    yield outputs_of(screens.run_files(session, run, sample, keep_runs, problems))


class DemoApp:
    """The page's handlers over a :class:`~magnet_demo.studio.service.Studio` (``self.studio``).

    Args (passed to the Studio):
        default_model: model selected when the page opens.
        output_root: where sessions write their WAV, trace and GIF files.
        models: a shared :class:`ModelCache` (one load per model name).
        worker: where decodings run (:mod:`magnet_demo.workers`; default: in this process).
        examples: example prompts by domain (default: ``assets/examples.json``).
        model_note: a line on how the model was chosen, shown under the model menu.
        limits: the caps on one request (steps, work, time, prompt length, CFG points, fork depth).
        sources: which model names visitors may load (default: the embedded and released ones).
        keep_runs, keep_runs_per_session: runs whose files the server keeps, in all and per visitor.
        memory_mb: what all runs keep in memory, MiB (least recently used runs release their steps).
    """

    def __init__(self, **studio):
        self.studio = Studio(**studio)
        self.views = Views(self.studio)

    # ----------------------------------------------------------------- runs
    @readable
    def generate(
        self,
        request: gr.Request = None,
        *,
        sample_shown: int = 1,
        mode: str = GENERATE,
        audio: object = None,
        keep_seconds: float = DEFAULT_KEEP_SECONDS,
        region_start: float = DEFAULT_REGION[0],
        region_end: float = DEFAULT_REGION[1],
        **settings,
    ) -> Iterator[tuple]:
        """Decode a new run of the settings; yields one update per step, then the audio and the files.

        ``mode`` 'continue' and 're-decode region' take ``audio`` (an uploaded file) as the page's
        button does; ``/continue`` and ``/inpaint`` are the same runs with only their own values.
        """
        wanted = audio_request(
            mode, audio, keep_seconds, region_start, region_end, method=settings.get("method")
        )
        start = self.studio.new_run(_key(request), Settings(**settings), wanted)
        yield from self._stream(start, sample_shown)

    @readable
    def continue_clip(
        self,
        audio: object,
        keep_seconds: float,
        request: gr.Request = None,
        *,
        sample_shown: int = 1,
        **settings,
    ) -> Iterator[tuple]:
        """Keep the first ``keep_seconds`` of ``audio`` (an uploaded file) and decode the rest."""
        wanted = audio_request(CONTINUE, audio, keep_seconds, method=settings.get("method"))
        yield from self._stream(
            self.studio.new_run(_key(request), Settings(**settings), wanted), sample_shown
        )

    @readable
    def inpaint(
        self,
        audio: object,
        region_start: float,
        region_end: float,
        request: gr.Request = None,
        *,
        sample_shown: int = 1,
        **settings,
    ) -> Iterator[tuple]:
        """Keep ``audio`` (an uploaded file) outside ``[region_start, region_end)`` seconds and
        re-decode inside, every codebook seeing the kept audio on both sides."""
        wanted = audio_request(
            REGION, audio, start=region_start, end=region_end, method=settings.get("method")
        )
        yield from self._stream(
            self.studio.new_run(_key(request), Settings(**settings), wanted), sample_shown
        )

    @readable
    def fork(
        self, run_number: int, step: int, request: gr.Request = None, *, sample_shown: int = 1, **settings
    ) -> Iterator[tuple]:
        """Re-decode from step ``step`` (1-based) of run ``run_number`` with the current settings.

        Prompt, model, seed (the generator state at that step), duration and the step counts of
        the codebooks already decoded come from the parent run; the parent stays as it was.
        """
        start = self.studio.fork_run(_key(request), run_number, step, Settings(**settings))
        yield from self._stream(start, sample_shown)

    @readable
    def extend(
        self, run_number: int, seconds: float, request: gr.Request = None, *, sample_shown: int = 1
    ) -> Iterator[tuple]:
        """Continue run ``run_number`` (a finished one) by ``seconds`` more, window after window, the
        same way: its model, prompts, seed, method and settings; the new run's canvas starts with
        it. Streams one update per step, as ``/generate`` does."""
        start = self.studio.extend_run(_key(request), run_number, seconds)
        yield from self._stream(start, sample_shown)

    @readable
    def compare_methods(
        self, request: gr.Request = None, *, sample_shown: int = 1, **settings
    ) -> Iterator[tuple]:
        """The prompt and seed of the settings as a MAGNeT, a Hybrid and an autoregressive run, one
        after another on the decoding slot, each streamed as ``/generate`` streams one (a random
        seed is drawn once, for all three). A run that does not finish ends the series."""
        base = Settings(**settings)
        seed = base.pick_seed() if base.random_seed is True else base.seed
        for method in METHOD_SERIES:
            lab = dataclasses.replace(base, method=method, seed=seed, random_seed=False)
            start = self.studio.new_run(_key(request), lab)
            yield from self._stream(start, sample_shown)
            if start.run.status != FINISHED:
                return

    def admit(self, request: gr.Request | None, waiting: int, audio: object = None) -> str | None:
        """Why a new run of this visitor may not join the queue (None: it may): a run of theirs
        decoding or waiting (``Studio.admit``), or input ``audio`` whose header is refused."""
        refusal = self.studio.admit(_key(request), waiting)
        if refusal is None and audio not in (None, ""):
            try:
                upload = _upload(audio)
                if upload is not None:
                    audio_in.check_audio_file(upload[0])
            except ValueError as error:
                return without_paths(str(error))
        return refusal

    def _stream(self, start: RunStart, sample_shown: object) -> Iterator[tuple]:
        """Decode a started run: the start, one update per batch of steps, the audio, the files."""
        session, run = start.session, start.run
        sample = sample_index(run, sample_shown)
        keep_runs = self.studio.sessions.budget.keep_runs
        yield outputs_of(screens.run_start(session, run, start.previous, sample, list(start.notes)))
        decoding = self.studio.decoding(start, readable=(gr.Error,))
        for records in decoding:
            yield outputs_of(screens.run_step(run, records[-1], sample))
        self.studio.write_files_later(decoding, sample)  # the slot is free once the audio is out
        yield outputs_of(screens.run_audio(session, run, sample, keep_runs))

    def run_files(self, sample_shown: object = 1, request: gr.Request = None) -> Iterator[tuple]:
        """After a run endpoint, outside the decoding slot: the last run's spectrogram, then (once
        written in the background) the runs' traces and animations among the downloads, and what
        could not be written (:func:`_files_screens`)."""
        session, runs = self.studio.files_pending(_key(request))
        yield from _files_screens(session, runs, sample_shown, self.studio.sessions.budget.keep_runs)

    # ----------------------------------------------------------------- live controls
    def stop(self, request: gr.Request = None) -> str:
        """Ask the running decoding of this session to stop before its next step."""
        return self.studio.stop(_key(request))

    def steer(self, request: gr.Request = None, **live) -> str:
        """Apply the live controls (``form.LIVE_FIELDS``) to the running decoding, from its next step."""
        return self.studio.steer(_key(request), live)

    # ----------------------------------------------------------------- looking back
    @readable
    def inspect(self, run_number: int, step: int, sample_shown: int = 1, request: gr.Request = None):
        """A step of a run: (audio of that step, description). The page draws the step itself."""
        session, run = self.studio.run_of(_key(request), run_number)
        if run is not None and run.steps_released:
            return None, f"Run #{run.number}: {RELEASED_NOTE}."
        if run is None or not run.records:
            return None, "No step to show yet: generate a run first."
        try:
            index = self.studio.step_index(run, step)
        except Refusal as refusal:
            if not run.is_running:
                raise
            return None, str(refusal)  # a step a run still decoding has not reached: no error box
        sample = sample_index(run, sample_shown)
        try:
            sound, note = (
                (run.sample_rate, screens.pcm(self.studio.step_audio(session, run, index)[sample])),
                "",
            )
        except (ValueError, RuntimeError) as error:
            sound, note = None, f" (cannot decode: {visitor_message(error, log, 'a step preview')})"
        return sound, screens.step_text(run, index) + note + "."

    @readable
    def show_run(self, run_number: int, sample_shown: int = 1, request: gr.Request = None) -> tuple:
        """Put a run of the history back on screen (main view) with its audio."""
        session, run = self.studio.run_of(_key(request), run_number)
        if run is None or not (run.records or run.steps_released):
            return outputs_of({"status": "No run yet."})
        previous = run.parent or next((r for r in reversed(session.runs) if r.number < run.number), None)
        session.shown = run.number
        keep_runs = self.studio.sessions.budget.keep_runs
        return outputs_of(
            screens.run_shown(session, run, previous, sample_index(run, sample_shown), keep_runs)
        )

    @readable
    def use_run_audio(self, run_number: object, sample_shown: object = 1, request: gr.Request = None) -> str:
        """The WAV of a run of this session, for the audio input (continue it, re-decode part of it)."""
        return self.studio.run_wav(_key(request), run_number, sample_shown)

    def forget(self, request: gr.Request = None) -> None:
        """The page was closed: drop its runs from memory (files stay on disk)."""
        self.studio.sessions.forget(_key(request))

    # ----------------------------------------------------------------- the model and the input audio
    def model_changed(self, model_name: str, duration: float | None = None) -> tuple:
        """Load the chosen model; returns (info, steps, duration, examples, rescoring info, then one
        update per field of :data:`SETTINGS_FIELDS`: the model's recommended sampling settings).

        A model that cannot be loaded leaves the settings alone and says why in the info box.
        """
        try:
            offer = self.studio.catalog.offer(model_name, duration)
        except ValueError as error:
            name, message = without_paths(str(model_name)[:60]), without_paths(str(error))
            gr.Warning(message)
            examples = [[text] for text in self.studio.catalog.examples_for(name)]
            info = f"⚠️ **{name}** cannot be used: {message}"
            unchanged = (gr.update() for _ in SETTINGS_FIELDS)
            return (info, gr.update(), gr.update(), gr.update(samples=examples), gr.update(), *unchanged)
        return (
            offer.info,
            offer.steps,
            gr.update(
                maximum=max(offer.max_duration, self.studio.limits.max_clip_seconds), value=offer.duration
            ),
            gr.update(samples=[[text] for text in offer.examples]),
            gr.update(info=offer.rescoring),
            *(gr.update(value=getattr(offer.defaults, key)) for key in SETTINGS_FIELDS),
        )

    def audio_preview(self, audio: object, model_name: str, duration: object) -> tuple:
        """(canvas, status): the input audio on the canvas, as given tokens, before any run."""
        if audio in (None, ""):
            return gr.skip(), "Ready."
        try:
            path, name = _upload(audio)
            model = self.studio.catalog.load(model_name)
            return input_canvas(model, path, name, number(duration, "Duration", 0, model.max_duration))
        except ValueError as error:
            return gr.skip(), f"⚠️ {without_paths(str(error))}"


class Views:
    """What the page shows beside a run: the compare view, the expected time and the fast preset
    (``DemoApp.views``)."""

    def __init__(self, studio: Studio):
        self.studio = studio

    @readable
    def compare(
        self, run_a: object = None, run_b: object = None, sample_shown: object = 1, request: gr.Request = None
    ):
        """Two runs of this session side by side (default: the latest MAGNeT run and the latest of
        another method), with the table of every run: outputs in ``compare.COMPARE_OUTPUTS`` order."""
        session = self.studio.sessions.get(_key(request))
        if session is None or not session.runs:
            return _compare_outputs({"timing": "No runs yet: generate one, or run the preset."})
        if run_a in (None, "") or run_b in (None, ""):
            picked = compare.latest_pair(session)
            if picked is None:
                return _compare_outputs(
                    {"table": compare.table(session), "timing": "One run so far: make another."}
                )
            first, second = picked
        else:
            (_, first), (_, second) = (
                self.studio.run_of(_key(request), run_a),
                self.studio.run_of(_key(request), run_b),
            )
        sample = sample_index(first, sample_shown)
        return _compare_outputs(compare.pair(session, first, second, sample))

    def compare_latest(self, sample_shown: object = 1, request: gr.Request = None):
        """:meth:`compare` of the default pair (after the preset)."""
        return self.compare(None, None, sample_shown, request)

    def expected_time(
        self,
        model: str,
        duration: object,
        decoding_steps: object,
        samples: object,
        method: object,
        prefix_seconds: object,
        overlap_seconds: object = None,
    ) -> str:
        """The page's line on what a run of these settings will cost on this server."""
        settings = Settings(
            prompt="",
            model=model,
            duration=duration,
            decoding_steps=decoding_steps,
            samples=samples,
            method=method,
            prefix_seconds=prefix_seconds,
            **({} if overlap_seconds is None else {"overlap_seconds": overlap_seconds}),
        )
        return without_paths(self.studio.expected_time(settings))

    def fast_steps(self, model: str) -> str:
        """The fast preset's steps for the model's codebooks (unchanged when it cannot be loaded)."""
        try:
            return steps_text(fast_steps(self.studio.catalog.load(model).num_codebooks))
        except ValueError:
            return gr.skip()
