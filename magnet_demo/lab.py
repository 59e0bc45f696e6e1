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
from magnet_demo.autoregressive import DEFAULT_TOP_K, ARConfig, AREngine, ARRecord, pattern_of
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
from magnet_demo.windows import FRAME_SLACK, frames_of, plan_seconds, plan_windows

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
    phase (if any) then MAGNeT's steps per codebook (if any), window after window for a long clip;
    ``frames`` T of the canvas; ``prefix_frames`` the frames the autoregressive phase hands to
    MAGNeT (Hybrid, else 0).

    A clip longer than one window, or an extension of a run, has ``windows`` (its
    :class:`~magnet_demo.windows.Window` items) and ``window_steps`` (each window's steps); an extension's
    first ``head_frames`` frames are the run it extends. ``ar_flags`` marks the segments an
    autoregressive model writes (default: the first of an AR or Hybrid run).
    """

    method: str
    segments: tuple[int, ...]
    frames: int
    prefix_frames: int = 0
    windows: tuple = ()
    window_steps: tuple[int, ...] = ()
    ar_flags: tuple[bool, ...] = ()

    def __post_init__(self):
        if not self.ar_flags:
            flags = tuple(i == 0 and self.method != METHOD_MAGNET for i in range(len(self.segments)))
            object.__setattr__(self, "ar_flags", flags)

    @property
    def total_steps(self) -> int:
        return sum(self.segments)

    @property
    def ar_steps(self) -> int:
        """Records of the autoregressive phases (0 for MAGNeT)."""
        return sum(n for n, ar in zip(self.segments, self.ar_flags, strict=True) if ar)

    @property
    def head_frames(self) -> int:
        """Frames of the run an extension continues: before its first window's new frames (0 else)."""
        return self.windows[0].new_start if self.windows else 0

    @property
    def window_offsets(self) -> tuple[int, ...]:
        """The clip step of each window's first step."""
        return tuple(int(n) for n in np.cumsum((0,) + self.window_steps[:-1]))


def masking_unit(config: DecodingConfig, span_len: int) -> int:
    """Frames per unit of masking: the model's span ('nonoverlap'), else 1; windows are whole units."""
    return span_len if spans.uses_chunks(config.span_arrangement, span_len) else 1


def ar_records(sequence_steps: int) -> int:
    """Records of an autoregressive phase of ``sequence_steps`` sequence steps."""
    return math.ceil(sequence_steps / FRAMES_PER_RECORD)


def _hybrid_prefix(config: DecodingConfig, frame_rate: float, frames: int, span_len: int) -> int:
    return prefix_frames(config.prefix_seconds, frame_rate, frames, span_len, frames / frame_rate)


def window_segments(
    config: DecodingConfig, window, num_codebooks: int, frame_rate: float, span_len: int
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """The segments of one window of a long clip (and which an autoregressive model writes).

    A window that continues the one before (``given`` frames) is a continuation: MAGNeT's steps
    (MAGNeT and Hybrid: the given frames are the prefix Hybrid's autoregressive phase would write),
    or the autoregressive model continuing them (``F + K - 1 - given`` sequence steps). A window
    with nothing given is a run of the method of its own.
    """
    steps, K, F = tuple(config.decoding_steps), num_codebooks, window.frames
    if config.method == METHOD_AR:
        return (ar_records(F + K - 1 - window.given),), (True,)
    if config.method == METHOD_HYBRID and not window.given:
        P = _hybrid_prefix(config, frame_rate, F, span_len)
        return (ar_records(P + K - 1),) + steps, (True,) + (False,) * len(steps)
    return steps, (False,) * len(steps)


def windowed_plan(
    config: DecodingConfig,
    windows,
    num_codebooks: int,
    frame_rate: float,
    span_len: int,
    before: DecodingConfig | None = None,
    position: int = 0,
) -> LabPlan:
    """The plan of a clip decoded window after window (``windows``; an extension's first window
    continues a head of ``windows[0].new_start`` frames); the windows before
    ``position`` are planned with ``before`` (a fork keeps the steps its parent took there)."""
    segments, flags, per_window = (), (), ()
    for i, window in enumerate(windows):
        planned = before if i < position else config
        own, ar = window_segments(planned, window, num_codebooks, frame_rate, span_len)
        segments, flags, per_window = segments + own, flags + ar, per_window + (sum(own),)
    return LabPlan(
        config.method,
        segments,
        windows[-1].stop,
        windows=tuple(windows),
        window_steps=per_window,
        ar_flags=flags,
    )


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
        unit = masking_unit(config, span_len)
        windows = plan_seconds(config.clip_seconds, config.duration, frame_rate, config.overlap_seconds, unit)
        return windowed_plan(config, windows, num_codebooks, frame_rate, span_len)
    if config.method == METHOD_MAGNET:
        return LabPlan(METHOD_MAGNET, steps, magnet_frames)
    if config.method == METHOD_AR:
        frames = int(config.duration * frame_rate)
        return LabPlan(METHOD_AR, (ar_records(frames + num_codebooks - 1),), frames)
    P = _hybrid_prefix(config, frame_rate, magnet_frames, span_len)
    return LabPlan(METHOD_HYBRID, (ar_records(P + num_codebooks - 1),) + steps, magnet_frames, P)


def fork_plan(
    plan: LabPlan, parent: DecodingConfig, config: DecodingConfig, record: StepRecord, model
) -> LabPlan:
    """The plan of a fork after ``record`` of a run of ``plan`` (made with ``parent``), decoded on
    with ``config``: a long clip's windows before the record's keep their steps."""
    K, rate, span = model.num_codebooks, model.frame_rate, int(model.lm.span_len)
    if not plan.windows:
        return lab_plan(config, K, rate, model.frames(config), span)
    return windowed_plan(config, plan.windows, K, rate, span, before=parent, position=record.window[0])


def extension_plan(
    config: DecodingConfig,
    head_frames: int,
    added_seconds: float,
    first_window: int,
    num_codebooks: int,
    frame_rate: float,
    span_len: int,
) -> LabPlan:
    """The plan of an extension: ``added_seconds`` after a clip of ``head_frames`` frames, in windows
    of ``config.duration`` that overlap by ``config.overlap_seconds`` (the first one continuing the
    head's end), numbered from ``first_window``; ValueError for lengths that do not fit."""
    unit = masking_unit(config, span_len)
    window = frames_of(config.duration, frame_rate, unit)
    overlap = unit * int(config.overlap_seconds * frame_rate / unit + FRAME_SLACK)
    added = frames_of(added_seconds + FRAME_SLACK, frame_rate, unit)
    if added < unit:
        raise ValueError(f"Extend by at least one span ({unit / frame_rate:g} s), got {added_seconds:g} s.")
    if overlap >= window:
        raise ValueError(
            f"The overlap ({config.overlap_seconds:g} s) must be shorter than the window ({config.duration:g} s)."
        )
    windows = plan_windows(
        head_frames + added, window, overlap, unit, head_frames=head_frames, first_index=first_window
    )
    return windowed_plan(config, windows, num_codebooks, frame_rate, span_len)


def planned_schedules(plan: LabPlan, controls: ControlValues, anneal: bool) -> dict[str, np.ndarray]:
    """Mask rate, CFG coefficient and temperature planned for every step of ``plan`` (as
    :func:`magnet_demo.viz.planned_schedules`): an autoregressive segment's share of frames not yet
    written and its fixed values, a MAGNeT segment's schedules under ``controls``."""
    from magnet_demo import viz

    parts = {"mask_rate": [], "cfg_coef": [], "temperature": []}
    fixed = ar_values()
    for n, autoregressive in zip(plan.segments, plan.ar_flags, strict=True):
        if autoregressive:
            values = {
                "mask_rate": 1.0 - np.arange(n) / n,
                "cfg_coef": np.full(n, fixed.cfg.max_coef),
                "temperature": np.full(n, fixed.temperature),
            }
        else:
            values = viz.planned_schedules((n,), controls, anneal)
        for key, part in values.items():
            parts[key].append(part)
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


def ar_record_of(record: StepRecord, engine: AREngine, settings: ARConfig, prefix: int = 0) -> ARRecord:
    """The autoregressive record that the studio's ``record`` (of an AR run or phase; numbered
    within it) was made from, as :meth:`AREngine.steps` resumes after it: its canvas (frames the
    studio cut off are unwritten), its step range from its number, its generator state.
    ``prefix``: frames given before the run (a window that continues the one before)."""
    pattern = pattern_of(engine.lm, engine.frames(settings))
    run_start = pattern.first_step(prefix)
    stop = min(run_start + (record.step + 1) * settings.frames_per_record, pattern.length)
    tokens = np.full(record.tokens.shape[:2] + (pattern.frames,), record.mask_id, dtype=np.int16)
    written = np.zeros(tokens.shape, dtype=bool)
    T = min(pattern.frames, record.tokens.shape[-1])
    tokens[..., :T] = record.tokens[..., :T]
    written[..., :T] = record.written[..., :T]
    return ARRecord(
        index=record.step,
        step_start=max(stop - settings.frames_per_record, run_start),
        step_stop=stop,
        run_start=run_start,
        sequence_length=pattern.length,
        prefix_frames=prefix,
        delays=pattern.delays,
        tokens=frozen_array(tokens),
        written=frozen_array(written),
        probs=frozen_array(np.full(tokens.shape, np.nan, dtype=np.float32)),
        cfg_coef=record.cfg_coef,
        temperature=record.temperature,
        controls=record.controls,
        rng_state=record.rng_state,
        mask_id=record.mask_id,
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
    resume_from: StepRecord | None = None,
) -> Iterator[StepRecord]:
    """The studio's records of an autoregressive or Hybrid run of ``config`` (its ``method``).

    Args:
        model: the MAGNeT model (:class:`~magnet_demo.models.LoadedModel`): its tokens, frame
            rate and, for Hybrid, its decoding of the rest.
        partner: its autoregressive partner, an :class:`~magnet_demo.rescoring.LMRescorer`.
        controls: live controls of the MAGNeT phase (an autoregressive phase keeps its own).
        cancel: checked before every step of either phase.
        rescorer: rescores the MAGNeT phase (as :class:`~magnet_demo.engine.Engine` takes it).
        resume_from: a record of this function's for the same settings: the run goes on after it
            (a fork); the records before it are not yielded again.
    Raises:
        ValueError: a method this function does not run, or bad settings (before any step).
    """
    plan = lab_plan(
        config, model.num_codebooks, model.frame_rate, model.frames(config), int(model.lm.span_len)
    )
    settings = ar_config(config.duration, partner.lm.card)
    if config.method == METHOD_AR:
        engine = AREngine.from_rescorer(partner)
        resume = {} if resume_from is None else {"resume_from": ar_record_of(resume_from, engine, settings)}
        for record in engine.steps(prompts, settings, seed=seed, cancel=cancel, **resume):
            yield ar_step_record(record, plan.frames, 0, plan)
        return
    if config.method != METHOD_HYBRID:
        raise ValueError(f"lab_steps runs the autoregressive and hybrid methods, not '{config.method}'.")
    yield from _hybrid_records(
        model, partner, prompts, config, plan, seed, controls, cancel, rescorer, resume_from
    )


def _hybrid_records(
    model, partner, prompts, config, plan: LabPlan, seed, controls, cancel, rescorer, resume_from
) -> Iterator[StepRecord]:
    """:func:`lab_steps` of a Hybrid run: its autoregressive records, then MAGNeT's renumbered."""
    hybrid = HybridEngine(model, partner, rescorer=rescorer)
    settings = ar_config(config.duration, partner.lm.card)
    resume = None
    if resume_from is not None and resume_from.is_autoregressive:
        resume = ar_record_of(resume_from, hybrid.ar, hybrid.ar_config(config, settings))
    elif resume_from is not None:  # the MAGNeT phase, numbered after the autoregressive records
        steps = sum(config.decoding_steps)
        resume = replace(resume_from, global_step=resume_from.global_step - plan.ar_steps, total_steps=steps)
    steps = hybrid.steps(
        prompts,
        config,
        prefix_seconds=config.prefix_seconds,
        seed=seed,
        ar_config=settings,
        controls=controls,
        cancel=cancel,
        resume_from=resume,
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
