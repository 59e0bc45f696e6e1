"""Pure span functions: which units to mask, and how confident each span is.

Two arrangements (paper section 3.2; audiocraft ``_generate_stage``):

- ``nonoverlap``: the sequence is cut into chunks of ``span_len`` frames (T is trimmed down to a
  multiple of ``span_len``); a unit is a chunk, and the units with the highest scores are masked.
- ``stride1``: a unit is a frame; masked frames are built from the least probable overlapping
  spans of ``span_len`` frames, their count found by binary search.

Scores are "how much do we want to re-mask this unit": ``1 - max p`` over the span (``max``) or
``sum -log p`` (``prod``); units that were not masked at a step get :data:`NEVER_REMASK`, so the
masked set only shrinks. Shapes keep audiocraft's singleton codebook axis: ``[B, 1, N]``.

Besides MAGNeT's order (by the confidence of the sampled tokens), units may be ranked by other
*unmasking orders* (the orders of text diffusion demos, LLaDA, Dream): :func:`random_scores`
(a uniform draw per unit), :func:`margin_scores` (top-1 minus top-2 probability of the predicted
distribution: a small margin is re-masked first) and :func:`entropy_scores` (a high entropy is
re-masked first). Their scores follow the same convention (higher = re-mask first, NEVER_REMASK
on units not predicted at the step); a chunk's score comes from its frames the way ``span_scoring``
says for confidences: ``max`` = the chunk is as sure as its surest frame, ``prod`` = the sum over
its frames.

*Revision* (ReMDM-like, :func:`revision_mask`) re-masks, for the next step, the least sure share of
the units fixed at an earlier step of the stage; :func:`fixed_scores_after` keeps the scores those
units had when they were fixed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NONOVERLAP = "nonoverlap"
STRIDE1 = "stride1"
SPAN_ARRANGEMENTS = (NONOVERLAP, STRIDE1)
SCORING_MAX = "max"
SCORING_PROD = "prod"
SPAN_SCORINGS = (SCORING_MAX, SCORING_PROD)
#: score of a unit that must never be masked again (given, or fixed at an earlier step)
NEVER_REMASK = -1e4
ORDER_CONFIDENCE = "confidence"
ORDER_RANDOM = "random"
ORDER_MARGIN = "margin"
ORDER_ENTROPY = "entropy"
#: how the units a step predicted are ranked for re-masking; "confidence" is MAGNeT's (audiocraft's)
UNMASKING_ORDERS = (ORDER_CONFIDENCE, ORDER_RANDOM, ORDER_MARGIN, ORDER_ENTROPY)
#: the largest share of a stage's fixed units that one step may re-mask for revision
MAX_REVISION_SHARE = 0.5


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


# ---------------------------------------------------------------------------------------------
# other unmasking orders


def frame_margins(probs: torch.Tensor) -> torch.Tensor:
    """``[..., card]`` probabilities -> ``[...]``: top-1 minus top-2 probability (0 = a tie, 1 = sure)."""
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def frame_entropies(probs: torch.Tensor) -> torch.Tensor:
    """``[..., card]`` probabilities -> ``[...]``: entropy in nats (``0 log 0 = 0``; 0 = sure)."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def _from_frames(
    uncertainty: torch.Tensor, frame_mask: torch.Tensor, arrangement: str, span_len: int, scoring: str
) -> torch.Tensor:
    """``[B, 1, T]`` per-frame uncertainty (higher = less sure) -> ``[B, 1, N]`` unit scores.

    A chunk takes the least uncertainty of its frames (``max``: as sure as its surest frame, like
    audiocraft's ``1 - max p``) or their sum (``prod``, like its ``sum -log p``); a frame unit keeps
    its own. Units not in ``frame_mask`` ``[B, 1, T]`` get NEVER_REMASK, as in :func:`span_scores`.
    """
    B = uncertainty.shape[0]
    scores = uncertainty.float()
    if uses_chunks(arrangement, span_len):
        per_span = scores.reshape((B, 1, -1, span_len))
        if scoring == SCORING_MAX:
            scores = per_span.min(dim=-1).values
        elif scoring == SCORING_PROD:
            scores = per_span.sum(dim=-1)
        else:
            raise ValueError(f"Unknown span scoring '{scoring}'.")
    return scores.masked_fill(~unit_mask(frame_mask, arrangement, span_len), NEVER_REMASK)


def margin_scores(
    probs: torch.Tensor, frame_mask: torch.Tensor, arrangement: str, span_len: int, scoring: str
) -> torch.Tensor:
    """Unit scores by margin: ``1 - (p_top1 - p_top2)``, so the smallest margin is re-masked first.

    Args:
        probs: ``[B, 1, T, card]`` the predicted distribution of every frame.
        frame_mask: ``[B, 1, T]`` frames that were masked at this step.
    Returns:
        ``[B, 1, N]`` float32 scores in [0, 1]; NEVER_REMASK on units not masked at this step.
    """
    return _from_frames(1 - frame_margins(probs), frame_mask, arrangement, span_len, scoring)


def entropy_scores(
    probs: torch.Tensor, frame_mask: torch.Tensor, arrangement: str, span_len: int, scoring: str
) -> torch.Tensor:
    """Unit scores by entropy (nats), so the most uncertain distribution is re-masked first.

    Args and returns as :func:`margin_scores` (scores in [0, log card], NEVER_REMASK on units not
    masked at this step).
    """
    return _from_frames(frame_entropies(probs), frame_mask, arrangement, span_len, scoring)


def random_scores(
    frame_mask: torch.Tensor, arrangement: str, span_len: int, generator: torch.Generator
) -> torch.Tensor:
    """Unit scores in a random order: one uniform draw in [0, 1) per unit from ``generator`` (a CPU
    generator), whatever the predictions; ``span_scoring`` plays no part.

    Args:
        frame_mask: ``[B, 1, T]`` frames that were masked at this step.
    Returns:
        ``[B, 1, N]`` float32 scores; NEVER_REMASK on units not masked at this step.
    """
    units = unit_mask(frame_mask, arrangement, span_len)
    drawn = torch.rand(units.shape, generator=generator, dtype=torch.float32).to(units.device)
    return drawn.masked_fill(~units, NEVER_REMASK)


# ---------------------------------------------------------------------------------------------
# revision


def fixed_scores_after(
    fixed: torch.Tensor, scores: torch.Tensor, predicted: torch.Tensor, next_units: torch.Tensor
) -> torch.Tensor:
    """The scores of the units fixed so far in a stage, after a step.

    Args:
        fixed: ``[B, 1, N]`` scores of the units fixed before the step (NEVER_REMASK elsewhere).
        scores: ``[B, 1, N]`` the step's unit scores.
        predicted: ``[B, 1, N]`` bool, units the step predicted (masked during it).
        next_units: ``[B, 1, N]`` bool, units the next step masks.
    Returns:
        ``[B, 1, N]``: a unit the step predicted and kept takes its score, a unit the next step
        masks NEVER_REMASK (it is not fixed), any other unit keeps its score in ``fixed``.
    """
    kept = torch.where(predicted, scores, fixed)
    return kept.masked_fill(next_units, NEVER_REMASK)


def revision_count(n_fixed: int, share: float) -> int:
    """Units a step revises out of ``n_fixed`` fixed ones: ``floor(share * n_fixed)``."""
    return math.floor(share * n_fixed) if share > 0 else 0


def _revised_spans(row: np.ndarray, count: int, span_len: int) -> np.ndarray:
    """``stride1`` revision of one item: ``[T]`` bool frames of the least sure windows of
    ``span_len`` fixed frames (scores ``row`` ``[T]``), a window overlapping chosen ones allowed,
    as long as the frames stay at most ``count``."""
    chosen = np.zeros(row.shape, dtype=bool)
    fixed = row > NEVER_REMASK
    if count < span_len or fixed.sum() < span_len:
        return chosen
    windows = np.lib.stride_tricks.sliding_window_view
    starts = np.flatnonzero(windows(fixed, span_len).all(axis=-1))
    sums = windows(row.astype(np.float64), span_len).sum(axis=-1)[starts]
    total = 0
    for start in starts[np.argsort(-sums, kind="stable")]:
        added = int((~chosen[start : start + span_len]).sum())
        if total + added <= count:
            chosen[start : start + span_len] = True
            total += added
        if total == count:
            break
    return chosen


def revision_mask(fixed: torch.Tensor, share: float, arrangement: str, span_len: int) -> torch.Tensor:
    """Frames to re-mask for revision: the least sure units among those fixed earlier in the stage.

    Args:
        fixed: ``[B, 1, N]`` scores of the units fixed at an earlier step of the stage (higher =
            less sure), NEVER_REMASK on the others (not fixed yet, given, or chosen to be masked).
        share: in [0, MAX_REVISION_SHARE]: each item revises ``floor(share * its fixed units)``.
    Returns:
        ``[B, 1, T]`` bool frame mask (T = N * span_len for chunks, N otherwise); all False at
        share 0. For ``stride1`` with spans the units are frames, revised by whole windows of
        ``span_len`` fixed frames (the least sure first, by the sum of their scores), so an item
        revises at most ``floor(share * fixed frames)`` frames, and none when that is below
        ``span_len``.
    """
    fixed = fixed.cpu()
    B = fixed.shape[0]
    units = torch.zeros(fixed.shape, dtype=torch.bool)
    for i in range(B):
        count = revision_count(int((fixed[i] > NEVER_REMASK).sum()), share)
        if count == 0:
            continue
        if arrangement == STRIDE1 and span_len > 1:
            units[i, 0] = torch.from_numpy(_revised_spans(fixed[i, 0].numpy(), count, span_len))
        else:
            units[i, 0, fixed[i, 0].topk(count).indices] = True
    if uses_chunks(arrangement, span_len):
        return torch.repeat_interleave(units, span_len, dim=-1)
    return units
