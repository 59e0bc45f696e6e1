"""The decoding lab's runs in the studio: autoregressive and Hybrid runs as the studio's records.

The studio draws, scrubs, previews and traces :class:`~magnet_demo.records.StepRecord`s. An
autoregressive run (:mod:`magnet_demo.autoregressive`) writes every codebook at once along the
delay pattern's diagonal, so each of its :class:`~magnet_demo.autoregressive.ARRecord`s (one per
:data:`FRAMES_PER_RECORD` sequence steps) becomes a StepRecord with ``written`` set
(:func:`ar_step_record`); a Hybrid run (:mod:`magnet_demo.hybrid`) yields those for its
autoregressive phase, then MAGNeT's own records renumbered after them (:func:`lab_steps`).

A run's plan (:class:`LabPlan`) is known before it starts, from its settings alone: the steps of
each segment (the autoregressive records, then MAGNeT's steps per codebook), so the page can size
its step slider and draw the planned schedules, and the server can count the run's work.

The autoregressive model decodes with its own settings (:func:`ar_config`: MusicGen's sampling,
top-k 250 within its codebook, temperature 1, a constant CFG of 3): the studio's sampling and CFG
controls are MAGNeT's and steer only a MAGNeT phase.

This pairs two released models at inference; it is not the jointly trained Hybrid-MAGNeT of the
paper (see :mod:`magnet_demo.hybrid`). No Gradio here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from magnet_demo import spans
from magnet_demo.autoregressive import DEFAULT_TOP_K, ARConfig, AREngine, ARRecord
from magnet_demo.controls import (
    METHOD_AR,
    METHOD_HYBRID,
    METHOD_MAGNET,
    ControlValues,
    DecodingConfig,
    LiveControls,
)
from magnet_demo.hybrid import PHASE_AR, HybridEngine, prefix_frames
from magnet_demo.records import StepRecord, frozen_array
from magnet_demo.schedules import CFG_CONSTANT, CFGSchedule
from magnet_demo.windows import plan_seconds

#: sequence steps (one frame of every codebook each) per record of an autoregressive run: 0.2 s
FRAMES_PER_RECORD = 10
#: the autoregressive model's settings in the studio (MusicGen's defaults in audiocraft)
AR_TEMPERATURE = 1.0
AR_CFG_COEF = 3.0
#: what the page says of the methods
METHOD_LABELS = {
    METHOD_MAGNET: "MAGNeT",
    METHOD_HYBRID: "Hybrid (AR prefix, then MAGNeT)",
    METHOD_AR: "Autoregressive",
}


def ar_config(duration: float, card: int) -> ARConfig:
    """The autoregressive model's settings for a clip of ``duration`` s (codebooks of ``card``)."""
    return ARConfig(
        duration=float(duration),
        temperature=AR_TEMPERATURE,
        top_k=min(DEFAULT_TOP_K, int(card)),
        cfg_coef=AR_CFG_COEF,
        frames_per_record=FRAMES_PER_RECORD,
    )


def ar_values() -> ControlValues:
    """The fixed controls of an autoregressive phase (what its records used)."""
    return ControlValues(CFGSchedule(CFG_CONSTANT, AR_CFG_COEF, AR_CFG_COEF), AR_TEMPERATURE)


@dataclass(frozen=True)
class LabPlan:
    """What a run will do, from its settings: ``segments`` are the steps of the autoregressive
    phase (if any) then MAGNeT's steps per codebook (if any); ``frames`` T of the canvas;
    ``prefix_frames`` the frames the autoregressive phase hands to MAGNeT (Hybrid, else 0)."""

    method: str
    segments: tuple[int, ...]
    frames: int
    prefix_frames: int = 0
    windows: tuple = ()  # a clip longer than one window: its :class:`~magnet_demo.windows.Window`s

    @property
    def total_steps(self) -> int:
        return sum(self.segments)

    @property
    def ar_steps(self) -> int:
        """Records of the autoregressive phase (0 for MAGNeT)."""
        return 0 if self.method == METHOD_MAGNET else self.segments[0]


def ar_records(sequence_steps: int) -> int:
    """Records of an autoregressive phase of ``sequence_steps`` sequence steps."""
    return math.ceil(sequence_steps / FRAMES_PER_RECORD)


def lab_plan(
    config: DecodingConfig, num_codebooks: int, frame_rate: float, magnet_frames: int, span_len: int
) -> LabPlan:
    """The plan of a run of ``config`` on a model of ``num_codebooks`` at ``frame_rate`` whose MAGNeT
    decodes ``magnet_frames`` frames in spans of ``span_len``; ValueError for a bad Hybrid prefix.

    With MusicGen's delay pattern (delays 0..K-1) an autoregressive model writes T frames in
    ``T + K - 1`` sequence steps, and the first P frames of every codebook in ``P + K - 1``.
    """
    steps = tuple(config.decoding_steps)
    if config.clip_seconds > config.duration:
        if config.method != METHOD_MAGNET:
            raise ValueError(
                f"Clips longer than one window ({config.duration:g} s) are decoded with MAGNeT: "
                f"choose the method MAGNeT, or at most {config.duration:g} s."
            )
        unit = span_len if spans.uses_chunks(config.span_arrangement, span_len) else 1
        windows = plan_seconds(config.clip_seconds, config.duration, frame_rate, config.overlap_seconds, unit)
        return LabPlan(METHOD_MAGNET, steps * len(windows), windows[-1].stop, windows=windows)
    if config.method == METHOD_MAGNET:
        return LabPlan(METHOD_MAGNET, steps, magnet_frames)
    if config.method == METHOD_AR:
        frames = int(config.duration * frame_rate)
        return LabPlan(METHOD_AR, (ar_records(frames + num_codebooks - 1),), frames)
    P = prefix_frames(config.prefix_seconds, frame_rate, magnet_frames, span_len, config.duration)
    return LabPlan(METHOD_HYBRID, (ar_records(P + num_codebooks - 1),) + steps, magnet_frames, P)


def planned_schedules(plan: LabPlan, controls: ControlValues, anneal: bool) -> dict[str, np.ndarray]:
    """Mask rate, CFG coefficient and temperature planned for every step of ``plan`` (as
    :func:`magnet_demo.viz.planned_schedules`): an autoregressive phase's share of frames not yet
    written and its fixed values, then MAGNeT's schedules under ``controls``."""
    from magnet_demo import viz

    magnet = plan.segments[1:] if plan.method == METHOD_HYBRID else plan.segments
    parts = {"mask_rate": [], "cfg_coef": [], "temperature": []}
    if plan.method != METHOD_MAGNET:
        n, fixed = plan.ar_steps, ar_values()
        parts["mask_rate"].append(1.0 - np.arange(n) / n)
        parts["cfg_coef"].append(np.full(n, fixed.cfg.max_coef))
        parts["temperature"].append(np.full(n, fixed.temperature))
    if plan.method != METHOD_AR:
        for key, values in viz.planned_schedules(magnet, controls, anneal).items():
            parts[key].append(values)
    return {key: np.concatenate(values) for key, values in parts.items()}


def _frame_confidence(probs: np.ndarray, written: np.ndarray) -> np.ndarray:
    """``[B, T]`` mean probability of the tokens written at each frame (NaN where none was)."""
    count = written.sum(axis=1)
    total = np.where(written, np.nan_to_num(probs), 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def ar_step_record(record: ARRecord, frames: int, offset: int, plan: LabPlan) -> StepRecord:
    """The studio's record of an autoregressive record, on the canvas's first ``frames`` frames,
    numbered ``offset + record.index`` of ``plan.total_steps`` (see ``StepRecord.written``)."""
    tokens = np.asarray(record.tokens)[..., :frames]
    written = np.asarray(record.written)[..., :frames]
    B, K, T = tokens.shape
    unwritten_after = tokens[:, -1] == record.mask_id  # [B, T]
    unwritten_before = unwritten_after | written[:, -1]
    n = plan.ar_steps
    return StepRecord(
        stage=K - 1,
        step=record.index,
        steps_in_stage=n,
        global_step=offset + record.index,
        total_steps=plan.total_steps,
        mask_rate=1.0 - record.index / n,
        num_masked=int(unwritten_before[0].sum()),
        num_units=T,
        cfg_coef=record.cfg_coef,
        temperature=record.temperature,
        rescore_weight=0.0,
        controls=record.controls,
        tokens=frozen_array(tokens, np.int16),
        mask_before=frozen_array(unwritten_before),
        mask_after=frozen_array(unwritten_after),
        confidence=frozen_array(_frame_confidence(np.asarray(record.probs)[..., :frames], written)),
        rescorer_confidence=None,
        scores=frozen_array(np.zeros((B, 1, 0), dtype=np.float32)),
        rng_state=record.rng_state,
        mask_id=record.mask_id,
        step_seconds=record.seconds,
        elapsed=record.elapsed,
        written=frozen_array(written),
    )


def lab_steps(
    model,
    partner,
    prompts: tuple[str, ...],
    config: DecodingConfig,
    *,
    seed: int,
    controls: LiveControls | None = None,
    cancel=None,
    rescorer=None,
) -> Iterator[StepRecord]:
    """The studio's records of an autoregressive or Hybrid run of ``config`` (its ``method``).

    Args:
        model: the MAGNeT model (:class:`~magnet_demo.models.LoadedModel`): its tokens, frame
            rate and, for Hybrid, its decoding of the rest.
        partner: its autoregressive partner, an :class:`~magnet_demo.rescoring.LMRescorer`.
        controls: live controls of the MAGNeT phase (an autoregressive phase keeps its own).
        cancel: checked before every step of either phase.
        rescorer: rescores the MAGNeT phase (as :class:`~magnet_demo.engine.Engine` takes it).
    Raises:
        ValueError: a method this function does not run, or bad settings (before any step).
    """
    plan = lab_plan(
        config, model.num_codebooks, model.frame_rate, model.frames(config), int(model.lm.span_len)
    )
    settings = ar_config(config.duration, partner.lm.card)
    if config.method == METHOD_AR:
        engine = AREngine.from_rescorer(partner)
        for record in engine.steps(prompts, settings, seed=seed, cancel=cancel):
            yield ar_step_record(record, plan.frames, 0, plan)
        return
    if config.method != METHOD_HYBRID:
        raise ValueError(f"lab_steps runs the autoregressive and hybrid methods, not '{config.method}'.")
    hybrid = HybridEngine(model, partner, rescorer=rescorer)
    steps = hybrid.steps(
        prompts,
        config,
        prefix_seconds=config.prefix_seconds,
        seed=seed,
        ar_config=settings,
        controls=controls,
        cancel=cancel,
    )
    for item in steps:
        if item.phase == PHASE_AR:
            yield replace(ar_step_record(item.record, plan.frames, 0, plan), elapsed=item.elapsed)
        else:
            yield replace(
                item.record,
                global_step=plan.ar_steps + item.record.global_step,
                total_steps=plan.total_steps,
                elapsed=item.elapsed,
            )


def phase_seconds(records: list[StepRecord]) -> tuple[float, float]:
    """Compute seconds of the autoregressive phase and of the MAGNeT phase of a run's records."""
    ar = [r for r in records if r.is_autoregressive]
    ar_seconds = ar[-1].elapsed if ar else 0.0
    total = records[-1].elapsed if records else 0.0
    return ar_seconds, max(total - ar_seconds, 0.0)


def _placed(values: np.ndarray | None, window, frames: int, fill) -> np.ndarray | None:
    """``[B, ..., t]`` values of a window on the clip's ``frames``: ``fill`` outside the window."""
    if values is None:
        return None
    values = np.asarray(values)
    out = np.full(values.shape[:-1] + (frames,), fill, dtype=values.dtype)
    out[..., window.start : window.stop] = values
    return frozen_array(out)


def window_step_record(item, canvas: np.ndarray, plan: LabPlan, elapsed: float) -> StepRecord:
    """The studio's record of one step of a long clip (a :class:`~magnet_demo.windows.WindowRecord`)
    on the whole clip's canvas: ``canvas`` ``[B, K, T]`` holds the finished windows' tokens
    (``mask_id`` after them) and the window's own arrays are placed at its frames; ``window`` says
    which window it is (see ``StepRecord.window``)."""
    record, window = item.record, item.window
    tokens = np.array(canvas)
    tokens[..., window.start : window.stop] = record.tokens
    T = plan.frames
    rescorer = record.rescorer_confidence
    return replace(
        record,
        global_step=item.clip_step,
        total_steps=item.clip_steps,
        tokens=frozen_array(tokens),
        mask_before=_placed(record.mask_before, window, T, False),
        mask_after=_placed(record.mask_after, window, T, False),
        confidence=_placed(record.confidence, window, T, np.nan),
        rescorer_confidence=_placed(rescorer, window, T, np.nan),
        given=_placed(record.given, window, T, False),
        revised=_placed(record.revised, window, T, False),
        elapsed=elapsed,
        window=(window.index, item.windows, window.start, window.stop),
    )


def window_steps(
    model,
    prompts: tuple[str, ...],
    config: DecodingConfig,
    *,
    seed: int,
    controls=None,
    cancel=None,
    rescorer=None,
) -> Iterator[StepRecord]:
    """The studio's records of a clip longer than one window (``config.clip_seconds``), decoded
    window after window by :class:`~magnet_demo.windows.WindowedEngine`; the last record's tokens
    are the whole clip's."""
    from magnet_demo.engine import Engine
    from magnet_demo.windows import WindowedEngine

    plan = lab_plan(
        config, model.num_codebooks, model.frame_rate, model.frames(config), int(model.lm.span_len)
    )
    engine = WindowedEngine(Engine(model, rescorer))
    steps = engine.steps(prompts, config, windows=plan.windows, seed=seed, controls=controls, cancel=cancel)
    canvas, base = None, 0.0
    for item in steps:
        if canvas is None:
            shape = item.record.tokens.shape[:2] + (plan.frames,)
            canvas = np.full(shape, item.record.mask_id, dtype=np.int16)
        yield window_step_record(item, canvas, plan, base + item.record.elapsed)
        if item.is_window_end:
            canvas[..., item.window.start : item.window.stop] = item.record.tokens
            base += item.record.elapsed
