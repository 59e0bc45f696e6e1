"""Pure span functions: which units to mask, and how confident each span is.

Two arrangements (paper section 3.2; audiocraft ``_generate_stage``):

- ``nonoverlap``: the sequence is cut into chunks of ``span_len`` frames (T is trimmed down to a
  multiple of ``span_len``); a unit is a chunk, and the units with the highest scores are masked.
- ``stride1``: a unit is a frame; masked frames are built from the least probable overlapping
  spans of ``span_len`` frames, their count found by binary search.

Scores are "how much do we want to re-mask this unit": ``1 - max p`` over the span (``max``) or
``sum -log p`` (``prod``); units that were not masked at a step get :data:`NEVER_REMASK`, so the
masked set only shrinks. Shapes keep audiocraft's singleton codebook axis: ``[B, 1, N]``.
"""

from __future__ import annotations

import torch

NONOVERLAP = "nonoverlap"
STRIDE1 = "stride1"
SPAN_ARRANGEMENTS = (NONOVERLAP, STRIDE1)
SCORING_MAX = "max"
SCORING_PROD = "prod"
SPAN_SCORINGS = (SCORING_MAX, SCORING_PROD)
#: score of a unit that must never be masked again (given, or fixed at an earlier step)
NEVER_REMASK = -1e4


def uses_chunks(arrangement: str, span_len: int) -> bool:
    """True when the unit of masking is a chunk of ``span_len`` frames."""
    return span_len > 1 and arrangement == NONOVERLAP


def decoded_length(T: int, arrangement: str, span_len: int) -> int:
    """Number of frames actually decoded: ``nonoverlap`` trims T to a multiple of ``span_len``."""
    return span_len * (T // span_len) if uses_chunks(arrangement, span_len) else T


def unit_count(T: int, arrangement: str, span_len: int) -> int:
    """Number of masking units over a (trimmed) sequence of ``T`` frames."""
    return T // span_len if uses_chunks(arrangement, span_len) else T


def given_units(given: torch.Tensor, arrangement: str, span_len: int) -> torch.Tensor:
    """``[B, 1, T]`` bool given frames -> ``[B, 1, N]`` bool: units whose every frame is given.

    A chunk that is only partly given is *not* a given unit: it is decoded like any other, and its
    given frames are put back after every masking (audiocraft's rule for a prompt whose length is
    not a multiple of the span). A prefix of ``P`` frames gives ``P // span_len`` given chunks.
    """
    if uses_chunks(arrangement, span_len):
        B, _, T = given.shape
        return given.reshape(B, 1, T // span_len, span_len).all(dim=-1)
    return given.clone()


def given_scores(units: torch.Tensor) -> torch.Tensor:
    """Scores at the start of a stage: 0, and NEVER_REMASK on given units. ``[B, 1, N]`` float32.

    ``units`` is the ``[B, 1, N]`` bool of :func:`given_units`.
    """
    return torch.zeros(units.shape, dtype=torch.float32).masked_fill(units.cpu(), NEVER_REMASK)


def _spans_mask(starts: torch.Tensor, T: int, span_len: int) -> torch.Tensor:
    """``[1, 1, T]`` bool: True on every frame covered by a span starting at ``starts``."""
    mask = torch.zeros((1, 1, T), dtype=torch.bool)
    mask[:, :, starts] = True
    shifted = mask.clone()
    for _ in range(span_len - 1):
        shifted = torch.cat((torch.zeros((1, 1, 1), dtype=torch.bool), shifted[:, :, :-1]), dim=-1)
        mask = mask | shifted
    return mask


def least_probable_spans(scores: torch.Tensor, target: int, span_len: int) -> torch.Tensor:
    """``stride1`` masking of one item: frames of the least probable overlapping spans.

    Args:
        scores: ``[1, 1, T]`` per-frame ``-log p`` (NEVER_REMASK where fixed).
        target: desired number of masked frames.
    Returns:
        ``[1, 1, T]`` bool mask whose count is as close to ``target`` as the binary search over
        the number of spans ``u`` gets.
    """
    T = scores.shape[-1]
    span_scores = scores.unfold(2, span_len, 1).sum(dim=-1)
    order = torch.argsort(span_scores[0, 0], descending=True)
    target = max(target, span_len)
    low, high = target // span_len, target - span_len + 1
    mid = round(0.5 * (low + high))
    if mid in (low, high):
        return _spans_mask(order[:mid], T, span_len)
    while True:  # low < mid < high holds on entry
        mask = _spans_mask(order[:mid], T, span_len)
        if mask.sum() > target:
            high = mid
        else:
            low = mid
        mid = round(0.5 * (low + high))
        if not low < mid < high:
            return mask


def select_mask(scores: torch.Tensor, n_masked: int, arrangement: str, span_len: int) -> torch.Tensor:
    """Frames to mask for the next step.

    Args:
        scores: ``[B, 1, N]`` unit scores (higher = mask first).
        n_masked: number of units to mask (``schedules.num_masked``).
    Returns:
        ``[B, 1, T]`` bool frame mask (T = N * span_len for chunks, N otherwise).
    """
    if arrangement == STRIDE1 and span_len > 1:
        return torch.cat(
            [least_probable_spans(scores[[i]], n_masked, span_len) for i in range(scores.shape[0])]
        )
    picked = scores.topk(n_masked, dim=-1).indices
    units = torch.zeros(scores.shape, dtype=torch.bool).scatter(2, picked, True)
    if uses_chunks(arrangement, span_len):
        return torch.repeat_interleave(units, span_len, dim=-1)
    return units


def unit_mask(frame_mask: torch.Tensor, arrangement: str, span_len: int) -> torch.Tensor:
    """``[B, 1, T]`` frame mask -> ``[B, 1, N]`` unit mask (a chunk is masked iff its frames are)."""
    if uses_chunks(arrangement, span_len):
        return frame_mask[..., ::span_len]
    return frame_mask


def span_scores(
    confidence: torch.Tensor, frame_mask: torch.Tensor, arrangement: str, span_len: int, scoring: str
) -> torch.Tensor:
    """Scores of every unit after a step.

    Args:
        confidence: ``[B, 1, T]`` probability of each frame's sampled token.
        frame_mask: ``[B, 1, T]`` frames that were masked at this step.
    Returns:
        ``[B, 1, N]`` float32 scores; units not masked at this step get NEVER_REMASK.
    """
    B = confidence.shape[0]
    if uses_chunks(arrangement, span_len):
        per_span = confidence.reshape((B, 1, -1, span_len))
        if scoring == SCORING_MAX:
            scores = 1 - torch.max(per_span, dim=-1)[0]
        elif scoring == SCORING_PROD:
            scores = torch.sum(-torch.log(confidence).reshape((B, 1, -1, span_len)), dim=-1)
        else:
            raise ValueError(f"Unknown span scoring '{scoring}'.")
    else:
        scores = -torch.log(confidence)
    return scores.masked_fill(~unit_mask(frame_mask, arrangement, span_len), NEVER_REMASK)
