"""A clip decoded window after window by any of the studio's methods, on one canvas: clips longer
than the model's window, and extensions of a run (issue #28).

The plan (:class:`~magnet_demo.lab.LabPlan` with ``windows``) says which frames every window covers
and takes from the one before (:mod:`magnet_demo.windows`). :func:`clip_steps` runs them in order:

- a window with nothing given is a run of the method of its own (MAGNeT, autoregressive or Hybrid);
- a window that continues the one before (its first ``given`` frames, kept bit for bit) is a
  continuation: MAGNeT's (``prompt_tokens``, audiocraft's ``prompt``) for MAGNeT and Hybrid runs
  (the given frames are the prefix Hybrid's autoregressive phase would otherwise write), the
  autoregressive model's for autoregressive runs (MusicGen's ``extend_stride``);
- an extension's first window continues the end of the run it extends (the plan's
  ``head_frames``, given as ``head_tokens``), which stays on the canvas as given tokens.

Window ``n`` is seeded ``seed + n`` (:func:`~magnet_demo.windows.window_seed`); an extension's
windows go on counting the windows of the run it extends, so extending a run of seed ``s`` by a
window decodes what a longer run of seed ``s`` decodes there.

Every step becomes one of the studio's records on the whole clip's canvas
(:func:`place_record`): finished windows' tokens before the window, ``mask_id`` after it, the
window's own arrays at its frames, and ``window`` saying which window it is. No Gradio here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch

from magnet_demo.autoregressive import AREngine
from magnet_demo.controls import METHOD_AR, METHOD_HYBRID, DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.lab import LabPlan, ar_config, ar_record_of, ar_step_record, lab_steps, window_segments
from magnet_demo.records import StepRecord, frozen_array
from magnet_demo.windows import window_seed

#: nudges of a window's duration until it maps to exactly its frames (frames / rate * rate < frames)
_DURATION_NUDGES = 4


def exact_duration(frames: int, frame_rate: float, count) -> float:
    """The duration ``d`` near ``frames / frame_rate`` for which ``count(d) == frames``."""
    duration = frames / frame_rate
    for _ in range(_DURATION_NUDGES):
        if count(duration) == frames:
            return duration
        duration = float(np.nextafter(duration, np.inf))
    raise ValueError(f"No duration gives exactly {frames} frames at {frame_rate:g} Hz.")


def window_config(config: DecodingConfig, window, model) -> DecodingConfig:
    """``config`` for one window's own run: its frames' duration, one window long."""
    duration = exact_duration(
        window.frames, model.frame_rate, lambda d: model.frames(config.replace(duration=d))
    )
    return config.replace(duration=duration, clip_seconds=0.0)


def _placed(values: np.ndarray | None, window, frames: int, fill) -> np.ndarray | None:
    """``[B, ..., t]`` values of a window on the clip's ``frames``: ``fill`` outside the window."""
    if values is None:
        return None
    values = np.asarray(values)
    out = np.full(values.shape[:-1] + (frames,), fill, dtype=values.dtype)
    out[..., window.start : window.stop] = values
    return frozen_array(out)


def place_record(
    record: StepRecord,
    window,
    canvas: np.ndarray,
    plan: LabPlan,
    clip_step: int,
    elapsed: float,
    given: np.ndarray | None = None,
) -> StepRecord:
    """The studio's record of one window's step on the whole clip's canvas.

    ``canvas`` ``[B, K, T]`` holds the head and the finished windows' tokens (``mask_id`` after
    them); the window's own arrays are placed at its frames; ``given`` ``[B, K, T]``: the given
    tokens on the clip's canvas (:func:`clip_given`, one array shared by the window's records);
    ``window`` becomes ``(index, windows, start, stop)`` with the index counted within this run.
    """
    tokens = np.array(canvas)
    tokens[..., window.start : window.stop] = record.tokens
    T = plan.frames
    first = plan.windows[0].index
    return replace(
        record,
        global_step=clip_step,
        total_steps=plan.total_steps,
        tokens=frozen_array(tokens),
        mask_before=_placed(record.mask_before, window, T, False),
        mask_after=_placed(record.mask_after, window, T, False),
        confidence=_placed(record.confidence, window, T, np.nan),
        rescorer_confidence=_placed(record.rescorer_confidence, window, T, np.nan),
        given=given,
        revised=_placed(record.revised, window, T, False),
        written=_placed(record.written, window, T, False),
        elapsed=elapsed,
        window=(window.index - first, len(plan.windows), window.start, window.stop),
    )


def clip_given(record: StepRecord, window, frames: int, head_given: np.ndarray | None) -> np.ndarray | None:
    """``[B, K, frames]`` the tokens given on the clip's canvas at a window's step: the window's own
    given frames (``record.given``) and an extension's head (``head_given``), or None."""
    given = _placed(record.given, window, frames, False)
    if head_given is not None:
        given = frozen_array(head_given if given is None else head_given | given)
    return given


def window_records(
    model,
    partner,
    prompts: tuple[str, ...],
    config: DecodingConfig,
    window,
    canvas: np.ndarray,
    *,
    seed: int,
    controls=None,
    cancel=None,
    rescorer=None,
    resume_from: StepRecord | None = None,
) -> Iterator[StepRecord]:
    """One window's own records (its canvas is its frames; see the module doc for the method):
    ``canvas`` ``[B, K, T]`` holds the clip so far, whose frames before the window's new ones
    are given; ``resume_from``: a record of the window's own (:func:`local_record`) to go on after."""
    given = canvas[..., window.start : window.new_start] if window.given else None
    prompt = None if given is None else torch.as_tensor(np.asarray(given, dtype=np.int64))
    if config.method == METHOD_AR:
        engine = AREngine.from_rescorer(partner)
        frames, rate = window.frames, engine.frame_rate
        settings = ar_config(exact_duration(frames, rate, lambda d: int(d * rate)), partner.lm.card)
        start = {"prompt_tokens": prompt}
        if resume_from is not None:  # its canvas holds the prompt
            start = {"resume_from": ar_record_of(resume_from, engine, settings, window.given)}
        segments, _ = window_segments(
            config, window, model.num_codebooks, model.frame_rate, int(model.lm.span_len)
        )
        own_plan = LabPlan(METHOD_AR, segments, frames)
        for record in engine.steps(prompts, settings, seed=seed, cancel=cancel, **start):
            yield ar_step_record(record, frames, 0, own_plan)
        return
    own = window_config(config, window, model)
    if config.method == METHOD_HYBRID and given is None:
        yield from lab_steps(
            model, partner, prompts, own, seed=seed, controls=controls, cancel=cancel, rescorer=rescorer,
            resume_from=resume_from,
        )  # fmt: skip
        return
    start = {"prompt_tokens": prompt} if resume_from is None else {"resume_from": resume_from}
    yield from Engine(model, rescorer).steps(
        prompts, own, seed=seed, controls=controls, cancel=cancel, **start
    )


def local_record(record: StepRecord, plan: LabPlan) -> tuple[int, StepRecord]:
    """The window (its position in ``plan.windows``) a record of a clip's step belongs to, and the
    record as its window's run made it (the inverse of :func:`place_record`), to resume after."""
    position = record.window[0]
    window, offset = plan.windows[position], plan.window_offsets[position]

    def cut(values):
        return None if values is None else frozen_array(np.asarray(values)[..., window.start : window.stop])

    return position, replace(
        record,
        global_step=record.global_step - offset,
        total_steps=plan.window_steps[position],
        tokens=cut(record.tokens),
        mask_before=cut(record.mask_before),
        mask_after=cut(record.mask_after),
        confidence=cut(record.confidence),
        rescorer_confidence=cut(record.rescorer_confidence),
        given=cut(record.given),
        revised=cut(record.revised),
        written=cut(record.written),
        window=None,
    )


def clip_steps(
    model,
    partner,
    prompts: tuple[str, ...],
    config: DecodingConfig,
    plan: LabPlan,
    *,
    seed: int,
    head_tokens: np.ndarray | None = None,
    controls=None,
    cancel=None,
    rescorer=None,
    resume_from: StepRecord | None = None,
) -> Iterator[StepRecord]:
    """The studio's records of a clip of ``plan.windows`` (see the module doc); the last record's
    tokens are the whole clip's.

    Args:
        model: the MAGNeT model; ``partner``: its autoregressive partner (AR and Hybrid runs).
        head_tokens: ``[B, K, plan.head_frames]`` the run an extension continues (None otherwise).
        controls, cancel, rescorer: as :class:`~magnet_demo.engine.Engine` takes them, for all windows.
        resume_from: a record of a run of this plan (a fork): decoding goes on after it, in its
            window, then the windows after it; the records before it are not yielded again.
    """
    B, K, head = len(prompts), model.num_codebooks, plan.head_frames
    if (head_tokens is None) != (head == 0) or (head and np.shape(head_tokens) != (B, K, head)):
        raise ValueError(f"An extension of {head} frames takes head tokens [{B}, {K}, {head}].")
    canvas = np.full((B, K, plan.frames), model.lm.special_token_id, dtype=np.int16)
    head_given = None
    if head:
        canvas[..., :head] = head_tokens
        head_given = np.zeros(canvas.shape, dtype=bool)
        head_given[..., :head] = True
    base, first, resume = 0.0, 0, None
    if resume_from is not None:
        first, resume = local_record(resume_from, plan)
        canvas[...] = resume_from.tokens  # the windows before it are done
        base = resume_from.elapsed  # the resumed window's records count from the fork
    for position in range(first, len(plan.windows)):
        window, offset = plan.windows[position], plan.window_offsets[position]
        last = None
        records = window_records(
            model, partner, prompts, config, window, canvas,
            seed=window_seed(seed, window.index), controls=controls, cancel=cancel, rescorer=rescorer,
            resume_from=resume if position == first else None,
        )  # fmt: skip
        given = None  # placed once: the window's records share their given tokens, as a run's do
        for last in records:
            if given is None:
                given = clip_given(last, window, plan.frames, head_given)
            yield place_record(
                last, window, canvas, plan, offset + last.global_step, base + last.elapsed, given
            )
        if last is None or not last.is_last:
            return  # cancelled within the window
        canvas[..., window.start : window.stop] = last.tokens
        base += last.elapsed
