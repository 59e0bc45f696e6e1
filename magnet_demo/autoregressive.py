"""Autoregressive decoding as a run: an AR model writes a clip frame by frame, one record per batch.

:meth:`AREngine.steps` runs the decoding of audiocraft's ``LMModel.generate`` (MusicGen, AudioGen,
the embedded model's own AR model) on the model's codebook pattern, MusicGen's delay pattern:
sequence step ``s`` writes frame ``s - 1 - delays[k]`` of every codebook ``k`` (step 0 is the start
token, and codebook ``k`` starts ``delays[k]`` steps later, so the written canvas has a diagonal
front). Every step feeds the new position through the model with its KV cache (audiocraft's
streaming state), guides the last logits with classifier-free guidance (prompts and null prompts
in one batch of ``2B``, or audiocraft's two-step CFG: two passes of ``B`` with two caches), and
draws one token per codebook with one ``multinomial`` over ``[B * K, card]`` (top-p, else top-k,
else plain; greedy when sampling is off or the temperature is 0, drawing nothing). Draw for draw
this is audiocraft's generation, from the run's own ``torch.Generator`` seeded with ``seed``:
``torch.manual_seed(seed)`` then ``LMModel.generate`` gives the same tokens (tested on tiny seeded
models), and the global RNG is left alone.

Unlike audiocraft it:

- yields a frozen :class:`ARRecord` per ``frames_per_record`` sequence steps (one frame of every
  codebook each, along the diagonal): the canvas ``[B, K, T]``, what the batch wrote and with
  which probability, the step range, timings and the generator state;
- reads :class:`~magnet_demo.controls.LiveControls` once at the start of every record's batch.
  Live: the temperature (``controls.temperature``) and the CFG coefficient
  (``controls.cfg.coef(1 - progress)``, progress = share of the run's steps done when the batch
  starts: a 'constant' schedule, the default, is audiocraft's fixed coefficient; 'linear' and
  'curve' anneal it over the clip). ``rescore_weight`` means nothing here and is ignored; top-k,
  top-p, sampling on/off and the CFG mode are fixed per run (:class:`ARConfig`);
- resumes from any record (``resume_from``): the record's canvas gives the sequence, its generator
  state the sampler; the KV cache, which no record holds, is rebuilt by running the model over the
  written steps again, chunk for chunk as the first run fed them (``replay='exact'``, bit-identical
  to the uninterrupted run; costs one forward per step already written, no sampling) or in one pass
  (``replay='prefill'``: one forward, the same up to float rounding, so a token may differ);
- continues a prefix of given tokens ``[B, K, P]`` (audiocraft's ``prompt``): the first step fed is
  the whole prefix in one chunk, and steps never overwrite a given token;
- checks ``cancel.is_set()`` before every sequence step; a cancelled batch still yields the record
  of the steps it did;
- guides in float32 and uses the coefficient it is given in both CFG modes (audiocraft's two-step
  path ignores its ``cfg_coef`` argument and uses the model's ``cfg_coef``).

The model is in streaming mode only while a batch (or a resume's replay) runs, under a lock per
model (:func:`model_lock`); the caches live in the run's :class:`_State`, so two runs on one model
take turns batch by batch. Anything else that calls the same model object from another thread
must take :func:`model_lock` too: during a batch the model is streaming, and a teacher-forced pass
(:class:`~magnet_demo.rescoring.LMRescorer` does not take the lock) would read and grow its caches.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from magnet_demo.compat import import_audiocraft
from magnet_demo.controls import ControlValues, LiveControls
from magnet_demo.engine import check_prompts
from magnet_demo.records import frozen_array
from magnet_demo.sampling import sample
from magnet_demo.schedules import CFG_CONSTANT, MIN_TEMPERATURE, CFGSchedule

import_audiocraft()
from audiocraft.models.lm import LMModel  # noqa: E402
from audiocraft.models.lm_magnet import MagnetLMModel  # noqa: E402
from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes  # noqa: E402

#: sequence steps per record: 10 steps = 0.2 s of every codebook at 50 Hz
DEFAULT_FRAMES_PER_RECORD = 10
#: audiocraft's MusicGen defaults (MusicGen.set_generation_params)
DEFAULT_DURATION = 10.0
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 250
DEFAULT_TOP_P = 0.0
#: a sequence position not written yet (audiocraft's ``unknown_token``); never fed to the model
UNWRITTEN = -1
#: how a resumed run rebuilds the KV cache (see the module docstring)
REPLAY_EXACT = "exact"
REPLAY_PREFILL = "prefill"
REPLAY_MODES = (REPLAY_EXACT, REPLAY_PREFILL)


class Cancel(Protocol):
    """What ``cancel`` must offer (a ``threading.Event`` does)."""

    def is_set(self) -> bool: ...


# --------------------------------------------------------------------------------------------
# the delay pattern (pure)


@dataclass(frozen=True)
class DelayPattern:
    """MusicGen's delay pattern over ``frames`` (T) frames: codebook ``k`` is delayed by
    ``delays[k]`` steps behind one start step. Its sequence has ``length`` (S) steps
    ``0 .. S - 1``; step ``s`` holds frame ``s - 1 - delays[k]`` of codebook ``k`` where that frame
    exists, the special token elsewhere (step 0 and the ragged ends)."""

    delays: tuple[int, ...]
    frames: int

    def __post_init__(self):
        delays = tuple(int(d) for d in self.delays)
        object.__setattr__(self, "delays", delays)
        if not delays or delays[0] < 0 or list(delays) != sorted(delays):
            raise ValueError(f"Delays must be sorted and >= 0, got {list(delays)}.")
        if self.frames < 1:
            raise ValueError(f"A pattern needs at least one frame, got {self.frames}.")

    @property
    def num_codebooks(self) -> int:
        return len(self.delays)

    @property
    def length(self) -> int:
        """S: sequence steps, the start step included."""
        return self.frames + self.delays[-1] + 1

    def first_step(self, prefix_frames: int) -> int:
        """The first sequence step that writes a frame at or after ``prefix_frames`` (audiocraft's
        ``get_first_step_with_timesteps``): the step a run with that prefix starts at."""
        return prefix_frames + 1 + self.delays[0]

    def step_of(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[K, T]`` long: the sequence step that writes each frame of each codebook."""
        frames = torch.arange(self.frames, device=device)
        return frames[None, :] + 1 + torch.tensor(self.delays, device=device)[:, None]

    def frames_at(self, step: int) -> list[tuple[int, int]]:
        """``(codebook, frame)`` pairs that sequence step ``step`` writes."""
        return [(k, step - 1 - d) for k, d in enumerate(self.delays) if 0 <= step - 1 - d < self.frames]

    def to_sequence(self, codes: torch.Tensor, fill: int) -> torch.Tensor:
        """``codes`` ``[B, K, T]`` laid out on the sequence: a new ``[B, K, S]`` tensor, ``fill``
        where no frame lies."""
        B, K, T = codes.shape
        sequence = torch.full((B, K, self.length), fill, dtype=codes.dtype, device=codes.device)
        return sequence.scatter(2, self.step_of(codes.device).expand(B, K, T), codes)

    def to_codes(self, sequence: torch.Tensor) -> torch.Tensor:
        """A ``[B, K, S, ...]`` sequence (tokens, masks, values) back on the frames: ``[B, K, T, ...]``."""
        index = self.step_of(sequence.device)
        return sequence[:, torch.arange(len(self.delays), device=sequence.device)[:, None], index]

    def written_before(self, step: int, prefix_frames: int) -> torch.Tensor:
        """``[K, T]`` bool: frames known before sequence step ``step`` runs (the prefix, and
        every frame an earlier step writes): the diagonal front."""
        frames = torch.arange(self.frames)[None, :]
        return (frames < prefix_frames) | (self.step_of() < step)


def pattern_of(lm: LMModel, frames: int) -> DelayPattern:
    """The delay pattern of ``lm`` over ``frames`` frames; ValueError for a pattern this engine
    does not run (only audiocraft's ``DelayedPatternProvider`` without flattening or empty start)."""
    provider = lm.pattern_provider
    delays = getattr(provider, "delays", None)
    if delays is None or getattr(provider, "flatten_first", 0) or getattr(provider, "empty_initial", 0):
        raise ValueError(
            f"The model's codebook pattern ({type(provider).__name__}) is not a plain delay pattern: "
            f"the autoregressive engine runs MusicGen's delay pattern only."
        )
    return DelayPattern(tuple(delays), frames)


# --------------------------------------------------------------------------------------------
# settings and records


def _check_number(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")


@dataclass(frozen=True)
class ARConfig:
    """Settings of one autoregressive run (names as audiocraft's ``LMModel.generate``).

    ``cfg_coef`` / ``two_step_cfg`` None take the model's. ``temperature`` and ``cfg_coef`` are the
    live controls' starting values. ``frames_per_record`` counts sequence steps per record.
    """

    duration: float = DEFAULT_DURATION
    use_sampling: bool = True
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    cfg_coef: float | None = None
    two_step_cfg: bool | None = None
    frames_per_record: int = DEFAULT_FRAMES_PER_RECORD

    def __post_init__(self):
        _check_number("duration", self.duration, 0.0)
        if self.duration == 0:
            raise ValueError("duration must be > 0 seconds, got 0.")
        _check_number("temperature", self.temperature, 0.0)
        _check_number("top_p", self.top_p, 0.0)
        if self.top_p > 1.0:
            raise ValueError(f"top_p must be <= 1, got {self.top_p}.")
        for name, low in (("top_k", 0), ("frames_per_record", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if self.cfg_coef is not None:
            _check_number("cfg_coef", self.cfg_coef, 0.0)

    def controls(self, model_cfg_coef: float) -> ControlValues:
        """The live-control values a run starts with: a constant CFG schedule at the coefficient."""
        coef = float(model_cfg_coef if self.cfg_coef is None else self.cfg_coef)
        return ControlValues(CFGSchedule(CFG_CONSTANT, coef, coef), float(self.temperature))

    def replace(self, **changes) -> ARConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class ARRecord:
    """What one batch of sequence steps did. ``B`` prompts, ``K`` codebooks, ``T`` frames.

    Attributes:
        index: the record's number in its run (a resumed run goes on counting).
        step_start, step_stop: the sequence steps ``[step_start, step_stop)`` this record ran;
            step ``s`` writes frame ``s - 1 - delays[k]`` of codebook ``k``.
        run_start: the run's first step (``prefix_frames + 1 + delays[0]``); ``sequence_length``
            (S): the run ends after step ``S - 1``.
        prefix_frames: P, frames given before the run (audiocraft's prompt; 0 for none).
        delays: the pattern's delay of each codebook.
        tokens: ``[B, K, T]`` int16 canvas after the record; frames not written yet hold
            ``mask_id`` (codebook ``k`` is written up to frame ``step_stop - 1 - delays[k]``).
        written: ``[B, K, T]`` bool, the frames this record wrote (never prefix frames).
        probs: ``[B, K, T]`` float32, probability of each written token under the sampled
            distribution (guided logits / temperature; top-k renormalised over the k kept; greedy:
            the softmax floored at temperature 0.01); NaN where not written in this record.
        cfg_coef, temperature: the values this record's steps used; ``controls``: the snapshot.
        rng_state: the sampler's generator state after the record (uint8), for resuming.
        seconds, step_seconds, elapsed: wall time of the record, per step, and since the run began.
    """

    index: int
    step_start: int
    step_stop: int
    run_start: int
    sequence_length: int
    prefix_frames: int
    delays: tuple[int, ...]
    tokens: np.ndarray
    written: np.ndarray
    probs: np.ndarray
    cfg_coef: float
    temperature: float
    controls: ControlValues
    rng_state: np.ndarray
    mask_id: int
    seconds: float = 0.0
    step_seconds: float = 0.0
    elapsed: float = 0.0

    @property
    def num_steps(self) -> int:
        return self.step_stop - self.step_start

    @property
    def is_last(self) -> bool:
        return self.step_stop >= self.sequence_length

    @property
    def progress(self) -> float:
        """Share of the run's sequence steps done after this record (0 to 1)."""
        return (self.step_stop - self.run_start) / (self.sequence_length - self.run_start)

    @property
    def frames_done(self) -> int:
        """Frames written in every codebook (the canvas's complete prefix)."""
        T = self.tokens.shape[-1]
        return min(T, max(self.prefix_frames, self.step_stop - 1 - self.delays[-1]))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.tokens, self.written, self.probs, self.rng_state))


@dataclass(frozen=True)
class ARResult:
    """A run's outcome: tokens ``[B, K, T]`` long (``mask_id`` where a cancelled run wrote
    nothing) and every record."""

    tokens: torch.Tensor
    records: tuple[ARRecord, ...]
    config: ARConfig
    prompts: tuple[str, ...]
    seed: int
    cancelled: bool = False
    resumed_from: int | None = None


# --------------------------------------------------------------------------------------------
# the loop's pieces


@dataclass(frozen=True)
class _Run:
    """What stays fixed during a run once :meth:`AREngine.steps` has checked it."""

    prompts: tuple[str, ...]
    config: ARConfig
    controls: LiveControls  # read once at the start of every record's batch
    pattern: DelayPattern
    prefix_frames: int
    conditions: dict  # [prompts..., null prompts...] (2B), or the prompts' alone (B) for two-step CFG
    null_conditions: dict | None  # two-step CFG: the null prompts' (B); else None
    generator: torch.Generator  # the sampler's: at most one multinomial per step
    cancel: Cancel | None
    mask_id: int

    @property
    def run_start(self) -> int:
        return self.pattern.first_step(self.prefix_frames)


@dataclass(frozen=True)
class _State:
    """Between two steps: the sequence, the next step, and the model's caches over ``[0, fed)``.

    A state is used once: the model may grow a cache's tensors in place (``past_context``)."""

    sequence: torch.Tensor  # [B, K, S] long: UNWRITTEN where not written, the special token off-pattern
    step: int  # the sequence step about to run
    fed: int  # sequence steps already in the caches
    cache: dict  # streaming state of the (batched) pass
    uncond_cache: dict | None  # two-step CFG: the unconditional pass's streaming state


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def model_lock(lm: LMModel) -> threading.Lock:
    """The lock held while ``lm`` is in streaming mode (one per model object)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(lm, threading.Lock())


@contextmanager
def _streaming(lm: LMModel):
    """``lm`` in streaming mode, under its lock; its caches are reset on the way out."""
    with model_lock(lm), lm.streaming():
        yield


def _forward(lm: LMModel, chunk: torch.Tensor, conditions: dict, cache: dict) -> tuple[torch.Tensor, dict]:
    """Float32 logits ``[B', K, card]`` of the step after ``chunk`` ``[B', K, n]`` (fed after the
    steps in ``cache``) and the cache that includes it. ``lm`` must be streaming."""
    lm.set_streaming_state(cache)
    logits = lm(chunk, [], condition_tensors=conditions)  # [B', K, n, card]
    return logits[:, :, -1].float(), lm.get_streaming_state()


def _feed(lm: LMModel, run: _Run, state: _State, stop: int) -> tuple[torch.Tensor, torch.Tensor, _State]:
    """Feed steps ``[state.fed, stop)`` of the sequence: conditional and unconditional logits
    ``[B, K, card]`` of step ``stop``, and the state whose caches hold them."""
    chunk = state.sequence[..., state.fed : stop]
    if run.null_conditions is not None:  # two-step CFG, two caches
        cond, cache = _forward(lm, chunk, run.conditions, state.cache)
        uncond, uncond_cache = _forward(lm, chunk, run.null_conditions, state.uncond_cache)
    else:
        both, cache = _forward(lm, torch.cat([chunk, chunk]), run.conditions, state.cache)
        (cond, uncond), uncond_cache = both.split(chunk.shape[0]), None
    return cond, uncond, replace(state, fed=stop, cache=cache, uncond_cache=uncond_cache)


def _draw(
    logits: torch.Tensor, temperature: float, config: ARConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per codebook from guided ``logits`` ``[B, K, card]``: ``[B, K]`` long and its
    probability ``[B, K]`` float32. Sampling draws once from ``generator``; greedy draws nothing."""
    if config.use_sampling and temperature > 0.0:
        probs = torch.softmax(logits / temperature, dim=-1)
        tokens, scoring = sample(probs, top_k=config.top_k, top_p=config.top_p, generator=generator)
    else:
        tokens = torch.argmax(logits, dim=-1, keepdim=True)
        scoring = torch.softmax(logits / max(temperature, MIN_TEMPERATURE), dim=-1)
    return tokens[..., 0], scoring.gather(-1, tokens)[..., 0]


def _step(
    lm: LMModel, run: _Run, state: _State, cfg_coef: float, temperature: float
) -> tuple[_State, torch.Tensor, torch.Tensor]:
    """One sequence step: the next state, and ``[B, K]`` bool (positions written: not given, on
    the pattern) and ``[B, K]`` float32 (their probabilities)."""
    cond, uncond, state = _feed(lm, run, state, state.step)
    logits = uncond + (cond - uncond) * cfg_coef
    tokens, probs = _draw(logits, temperature, run.config, run.generator)
    column = state.sequence[..., state.step]
    written = column == UNWRITTEN
    sequence = state.sequence.clone()
    sequence[..., state.step] = torch.where(written, tokens, column)
    return replace(state, sequence=sequence, step=state.step + 1), written, probs


def _replay(lm: LMModel, run: _Run, state: _State, mode: str) -> _State:
    """``state`` with its caches rebuilt over the steps before ``state.step`` (see the module
    docstring): chunk for chunk as the run fed them, or in one pass."""
    with _streaming(lm):
        if mode == REPLAY_PREFILL:
            return _feed(lm, run, state, state.step - 1)[2]
        stop = run.run_start
        while state.fed < state.step - 1:
            state = _feed(lm, run, state, stop)[2]
            stop = state.fed + 1
        return state


# --------------------------------------------------------------------------------------------
# checks of a run's inputs


def _check_prefix(prefix: Any, shape: tuple[int, int, int], card: int) -> torch.Tensor:
    """The prefix ``[B, K, P]`` as a CPU long tensor, checked against the canvas ``shape``."""
    B, K, T = shape
    prefix = torch.as_tensor(np.asarray(prefix) if not isinstance(prefix, torch.Tensor) else prefix).cpu()
    if prefix.is_floating_point() or prefix.is_complex() or prefix.dtype == torch.bool:
        raise ValueError(f"prompt_tokens must hold integer codes, got {prefix.dtype}.")
    if prefix.dim() != 3 or prefix.shape[:2] != (B, K):
        raise ValueError(f"prompt_tokens must be [B={B}, K={K}, P], got {list(prefix.shape)}.")
    if not 1 <= prefix.shape[-1] < T:
        raise ValueError(f"prompt_tokens has {prefix.shape[-1]} frames: give between 1 and {T - 1} for {T}.")
    if prefix.min() < 0 or prefix.max() >= card:
        raise ValueError(f"prompt_tokens must be codes in [0, {card}).")
    return prefix.long()


def _check_record(record: ARRecord, pattern: DelayPattern, B: int, mask_id: int) -> torch.Tensor:
    """The canvas ``[B, K, T]`` long of a record to resume from, once it fits this run."""
    shape = (B, pattern.num_codebooks, pattern.frames)
    if record.tokens.shape != shape:
        raise ValueError(
            f"Cannot resume: the record's canvas is {list(record.tokens.shape)} but this run's is "
            f"{list(shape)} (the same number of prompts and duration are needed)."
        )
    if tuple(record.delays) != pattern.delays or record.mask_id != mask_id:
        raise ValueError(
            "Cannot resume: the record comes from a model with another pattern or codebook size."
        )
    if record.is_last:
        raise ValueError("Cannot resume after the last record: nothing is left to write.")
    canvas = torch.as_tensor(np.asarray(record.tokens, dtype=np.int64))
    expected = pattern.written_before(record.step_stop, record.prefix_frames).expand(shape)
    if not torch.equal(canvas != mask_id, expected):
        raise ValueError("Cannot resume: the record's canvas does not match its steps (is it an AR record?).")
    return canvas


# --------------------------------------------------------------------------------------------
# the engine


class AREngine:
    """Runs autoregressive decoding on an audiocraft ``LMModel`` (see the module docstring).

    Args:
        lm: an autoregressive (causal) language model with a delay pattern; put in eval mode.
        frame_rate: frames per second of its tokens (T = ``int(duration * frame_rate)``).
        max_duration: the longest clip it may write, in seconds (None: no limit).
    Raises:
        ValueError: ``lm`` is a MAGNeT model, not causal, or has another codebook pattern.
    """

    def __init__(self, lm: LMModel, frame_rate: float, max_duration: float | None = None):
        if isinstance(lm, MagnetLMModel):
            raise ValueError("This is a MAGNeT (non-autoregressive) model: use magnet_demo.engine.Engine.")
        if not lm.transformer.layers[0].self_attn.causal:
            raise ValueError("The model is not causal: it cannot write a clip step by step.")
        pattern_of(lm, 1)  # refuses other patterns now
        self.lm = lm.eval()
        self.frame_rate = float(frame_rate)
        self.max_duration = max_duration

    @classmethod
    def from_rescorer(cls, rescorer) -> AREngine:
        """The engine of an :class:`~magnet_demo.rescoring.LMRescorer`'s model (its tokenizer's
        frame rate; the training segment as the longest clip)."""
        cfg = getattr(rescorer.lm, "cfg", None)
        segment = None if cfg is None else cfg.get("dataset", {}).get("segment_duration")
        return cls(rescorer.lm, rescorer.tokenizer.frame_rate, None if segment is None else float(segment))

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def frames(self, config: ARConfig) -> int:
        """T, the frames a run of ``config`` writes (audiocraft: ``int(duration * frame_rate)``)."""
        return int(config.duration * self.frame_rate)

    def _conditions(self, prompts: tuple[str, ...], two_step: bool) -> tuple[dict, dict | None]:
        """Condition tensors: ``[prompts, null prompts]`` in one batch, or each alone (two-step)."""
        provider = self.lm.condition_provider
        names = list(provider.text_conditions)
        attributes = [ConditioningAttributes(text={name: text for name in names}) for text in prompts]
        nulls = ClassifierFreeGuidanceDropout(p=1.0)(attributes)
        with torch.no_grad():
            if two_step:
                return provider(provider.tokenize(attributes)), provider(provider.tokenize(nulls))
            return provider(provider.tokenize(attributes + nulls)), None

    def _check_config(self, config: ARConfig) -> DelayPattern:
        T = self.frames(config)
        if T < 1:
            raise ValueError(f"duration {config.duration} s is too short: it gives {T} frames.")
        if self.max_duration is not None and config.duration > self.max_duration + 1e-9:
            raise ValueError(
                f"duration {config.duration} s is longer than this model supports ({self.max_duration:g} s)."
            )
        if config.use_sampling and config.top_p == 0.0 and config.top_k > self.lm.card:
            raise ValueError(f"top_k ({config.top_k}) is larger than the codebook size ({self.lm.card}).")
        return pattern_of(self.lm, T)

    def _first_state(self, run: _Run, B: int, prefix, resume_from: ARRecord | None, replay: str) -> _State:
        """The state before the run's first step: a fresh sequence (prefix in place), or the
        state after ``resume_from`` (its caches replayed, its generator state taken)."""
        pattern, mask_id = run.pattern, run.mask_id
        codes = torch.full((B, pattern.num_codebooks, pattern.frames), UNWRITTEN, dtype=torch.long)
        if resume_from is not None:
            canvas = _check_record(resume_from, pattern, B, mask_id)
            codes = torch.where(canvas == mask_id, UNWRITTEN, canvas)
            run.generator.set_state(torch.from_numpy(np.array(resume_from.rng_state, dtype=np.uint8)))
        elif prefix is not None:
            codes[..., : prefix.shape[-1]] = prefix
        sequence = pattern.to_sequence(codes, mask_id).to(self.device)
        state = _State(sequence, run.run_start, 0, {}, {} if run.null_conditions is not None else None)
        if resume_from is None:
            return state
        return _replay(self.lm, run, replace(state, step=resume_from.step_stop), replay)

    def steps(
        self,
        prompts: str | Sequence[str],
        config: ARConfig | None = None,
        *,
        seed: int = 0,
        controls: LiveControls | None = None,
        prompt_tokens: torch.Tensor | np.ndarray | None = None,
        resume_from: ARRecord | None = None,
        replay: str = REPLAY_EXACT,
        cancel: Cancel | None = None,
    ) -> Iterator[ARRecord]:
        """Write a clip, yielding one :class:`ARRecord` per ``config.frames_per_record`` steps.

        Args:
            prompts: B text descriptions (every text condition of the model gets its item's).
            config: run settings (default :class:`ARConfig`, MusicGen's).
            seed: seeds the sampler's own generator (the global RNG is left alone).
            controls: live controls (see the module docstring); by default fixed at the config's.
            prompt_tokens: ``[B, K, P]`` codes in ``[0, card)`` to continue (``1 <= P < T``).
            resume_from: a record of an earlier run with as many prompts and the same duration:
                writing goes on after it (its prefix included), from its generator state.
            replay: how a resumed run rebuilds the KV cache: ``'exact'`` or ``'prefill'``.
            cancel: checked before every step; once set, the run stops.
        Raises:
            ValueError: bad prompts, config, prefix, record or replay mode (raised by this call).
        """
        config = config or ARConfig()
        prompts = check_prompts(prompts)
        pattern = self._check_config(config)
        if replay not in REPLAY_MODES:
            raise ValueError(f"Unknown replay '{replay}': choose one of {', '.join(REPLAY_MODES)}.")
        shape = (len(prompts), pattern.num_codebooks, pattern.frames)
        prefix = None if prompt_tokens is None else _check_prefix(prompt_tokens, shape, self.lm.card)
        if resume_from is not None and prefix is not None:
            raise ValueError("A resumed run takes its prefix from the record: pass no prompt_tokens.")
        prefix_frames = 0 if prefix is None else prefix.shape[-1]
        if resume_from is not None:
            prefix_frames = resume_from.prefix_frames
        two_step = bool(self.lm.two_step_cfg if config.two_step_cfg is None else config.two_step_cfg)
        conditions, null_conditions = self._conditions(prompts, two_step)
        controls = controls or LiveControls(config.controls(self.lm.cfg_coef))
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        run = _Run(
            prompts, config, controls, pattern, prefix_frames, conditions, null_conditions,
            generator, cancel, self.lm.special_token_id,
        )  # fmt: skip
        state = self._first_state(run, len(prompts), prefix, resume_from, replay)
        return self._iterate(run, state, 0 if resume_from is None else resume_from.index + 1)

    @torch.no_grad()
    def _batch(self, run: _Run, state: _State, values: ControlValues) -> tuple[_State, dict]:
        """Up to ``frames_per_record`` steps (fewer when cancelled or at the end): the state
        after them and the record's fields (``written``/``probs`` on the sequence ``[B, K, S]``)."""
        progress = (state.step - run.run_start) / (run.pattern.length - run.run_start)
        cfg_coef, temperature = values.cfg.coef(1.0 - progress), values.temperature
        stop = min(state.step + run.config.frames_per_record, run.pattern.length)
        written = torch.zeros_like(state.sequence, dtype=torch.bool)
        probs = torch.full(state.sequence.shape, float("nan"), device=state.sequence.device)
        with _streaming(self.lm):
            while state.step < stop and not (run.cancel is not None and run.cancel.is_set()):
                step = state.step
                state, wrote, p = _step(self.lm, run, state, cfg_coef, temperature)
                written[..., step] = wrote
                probs[..., step] = torch.where(wrote, p, float("nan"))
        fields = {"written": written, "probs": probs, "cfg_coef": float(cfg_coef), "temperature": temperature}
        return state, fields

    def _record(self, run: _Run, state: _State, fields: dict, **extra) -> ARRecord:
        pattern, mask_id = run.pattern, run.mask_id
        tokens = pattern.to_codes(state.sequence)
        return ARRecord(
            step_stop=state.step,
            run_start=run.run_start,
            sequence_length=pattern.length,
            prefix_frames=run.prefix_frames,
            delays=pattern.delays,
            tokens=frozen_array(torch.where(tokens == UNWRITTEN, mask_id, tokens), np.int16),
            written=frozen_array(pattern.to_codes(fields["written"])),
            probs=frozen_array(pattern.to_codes(fields["probs"]), np.float32),
            cfg_coef=fields["cfg_coef"],
            temperature=fields["temperature"],
            rng_state=frozen_array(run.generator.get_state(), np.uint8),
            mask_id=mask_id,
            **extra,
        )

    def _iterate(self, run: _Run, state: _State, index: int) -> Iterator[ARRecord]:
        """The loop proper (a generator) from ``state``; :meth:`steps` checks and prepares."""
        start = time.perf_counter()
        while state.step < run.pattern.length:
            values = run.controls.snapshot()
            t0, step_start = time.perf_counter(), state.step
            state, fields = self._batch(run, state, values)
            if state.step == step_start:  # cancelled before the batch's first step
                return
            now = time.perf_counter()
            seconds = now - t0
            yield self._record(
                run, state, fields, index=index, step_start=step_start, controls=values,
                seconds=seconds, step_seconds=seconds / (state.step - step_start), elapsed=now - start,
            )  # fmt: skip
            index += 1

    def decode(
        self,
        prompts: str | Sequence[str],
        config: ARConfig | None = None,
        *,
        on_record: Callable[[ARRecord], None] | None = None,
        **options,
    ) -> ARResult:
        """Run :meth:`steps` (same keyword ``options``) to the end or until cancelled."""
        config = config or ARConfig()
        records = []
        for record in self.steps(prompts, config, **options):
            records.append(record)
            if on_record is not None:
                on_record(record)
        resume_from = options.get("resume_from")
        last = records[-1] if records else resume_from
        if last is None:
            raise ValueError("The run was cancelled before its first step.")
        return ARResult(
            tokens=torch.as_tensor(np.asarray(last.tokens, dtype=np.int64)),
            records=tuple(records),
            config=config,
            prompts=check_prompts(prompts),
            seed=int(options.get("seed", 0)),
            cancelled=not last.is_last,
            resumed_from=None if resume_from is None else resume_from.index,
        )
