"""The page: panels that lay out components, built from plain configuration (:class:`PageConfig`).

Each panel is a frozen dataclass of its components, so the wiring names what it addresses
(``main.status``). The settings' controls are named as :class:`~magnet_demo.form.Settings`'
fields, so the wiring builds every endpoint's inputs from that one list. No handler and no
service here: :mod:`magnet_demo.studio.wiring` connects them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import gradio as gr

from magnet_demo import viz
from magnet_demo.audio_in import MAX_UPLOAD_SECONDS
from magnet_demo.audio_modes import DEFAULT_KEEP_SECONDS, DEFAULT_REGION, GENERATE, MODES, REGION
from magnet_demo.controls import (
    DEFAULT_CFG_CURVE_TEXT,
    DEFAULT_DURATION,
    DEFAULT_EXTEND_SECONDS,
    DEFAULT_MAX_CFG,
    DEFAULT_MIN_CFG,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_PREFIX_SECONDS,
    DEFAULT_SPAN_ARRANGEMENT,
    DEFAULT_SPAN_SCORING,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_UNMASKING_ORDER,
    METHOD_MAGNET,
    RESCORING_HELP,
    Limits,
)
from magnet_demo.engine import MAX_BATCH
from magnet_demo.form import MAX_SEED, default_steps, steps_text
from magnet_demo.lab import METHOD_LABELS
from magnet_demo.schedules import CFG_LINEAR, CFG_SCHEDULES
from magnet_demo.spans import MAX_REVISION_SHARE, SPAN_ARRANGEMENTS, SPAN_SCORINGS, UNMASKING_ORDERS
from magnet_demo.studio.compare import COLUMNS, COMPARE_OUTPUTS
from magnet_demo.studio.screens import INTRO

MIN_DURATION = 1.0
DURATION_STEP = 0.5
MAX_CFG_SLIDER = 30.0
MAX_TEMPERATURE_SLIDER = 10.0
SPECTROGRAM_HEIGHT = 240
#: the region sliders: up to the longest released model's 30 s, a frame (at 50 Hz) a notch
MAX_REGION_SLIDER = 30.0
REGION_STEP = 0.02
ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
#: element ids the page's script (``assets/canvas.js``) finds; handed to it as props
SCRUB_ID = "scrub"
AUDIO_IDS = {"mode": "mode", "region_start": "region-start", "region_end": "region-end"}
#: the canvas widget's markup; canvas.js draws into it (no template tags: it never re-renders)
CANVAS_TEMPLATE = (
    '<div class="mc-title">No run yet: type a prompt and press Generate.</div>'
    '<canvas class="mc-canvas"></canvas><div class="mc-readout">Point at the canvas to read a token.</div>'
    '<canvas class="mc-schedule"></canvas><div class="mc-legend"></div>'
)


@dataclass(frozen=True)
class PageConfig:
    """What the page needs to know of its server, as plain values."""

    limits: Limits
    model_choices: list[str]
    default_model: str
    model_help: str
    model_note: str
    examples: list[str]


@dataclass(frozen=True)
class MainView:
    """What every run handler updates, in the order of ``screens.MAIN_OUTPUTS``."""

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
    """The left column: prompt, model, buttons, the run's settings and live controls. A setting's
    control has the setting's name (:class:`~magnet_demo.form.Settings`)."""

    prompt: gr.Textbox
    examples: gr.Dataset
    model: gr.Dropdown
    model_info: gr.Markdown
    generate: gr.Button
    stop: gr.Button
    expected: gr.Markdown
    fast: gr.Button
    overlap_seconds: gr.Slider
    duration: gr.Slider
    samples: gr.Slider
    seed: gr.Number
    random_seed: gr.Checkbox
    max_cfg_coef: gr.Slider
    min_cfg_coef: gr.Slider
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
    anneal_temp: gr.Checkbox
    unmasking_order: gr.Radio
    revision_share: gr.Slider
    method: gr.Radio
    prefix_seconds: gr.Slider


@dataclass(frozen=True)
class AudioPanel:
    """Audio in: the mode, the input audio, the seconds to keep, the region to re-decode."""

    mode: gr.Radio
    audio: gr.Audio
    keep_seconds: gr.Number
    region_start: gr.Slider
    region_end: gr.Slider
    use_run: gr.Button


@dataclass(frozen=True)
class InspectPanel:
    """Scrub to a step, see it, listen to it, re-decode from it."""

    sample_shown: gr.Slider
    text: gr.Markdown
    canvas: gr.HTML
    preview: gr.Audio
    fork: gr.Button
    extend_seconds: gr.Number | None = None  # "Extend the run shown": in the runs' accordion
    extend: gr.Button | None = None

    def outputs(self) -> list:
        return [self.preview, self.text]


@dataclass(frozen=True)
class CompareView:
    """The session's runs in a table; two of them side by side (``compare.COMPARE_OUTPUTS``
    order, then the buttons)."""

    table: gr.Dataframe
    run_a: gr.Dropdown
    run_b: gr.Dropdown
    canvas_a: gr.Image
    canvas_b: gr.Image
    audio_a: gr.Audio
    audio_b: gr.Audio
    timing: gr.Markdown
    show: gr.Button
    preset: gr.Button

    def outputs(self) -> list:
        return [getattr(self, name) for name in COMPARE_OUTPUTS]


def work_info(limits: Limits) -> str:
    """The server's caps on a run's work and time, next to the controls that spend them."""
    return (
        f"A run's work, steps × samples × seconds, is at most {limits.max_work:g} here (50 steps of one "
        f"10 s sample: 500); a run stops after {limits.max_run_seconds:g} s."
    )


def _length_controls(limits: Limits) -> tuple[gr.Slider, gr.Slider, gr.Slider]:
    """The duration (up to the longest clip), the samples and the windows' overlap."""
    with gr.Row():
        duration = gr.Slider(
            MIN_DURATION,
            max(DEFAULT_DURATION, limits.max_clip_seconds),
            DEFAULT_DURATION,
            step=DURATION_STEP,
            label="Duration (s)",
            info="Longer than the model's window: decoded window after window, by any method.",
            elem_id="duration",
        )
        samples = gr.Slider(
            1,
            MAX_BATCH,
            1,
            step=1,
            label="Samples",
            info=f"steps × samples × seconds ≤ {limits.max_work:g} a run",
        )
    overlap_seconds = gr.Slider(
        0,
        DEFAULT_DURATION - DURATION_STEP,
        DEFAULT_OVERLAP_SECONDS,
        step=DURATION_STEP,
        label="Long clips: seconds each window continues of the one before",
    )
    return duration, samples, overlap_seconds


def _prompt_and_model(config: PageConfig) -> dict:
    limits = config.limits
    prompt = gr.Textbox(
        label="Prompt",
        lines=2,
        placeholder="Describe the music or sound…",
        max_length=limits.prompt_chars,
        info=f"At most {limits.prompt_chars} characters.",
    )
    examples = gr.Dataset(
        components=[prompt],
        samples=[[text] for text in config.examples],
        label="Examples for this model (click one)",
        samples_per_page=6,
    )
    model = gr.Dropdown(
        config.model_choices,
        value=config.default_model,
        allow_custom_value=True,
        label="Model",
        info=config.model_help,
    )
    gr.Markdown(config.model_note, elem_id="model-note")
    model_info = gr.Markdown("", label="Model information")
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    expected, fast = _expected_row()
    duration, samples, overlap_seconds = _length_controls(limits)
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
        random_seed = gr.Checkbox(True, label="Random seed")
    return dict(
        prompt=prompt, examples=examples, model=model, model_info=model_info, generate=generate, stop=stop,
        expected=expected, fast=fast, overlap_seconds=overlap_seconds,
        duration=duration, samples=samples, seed=seed, random_seed=random_seed,
    )  # fmt: skip


def _expected_row() -> tuple[gr.Markdown, gr.Button]:
    """What a run will cost here, and the fast preset."""
    with gr.Row():
        expected = gr.Markdown("", elem_id="expected-time")
        fast = gr.Button("Fast: fewer steps", size="sm", elem_id="fast-preset", scale=0)
    return expected, fast


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
        max_cfg_coef=max_cfg, min_cfg_coef=min_cfg, cfg_schedule=cfg_schedule, cfg_curve=cfg_curve,
        temperature=temperature, rescore_weight=rescore_weight, steer_note=steer_note,
    )  # fmt: skip


#: what the page says of the decoding lab's methods
METHOD_HELP = (
    "Autoregressive: the model's autoregressive partner on the same tokens (its rescorer: MusicGen "
    "for the music models) writes the clip frame by frame, with its own settings (top-k 250, "
    "temperature 1, CFG 3). Hybrid: it writes the first seconds, then MAGNeT decodes the rest with "
    "them given. This pairs two released models at inference: it is not the jointly trained "
    "Hybrid-MAGNeT of the paper."
)


def _method() -> dict:
    with gr.Row():
        method = gr.Radio(
            [(label, value) for value, label in METHOD_LABELS.items()],
            value=METHOD_MAGNET,
            label="Method",
            info=METHOD_HELP,
            elem_id="method",
        )
        prefix_seconds = gr.Slider(
            DURATION_STEP,
            DEFAULT_DURATION - DURATION_STEP,
            DEFAULT_PREFIX_SECONDS,
            step=DURATION_STEP,
            label="Hybrid: seconds the autoregressive model writes first",
        )
    return dict(method=method, prefix_seconds=prefix_seconds)


def _decoding_settings(limits: Limits) -> dict:
    with gr.Accordion("Decoding", open=False):
        decoding_steps = gr.Textbox(
            steps_text(default_steps(4)),
            label="Decoding steps per codebook (one number per codebook)",
            elem_id="decoding-steps",
            info=f"At most {limits.max_steps} steps in all on this server. {work_info(limits)}",
        )
        span_arrangement = gr.Radio(
            list(SPAN_ARRANGEMENTS), value=DEFAULT_SPAN_ARRANGEMENT, label="Span arrangement"
        )
        span_scoring = gr.Radio(list(SPAN_SCORINGS), value=DEFAULT_SPAN_SCORING, label="Span scoring")
        with gr.Row():
            top_p = gr.Slider(0, 1, DEFAULT_TOP_P, step=0.05, label="Top-p (0 = off)")
            top_k = gr.Number(0, precision=0, minimum=0, label="Top-k (0 = off; used when top-p is 0)")
        anneal_temp = gr.Checkbox(True, label="Anneal the temperature within each codebook (audiocraft: on)")
        unmasking_order = gr.Radio(
            list(UNMASKING_ORDERS),
            value=DEFAULT_UNMASKING_ORDER,
            label="Unmasking order: which spans a step re-masks first",
            info="confidence: MAGNeT's (lowest first); random; margin: top-1 minus top-2 probability "
            "(smallest first); entropy of the prediction (highest first)",
        )
        revision_share = gr.Slider(
            0,
            MAX_REVISION_SHARE,
            0,
            step=0.05,
            label="Revision: share of fixed spans predicted again (0 = off)",
        )
    return dict(
        decoding_steps=decoding_steps, span_arrangement=span_arrangement, span_scoring=span_scoring,
        top_p=top_p, top_k=top_k, anneal_temp=anneal_temp, unmasking_order=unmasking_order,
        revision_share=revision_share,
    )  # fmt: skip


def audio_panel() -> AudioPanel:
    """Continue a clip or re-decode a region of it: an upload, a recording or a run's audio."""
    with gr.Accordion("Audio in: continue a clip, or re-decode a region of it", open=False):
        mode = gr.Radio(list(MODES), value=GENERATE, label="Mode", elem_id=AUDIO_IDS["mode"])
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
                gr.Slider(0, MAX_REGION_SLIDER, value, step=REGION_STEP, label=label, elem_id=AUDIO_IDS[key])
                for value, label, key in zip(
                    DEFAULT_REGION,
                    ("Region start (s)", "Region end (s)"),
                    ("region_start", "region_end"),
                    strict=True,
                )
            )
        gr.Markdown(
            "Re-decode region: the audio outside the region is kept in every codebook and the model "
            "sees it on both sides; the region snaps to whole spans. Drag across the canvas to pick it."
        )
    return AudioPanel(mode, audio, keep, start, end, use_run)


def settings_panel(config: PageConfig) -> tuple[SettingsPanel, AudioPanel]:
    """The left column: prompt and model, audio in, live controls, decoding settings."""
    prompt_and_model, method = _prompt_and_model(config), _method()
    audio = audio_panel()
    live, decoding = _live_controls(config.limits), _decoding_settings(config.limits)
    return SettingsPanel(**prompt_and_model, **method, **live, **decoding), audio


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
        ids=AUDIO_IDS,
        region_mode=REGION,
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


def main_panel(config: PageConfig, seed: gr.Number) -> tuple[MainView, InspectPanel]:
    """The right column: status, canvas, schedules, audio, the inspector, runs and downloads."""
    status = gr.Markdown("Ready.", label="Status", elem_id="status")
    canvas = canvas_view("Token canvas", "live", "live-canvas")
    with gr.Row():
        audio = gr.Audio(label="This run", interactive=False, elem_id="final-audio")
        compare = gr.Audio(label="A/B audio", interactive=False, elem_id="compare-audio")
    spectrogram = gr.Image(
        label="Spectrogram", show_label=False, format="png", interactive=False, height=SPECTROGRAM_HEIGHT
    )
    inspect, scrub = _inspect_panel(config.limits)
    with gr.Accordion("Runs and downloads (this session)", open=True):
        runs = gr.Dropdown(
            [],
            label="Run",
            info="Every run of this session; pick one to show it.",
            allow_custom_value=True,  # a number the session lacks gets our own message
        )
        with gr.Row():
            extend_seconds = gr.Number(
                DEFAULT_EXTEND_SECONDS,
                label="Extend by (s)",
                minimum=0,
                maximum=config.limits.max_clip_seconds,
                info=f"Continues the run shown, window after window, up to {config.limits.max_clip_seconds:g} s in all.",
                elem_id="extend-seconds",
            )
            extend = gr.Button("Extend the run shown", elem_id="extend")
        downloads = gr.File(
            label="WAV, trace (.npz) and GIF of every run", file_count="multiple", interactive=False
        )
    with gr.Accordion("Step details (JSON)", open=False):
        step_info = gr.JSON(label="Details")
    main = MainView(status, canvas, step_info, audio, compare, spectrogram, downloads, runs, scrub, seed)
    return main, dataclasses.replace(inspect, extend_seconds=extend_seconds, extend=extend)


def compare_panel() -> CompareView:
    """Compare runs: the table, two runs' last canvases stacked, their audio and timings, and the
    preset that makes the same prompt and seed as MAGNeT, Hybrid and autoregressive runs."""
    with gr.Accordion("Compare runs (the decoding lab)", open=True):
        preset = gr.Button(
            "Run MAGNeT, Hybrid and autoregressive (same prompt and seed, one after another)",
            elem_id="compare-preset",
        )
        table = gr.Dataframe(
            headers=list(COLUMNS), label="Runs of this session", interactive=False, elem_id="compare-table"
        )
        with gr.Row():
            run_a = gr.Dropdown([], label="Run A", allow_custom_value=True, elem_id="compare-a")
            run_b = gr.Dropdown([], label="Run B", allow_custom_value=True, elem_id="compare-b")
            show = gr.Button("Compare", size="sm", elem_id="compare-show")
        canvas_a, canvas_b = (
            gr.Image(label=f"Run {side}: last step", format="png", interactive=False, elem_id=f"compare-canvas-{side.lower()}")
            for side in "AB"
        )  # fmt: skip
        with gr.Row():
            audio_a = gr.Audio(label="A", interactive=False, elem_id="compare-audio-a")
            audio_b = gr.Audio(label="B", interactive=False, elem_id="compare-audio-b")
        timing = gr.Markdown("Pick two runs, or run the preset.", label="Timings", elem_id="compare-timing")
    return CompareView(table, run_a, run_b, canvas_a, canvas_b, audio_a, audio_b, timing, show, preset)


@dataclass(frozen=True)
class ToolIO:
    """The tools' inputs and outputs (:mod:`magnet_demo.studio.tools`), not shown on the page."""

    prompt: gr.Textbox
    duration: gr.Number
    seed: gr.Number
    method: gr.Textbox
    model: gr.Textbox
    audio: gr.Audio
    keep_seconds: gr.Number
    region_start: gr.Number
    region_end: gr.Number
    clip: gr.Textbox
    seconds: gr.Number
    wav: gr.Audio
    seed_used: gr.Number
    summary: gr.JSON
    triggers: tuple[gr.Button, ...]

    def outputs(self) -> list:
        return [self.wav, self.seed_used, self.summary]


def tool_io(tools: int) -> ToolIO:
    """Hidden components for ``tools`` tool endpoints (one hidden button each triggers one)."""
    with gr.Column(visible=False):
        inputs = dict(
            prompt=gr.Textbox(label="prompt"),
            duration=gr.Number(None, label="duration"),
            seed=gr.Number(-1, precision=0, label="seed"),
            method=gr.Textbox(METHOD_MAGNET, label="method"),
            model=gr.Textbox("", label="model"),
            audio=gr.Audio(type="filepath", sources=["upload"], label="audio"),
            keep_seconds=gr.Number(DEFAULT_KEEP_SECONDS, label="keep_seconds"),
            region_start=gr.Number(DEFAULT_REGION[0], label="region_start"),
            region_end=gr.Number(DEFAULT_REGION[1], label="region_end"),
            clip=gr.Textbox(None, label="clip"),
            seconds=gr.Number(DEFAULT_EXTEND_SECONDS, label="seconds"),
        )
        wav = gr.Audio(type="filepath", label="audio file")
        seed_used = gr.Number(label="seed used", precision=0)
        summary = gr.JSON(label="run summary")
        triggers = tuple(gr.Button(visible=False) for _ in range(tools))
    return ToolIO(**inputs, wav=wav, seed_used=seed_used, summary=summary, triggers=triggers)


def intro() -> None:
    gr.Markdown(INTRO)
