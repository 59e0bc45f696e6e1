"""Pure schedule, span and sampling functions, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from magnet_demo import schedules, spans
from magnet_demo.sampling import sample
from magnet_demo.schedules import CFGSchedule


def test_mask_rate_is_float32_cosine():
    assert schedules.mask_rate(0, 10).item() == 1.0
    assert schedules.mask_rate(9, 10).dtype == torch.float32
    assert schedules.mask_rate(5, 11).item() == pytest.approx(math.cos(0.5 * math.pi / 2), abs=1e-7)
    # cos(pi/2) in float32 is -4.4e-8: at least one unit is still masked at the last step
    assert schedules.num_masked(schedules.mask_rate(9, 10), 166) == 1
    assert schedules.num_masked(schedules.mask_rate(0, 10), 166) == 166
    assert schedules.num_masked(schedules.mask_rate(1, 2), 166) == 1
    assert schedules.num_masked(schedules.mask_rate(1, 3), 166) == 117  # cos(pi/4) * 166 = 117.38


def test_temperature_anneals_linearly():
    assert schedules.temperature_at(3.0, 0, 10) == 2.7
    assert schedules.temperature_at(3.0, 9, 10) == 0.0
    assert schedules.temperature_at(3.0, 9, 10, anneal=False) == 3.0


def test_cfg_schedules():
    linear = CFGSchedule()
    assert linear.coef(1.0) == 10.0 and linear.coef(0.0) == 1.0 and linear.coef(0.5) == 5.5
    assert CFGSchedule("constant", 4.0, 1.0).coef(0.3) == 4.0
    curve = CFGSchedule("curve", points=(8.0, 2.0, 6.0))
    assert (
        curve.coef(1.0) == 8.0
        and curve.coef(0.5) == 2.0
        and curve.coef(0.0) == 6.0
        and curve.coef(0.75) == 5.0
    )
    for bad in (
        dict(kind="curve", points=(1.0,)),
        dict(min_coef=-1.0),
        dict(kind="curve", points=(1.0, float("inf"))),
    ):
        with pytest.raises(ValueError):
            CFGSchedule(**bad)


def test_nonoverlap_masks_the_highest_scoring_chunks():
    scores = torch.tensor([[[0.1, 0.9, spans.NEVER_REMASK, 0.5]]])
    mask = spans.select_mask(scores, 2, "nonoverlap", 3)
    assert mask.shape == (1, 1, 12)
    assert mask[0, 0].tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3


def test_span_scores_max_and_prod():
    conf = torch.tensor([[[0.5, 0.25, 0.125, 1.0, 1.0, 1.0]]])
    masked = torch.tensor([[[True] * 3 + [False] * 3]])
    assert spans.span_scores(conf, masked, "nonoverlap", 3, "max")[0, 0].tolist() == [0.5, spans.NEVER_REMASK]
    prod = spans.span_scores(conf, masked, "nonoverlap", 3, "prod")[0, 0]
    assert prod[0].item() == pytest.approx(6 * math.log(2), rel=1e-6) and prod[1].item() == spans.NEVER_REMASK
    frames = spans.span_scores(conf, masked, "stride1", 3, "max")[0, 0]
    assert frames[1].item() == pytest.approx(math.log(4), rel=1e-6) and frames[4].item() == spans.NEVER_REMASK


def test_least_probable_spans_small_case():
    # per-frame -log p; the best spans start at 4 (sum 9), then 3 (8), then 5 (7)
    scores = torch.tensor([[[0.0, 0.0, 0.0, 1.0, 3.0, 4.0, 2.0, 0.0, 0.0, 0.0]]])
    mask = spans.least_probable_spans(scores, 4, 3)
    # u in [1, 2]: mid = 2 -> spans at 4 and 3 cover frames 3..6 = 4 frames
    assert mask[0, 0].nonzero().flatten().tolist() == [3, 4, 5, 6]
    assert spans.least_probable_spans(scores, 3, 3)[0, 0].nonzero().flatten().tolist() == [4, 5, 6]


def test_trim_and_units():
    assert spans.decoded_length(500, "nonoverlap", 3) == 498
    assert spans.decoded_length(500, "stride1", 3) == 500
    assert spans.unit_count(498, "nonoverlap", 3) == 166
    prefix = torch.zeros((1, 1, 498), dtype=torch.bool)
    prefix[..., :50] = True
    assert int(spans.given_units(prefix, "nonoverlap", 3).sum()) == 16


def test_sampling_matches_audiocraft_draw_for_draw():
    from audiocraft.utils import utils

    probs = torch.softmax(torch.randn(2, 1, 30, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    for kwargs, reference in (
        (dict(top_k=0, top_p=0.8), lambda p: utils.sample_top_p(p, 0.8)),
        (dict(top_k=4, top_p=0.0), lambda p: utils.sample_top_k(p, 4)),
        (dict(top_k=0, top_p=0.0), lambda p: utils.multinomial(p, 1)),
    ):
        ours, scoring = sample(probs.clone(), generator=torch.Generator().manual_seed(5), **kwargs)
        torch.manual_seed(5)
        theirs_probs = probs.clone()
        theirs = reference(theirs_probs)
        assert torch.equal(ours, theirs)
        assert torch.equal(scoring, theirs_probs)  # top-k scores see the truncated distribution
