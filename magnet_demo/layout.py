"""The page: panel builders that lay out components, and one function that wires them to the handlers
of :class:`~magnet_demo.ui.DemoApp`.

Each panel is a frozen dataclass of its components, so the wiring and the handlers name what they
address (``main.status``) instead of looking strings up. :class:`MainView` is what every run
handler updates; its field order is the order of the outputs of ``/generate``, ``/fork`` and
``/show_run``.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import gradio as gr

from magnet_demo import viz
from magnet_demo.audio_in import MAX_UPLOAD_MB, MAX_UPLOAD_SECONDS
from magnet_demo.audio_modes import DEFAULT_KEEP_SECONDS, DEFAULT_REGION, GENERATE, MODES
from magnet_demo.controls import (
    DEFAULT_CFG_CURVE_TEXT,
    DEFAULT_DURATION,
    DEFAULT_MAX_CFG,
    DEFAULT_MIN_CFG,
    DEFAULT_SPAN_ARRANGEMENT,
    DEFAULT_SPAN_SCORING,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    Limits,
)
from magnet_demo.engine import MAX_BATCH
from magnet_demo.form import MAX_SEED, default_steps, steps_text
from magnet_demo.schedules import CFG_LINEAR, CFG_SCHEDULES
from magnet_demo.sources import CPU_ONLY_NOTE
from magnet_demo.spans import SPAN_ARRANGEMENTS, SPAN_SCORINGS
from magnet_demo.ui import INTRO, RESCORING_HELP, TITLE, DemoApp

MIN_DURATION = 1.0
DURATION_STEP = 0.5
MAX_CFG_SLIDER = 30.0
MAX_TEMPERATURE_SLIDER = 10.0
SPECTROGRAM_HEIGHT = 240
#: the region sliders: up to the longest released model's 30 s, a frame (at 50 Hz) a notch
MAX_REGION_SLIDER = 30.0
REGION_STEP = 0.02
ASSETS = Path(__file__).resolve().parent.parent / "assets"
SCRUB_ID = "scrub"
#: the canvas widget's markup; canvas.js draws into it (no template tags: it never re-renders)
CANVAS_TEMPLATE = (
    '<div class="mc-title">No run yet: type a prompt and press Generate.</div>'
    '<canvas class="mc-canvas"></canvas><div class="mc-readout">Point at the canvas to read a token.</div>'
    '<canvas class="mc-schedule"></canvas><div class="mc-legend"></div>'
)
#: Gradio's own cache (step images, audio): every 5 minutes, files older than 15 minutes are deleted
DELETE_CACHE = (300, 900)
#: handlers get the raw values and check them all themselves (form.py): Gradio's own check of a
#: string sent to a number is a generic "the app raised an exception"
RAW = {"preprocess": False}
PRIVATE = {"api_visibility": "private", **RAW}
#: the concurrency group of every decoding event (``--concurrency`` slots)
DECODE_SLOT = "decode"


@dataclass(frozen=True)
class MainView:
    """What every run handler updates, in the order of the run endpoints' outputs."""

    status: gr.Markdown
    canvas: gr.HTML
    step_info: gr.JSON
    audio: gr.Audio
    compare: gr.Audio
    spectrogram: gr.Image
    downloads: gr.File
    runs: gr.Dropdown
    scrub: gr.Slider
    seed: gr.Number

    def outputs(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def position(cls, name: str) -> int:
        """Index of output ``name`` in a run endpoint's outputs (for ``gradio_client`` users)."""
        return [f.name for f in fields(cls)].index(name)


@dataclass(frozen=True)
class SettingsPanel:
    """The left column: prompt, model, buttons, run settings and live controls."""

    prompt: gr.Textbox
    examples: gr.Dataset
    model: gr.Dropdown
    model_info: gr.Markdown
    generate: gr.Button
    stop: gr.Button
    duration: gr.Slider
    samples: gr.Slider
    seed: gr.Number
    random_seed: gr.Checkbox
    max_cfg: gr.Slider
    min_cfg: gr.Slider
    cfg_schedule: gr.Radio
    cfg_curve: gr.Textbox
    temperature: gr.Slider
    rescore_weight: gr.Slider
    steer_note: gr.Markdown
    decoding_steps: gr.Textbox
    span_arrangement: gr.Radio
    span_scoring: gr.Radio
    top_p: gr.Slider
    top_k: gr.Number

    def run_inputs(self) -> list:
        """The inputs of ``DemoApp.generate`` (and of ``fork`` after its run and step), in order."""
        names = "prompt model duration decoding_steps span_arrangement span_scoring temperature top_p top_k"
        names += " max_cfg min_cfg cfg_schedule cfg_curve rescore_weight seed random_seed samples"
        return [getattr(self, name) for name in names.split()]

    def live_inputs(self) -> list:
        """The inputs of ``DemoApp.steer``."""
        return [
            self.max_cfg,
            self.min_cfg,
            self.cfg_schedule,
            self.cfg_curve,
            self.temperature,
            self.rescore_weight,
        ]

    def model_outputs(self) -> list:
        """The outputs of ``DemoApp.model_changed``: info, steps, duration, examples, rescoring,
        then one component per :data:`~magnet_demo.models.SETTINGS_FIELDS` entry, in its order."""
        sampling = [self.temperature, self.top_p, self.top_k, self.max_cfg, self.min_cfg, self.span_scoring]
        return [
            self.model_info,
            self.decoding_steps,
            self.duration,
            self.examples,
            self.rescore_weight,
            *sampling,
        ]


@dataclass(frozen=True)
class AudioPanel:
    """Audio in: the mode, the input audio, the seconds to keep, the region to re-decode."""

    mode: gr.Radio
    audio: gr.Audio
    keep: gr.Number
    region_start: gr.Slider
    region_end: gr.Slider
    use_run: gr.Button

    def inputs(self) -> list:
        """The last inputs of ``DemoApp.generate``, after the run inputs."""
        return [self.mode, self.audio, self.keep, self.region_start, self.region_end]


@dataclass(frozen=True)
class InspectPanel:
    """Scrub to a step, see it, listen to it, re-decode from it."""

    sample_shown: gr.Slider
    text: gr.Markdown
    canvas: gr.HTML
    preview: gr.Audio
    fork: gr.Button

    def outputs(self) -> list:
        return [self.preview, self.text]


def _work_info(limits: Limits) -> str:
    """The server's caps on a run's work and time, next to the controls that spend them."""
    return (
        f"A run's work, steps × samples × seconds, is at most {limits.max_work:g} here (50 steps of one "
        f"10 s sample: 500); a run stops after {limits.max_run_seconds:g} s."
    )


def _prompt_and_model(app: DemoApp, limits: Limits) -> dict:
    prompt = gr.Textbox(
        label="Prompt",
        lines=2,
        placeholder="Describe the music or sound…",
        max_length=limits.prompt_chars,
        info=f"At most {limits.prompt_chars} characters.",
    )
    examples = gr.Dataset(
        components=[prompt],
        samples=app.examples_for(app.default_model),
        label="Examples for this model (click one)",
        samples_per_page=6,
    )
    model = gr.Dropdown(
        app.model_choices(),
        value=app.default_model,
        allow_custom_value=True,
        label="Model",
        info="The embedded model, a Hugging Face MAGNeT, or a local checkpoint folder."
        if app.sources.hub_offered
        else f"The released MAGNeT models are not listed: {CPU_ONLY_NOTE}",
    )
    gr.Markdown(app.model_note, elem_id="model-note")
    model_info = gr.Markdown("", label="Model information")
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    with gr.Row():
        duration = gr.Slider(
            MIN_DURATION, DEFAULT_DURATION, DEFAULT_DURATION, step=DURATION_STEP, label="Duration (s)"
        )
        samples = gr.Slider(1, MAX_BATCH, 1, step=1, label="Samples", info=_work_info(limits))
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
        random_seed = gr.Checkbox(True, label="Random seed")
    return dict(
        prompt=prompt, examples=examples, model=model, model_info=model_info, generate=generate, stop=stop,
        duration=duration, samples=samples, seed=seed, random_seed=random_seed,
    )  # fmt: skip


def _live_controls(limits: Limits) -> dict:
    with gr.Accordion("Live controls (apply from the next step)", open=True):
        with gr.Row():
            max_cfg = gr.Slider(
                0,
                MAX_CFG_SLIDER,
                DEFAULT_MAX_CFG,
                step=0.5,
                label="CFG max (fully masked)",
                elem_id="cfg-max",
            )
            min_cfg = gr.Slider(0, MAX_CFG_SLIDER, DEFAULT_MIN_CFG, step=0.5, label="CFG min (last steps)")
        cfg_schedule = gr.Radio(list(CFG_SCHEDULES), value=CFG_LINEAR, label="CFG schedule")
        cfg_curve = gr.Textbox(
            DEFAULT_CFG_CURVE_TEXT,
            label="CFG curve (schedule 'curve': coefficients from fully masked to done)",
            info=f"At most {limits.cfg_points} points.",
        )
        temperature = gr.Slider(
            0,
            MAX_TEMPERATURE_SLIDER,
            DEFAULT_TEMPERATURE,
            step=0.1,
            label="Temperature (annealed within each codebook)",
        )
        rescore_weight = gr.Slider(0, 1, 0, step=0.05, label="Rescoring weight w", info=RESCORING_HELP)
        steer_note = gr.Markdown("", label="Live controls reply")
    return dict(
        max_cfg=max_cfg, min_cfg=min_cfg, cfg_schedule=cfg_schedule, cfg_curve=cfg_curve,
        temperature=temperature, rescore_weight=rescore_weight, steer_note=steer_note,
    )  # fmt: skip


def _decoding_settings(limits: Limits) -> dict:
    with gr.Accordion("Decoding", open=False):
        decoding_steps = gr.Textbox(
            steps_text(default_steps(4)),
            label="Decoding steps per codebook (one number per codebook)",
            info=f"At most {limits.max_steps} steps in all on this server. {_work_info(limits)}",
        )
        span_arrangement = gr.Radio(
            list(SPAN_ARRANGEMENTS), value=DEFAULT_SPAN_ARRANGEMENT, label="Span arrangement"
        )
        span_scoring = gr.Radio(list(SPAN_SCORINGS), value=DEFAULT_SPAN_SCORING, label="Span scoring")
        with gr.Row():
            top_p = gr.Slider(0, 1, DEFAULT_TOP_P, step=0.05, label="Top-p (0 = off)")
            top_k = gr.Number(0, precision=0, minimum=0, label="Top-k (0 = off; used when top-p is 0)")
    return dict(
        decoding_steps=decoding_steps, span_arrangement=span_arrangement, span_scoring=span_scoring,
        top_p=top_p, top_k=top_k,
    )  # fmt: skip


def audio_panel() -> AudioPanel:
    """Continue a clip or re-decode a region of it: an upload, a recording or a run's audio."""
    with gr.Accordion("Audio in: continue a clip, or re-decode a region of it", open=False):
        mode = gr.Radio(list(MODES), value=GENERATE, label="Mode", elem_id="mode")
        audio = gr.Audio(
            sources=["upload", "microphone"],
            type="filepath",
            label=f"Input audio (up to {MAX_UPLOAD_SECONDS:g} s; resampled, mixed to mono, cropped to the duration)",
            elem_id="audio-in",
        )
        use_run = gr.Button("Use the run shown as input audio", size="sm", elem_id="use-run")
        keep = gr.Number(DEFAULT_KEEP_SECONDS, label="Continue: seconds to keep", minimum=0, elem_id="keep")
        with gr.Row():
            start, end = (
                gr.Slider(0, MAX_REGION_SLIDER, value, step=REGION_STEP, label=label, elem_id=elem_id)
                for value, label, elem_id in zip(
                    DEFAULT_REGION,
                    ("Region start (s)", "Region end (s)"),
                    ("region-start", "region-end"),
                    strict=True,
                )
            )
        gr.Markdown(
            "Re-decode region: the audio outside the region is kept in every codebook and the model "
            "sees it on both sides; the region snaps to whole spans. Drag across the canvas to pick it."
        )
    return AudioPanel(mode, audio, keep, start, end, use_run)


def settings_panel(app: DemoApp) -> tuple[SettingsPanel, AudioPanel]:
    """The left column: prompt and model, audio in, live controls, decoding settings."""
    limits = app.limits
    prompt_and_model = _prompt_and_model(app, limits)
    audio = audio_panel()
    settings = SettingsPanel(**prompt_and_model, **_live_controls(limits), **_decoding_settings(limits))
    return settings, audio


def _image(label: str, **kwargs) -> gr.Image:
    return gr.Image(label=label, show_label=False, format="png", interactive=False, **kwargs)


@lru_cache(maxsize=1)
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def canvas_view(label: str, role: str, elem_id: str) -> gr.HTML:
    """The token canvas and the schedules, drawn by the page (``assets/canvas.js``).

    ``role`` "live": its value is a run's feed (:mod:`magnet_demo.canvas_feed`), drawn at its
    newest step. "inspect": draws the step the "Step" slider points at, from the same feed.
    """
    return gr.HTML(
        "",
        label=label,
        elem_id=elem_id,
        html_template=CANVAS_TEMPLATE,
        css_template=_asset("canvas.css"),
        js_on_load=_asset("canvas.js"),
        role=role,
        scrub_id=SCRUB_ID,
        lut=viz.confidence_lut_hex(),
    )


def _inspect_panel(limits: Limits) -> tuple[InspectPanel, gr.Slider]:
    with gr.Accordion("Inspect a step: scrub, listen, re-decode from it", open=True):
        with gr.Row():
            scrub = gr.Slider(1, 40, 40, step=1, label="Step", elem_id=SCRUB_ID)
            sample_shown = gr.Slider(1, MAX_BATCH, 1, step=1, label="Sample shown")
        text = gr.Markdown("", label="Step description", elem_id="inspect-text")
        canvas = canvas_view("Step", "inspect", "inspect-canvas")
        with gr.Row():
            preview = gr.Audio(label="Listen to this step", interactive=False, elem_id="step-audio")
            fork = gr.Button(
                f"Re-decode from this step (forks up to {limits.fork_depth} deep)", elem_id="fork"
            )
    return InspectPanel(sample_shown, text, canvas, preview, fork), scrub


def main_panel(app: DemoApp, seed: gr.Number) -> tuple[MainView, InspectPanel]:
    """The right column: status, canvas, schedules, audio, the inspector, runs and downloads."""
    status = gr.Markdown("Ready.", label="Status", elem_id="status")
    canvas = canvas_view("Token canvas", "live", "live-canvas")
    with gr.Row():
        audio = gr.Audio(label="This run", interactive=False, elem_id="final-audio")
        compare = gr.Audio(label="A/B audio", interactive=False, elem_id="compare-audio")
    spectrogram = _image("Spectrogram", height=SPECTROGRAM_HEIGHT)
    inspect, scrub = _inspect_panel(app.limits)
    with gr.Accordion("Runs and downloads (this session)", open=True):
        runs = gr.Dropdown(
            [],
            label="Run",
            info="Every run of this session; pick one to show it.",
            allow_custom_value=True,  # a number the session lacks gets our own message
        )
        downloads = gr.File(
            label="WAV, trace (.npz) and GIF of every run", file_count="multiple", interactive=False
        )
    with gr.Accordion("Step details (JSON)", open=False):
        step_info = gr.JSON(label="Details")
    main = MainView(status, canvas, step_info, audio, compare, spectrogram, downloads, runs, scrub, seed)
    return main, inspect


def _waiting(demo: gr.Blocks, session_hash: str | None) -> int:
    """Runs of ``session_hash`` waiting in ``demo``'s queue for a decoding slot (Gradio's queue)."""
    queue = getattr(demo, "_queue", None)
    events = getattr(queue, "event_queue_per_concurrency_id", {}).get(DECODE_SLOT)
    return sum(1 for event in getattr(events, "queue", ()) if event.session_hash == session_hash)


def _admission(app: DemoApp, demo: gr.Blocks, handler: Callable) -> Callable:
    """A validator for ``handler``'s event: Gradio calls it before the request joins the queue,
    with the handler's inputs and request (hence the handler's signature)."""

    @functools.wraps(handler)
    def admit(*values):
        inputs = [value for value in values if not isinstance(value, gr.Request)]
        request = next((value for value in values if isinstance(value, gr.Request)), None)
        refusal = app.admit(request, _waiting(demo, getattr(request, "session_hash", None)))
        # one verdict per input; a refusal is shown on the first (the prompt, the audio, the run)
        verdicts = [gr.validate(True, "") for _ in inputs]
        if refusal is not None and verdicts:
            verdicts[0] = gr.validate(False, refusal)
        return verdicts

    return admit


def wire(
    app: DemoApp,
    demo: gr.Blocks,
    left: SettingsPanel,
    audio: AudioPanel,
    main: MainView,
    inspect: InspectPanel,
    concurrency_limit: int,
) -> None:
    """Connect the components to ``app``'s handlers and name the API endpoints."""
    left.examples.click(lambda values: values[0], left.examples, left.prompt, api_visibility="private")
    model_inputs = [left.model, left.duration]
    left.model.change(app.model_changed, model_inputs, left.model_outputs(), api_name="model_info", **RAW)
    demo.load(app.model_changed, model_inputs, left.model_outputs(), **PRIVATE)

    # Gradio's progress overlay (queue position, timer) on the status line only: on every output
    # it repaints the whole page many times a second, CPU the decoding needs
    decoding = dict(
        concurrency_limit=concurrency_limit,
        concurrency_id=DECODE_SLOT,
        show_progress="minimal",
        show_progress_on=[main.status],
        **RAW,
    )
    run_inputs = [*left.run_inputs(), inspect.sample_shown]
    outputs = main.outputs()
    # a click while a run (or the writing of its files) is pending starts one run after it: Gradio's
    # default would ignore it without a word
    started = left.generate.click(
        app.generate,
        [*run_inputs, *audio.inputs()],
        outputs,
        api_name="generate",
        trigger_mode="always_last",
        validator=_admission(app, demo, app.generate),
        **decoding,
    )
    forked = inspect.fork.click(
        app.fork,
        [main.runs, main.scrub, *run_inputs],
        outputs,
        api_name="fork",
        validator=_admission(app, demo, app.fork),
        **decoding,
    )
    step_inputs = [main.runs, main.scrub, inspect.sample_shown]
    for event in (started, forked):
        event.then(app.inspect, step_inputs, inspect.outputs(), **PRIVATE)
    # the other two modes as endpoints of their own (the page's button reaches them through
    # /generate's mode): audio file in, the outputs of /generate
    endpoints = (
        ("continue", app.continue_clip, [audio.audio, audio.keep]),
        ("inpaint", app.inpaint, [audio.audio, audio.region_start, audio.region_end]),
    )
    for name, handler, first_inputs in endpoints:
        api_button = gr.Button(visible=False)
        admit = _admission(app, demo, handler)
        api_button.click(
            handler, [*first_inputs, *run_inputs], outputs, api_name=name, validator=admit, **decoding
        )
    audio.use_run.click(app.use_run_audio, [main.runs, inspect.sample_shown], audio.audio, **PRIVATE)
    audio.audio.change(
        app.audio_preview, [audio.audio, left.model, left.duration], [main.canvas, main.status], **PRIVATE
    )
    left.stop.click(app.stop, None, left.steer_note, api_name="stop", queue=False)

    steer = (app.steer, left.live_inputs(), left.steer_note)
    left.cfg_schedule.change(*steer, queue=False, api_name="steer", **RAW)
    for control in (left.max_cfg, left.min_cfg, left.temperature, left.rescore_weight):
        control.release(*steer, queue=False, **PRIVATE)
    left.cfg_curve.submit(*steer, queue=False, **PRIVATE)
    left.cfg_curve.blur(*steer, queue=False, **PRIVATE)

    main.scrub.release(app.inspect, step_inputs, inspect.outputs(), api_name="step", **RAW)
    show_inputs = [main.runs, inspect.sample_shown]
    main.runs.input(app.show_run, show_inputs, main.outputs(), api_name="show_run", **RAW).then(
        app.inspect, step_inputs, inspect.outputs(), **PRIVATE
    )
    inspect.sample_shown.release(app.show_run, show_inputs, main.outputs(), **PRIVATE).then(
        app.inspect, step_inputs, inspect.outputs(), **PRIVATE
    )
    demo.unload(app.forget)


def build_ui(app: DemoApp, *, concurrency_limit: int = 1) -> gr.Blocks:
    """Lay out the page, hand ``app`` its :class:`MainView` and wire the events.

    ``concurrency_limit`` decodings run at once (others wait in the queue); stop, steering and
    inspecting never wait behind a decoding.
    """
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                left, audio = settings_panel(app)
            with gr.Column(scale=2, min_width=480):
                main, inspect = main_panel(app, left.seed)
        app.components = main
        wire(app, demo, left, audio, main, inspect, concurrency_limit)
    return demo


def launch_local(app: DemoApp, *, queue_size: int = 8) -> tuple[gr.Blocks, str]:
    """Serve ``app`` on a free localhost port in the background (tests, screenshots).

    Returns the running Blocks (call ``.close()`` when done) and its URL.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_ui(app)
    demo.queue(max_size=queue_size, api_open=False)
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(app.sessions.root)],
        max_file_size=f"{MAX_UPLOAD_MB}mb",
    )
    return demo, f"http://127.0.0.1:{port}/"
