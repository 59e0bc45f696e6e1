"""Given tokens of a decoding run: checked before the first step, never masked during it.

A run's tokens are given by a prompt's prefix (``prompt_tokens``, audiocraft's ``prompt``), by
``given_tokens`` + ``given_mask`` anywhere on the canvas, or by the record a run resumes from (see
:meth:`magnet_demo.engine.Engine.steps`). :func:`run_given` turns those arguments into one
:class:`Given` (or None when nothing is given), checked against the run's :class:`Canvas`; every
check raises ValueError with a message for the caller, before any step runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from magnet_demo import spans
from magnet_demo.records import StepRecord, frozen_array


@dataclass(frozen=True)
class Canvas:
    """What a run's given tokens are checked against: the canvas ``(B, K, T)``, the codes
    ``[0, card)``, the model's ``mask_id``, the masking units (``arrangement`` of ``span_len``
    frames) and the model's device."""

    shape: tuple[int, int, int]
    card: int
    mask_id: int
    span_len: int
    arrangement: str
    device: torch.device


@dataclass(frozen=True)
class Given:
    """Tokens that are given, never masked: ``tokens`` ``[B, K, T]`` long (``mask_id`` where not
    given), ``mask`` ``[B, K, T]`` bool (the same for every item), ``frozen``: the mask as the
    read-only array every record shares."""

    tokens: torch.Tensor
    mask: torch.Tensor
    frozen: np.ndarray

    @classmethod
    def of(cls, tokens: torch.Tensor, mask: torch.Tensor, mask_id: int) -> Given:
        tokens = torch.where(mask, tokens, torch.full_like(tokens, mask_id))
        return cls(tokens, mask, frozen_array(mask, np.bool_))

    def free_units(self, stage: int, arrangement: str, span_len: int) -> int:
        """Units of codebook ``stage`` that are decoded (not wholly given), in item 0 (all items agree)."""
        row = self.mask[:1, [stage]].cpu()
        units = spans.given_units(row, arrangement, span_len)
        return int(units.numel() - units.sum())


def _tensor(x) -> torch.Tensor:
    """``x`` as a CPU tensor (a read-only numpy array is copied, not shared)."""
    return x.cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))


def run_given(
    canvas: Canvas,
    prompt_tokens,
    given_tokens,
    given_mask,
    resume_from: StepRecord | None,
) -> Given | None:
    """The run's given tokens: a prompt's prefix, ``given_tokens``/``given_mask``, or those of
    ``resume_from`` (see :meth:`~magnet_demo.engine.Engine.steps`); None when nothing is given."""
    if prompt_tokens is not None:
        if given_tokens is not None or given_mask is not None:
            raise ValueError("Pass either prompt_tokens or given_tokens/given_mask, not both.")
        given_tokens, given_mask = prefix_as_given(prompt_tokens, canvas)
    given = check_given(given_tokens, given_mask, canvas)
    if resume_from is not None:
        given = resume_given(resume_from, given, canvas)
    return given


def prefix_as_given(prompt_tokens, canvas: Canvas) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, K, P]`` prompt codes -> the ``[B, K, T]`` given tokens and mask of a prefix."""
    B, K, T = canvas.shape
    prompt = torch.as_tensor(prompt_tokens, dtype=torch.long)
    if prompt.dim() != 3 or prompt.shape[:2] != (B, K):
        raise ValueError(f"prompt_tokens must have shape [{B}, {K}, P], got {list(prompt.shape)}.")
    P = prompt.shape[-1]
    if P >= T:
        raise ValueError(f"The prompt ({P} frames) must be shorter than the output ({T}).")
    if prompt.numel() and (prompt.min() < 0 or prompt.max() >= canvas.card):
        raise ValueError(f"prompt_tokens must be codes in [0, {canvas.card}).")
    tokens = torch.zeros((B, K, T), dtype=torch.long)
    tokens[..., :P] = prompt
    mask = torch.zeros((B, K, T), dtype=torch.bool)
    mask[..., :P] = True
    return tokens, mask


def _checked_arrays(given_tokens, given_mask, canvas: Canvas) -> tuple[torch.Tensor, torch.Tensor]:
    """``given_tokens`` and ``given_mask`` as ``[B, K, T]`` CPU tensors (long, bool), once their
    dtypes and shapes (``[B, K, T]`` or ``[1, K, T]``) are checked."""
    B, K, T = canvas.shape
    tokens, mask = _tensor(given_tokens), _tensor(given_mask)
    if mask.dtype != torch.bool:
        raise ValueError(f"given_mask must be a bool array (True = given), got {mask.dtype}.")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"given_tokens must be integer codes, got {tokens.dtype}.")
    for name, x in (("given_tokens", tokens), ("given_mask", mask)):
        if x.dim() != 3 or x.shape[0] not in (1, B) or tuple(x.shape[1:]) != (K, T):
            raise ValueError(
                f"{name} must have shape [{B}, {K}, {T}] (or [1, {K}, {T}]; {T} frames = this run's "
                f"length), got {list(x.shape)}."
            )
    return tokens.long().expand(B, K, T).cpu(), mask.expand(B, K, T).cpu()


def check_given(given_tokens, given_mask, canvas: Canvas) -> Given | None:
    """Validate given tokens and mask (see :meth:`~magnet_demo.engine.Engine.steps`); None when
    nothing is given."""
    if given_tokens is None and given_mask is None:
        return None
    if given_tokens is None or given_mask is None:
        raise ValueError("given_tokens and given_mask go together: pass both or neither.")
    tokens, mask = _checked_arrays(given_tokens, given_mask, canvas)
    if not mask.any():
        return None  # nothing given: plain generation
    if not bool((mask == mask[:1]).all()):
        raise ValueError("given_mask must be the same for every prompt (the given tokens may differ).")
    codes = tokens[mask]
    if codes.min() < 0 or codes.max() >= canvas.card:
        raise ValueError(f"given_tokens must be codes in [0, {canvas.card}) where given_mask is True.")
    given = Given.of(tokens.to(canvas.device), mask.to(canvas.device), canvas.mask_id)
    unit = "span" if spans.uses_chunks(canvas.arrangement, canvas.span_len) else "frame"
    for stage in range(canvas.shape[1]):
        if given.free_units(stage, canvas.arrangement, canvas.span_len) == 0:
            raise ValueError(
                f"Everything is given in codebook {stage}: nothing is left to decode "
                f"(at least one {unit} of every codebook must not be given)."
            )
    return given


def resume_given(record: StepRecord, given: Given | None, canvas: Canvas) -> Given | None:
    """The given tokens of a resumed run: the record's (taken from its canvas) or the same ones."""
    recorded = getattr(record, "given", None)
    if recorded is None or not np.asarray(recorded).any():
        if given is not None:
            raise ValueError("Cannot resume: the record was decoded without given tokens.")
        return None
    if record.tokens.shape != canvas.shape or np.asarray(recorded).shape != canvas.shape:
        return given  # the engine's resume reports the mismatched canvas
    mask = torch.as_tensor(np.array(recorded, dtype=np.bool_))
    tokens = torch.as_tensor(np.asarray(record.tokens, dtype=np.int64))
    if given is None:
        return Given.of(tokens.to(canvas.device), mask.to(canvas.device), canvas.mask_id)
    same = torch.equal(given.mask.cpu(), mask) and torch.equal(given.tokens.cpu()[mask], tokens[mask])
    if not same:
        raise ValueError("Cannot resume: the given tokens differ from the record's.")
    return given
