"""Token sampling from a distribution over the codebook, with an explicit random generator.

Draw for draw the same as audiocraft's ``utils.sample_top_p`` / ``sample_top_k`` /
``multinomial`` fed from the same generator state: exactly one ``torch.multinomial`` call over
``[B * T, card]`` per step. Our own generator (not the global one) keeps concurrent users of
one server from disturbing each other's streams.
"""

from __future__ import annotations

import torch


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flat = probs.reshape(-1, probs.shape[-1])
    drawn = torch.multinomial(flat, num_samples=1, replacement=False, generator=generator)
    return drawn.reshape(*probs.shape[:-1], 1)


def sample(
    probs: torch.Tensor,
    *,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per position.

    Args:
        probs: ``[..., card]`` probabilities.
    Returns:
        tokens ``[..., 1]`` and the distribution whose probabilities score the samples
        ``[..., card]``: ``probs`` itself for top-p and plain sampling, the truncated and
        renormalised one for top-k (audiocraft truncates ``probs`` in place there, so its span
        scores see the truncated distribution; we keep that behaviour without mutating the input).
    """
    if top_p > 0.0:
        ordered, order = torch.sort(probs, dim=-1, descending=True)
        cumulative = torch.cumsum(ordered, dim=-1)
        ordered = ordered * (~(cumulative - ordered > top_p)).float()
        ordered.div_(ordered.sum(dim=-1, keepdim=True))
        return torch.gather(order, -1, _multinomial(ordered, generator)), probs
    if top_k > 0:
        kth = torch.topk(probs, top_k, dim=-1)[0][..., [-1]]
        truncated = probs * (probs >= kth).float()
        truncated.div_(truncated.sum(dim=-1, keepdim=True))
        return _multinomial(truncated, generator), truncated
    return _multinomial(probs, generator), probs
