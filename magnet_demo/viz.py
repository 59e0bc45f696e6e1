"""Pictures of a decoding run: step records in, RGB numpy images (or matplotlib figures) out.

The page draws the live canvas and the schedules itself (``assets/canvas.js``, from
:mod:`magnet_demo.canvas_feed`); this module holds what both share (token states, their colours
and labels, the confidence colour map, the step title, the planned schedules) and draws the
pictures made once per run: the step images of the GIF (:func:`step_image`, :func:`animation_gif`)
and the spectrogram (:func:`spectrogram_image`). This module knows nothing of Gradio.

- the token canvas (codebooks x frames of one sample, one colour per token state) and the
  confidence strips are plain numpy arrays, upscaled with ``np.repeat``;
- :func:`step_image` pastes them into a cached template that already holds the labels, the time
  axis and the legend, and writes only the title line per step.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from magnet_demo import schedules  # noqa: E402
from magnet_demo.controls import ControlValues  # noqa: E402
from magnet_demo.records import StepRecord  # noqa: E402

# ---------------------------------------------------------------------------------------------
# token states and colours

STATE_MASKED = 0
STATE_FIXED = 1
STATE_NEW = 2
STATE_REMASKED = 3
STATE_GIVEN = 4
STATE_REVISED = 5
#: legend text of each state, indexed by state
STATE_LABELS = (
    "masked", "fixed earlier", "unmasked this step", "re-masked this step", "given (input audio, or the run extended)",
    "revised (fixed earlier, predicted again next step)",
)  # fmt: skip
#: RGB of each state, indexed by state (dark slate, blue, amber, magenta: distinct for most
#: colour-vision deficiencies)
STATE_COLOURS = np.array(
    [
        (45, 48, 57),  # masked
        (60, 120, 180),  # fixed in an earlier step
        (255, 200, 50),  # unmasked (fixed for good) in this step
        (194, 64, 159),  # predicted in this step, but re-masked (rejected) for the next one
        (0, 158, 115),  # given by the input audio: never masked
        (213, 94, 0),  # fixed earlier in this stage, re-masked by revision for the next step
    ],
    dtype=np.uint8,
)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (40, 40, 48)
MUTED_TEXT = (110, 110, 120)
#: confidence strip where nothing was predicted in this step (frames fixed earlier)
NOT_PREDICTED = (228, 228, 232)
CONFIDENCE_CMAP = "viridis"
SPECTROGRAM_CMAP = "magma"

# ---------------------------------------------------------------------------------------------
# geometry of the step image (pixels)

#: the canvas aims at this width; every frame gets a whole number of pixels (at least one)
TARGET_WIDTH = 1000
ROW_PX = 22
ROW_GAP = 2
STRIP_PX = 12
STRIP_GAP = 6
LABEL_PX = 84
RIGHT_PX = 12
HEADER_PX = 26
AXIS_PX = 18
LEGEND_PX = 28
FONT_SIZE = 12
TITLE_FONT_SIZE = 13
SWATCH_PX = 12
TICK_PX = 4
#: about this many time-axis ticks
TARGET_TICKS = 10

# ---------------------------------------------------------------------------------------------
# spectrogram

SPECTROGRAM_SIZE_PX = (1000, 240)
FIGURE_DPI = 100
SPECTROGRAM_FFT = 1024
SPECTROGRAM_HOP = 256
SPECTROGRAM_RANGE_DB = 80.0

# ---------------------------------------------------------------------------------------------
# animation

GIF_FRAME_MS = 200
GIF_LAST_FRAME_MS = 1500
GIF_MAX_FRAMES = 240

#: matplotlib is not thread-safe: one lock for all drawing with it in this process
_MPL_LOCK = threading.Lock()
#: the step pictures share cached FreeType fonts, which one thread at a time may use (the background
#: writer of a run's GIF and a request drawing the compare view draw one after the other)
_FONT_LOCK = threading.Lock()
_CONFIDENCE_LUT = (colormaps[CONFIDENCE_CMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def hex_colour(rgb: Sequence[int]) -> str:
    """``(r, g, b)`` as ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def confidence_lut_hex() -> list[str]:
    """The 256 ``#rrggbb`` colours of confidence 0..1 (what the page's canvas uses)."""
    return [hex_colour(colour) for colour in _CONFIDENCE_LUT]


def legend_items() -> list[tuple[str, str]]:
    """(label, ``#rrggbb``) of every canvas state, for legends drawn elsewhere (HTML)."""
    return [(label, hex_colour(colour)) for label, colour in zip(STATE_LABELS, STATE_COLOURS, strict=True)]


def frame_width(num_frames: int) -> int:
    """Pixels per frame: a whole number (at least one) that brings the canvas near TARGET_WIDTH."""
    return max(1, round(TARGET_WIDTH / max(num_frames, 1)))


# ---------------------------------------------------------------------------------------------
# the token canvas


def canvas_states(record: StepRecord, sample: int = 0) -> np.ndarray:
    """State of every token of one sample after ``record``'s step: ``[K, T]`` uint8.

    Codebooks below the current stage are fixed, those above it masked. In the current stage a
    frame is fixed earlier when this step did not mask it (prompt frames too), newly unmasked when
    this step predicted it and kept it, and re-masked when this step predicted it but the next step
    masks it again; revised when it was fixed earlier and revision re-masks it for the next step.
    Tokens given by the input audio (or by the run an extension continues) are given in every
    codebook. A step of a long clip shows the windows before its own fixed and those after masked.

    An autoregressive record (``record.written`` set) shows every codebook: written earlier
    (fixed), written by this record (newly unmasked), or not written yet (masked).
    """
    K, T = record.tokens.shape[1:]
    if record.written is not None:
        states = np.where(record.tokens[sample] == record.mask_id, STATE_MASKED, STATE_FIXED)
        states[record.written[sample]] = STATE_NEW
        states = states.astype(np.uint8)
    else:
        states = np.full((K, T), STATE_MASKED, dtype=np.uint8)
        states[: record.stage] = STATE_FIXED
        before = record.mask_before[sample]
        after = record.mask_after[sample]
        row = np.full(T, STATE_FIXED, dtype=np.uint8)
        row[before & ~after] = STATE_NEW
        row[before & after] = STATE_REMASKED
        revised = getattr(record, "revised", None)
        if revised is not None:
            row[revised[sample]] = STATE_REVISED
        states[record.stage] = row
    if record.window is not None:  # a long clip: earlier windows are done, later ones not begun
        _, _, start, stop = record.window
        states[:, :start] = STATE_FIXED
        states[:, stop:] = STATE_MASKED
    if record.given is not None:  # given by the input audio (or the run an extension continues)
        states[record.given[sample]] = STATE_GIVEN
    return states


def _upscale(rgb_rows: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[T, 3]`` colours -> ``[height, T * width, 3]`` image."""
    return np.broadcast_to(np.repeat(rgb_rows, width, axis=0)[None], (height, rgb_rows.shape[0] * width, 3))


def canvas_image(
    record: StepRecord,
    sample: int = 0,
    *,
    frame_px: int | None = None,
    row_px: int = ROW_PX,
    row_gap: int = ROW_GAP,
) -> np.ndarray:
    """The token canvas of one sample: ``[H, W, 3]`` uint8, codebook 0 on top.

    Each codebook is a band ``row_px`` high, bands ``row_gap`` apart (background colour); each
    frame is ``frame_px`` pixels wide (default :func:`frame_width`). Colours: :data:`STATE_COLOURS`.
    """
    states = canvas_states(record, sample)
    K, T = states.shape
    fw = frame_width(T) if frame_px is None else frame_px
    image = np.empty((K * row_px + (K - 1) * row_gap, T * fw, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    colours = STATE_COLOURS[states]  # [K, T, 3]
    for k in range(K):
        top = k * (row_px + row_gap)
        image[top : top + row_px] = _upscale(colours[k], fw, row_px)
    return image


def confidence_colours(values: np.ndarray) -> np.ndarray:
    """``[T]`` probabilities (NaN = not predicted) -> ``[T, 3]`` uint8 colours."""
    values = np.asarray(values, dtype=np.float32)
    missing = ~np.isfinite(values)
    index = np.clip(np.rint(np.nan_to_num(values, nan=0.0) * 255.0), 0, 255).astype(np.intp)
    colours = _CONFIDENCE_LUT[index]
    colours[missing] = NOT_PREDICTED
    return colours


def confidence_image(
    record: StepRecord, sample: int = 0, *, frame_px: int | None = None, strip_px: int = STRIP_PX
) -> np.ndarray:
    """The current stage's confidences of one sample as colour strips: ``[H, W, 3]`` uint8.

    One strip for MAGNeT's probability of each proposal, and a second one, below it, for the
    rescorer's when the step was rescored; frames fixed before the step are light grey.
    """
    T = record.tokens.shape[-1]
    fw = frame_width(T) if frame_px is None else frame_px
    strips = [_upscale(confidence_colours(record.confidence[sample]), fw, strip_px)]
    if record.rescorer_confidence is not None:
        rescorer = np.where(
            np.isfinite(record.confidence[sample]), record.rescorer_confidence[sample], np.nan
        )
        gap = np.empty((STRIP_GAP, T * fw, 3), dtype=np.uint8)
        gap[:] = BACKGROUND
        strips += [gap, _upscale(confidence_colours(rescorer), fw, strip_px)]
    return np.concatenate(strips, axis=0)


# ---------------------------------------------------------------------------------------------
# the step image: canvas + confidence strips + labels + legend


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _time_ticks(num_frames: int, frame_rate: float | None) -> list[tuple[int, str]]:
    """(frame, label) of the time-axis ticks: seconds when the frame rate is known, else frames."""
    if frame_rate:
        seconds = num_frames / frame_rate
        step = _nice_step(seconds / TARGET_TICKS)
        values = np.arange(0.0, seconds + 1e-9, step)
        return [(int(round(v * frame_rate)), f"{v:g} s") for v in values]
    step = _nice_step(num_frames / TARGET_TICKS)
    return [(int(v), f"{int(v)}") for v in np.arange(0, num_frames + 1, step)]


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at least ``raw``."""
    if raw <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if base * factor >= raw - 1e-12:
            return base * factor
    return base * 10.0


@lru_cache(maxsize=16)
def _template(
    K: int,
    T: int,
    fw: int,
    rescored: bool,
    frame_rate: float | None,
    given: bool = False,
    revised: bool = False,
) -> tuple[np.ndarray, int, int]:
    """The static parts of a step image; returns (image, canvas top, strips top)."""
    strip_h = STRIP_PX * (2 if rescored else 1) + (STRIP_GAP if rescored else 0)
    canvas_h = K * ROW_PX + (K - 1) * ROW_GAP
    canvas_top = HEADER_PX
    strips_top = canvas_top + canvas_h + STRIP_GAP
    axis_top = strips_top + strip_h + 2
    height = axis_top + AXIS_PX + LEGEND_PX
    width = LABEL_PX + T * fw + RIGHT_PX
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(FONT_SIZE)
    for k in range(K):
        y = canvas_top + k * (ROW_PX + ROW_GAP) + ROW_PX // 2
        draw.text((LABEL_PX - 6, y), f"codebook {k + 1}", fill=TEXT_COLOUR, font=font, anchor="rm")
    draw.text(
        (LABEL_PX - 6, strips_top + STRIP_PX // 2), "confidence", fill=TEXT_COLOUR, font=font, anchor="rm"
    )
    if rescored:
        y = strips_top + STRIP_PX + STRIP_GAP + STRIP_PX // 2
        draw.text((LABEL_PX - 6, y), "rescorer", fill=TEXT_COLOUR, font=font, anchor="rm")
    right = LABEL_PX + T * fw
    for frame, label in _time_ticks(T, frame_rate):
        x = LABEL_PX + min(frame * fw, T * fw - 1)
        if x + 3 + draw.textlength(label, font=font) > right + RIGHT_PX:
            continue
        draw.line([(x, axis_top), (x, axis_top + AXIS_PX - 4)], fill=MUTED_TEXT)
        draw.text((x + 3, axis_top + 1), label, fill=MUTED_TEXT, font=font, anchor="lt")
    x = LABEL_PX
    y = axis_top + AXIS_PX + (LEGEND_PX - SWATCH_PX) // 2
    hidden = (set() if given else {STATE_GIVEN}) | (set() if revised else {STATE_REVISED})
    states = zip(STATE_LABELS, STATE_COLOURS, strict=True)
    shown = [item for state, item in enumerate(states) if state not in hidden]
    for label, colour in shown:
        draw.rectangle([x, y, x + SWATCH_PX - 1, y + SWATCH_PX - 1], fill=tuple(int(c) for c in colour))
        draw.text((x + SWATCH_PX + 4, y + SWATCH_PX // 2), label, fill=TEXT_COLOUR, font=font, anchor="lm")
        x += SWATCH_PX + 12 + int(draw.textlength(label, font=font))
    draw.text((x, y + SWATCH_PX // 2), "confidence 0", fill=TEXT_COLOUR, font=font, anchor="lm")
    x += int(draw.textlength("confidence 0", font=font)) + 4
    ramp_w = 80
    ramp = _upscale(_CONFIDENCE_LUT[np.linspace(0, 255, ramp_w).astype(np.intp)], 1, SWATCH_PX)
    image.paste(Image.fromarray(np.ascontiguousarray(ramp)), (x, y))
    x += ramp_w + 4
    draw.text((x, y + SWATCH_PX // 2), "1", fill=TEXT_COLOUR, font=font, anchor="lm")
    x += 16
    draw.rectangle([x, y, x + SWATCH_PX - 1, y + SWATCH_PX - 1], fill=NOT_PREDICTED)
    draw.text(
        (x + SWATCH_PX + 4, y + SWATCH_PX // 2), "not predicted", fill=TEXT_COLOUR, font=font, anchor="lm"
    )
    array = np.asarray(image).copy()
    array.setflags(write=False)
    return array, canvas_top, strips_top


def step_title(record: StepRecord, sample: int = 0) -> str:
    """One line saying where the run is: stage, step, masked units and the values used."""
    K = record.tokens.shape[1]
    if record.written is not None:
        return "  ·  ".join(_autoregressive_title(record, sample))
    window = [] if record.window is None else [f"window {record.window[0] + 1}/{record.window[1]}"]
    parts = window + [
        f"codebook {record.stage + 1}/{K}",
        f"step {record.step + 1}/{record.steps_in_stage}",
        f"total {record.global_step + 1}/{record.total_steps}",
        f"{record.num_masked}/{record.num_units} units masked",
        f"CFG {record.cfg_coef:.2f}",
        f"temperature {record.temperature:.2f}",
    ]
    if record.rescore_weight > 0:
        parts.append(f"rescoring {record.rescore_weight:.2f}")
    if record.tokens.shape[0] > 1:
        parts.append(f"sample {sample + 1}/{record.tokens.shape[0]}")
    return "  ·  ".join(parts)


def _autoregressive_title(record: StepRecord, sample: int) -> list[str]:
    T = record.tokens.shape[2]
    parts = [
        "autoregressive",
        f"record {record.step + 1}/{record.steps_in_stage}",
        f"total {record.global_step + 1}/{record.total_steps}",
        f"{T - int(record.mask_after[sample].sum())}/{T} frames written in codebook {record.tokens.shape[1]}",
        f"CFG {record.cfg_coef:.2f}",
        f"temperature {record.temperature:.2f}",
    ]
    if record.tokens.shape[0] > 1:
        parts.append(f"sample {sample + 1}/{record.tokens.shape[0]}")
    return parts


def step_image(
    record: StepRecord, sample: int = 0, *, frame_rate: float | None = None, title: str | None = None
) -> np.ndarray:
    """Canvas, confidence strips, labels, time axis and legend of one step: ``[H, W, 3]`` uint8.

    ``frame_rate`` (frames per second) labels the time axis in seconds instead of frames;
    ``title`` replaces :func:`step_title`.
    """
    with _FONT_LOCK:
        return _step_image(record, sample, frame_rate, title)


def _step_image(record: StepRecord, sample: int, frame_rate: float | None, title: str | None) -> np.ndarray:
    K, T = record.tokens.shape[1:]
    fw = frame_width(T)
    base, canvas_top, strips_top = _template(
        K,
        T,
        fw,
        record.rescorer_confidence is not None,
        float(frame_rate) if frame_rate else None,
        record.given is not None,
        bool(np.any(record.revised)),
    )
    image = base.copy()
    canvas = canvas_image(record, sample, frame_px=fw)
    image[canvas_top : canvas_top + canvas.shape[0], LABEL_PX : LABEL_PX + canvas.shape[1]] = canvas
    strips = confidence_image(record, sample, frame_px=fw)
    image[strips_top : strips_top + strips.shape[0], LABEL_PX : LABEL_PX + strips.shape[1]] = strips
    _write_line(image[:HEADER_PX], LABEL_PX, step_title(record, sample) if title is None else title)
    return image


@lru_cache(maxsize=512)
def _glyph(char: str, size: int, height: int) -> np.ndarray:
    """Coverage ``[height, advance]`` float32 of one character, vertically centred."""
    font = _font(size)
    width = max(1, round(font.getlength(char)))
    glyph = Image.new("L", (width, height), 0)
    ImageDraw.Draw(glyph).text((0, height // 2), char, fill=255, font=font, anchor="lm")
    return np.asarray(glyph, dtype=np.float32) / 255.0


def _write_line(band: np.ndarray, x: int, text: str, size: int = TITLE_FONT_SIZE) -> None:
    """Write ``text`` into the RGB ``band`` from column ``x``, from cached glyphs (per-step titles:
    rendering a whole line with FreeType costs milliseconds, pasting cached glyphs microseconds)."""
    height, width = band.shape[:2]
    if not text or x >= width:
        return
    coverage = np.concatenate([_glyph(char, size, height) for char in text], axis=1)[:, : width - x]
    alpha = coverage[..., None]
    region = band[:, x : x + coverage.shape[1]]
    region[:] = (
        (region * (1.0 - alpha) + np.asarray(TEXT_COLOUR, np.float32) * alpha).round().astype(np.uint8)
    )


# ---------------------------------------------------------------------------------------------
# schedules


def planned_schedules(
    decoding_steps: Sequence[int], controls: ControlValues, anneal: bool = True
) -> dict[str, np.ndarray]:
    """Mask rate, CFG coefficient and temperature planned for every step of a run.

    Returns float64 arrays of length ``sum(decoding_steps)`` under the keys ``mask_rate``,
    ``cfg_coef`` and ``temperature`` (the annealed value, before the 0.01 floor).
    """
    rates, cfg, temperature = [], [], []
    for n in decoding_steps:
        for i in range(n):
            rate = float(schedules.mask_rate(i, n))
            rates.append(rate)
            cfg.append(controls.cfg.coef(rate))
            temperature.append(schedules.temperature_at(controls.temperature, i, n, anneal))
    return {
        "mask_rate": np.asarray(rates),
        "cfg_coef": np.asarray(cfg),
        "temperature": np.asarray(temperature),
    }


def figure_to_array(figure: Figure) -> np.ndarray:
    """Render a matplotlib figure (Agg) to ``[H, W, 3]`` uint8."""
    with _MPL_LOCK:
        canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ---------------------------------------------------------------------------------------------
# spectrogram


def spectrogram_db(audio: np.ndarray, n_fft: int = SPECTROGRAM_FFT, hop: int = SPECTROGRAM_HOP) -> np.ndarray:
    """Log-magnitude STFT of mono audio, dB relative to its maximum, floored: ``[n_fft//2+1, N]``."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop]
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=-1)).T
    db = 20.0 * np.log10(np.maximum(magnitude, 1e-10))
    db -= db.max()
    return np.maximum(db, -SPECTROGRAM_RANGE_DB)


def spectrogram_figure(
    audio: np.ndarray, sample_rate: int, title: str = "", size_px: tuple[int, int] = SPECTROGRAM_SIZE_PX
) -> Figure:
    """A matplotlib figure of the spectrogram of mono ``audio`` (time in s, frequency in kHz)."""
    db = spectrogram_db(audio)
    duration = max(np.asarray(audio).size / sample_rate, 1e-3)
    width, height = size_px
    figure = Figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.2, top=0.88)
    ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap=SPECTROGRAM_CMAP,
        vmin=-SPECTROGRAM_RANGE_DB,
        vmax=0.0,
        extent=(0.0, duration, 0.0, sample_rate / 2000.0),
        interpolation="nearest",
    )
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("kHz", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return figure


def spectrogram_image(audio: np.ndarray, sample_rate: int, title: str = "") -> np.ndarray:
    """:func:`spectrogram_figure` rendered to ``[H, W, 3]`` uint8."""
    return figure_to_array(spectrogram_figure(audio, sample_rate, title))


# ---------------------------------------------------------------------------------------------
# animation


def animation_gif(
    records: Sequence[StepRecord],
    path: str | Path,
    *,
    sample: int = 0,
    frame_rate: float | None = None,
    frame_ms: int = GIF_FRAME_MS,
    last_frame_ms: int = GIF_LAST_FRAME_MS,
    max_frames: int = GIF_MAX_FRAMES,
) -> Path:
    """Write the whole decoding of one sample as an animated GIF (one frame per step).

    Runs longer than ``max_frames`` steps keep evenly spaced steps (always the last one). The last
    frame is held for ``last_frame_ms``. Returns the path.
    """
    if not records:
        raise ValueError("No steps to animate.")
    indices = np.unique(np.linspace(0, len(records) - 1, min(len(records), max_frames)).round().astype(int))
    frames = [
        Image.fromarray(step_image(records[i], sample, frame_rate=frame_rate)).quantize(
            colors=128, method=Image.Quantize.MEDIANCUT
        )
        for i in indices
    ]
    durations = [frame_ms] * (len(frames) - 1) + [last_frame_ms]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
