"""The MAGNeT decoding engine: audiocraft's algorithm, one immutable record per step.

:meth:`Engine.steps` runs MAGNeT's iterative decoding (audiocraft ``MagnetLMModel._generate_magnet``)
and yields a :class:`~magnet_demo.records.StepRecord` after every step. With the same seed it
draws exactly the random numbers audiocraft draws (one ``multinomial`` over ``[B * T, card]``
per step), so its tokens equal ``MAGNeT.generate`` after ``torch.manual_seed(seed)``. Unlike
audiocraft it:

- reads :class:`~magnet_demo.controls.LiveControls` once at the start of every step;
- resumes from any record (``resume_from``) with new settings: the record holds the canvas,
  the unit scores and the generator state;
- takes given tokens anywhere (``given_tokens`` + ``given_mask``, see :meth:`Engine.steps`): they are
  never masked and the model sees them on both sides, so one engine continues a clip (a given
  prefix, audiocraft's ``prompt``) and re-decodes a region of it (inpainting);
- stops between steps when ``cancel`` is set;
- mixes an external rescorer's probabilities into the span confidences when the rescoring weight
  ``w`` is above 0: ``confidence = (1 - w) * p_magnet + w * p_rescorer`` (the paper's figure;
  ``w = 0`` calls no rescorer and is bit-identical to plain MAGNeT, ``w = 1`` ranks spans by the
  rescorer alone);
- ranks the units to re-mask by other unmasking orders when asked (``DecodingConfig.unmasking_order``:
  random, margin, entropy; :mod:`magnet_demo.spans`); the random order draws from a generator of its
  own, seeded at every step from the sampler's state and the step (:func:`_order_generator`), so the
  sampler's stream stays audiocraft's and a resumed run draws the same order;
- revises (``DecodingConfig.revision_share`` > 0, ReMDM-like): every step but a stage's last also
  re-masks the least sure share of the units fixed at an earlier step of the stage, and says which
  frames in the record (``revised``);
- runs on CPU with a correctly sized restricted-attention mask (:func:`magnet_demo.models.stage_logits`);
- skips the unconditional half of the batch at steps whose CFG coefficient is exactly 1 (CFG off),
  where it cancels out: those steps cost half.

A unit of masking is a chunk of ``span_len`` frames ('nonoverlap') or a frame ('stride1'). A
wholly given unit is never masked and is not counted in the units to decode. A chunk that is only
*partly* given (a region edge off a span boundary) is decoded like the free chunks: it counts as a
unit, may be masked, its score comes from all of its frames, and its given frames are put back
after every masking, so they keep their tokens (audiocraft's rule for a prompt whose length is not a
multiple of the span; :mod:`magnet_demo.audio_in` snaps regions to whole spans so that only a
continuation's prefix meets it).

The loop body (:meth:`Engine._step`) takes a small :class:`_State` and returns the next one, in
named parts: :class:`_Plan` (what the schedules and the live controls fix for the step),
:func:`_masked_canvas`, :func:`_guided_logits`, :func:`_propose` (the step's one draw),
then the span choice (:meth:`Engine._rescored`, :func:`magnet_demo.spans.span_scores`,
:func:`_next_state`); :func:`_record_fields` turns its :class:`_Outcome` into a record. What stays
fixed during a run is one :class:`_Run`; the given tokens are checked in :mod:`magnet_demo.given`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from magnet_demo import schedules, spans
from magnet_demo.audio import decode_tokens, preview_audio
from magnet_demo.compat import import_audiocraft
from magnet_demo.controls import ControlValues, DecodingConfig, LiveControls
from magnet_demo.given import Canvas, Given, run_given
from magnet_demo.models import LoadedModel, stage_logits
from magnet_demo.records import DecodeResult, StepRecord, frozen_array
from magnet_demo.sampling import sample

import_audiocraft()
from audiocraft.models.lm_magnet import MagnetLMModel  # noqa: E402
from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes  # noqa: E402

#: maximum number of prompts (samples) in one run
MAX_BATCH = 8
#: the CFG coefficient at which guidance does nothing: a step with it runs only the conditional half
GUIDANCE_OFF = 1.0


def _first_rows(conditions: dict, rows: int) -> dict:
    """The first ``rows`` rows of every condition tensor (``_conditions`` puts the prompts first)."""
    return {name: tuple(part[:rows] for part in value) for name, value in conditions.items()}


def _free_units(given: Given | None, stage: int, T: int, arrangement: str, span_len: int) -> int:
    if given is None:
        return spans.unit_count(T, arrangement, span_len)
    return given.free_units(stage, arrangement, span_len)


@dataclass(frozen=True)
class _State:
    """Between two steps: the canvas, the current stage's unit scores and the next step's mask."""

    tokens: torch.Tensor  # [B, K, T] long
    stage: int
    step: int  # the step about to run, within `stage`
    scores: torch.Tensor  # [B, 1, N] float32
    mask: torch.Tensor  # [B, 1, T] bool: frames the coming step masks
    fixed: torch.Tensor  # [B, 1, N] float32: scores of units fixed at an earlier step (revision)


@dataclass(frozen=True)
class _Plan:
    """What the schedules and the live controls fix for a step before the model runs."""

    n_steps: int  # steps of the current stage
    n_units: int  # units of the stage that are decoded (not wholly given)
    n_masked: int  # units masked at this step (in item 0)
    rate: torch.Tensor  # float32 scalar: the mask rate of this step
    cfg_coef: float
    temperature: float  # after annealing (the softmax floors it at MIN_TEMPERATURE)
    stage_end: bool  # the stage's last step: its scores choose no mask

    @classmethod
    def of(
        cls,
        state: _State,
        controls: ControlValues,
        config: DecodingConfig,
        given: Given | None,
        span_len: int,
    ) -> _Plan:
        """The plan of the step that ``state`` is about to run, under ``controls``."""
        stage, step = state.stage, state.step
        n_steps, arrangement = config.decoding_steps[stage], config.span_arrangement
        rate = schedules.mask_rate(step, n_steps)
        return cls(
            n_steps=n_steps,
            n_units=_free_units(given, stage, state.tokens.shape[-1], arrangement, span_len),
            n_masked=int(spans.unit_mask(state.mask, arrangement, span_len)[0].sum()),
            rate=rate,
            cfg_coef=controls.cfg.coef(float(rate)),
            temperature=schedules.temperature_at(controls.temperature, step, n_steps, config.anneal_temp),
            stage_end=step + 1 >= n_steps,
        )


@dataclass(frozen=True)
class _Outcome:
    """What a step did, as tensors; :func:`_record_fields` copies them into read-only arrays."""

    tokens: torch.Tensor  # [B, K, T] long: the canvas after the step
    mask_before: torch.Tensor  # [B, 1, T] bool: frames masked during the step
    mask_after: torch.Tensor  # [B, 1, T] bool: frames the next step masks (none at a stage's end)
    confidence: torch.Tensor  # [B, 1, T] float32: MAGNeT's probability of each proposal
    rescorer_confidence: torch.Tensor | None  # [B, 1, T] float32, None when not rescored
    rescore_weight: float  # the weight used (0 when not rescored)
    scores: torch.Tensor  # [B, 1, N] float32 unit scores after the step
    revised: torch.Tensor  # [B, 1, T] bool: fixed frames the next step re-masks for revision
    fixed: torch.Tensor | None  # [B, 1, N] float32 scores of the fixed units (None: no revision)


def _mask_at(
    scores: torch.Tensor, step: int, n_steps: int, n_units: int, arrangement: str, span_len: int
) -> torch.Tensor:
    """``[B, 1, T]`` (CPU) bool frames that ``step`` masks: the ``num_masked`` units of ``scores``
    ``[B, 1, N]`` that score highest, ``n_units`` being the stage's decoded units."""
    k = schedules.num_masked(schedules.mask_rate(step, n_steps), n_units)
    return spans.select_mask(scores.cpu(), k, arrangement, span_len)


def _masked_canvas(state: _State, given: Given | None, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The canvas the model sees at a step: a new ``[B, K, T]`` copy of ``state.tokens`` whose
    ``state.mask`` frames of the current stage hold ``mask_id``, except given frames (put back at
    once), and ``mask_before`` ``[B, 1, T]`` bool: the frames it masks."""
    stage = state.stage
    tokens = state.tokens.clone()
    row = tokens[:, [stage]]  # [B, 1, T], a copy
    row[state.mask] = mask_id
    if given is not None:
        row = torch.where(given.mask[:, [stage]], given.tokens[:, [stage]], row)
    tokens[:, [stage]] = row
    return tokens, row == mask_id


def _guided_logits(
    lm: MagnetLMModel, tokens: torch.Tensor, stage: int, cfg_coef: float, conditions: dict
) -> torch.Tensor:
    """Float32 logits ``[B, 1, T, card]`` of codebook ``stage`` of ``lm`` for the canvas ``tokens``
    ``[B, K, T]``, guided: ``uncond + (cond - uncond) * cfg_coef`` over the batch ``2B`` of
    ``conditions`` (prompts, then null prompts). At :data:`GUIDANCE_OFF` that is ``cond``,
    so only the conditional half runs."""
    B = tokens.shape[0]
    if cfg_coef == GUIDANCE_OFF:
        logits = stage_logits(lm, tokens, _first_rows(conditions, B), stage).float()
    else:
        logits = stage_logits(lm, torch.cat([tokens, tokens], dim=0), conditions, stage).float()
        cond, uncond = logits.split(B, dim=0)
        logits = uncond + (cond - uncond) * cfg_coef
    return logits.unsqueeze(1)


def _propose(
    logits: torch.Tensor, temperature: float, config: DecodingConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per frame from guided ``logits`` ``[B, 1, T, card]``: ``[B, 1, T, 1]`` long, its
    probability ``[B, 1, T]`` and the distribution that probability is read from ``[B, 1, T, card]``
    (the tempered one, top-k truncated for top-k like audiocraft; the margin and entropy orders
    rank by it).

    Sampling draws from ``generator`` exactly once (one ``multinomial``); greedy draws nothing.
    """
    probs = torch.softmax(logits / max(temperature, schedules.MIN_TEMPERATURE), dim=-1)
    if config.use_sampling:
        sampled, scoring_probs = sample(probs, top_k=config.top_k, top_p=config.top_p, generator=generator)
    else:
        sampled, scoring_probs = torch.argmax(logits, dim=-1, keepdim=True), probs
    return sampled, torch.gather(scoring_probs, 3, sampled)[..., 0], scoring_probs


def _order_generator(sampler: torch.Generator, stage: int, step: int) -> torch.Generator:
    """The CPU generator of the random order at ``step`` of ``stage``: seeded with a hash of the
    sampler's state (after the step's draw) and the step, so it is fixed by the run's seed, draws
    nothing from the sampler, and a run resumed from a record (which holds that state) repeats it."""
    digest = hashlib.blake2b(sampler.get_state().numpy().tobytes(), digest_size=8, person=b"unmasking-order")
    digest.update(f"{stage}/{step}".encode())
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little"))


def _unit_scores(
    config: DecodingConfig,
    state: _State,
    confidence: torch.Tensor,
    distribution: torch.Tensor,
    frame_mask: torch.Tensor,
    span_len: int,
    sampler: torch.Generator,
) -> torch.Tensor:
    """The step's ``[B, 1, N]`` unit scores under ``config.unmasking_order`` from the (mixed)
    ``confidence`` ``[B, 1, T]`` or the ``distribution`` ``[B, 1, T, card]`` of the units in
    ``frame_mask`` ``[B, 1, T]`` (see :mod:`magnet_demo.spans`)."""
    order, arrangement, scoring = config.unmasking_order, config.span_arrangement, config.span_scoring
    if order == spans.ORDER_RANDOM:
        generator = _order_generator(sampler, state.stage, state.step)
        return spans.random_scores(frame_mask, arrangement, span_len, generator)
    if order == spans.ORDER_MARGIN:
        return spans.margin_scores(distribution, frame_mask, arrangement, span_len, scoring)
    if order == spans.ORDER_ENTROPY:
        return spans.entropy_scores(distribution, frame_mask, arrangement, span_len, scoring)
    return spans.span_scores(confidence, frame_mask, arrangement, span_len, scoring)


def _with_proposals(
    tokens: torch.Tensor, stage: int, mask_before: torch.Tensor, sampled: torch.Tensor
) -> torch.Tensor:
    """A new ``[B, K, T]`` canvas: ``tokens`` with ``sampled`` ``[B, 1, T, 1]`` on the frames of
    codebook ``stage`` that ``mask_before`` ``[B, 1, T]`` masks."""
    tokens = tokens.clone()
    tokens[:, [stage]] = torch.where(mask_before, sampled[..., 0], tokens[:, [stage]])
    return tokens


def _record_fields(
    state: _State, plan: _Plan, outcome: _Outcome, rng_state: torch.Tensor, mask_id: int, given: Given | None
) -> dict:
    """The fields of a step's :class:`StepRecord` but the loop's counters, controls and timings."""
    masked = outcome.mask_before[:, 0]  # [B, T]
    rescored = outcome.rescorer_confidence
    return {
        "stage": state.stage,
        "step": state.step,
        "steps_in_stage": plan.n_steps,
        "mask_rate": float(plan.rate),
        "num_masked": plan.n_masked,
        "num_units": plan.n_units,
        "cfg_coef": float(plan.cfg_coef),
        "temperature": float(plan.temperature),
        "rescore_weight": float(outcome.rescore_weight),
        "tokens": frozen_array(outcome.tokens, np.int16),
        "mask_before": frozen_array(masked),
        "mask_after": frozen_array(outcome.mask_after[:, 0]),
        "confidence": frozen_array(outcome.confidence[:, 0].masked_fill(~masked, float("nan")), np.float32),
        "rescorer_confidence": None if rescored is None else frozen_array(rescored[:, 0], np.float32),
        "scores": frozen_array(outcome.scores, np.float32),
        "rng_state": frozen_array(rng_state, np.uint8),
        "mask_id": mask_id,
        "given": None if given is None else given.frozen,
        "revised": frozen_array(outcome.revised[:, 0]),
        "fixed_scores": None if outcome.fixed is None else frozen_array(outcome.fixed, np.float32),
    }


@dataclass(frozen=True)
class _Run:
    """What stays fixed during a run once :meth:`Engine.steps` has checked it (the generator's
    state changes, the generator does not)."""

    prompts: tuple[str, ...]  # the B text descriptions
    config: DecodingConfig
    controls: LiveControls  # read once at the start of every step
    conditions: dict  # condition tensors of [prompts..., null prompts...] (batch 2B)
    given: Given | None
    generator: torch.Generator  # the sampler's: one draw per step
    total_steps: int  # steps over all stages
    cancel: threading.Event | None  # when set, the run stops before the next step


def check_prompts(prompts: str | Sequence[str]) -> tuple[str, ...]:
    """``prompts`` (one string or a sequence) as a tuple of 1 to :data:`MAX_BATCH` non-empty texts;
    ValueError otherwise. Shared by the engines (MAGNeT, autoregressive)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = tuple(prompts)
    if not prompts:
        raise ValueError("No prompt given: pass at least one text description.")
    if len(prompts) > MAX_BATCH:
        raise ValueError(f"At most {MAX_BATCH} prompts per run, got {len(prompts)}.")
    for i, text in enumerate(prompts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Prompt {i + 1} is empty: describe the music or sound you want.")
    return prompts


def _stage_start(
    tokens: torch.Tensor, stage: int, config: DecodingConfig, given: Given | None, span_len: int
) -> _State:
    """The state before the first step of ``stage`` on the canvas ``tokens`` ``[B, K, T]`` (past
    the last stage: a finished state).

    Wholly given units start at NEVER_REMASK, so no step ever selects them; the number of
    units to mask counts only the others.
    """
    B, K, T = tokens.shape
    if stage >= K:
        none = torch.zeros((B, 1, 0))
        return _State(tokens, stage, 0, none, torch.zeros((B, 1, T), dtype=torch.bool), none)
    arrangement = config.span_arrangement
    if given is None:
        units = torch.zeros((B, 1, spans.unit_count(T, arrangement, span_len)), dtype=torch.bool)
    else:
        units = spans.given_units(given.mask[:, [stage]].cpu(), arrangement, span_len)
    scores = spans.given_scores(units).to(tokens.device)
    n_units = _free_units(given, stage, T, arrangement, span_len)
    mask = _mask_at(scores, 0, config.decoding_steps[stage], n_units, arrangement, span_len)
    fixed = torch.full_like(scores, spans.NEVER_REMASK)
    return _State(tokens, stage, 0, scores, mask.to(tokens.device), fixed)


def _next_state(
    state: _State,
    tokens: torch.Tensor,
    scores: torch.Tensor,
    predicted: torch.Tensor,
    plan: _Plan,
    config: DecodingConfig,
    given: Given | None,
    span_len: int,
) -> tuple[_State, torch.Tensor]:
    """The state after a step with canvas ``tokens`` ``[B, K, T]`` and unit ``scores`` ``[B, 1, N]``
    of the frames it ``predicted`` ``[B, 1, T]``: the same stage masking its highest-scoring units
    plus the units it revises, or the start of the next stage; and the revised frames ``[B, 1, T]``
    bool (the next mask's frames that were fixed earlier, given frames left out)."""
    if plan.stage_end:
        return _stage_start(tokens, state.stage + 1, config, given, span_len), torch.zeros_like(state.mask)
    step, arrangement = state.step + 1, config.span_arrangement
    mask = _mask_at(scores, step, plan.n_steps, plan.n_units, arrangement, span_len)
    revision = spans.revision_mask(state.fixed, config.revision_share, arrangement, span_len)
    revised = revision & ~mask
    if given is not None:
        revised &= ~given.mask[:, [state.stage]].cpu()
    mask = (mask | revision).to(tokens.device)
    predicted_units = spans.unit_mask(predicted, arrangement, span_len)
    fixed = spans.fixed_scores_after(
        state.fixed, scores, predicted_units, spans.unit_mask(mask, arrangement, span_len)
    )
    return _State(tokens, state.stage, step, scores, mask, fixed), revised.to(tokens.device)


def _resumed_fixed(record: StepRecord, scores: torch.Tensor) -> torch.Tensor:
    """The fixed units' scores after ``record`` (revision): the record's, or none fixed when it has
    none (a run without revision): revision then ranks only units fixed after the resumed step."""
    if record.fixed_scores is None:
        return torch.full_like(scores, spans.NEVER_REMASK)
    return torch.as_tensor(np.array(record.fixed_scores), device=scores.device)


def _resume_state(
    record: StepRecord, config: DecodingConfig, given: Given | None, canvas: Canvas
) -> tuple[_State, int]:
    """The state after ``record`` and the global step it starts, once the record is checked
    against this run's ``canvas`` and ``config`` (ValueError when it does not fit)."""
    B, K, T = canvas.shape
    if record.tokens.shape != (B, K, T):
        raise ValueError(
            f"Cannot resume: the record's canvas is {list(record.tokens.shape)} but this run's is {[B, K, T]} "
            f"(same prompts count, duration and span arrangement are needed)."
        )
    if record.global_step + 1 >= sum(config.decoding_steps):
        raise ValueError("Cannot resume after the last step: nothing is left to decode.")
    steps_done = sum(config.decoding_steps[: record.stage]) + record.step + 1
    if steps_done != record.global_step + 1 or record.step >= config.decoding_steps[record.stage]:
        raise ValueError(
            "Cannot resume: the decoding steps of the record's stages differ from this config's "
            f"({list(config.decoding_steps)})."
        )
    tokens = torch.as_tensor(np.asarray(record.tokens, dtype=np.int64), device=canvas.device)
    scores = torch.as_tensor(np.array(record.scores), device=canvas.device)
    if record.is_stage_end:
        state = _stage_start(tokens, record.stage + 1, config, given, canvas.span_len)
    else:
        mask = torch.as_tensor(np.array(record.mask_after), device=canvas.device)[:, None]
        state = _State(tokens, record.stage, record.step + 1, scores, mask, _resumed_fixed(record, scores))
    return state, record.global_step + 1


def _first_state(
    canvas: Canvas,
    config: DecodingConfig,
    given: Given | None,
    resume_from: StepRecord | None,
    generator: torch.Generator,
) -> tuple[_State, int]:
    """The first state of a run and its global step: a fresh canvas (given tokens in place), or
    the state after ``resume_from``, whose generator state ``generator`` then takes."""
    if resume_from is not None:
        state, global_step = _resume_state(resume_from, config, given, canvas)
        generator.set_state(torch.from_numpy(np.array(resume_from.rng_state, dtype=np.uint8)))
        return state, global_step
    if given is not None:
        tokens = given.tokens.clone()
    else:
        tokens = torch.full(canvas.shape, canvas.mask_id, dtype=torch.long, device=canvas.device)
    return _stage_start(tokens, 0, config, given, canvas.span_len), 0


class Engine:
    """Runs MAGNeT decoding on a loaded model, optionally with a rescorer (see module doc)."""

    def __init__(self, model: LoadedModel, rescorer=None):
        self.model = model
        self.rescorer = rescorer
        self.lm = model.lm

    # ---------------------------------------------------------------- set-up
    def _conditions(self, prompts: tuple[str, ...]) -> dict:
        """Condition tensors for ``[prompts..., null prompts...]`` (batch 2B, for CFG)."""
        names = [n for n in self.lm.condition_provider.text_conditions]
        attributes = [ConditioningAttributes(text={name: text for name in names}) for text in prompts]
        attributes = attributes + ClassifierFreeGuidanceDropout(p=1.0)(attributes)
        tokenized = self.lm.condition_provider.tokenize(attributes)
        return self.lm.condition_provider(tokenized)

    def frames(self, config: DecodingConfig) -> int:
        """Frames actually decoded for ``config`` (nonoverlap trims to a multiple of the span)."""
        return self.model.frames(config)

    def _canvas(self, config: DecodingConfig, B: int) -> Canvas:
        """The canvas ``(B, K, T)`` of a run of ``B`` prompts; at least one span of frames."""
        T = self.frames(config)
        if T < self.lm.span_len:
            raise ValueError(f"duration {config.duration} s is too short: it gives {T} frames.")
        return Canvas(
            shape=(B, self.model.num_codebooks, T),
            card=self.lm.card,
            mask_id=self.lm.special_token_id,
            span_len=self.lm.span_len,
            arrangement=config.span_arrangement,
            device=self.model.device,
        )

    # ---------------------------------------------------------------- the loop body
    @torch.no_grad()
    def _step(self, state: _State, controls: ControlValues, run: _Run) -> tuple[_State, dict]:
        """One decoding step under ``controls``; returns the next state and the fields of its record.

        Masks the state's frames, samples proposals from the guided logits, scores the units in the
        unmasking order (by default the proposals' confidences, mixed with the rescorer's) and picks
        the frames to re-mask, revised ones included. The rescorer serves the confidence order only.
        """
        config, given = run.config, run.given
        span_len, arrangement, mask_id = self.lm.span_len, config.span_arrangement, self.lm.special_token_id
        plan = _Plan.of(state, controls, config, given, span_len)
        tokens, mask_before = _masked_canvas(state, given, mask_id)
        logits = _guided_logits(self.lm, tokens, state.stage, plan.cfg_coef, run.conditions)
        sampled, confidence, distribution = _propose(logits, plan.temperature, config, run.generator)
        tokens = _with_proposals(tokens, state.stage, mask_before, sampled)

        weight = controls.rescore_weight if config.unmasking_order == spans.ORDER_CONFIDENCE else 0.0
        mixed, rescored = self._rescored(confidence, tokens, state.stage, weight, plan, run.prompts)
        scoring_mask = state.mask if spans.uses_chunks(arrangement, span_len) else mask_before
        scores = _unit_scores(config, state, mixed, distribution, scoring_mask, span_len, run.generator)
        next_state, revised = _next_state(state, tokens, scores, scoring_mask, plan, config, given, span_len)

        outcome = _Outcome(
            tokens=tokens,
            mask_before=mask_before,
            mask_after=torch.zeros_like(mask_before) if plan.stage_end else next_state.mask,
            confidence=confidence,
            rescorer_confidence=rescored,
            rescore_weight=weight if rescored is not None else 0.0,
            scores=scores,
            revised=revised,
            fixed=next_state.fixed if config.revision_share > 0 else None,
        )
        return next_state, _record_fields(state, plan, outcome, run.generator.get_state(), mask_id, given)

    def _rescored(
        self,
        confidence: torch.Tensor,
        tokens: torch.Tensor,
        stage: int,
        weight: float,
        plan: _Plan,
        prompts: tuple[str, ...],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The confidences ``[B, 1, T]`` that score the units and the rescorer's own ``[B, 1, T]``:
        ``(1 - weight) * confidence + weight * rescorer's`` on the canvas ``tokens`` ``[B, K, T]``.

        ``(confidence, None)`` (no rescorer call) at weight 0, without a rescorer, and at a stage's
        last step, whose scores choose no mask: the rescorer would change nothing.
        """
        if weight > 0 and self.rescorer is not None and not plan.stage_end:
            rescored = self.rescorer.token_probs(tokens, prompts)[:, [stage]].to(confidence)
            return (1 - weight) * confidence + weight * rescored, rescored
        return confidence, None

    # ---------------------------------------------------------------- public API
    def steps(
        self,
        prompts: Sequence[str],
        config: DecodingConfig | None = None,
        *,
        seed: int = 0,
        controls: LiveControls | None = None,
        prompt_tokens: torch.Tensor | None = None,
        given_tokens: torch.Tensor | np.ndarray | None = None,
        given_mask: torch.Tensor | np.ndarray | None = None,
        resume_from: StepRecord | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StepRecord]:
        """Decode, yielding one record per step (settings are checked before the first step).

        Args:
            prompts: B text descriptions.
            config: run settings (default: ``model.default_config()``, audiocraft's defaults with
                the model's recommended sampling settings).
            seed: seeds the sampler's own generator (the global RNG is left alone).
            controls: live controls; by default fixed at the config's values.
            prompt_tokens: ``[B, K, P]`` codes to continue from (P < T); never re-masked. The
                same as ``given_tokens`` with ``given_mask[..., :P] = True``, bit for bit
                audiocraft's ``prompt``.
            given_tokens: ``[B, K, T]`` (or ``[1, K, T]``, used for every prompt) codes in
                ``[0, card)`` where ``given_mask`` is True; other values are ignored. ``T`` is
                :meth:`frames` of ``config``.
            given_mask: ``[B, K, T]`` (or ``[1, K, T]``) bool, True = given: the token is never
                masked and the model sees it as context on both sides. It must be the same for
                every prompt and leave at least one unit to decode in every codebook; an all-False
                mask is plain generation. Units partly given: see the module docstring.
            resume_from: a record of an earlier run with the same prompts and length: decoding
                continues after it, its generator state included, with ``config``/``controls``.
                A record with given tokens (``record.given``) carries them: pass none (they are
                taken from the record) or the same ones.
            cancel: when set, the run stops before the next step.
        Raises:
            ValueError: bad prompts, config, prompt or given tokens, or resume record (raised by
                this call, before any step runs).
        """
        config = config or self.model.default_config()
        prompts = check_prompts(prompts)
        config.check_model(self.model.num_codebooks, self.model.max_duration, self.lm.card)
        controls = controls or LiveControls.from_config(config)
        canvas = self._canvas(config, len(prompts))
        given = run_given(canvas, prompt_tokens, given_tokens, given_mask, resume_from)
        total_steps = sum(config.decoding_steps)
        generator = torch.Generator(device=self.model.device).manual_seed(int(seed))
        conditions = self._conditions(prompts)
        run = _Run(prompts, config, controls, conditions, given, generator, total_steps, cancel)
        state, global_step = _first_state(canvas, config, given, resume_from, generator)
        return self._iterate(run, state, global_step)

    def _iterate(self, run: _Run, state: _State, global_step: int) -> Iterator[StepRecord]:
        """The decoding loop proper (a generator) from ``state``, whose step is ``global_step``
        over all stages; :meth:`steps` validates and prepares."""
        K = self.model.num_codebooks
        start = time.perf_counter()
        while state.stage < K:
            if run.cancel is not None and run.cancel.is_set():
                return
            values = run.controls.snapshot()
            t0 = time.perf_counter()
            state, fields = self._step(state, values, run)
            now = time.perf_counter()
            yield StepRecord(
                global_step=global_step,
                total_steps=run.total_steps,
                controls=values,
                step_seconds=now - t0,
                elapsed=now - start,
                **fields,
            )
            global_step += 1

    def decode(
        self,
        prompts: Sequence[str],
        config: DecodingConfig | None = None,
        *,
        seed: int = 0,
        controls: LiveControls | None = None,
        prompt_tokens: torch.Tensor | None = None,
        given_tokens: torch.Tensor | np.ndarray | None = None,
        given_mask: torch.Tensor | np.ndarray | None = None,
        resume_from: StepRecord | None = None,
        cancel: threading.Event | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        with_audio: bool = True,
    ) -> DecodeResult:
        """Run :meth:`steps` to the end (or until cancelled) and decode the audio.

        A cancelled run's audio is the preview of its last step (finished codebooks plus
        proposals); its tokens are that step's canvas.
        """
        config = config or self.model.default_config()
        records = []
        for record in self.steps(
            prompts,
            config,
            seed=seed,
            controls=controls,
            prompt_tokens=prompt_tokens,
            given_tokens=given_tokens,
            given_mask=given_mask,
            resume_from=resume_from,
            cancel=cancel,
        ):
            records.append(record)
            if on_step is not None:
                on_step(record)
        last = records[-1] if records else resume_from
        if last is None:
            raise ValueError("The run was cancelled before its first step.")
        cancelled = not last.is_last
        tokens = torch.as_tensor(np.asarray(last.tokens, dtype=np.int64))
        audio = None
        if with_audio:
            if cancelled:
                audio = preview_audio(self.model.compression_model, last)
            else:
                audio = decode_tokens(self.model.compression_model, tokens)
        return DecodeResult(
            tokens=tokens,
            audio=audio,
            sample_rate=self.model.sample_rate,
            records=tuple(records),
            config=config,
            prompts=check_prompts(prompts),
            seed=seed,
            cancelled=cancelled,
            resumed_from=None if resume_from is None else resume_from.global_step,
        )
