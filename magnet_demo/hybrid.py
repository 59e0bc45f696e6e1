"""Hybrid-MAGNeT at inference: an autoregressive model writes the first seconds, MAGNeT the rest.

The MAGNeT paper (Ziv et al., 2024) also describes a hybrid model: it decodes the first seconds
autoregressively and lets MAGNeT's parallel decoding complete the clip, so that the start gets the
quality of autoregressive decoding for a little of its cost. The paper trains that hybrid model
jointly. This module is **not** that model: :class:`HybridEngine` pairs two released models at
inference, a MAGNeT model and its autoregressive partner on the same tokens (MusicGen for the music
MAGNeT models, AudioGen for the audio ones, the embedded rescorer for the embedded model; see
:func:`magnet_demo.rescoring.rescorer_for`). Neither model was trained for the other's tokens as a
prefix, so how well the two halves join is an empirical question (``bench/methods.py``).

A run has two phases, one after the other, and yields their records in order, each wrapped in a
frozen :class:`PhaseRecord` that says its phase (:data:`PHASE_AR` then :data:`PHASE_MAGNET`):

1. **Autoregressive prefix.** :class:`~magnet_demo.autoregressive.AREngine` writes the clip from
   its start (laid out over the clip's duration, or the partner's longest clip when shorter) and is
   stopped once the first ``P = floor(prefix_seconds * frame_rate)`` frames are complete in *every*
   codebook. With MusicGen's delay pattern codebook ``k`` runs ``delays[k]`` steps behind codebook 0
   (a diagonal front), so that takes ``P + delays[-1] - delays[0]`` sequence steps (``P + 3`` for
   delays ``0, 1, 2, 3``), not ``P``: after them codebook ``k`` has also written the
   ``delays[-1] - delays[k]`` frames after ``P`` (the diagonal tail). The tail is dropped: only the
   ``P`` complete frames go on. The phase stops after exactly that many steps (a step budget on the
   engine's ``cancel``, which it checks once before every step), so its last record shows the
   complete prefix and the tail. An autoregressive model is causal and its sampler draws once per
   step, so those ``P`` frames are exactly the first ``P`` frames of the partner's own clip (an
   :meth:`AREngine.decode` of the same prompts, seed and settings at any duration of at least
   ``P + delays[-1] - delays[0]`` frames).
2. **MAGNeT continuation.** :class:`~magnet_demo.engine.Engine` decodes the clip with those frames
   as ``prompt_tokens`` (``[B, K, P]``, audiocraft's ``prompt``): they are given, never masked, and
   every step sees them; MAGNeT decodes the remaining frames. Its records are exactly
   ``Engine.steps(prompts, config, seed=seed, prompt_tokens=prefix)``'s.

Seeds: both phases are seeded with the same ``seed``, each in its own ``torch.Generator`` (the AR
engine's sampler and the MAGNeT engine's sampler); the global RNG is left alone. So a hybrid run
is reproducible from ``(prompts, config, ar_config, prefix_seconds, seed)``, its AR phase is the
AR run of that seed, and its MAGNeT phase the MAGNeT continuation of that seed.

Times: :attr:`PhaseRecord.phase_seconds` is the compute time of the record's phase so far (set-up
included: condition tensors, the first state), :attr:`PhaseRecord.elapsed` that of the whole run;
neither counts the time a consumer holds a record between two steps.

``prefix_seconds`` must be a finite number > 0, shorter than the clip, and give at least one span of
MAGNeT's masking (``span_len`` frames, 0.06 s at 50 Hz) and fewer frames than MAGNeT decodes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from magnet_demo.audio import decode_tokens
from magnet_demo.autoregressive import DEFAULT_TOP_K, ARConfig, AREngine, ARRecord, pattern_of
from magnet_demo.controls import DecodingConfig, LiveControls
from magnet_demo.engine import Engine
from magnet_demo.models import LoadedModel
from magnet_demo.records import StepRecord
from magnet_demo.rescoring import LMRescorer, pair_rescorer

#: the phases of a hybrid run, in order
PHASE_AR = "autoregressive"
PHASE_MAGNET = "magnet"
PHASES = (PHASE_AR, PHASE_MAGNET)


@dataclass(frozen=True)
class PhaseRecord:
    """One record of a hybrid run: an :class:`~magnet_demo.autoregressive.ARRecord` of the prefix
    phase or a :class:`~magnet_demo.records.StepRecord` of the MAGNeT phase, tagged.

    Attributes:
        phase: :data:`PHASE_AR` or :data:`PHASE_MAGNET`.
        record: the phase engine's own record, unchanged.
        index: the record's number in the hybrid run (both phases, from 0).
        prefix_frames: P, the frames the AR phase hands to MAGNeT.
        frames: T, the frames of the clip MAGNeT decodes (the AR canvas may be longer: see
            :attr:`tokens`).
        phase_seconds: compute seconds of this record's phase up to and including it.
        elapsed: compute seconds of the run up to and including it (both phases).
    """

    phase: str
    record: ARRecord | StepRecord
    index: int
    prefix_frames: int
    frames: int
    phase_seconds: float
    elapsed: float

    @property
    def tokens(self) -> np.ndarray:
        """``[B, K, T]`` int16 canvas after the record, on the clip's ``T`` frames (the AR canvas is
        cut to them); ``mask_id`` where nothing is written or fixed yet."""
        return np.asarray(self.record.tokens)[..., : self.frames]

    @property
    def mask_id(self) -> int:
        return int(self.record.mask_id)

    @property
    def is_last(self) -> bool:
        """The last record of a finished run (the MAGNeT phase's last step)."""
        return self.phase == PHASE_MAGNET and self.record.is_last


@dataclass(frozen=True)
class HybridResult:
    """A hybrid run's outcome.

    Attributes:
        tokens: ``[B, K, T]`` long, the clip (the last record's canvas; a run cancelled during the
            AR phase holds ``mask_id`` where nothing was written).
        prefix: ``[B, K, P]`` long, the AR frames MAGNeT continued (None when the AR phase was
            cancelled before writing them).
        audio: ``[B, samples]`` float32 of ``tokens`` (None when not asked for or cancelled).
        ar_seconds, magnet_seconds: compute time of each phase (0 for a phase that did not run).
    """

    tokens: torch.Tensor
    prefix: torch.Tensor | None
    audio: np.ndarray | None
    sample_rate: int
    records: tuple[PhaseRecord, ...]
    config: DecodingConfig
    ar_config: ARConfig
    prompts: tuple[str, ...]
    seed: int
    prefix_seconds: float
    prefix_frames: int
    ar_seconds: float
    magnet_seconds: float
    cancelled: bool = False

    def phase_records(self, phase: str) -> tuple[ARRecord | StepRecord, ...]:
        """The engine records of one phase, in order."""
        return tuple(r.record for r in self.records if r.phase == phase)


def prefix_frames(
    prefix_seconds: float, frame_rate: float, frames: int, span_len: int, duration: float
) -> int:
    """P, the whole frames in ``prefix_seconds`` at ``frame_rate``, checked for a clip of
    ``duration`` seconds of which MAGNeT decodes ``frames`` (T) frames in spans of ``span_len``.

    Raises:
        ValueError: ``prefix_seconds`` is not a finite number, is <= 0, is not shorter than the clip,
            gives less than one span or leaves no frame for MAGNeT.
    """
    if isinstance(prefix_seconds, bool) or not isinstance(prefix_seconds, int | float):
        raise ValueError(f"prefix_seconds must be a number of seconds, got {prefix_seconds!r}.")
    if not math.isfinite(prefix_seconds):
        raise ValueError(f"prefix_seconds must be a finite number of seconds, got {prefix_seconds}.")
    if prefix_seconds <= 0:
        raise ValueError(
            f"prefix_seconds must be > 0 (the seconds the autoregressive model writes first), got {prefix_seconds:g}."
        )
    if prefix_seconds >= duration:
        raise ValueError(
            f"prefix_seconds ({prefix_seconds:g} s) must be shorter than the clip ({duration:g} s): "
            f"MAGNeT needs something left to write."
        )
    P = int(math.floor(prefix_seconds * frame_rate + 1e-6))
    if P < span_len:
        raise ValueError(
            f"prefix_seconds ({prefix_seconds:g} s) is {P} frame{'s' if P != 1 else ''}: give at least one span "
            f"({span_len} frames = {span_len / frame_rate:g} s)."
        )
    if P >= frames:
        raise ValueError(
            f"prefix_seconds ({prefix_seconds:g} s) is {P} frames, but MAGNeT decodes {frames} frames of this "
            f"clip: give at most {(frames - 1) / frame_rate:g} s."
        )
    return P


class _StepBudget:
    """A ``cancel`` for the AR engine that lets ``steps`` sequence steps run, then stops it (the
    engine asks ``is_set`` once before every step), or stops it earlier when ``outer`` is set."""

    def __init__(self, steps: int, outer=None):
        self.steps, self.outer, self.calls = steps, outer, 0

    def is_set(self) -> bool:
        self.calls += 1
        if self.outer is not None and self.outer.is_set():
            return True
        return self.calls > self.steps


def _timed(iterator: Iterator, clock: list[float]) -> Iterator:
    """``iterator``'s items, adding the time spent producing each to ``clock[0]`` (the time the
    consumer holds an item is not counted)."""
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            clock[0] += time.perf_counter() - start
            return
        clock[0] += time.perf_counter() - start
        yield item


@dataclass(frozen=True)
class _HybridRun:
    """What stays fixed during a hybrid run once :meth:`HybridEngine.steps` has checked it."""

    prompts: tuple[str, ...]
    config: DecodingConfig
    prefix_frames: int
    frames: int
    seed: int
    controls: LiveControls | None
    cancel: threading.Event | None


class HybridEngine:
    """Hybrid-MAGNeT at inference (see the module docstring): an AR partner writes the prefix,
    MAGNeT continues it.

    Args:
        model: the MAGNeT model.
        partner: its autoregressive partner on the same tokens: an :class:`AREngine`, or an
            :class:`~magnet_demo.rescoring.LMRescorer` (its model and tokenizer; the tokenizers are
            checked with :func:`~magnet_demo.rescoring.pair_rescorer`).
        rescorer: optional rescorer of the MAGNeT phase (``DecodingConfig.rescore_weight``), as
            :class:`~magnet_demo.engine.Engine` takes it.
    Raises:
        ValueError: the partner writes other tokens (codebooks, codebook size or frame rate; for an
            ``LMRescorer`` also the codec).
    """

    def __init__(self, model: LoadedModel, partner: AREngine | LMRescorer, *, rescorer=None):
        if isinstance(partner, LMRescorer):
            pair_rescorer(model, partner)  # same codec, or ValueError saying what differs
            partner = AREngine.from_rescorer(partner)
        if not isinstance(partner, AREngine):
            raise ValueError(
                f"The partner must be an AREngine or an LMRescorer, got {type(partner).__name__}."
            )
        lm = partner.lm
        mine = (model.num_codebooks, int(model.lm.card), float(model.frame_rate))
        theirs = (int(lm.num_codebooks), int(lm.card), float(partner.frame_rate))
        if mine != theirs:
            raise ValueError(
                f"The autoregressive partner writes other tokens than the MAGNeT model: "
                f"{theirs[0]} x {theirs[1]} codes at {theirs[2]:g} Hz vs {mine[0]} x {mine[1]} at {mine[2]:g} Hz."
            )
        self.model = model
        self.ar = partner
        self.magnet = Engine(model, rescorer)

    def ar_config(self, config: DecodingConfig, ar_config: ARConfig | None = None) -> ARConfig:
        """The AR phase's settings: ``ar_config`` (default MusicGen's, top-k at most the codebook
        size) laid out over the clip's duration, or the partner's longest clip when shorter."""
        if ar_config is None:
            ar_config = ARConfig(top_k=min(DEFAULT_TOP_K, int(self.ar.lm.card)))
        duration = config.duration
        if self.ar.max_duration is not None:
            duration = min(duration, float(self.ar.max_duration))
        return ar_config.replace(duration=duration)

    def ar_steps(self, P: int, ar_config: ARConfig) -> int:
        """Sequence steps the AR phase runs so that the first ``P`` frames are complete in every
        codebook: ``P + delays[-1] - delays[0]``."""
        delays = pattern_of(self.ar.lm, max(1, self.ar.frames(ar_config))).delays
        return P + delays[-1] - delays[0]

    def steps(
        self,
        prompts: str | Sequence[str],
        config: DecodingConfig | None = None,
        *,
        prefix_seconds: float,
        seed: int = 0,
        ar_config: ARConfig | None = None,
        controls: LiveControls | None = None,
        cancel: threading.Event | None = None,
        resume_from: ARRecord | StepRecord | None = None,
    ) -> Iterator[PhaseRecord]:
        """Run both phases, yielding a :class:`PhaseRecord` per AR record, then per MAGNeT step.

        Args:
            prompts: B text descriptions (both models get the same).
            config: the MAGNeT phase's settings and the clip's duration (default: the model's).
            prefix_seconds: the seconds the AR partner writes (see :func:`prefix_frames`).
            seed: seeds both phases' samplers (see the module docstring).
            ar_config: the AR phase's settings (its duration is replaced by the clip's; see
                :meth:`ar_config`).
            controls: live controls of the MAGNeT phase (the AR phase's are fixed at ``ar_config``).
            cancel: when set, the run stops before the next step of either phase.
            resume_from: a record of an earlier run of the same settings to go on after: an AR
                record of its first phase (the phase goes on to the prefix, then MAGNeT starts) or
                a record of its MAGNeT phase (numbered within that phase).
        Raises:
            ValueError: bad prompts, settings or ``prefix_seconds`` (raised by this call, before
                any step runs).
        """
        config = config or self.model.default_config()
        if isinstance(prompts, str):
            prompts = (prompts,)
        prompts = tuple(prompts)
        config.check_model(self.model.num_codebooks, self.model.max_duration, self.model.lm.card)
        T = self.model.frames(config)
        span_len = int(self.model.lm.span_len)
        if T < span_len:
            raise ValueError(f"duration {config.duration} s is too short: it gives {T} frames.")
        P = prefix_frames(prefix_seconds, self.model.frame_rate, T, span_len, config.duration)
        ar_config = self.ar_config(config, ar_config)
        budget = self.ar_steps(P, ar_config)
        if self.ar.frames(ar_config) < P:
            raise ValueError(
                f"The autoregressive partner writes at most {ar_config.duration:g} s, less than the "
                f"{prefix_seconds:g} s prefix."
            )
        clock = [0.0]
        start = time.perf_counter()
        run = _HybridRun(prompts, config, P, T, int(seed), controls, cancel)
        if isinstance(resume_from, StepRecord):  # in the MAGNeT phase: the prefix is in the record
            return self._iterate(run, iter(()), clock, magnet_resume=resume_from)
        ar_steps = self._ar_phase(run, ar_config, budget, resume_from)
        clock[0] += time.perf_counter() - start
        return self._iterate(
            run, ar_steps, clock, 0 if resume_from is None else resume_from.index + 1, resume_from
        )

    def _ar_phase(self, run: _HybridRun, ar_config: ARConfig, budget: int, resume_from: ARRecord | None):
        """The AR phase's records: ``budget`` sequence steps from the start, or the rest of them
        after ``resume_from`` (none when that record completed the prefix)."""
        if resume_from is None:
            return self.ar.steps(
                run.prompts, ar_config, seed=run.seed, cancel=_StepBudget(budget, run.cancel)
            )
        if resume_from.frames_done >= run.prefix_frames:
            return iter(())
        left = budget - (resume_from.step_stop - resume_from.run_start)
        cancel = _StepBudget(left, run.cancel)
        return self.ar.steps(run.prompts, ar_config, seed=run.seed, cancel=cancel, resume_from=resume_from)

    def _iterate(
        self,
        run: _HybridRun,
        ar_steps: Iterator[ARRecord],
        clock: list[float],
        index: int = 0,
        last: ARRecord | None = None,
        magnet_resume: StepRecord | None = None,
    ) -> Iterator[PhaseRecord]:
        """Both phases (a generator) from record ``index`` after ``last``; :meth:`steps` checks
        and starts the AR phase (or resumes the MAGNeT phase after ``magnet_resume``)."""
        if magnet_resume is not None:
            yield from self._magnet_phase(run, index, 0.0, resume_from=magnet_resume)
            return
        for record in _timed(ar_steps, clock):
            last = record
            yield PhaseRecord(PHASE_AR, record, index, run.prefix_frames, run.frames, clock[0], clock[0])
            index += 1
            if record.frames_done >= run.prefix_frames:
                break  # the step budget ended this record: the prefix is complete
        getattr(ar_steps, "close", lambda: None)()
        if last is None or last.frames_done < run.prefix_frames:
            return  # cancelled before the prefix was complete
        prefix = torch.as_tensor(np.asarray(last.tokens[..., : run.prefix_frames], dtype=np.int64))
        yield from self._magnet_phase(run, index, clock[0], prompt_tokens=prefix)

    def _magnet_phase(
        self, run: _HybridRun, index: int, ar_seconds: float, **start_from
    ) -> Iterator[PhaseRecord]:
        """The MAGNeT phase's records from record ``index`` (``start_from``: the prefix as
        ``prompt_tokens``, or the record to resume after as ``resume_from``)."""
        magnet_clock = [0.0]
        start = time.perf_counter()
        magnet_steps = self.magnet.steps(
            run.prompts, run.config, seed=run.seed, controls=run.controls, cancel=run.cancel, **start_from
        )
        magnet_clock[0] += time.perf_counter() - start
        for record in _timed(magnet_steps, magnet_clock):
            elapsed = ar_seconds + magnet_clock[0]
            yield PhaseRecord(
                PHASE_MAGNET, record, index, run.prefix_frames, run.frames, magnet_clock[0], elapsed
            )
            index += 1

    def decode(
        self,
        prompts: str | Sequence[str],
        config: DecodingConfig | None = None,
        *,
        on_record: Callable[[PhaseRecord], None] | None = None,
        with_audio: bool = True,
        **options,
    ) -> HybridResult:
        """Run :meth:`steps` (same keyword ``options``: ``prefix_seconds``, ``seed``, ...) to the end
        or until cancelled; decode the audio of a finished run."""
        config = config or self.model.default_config()
        records = []
        seed = options.get("seed", 0)
        for record in self.steps(prompts, config, **options):
            records.append(record)
            if on_record is not None:
                on_record(record)
        if not records:
            raise ValueError("The run was cancelled before its first step.")
        last = records[-1]
        P = last.prefix_frames
        ar_records = [r for r in records if r.phase == PHASE_AR]
        magnet_records = [r for r in records if r.phase == PHASE_MAGNET]
        prefix = None
        if ar_records and ar_records[-1].record.frames_done >= P:
            prefix = torch.as_tensor(np.asarray(ar_records[-1].record.tokens[..., :P], dtype=np.int64))
        tokens = torch.as_tensor(np.asarray(last.tokens, dtype=np.int64))
        cancelled = not last.is_last
        audio = decode_tokens(self.model.compression_model, tokens) if with_audio and not cancelled else None
        return HybridResult(
            tokens=tokens,
            prefix=prefix,
            audio=audio,
            sample_rate=self.model.sample_rate,
            records=tuple(records),
            config=config,
            ar_config=self.ar_config(config, options.get("ar_config")),
            prompts=(prompts,) if isinstance(prompts, str) else tuple(prompts),
            seed=int(seed),
            prefix_seconds=float(options["prefix_seconds"]),
            prefix_frames=P,
            ar_seconds=ar_records[-1].phase_seconds if ar_records else 0.0,
            magnet_seconds=magnet_records[-1].phase_seconds if magnet_records else 0.0,
            cancelled=cancelled,
        )
