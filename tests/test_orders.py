"""Unmasking orders (random, margin, entropy) and revision: the pure span functions on hand-made
inputs, then decodings of the tiny model (the default stays audiocraft's: see also test_parity)."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch

from magnet_demo import spans
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine

pytestmark = pytest.mark.usefixtures("one_thread")

NEVER = spans.NEVER_REMASK
STEPS = (4, 3, 2, 2)
CONFIG = DecodingConfig(decoding_steps=STEPS, duration=2.0)  # 99 frames, 33 chunks
PROMPTS = ["calm strings", "loud brass"]
TIMING_FIELDS = ("step_seconds", "elapsed")

# four frames' distributions over 4 codes, all dyadic (exact in float32):
# margins 0.25, 0, 1, 0.625; entropies (nats) 1.2130, log 4, 0, 0.7356
PROBS = torch.tensor(
    [
        [0.5, 0.25, 0.125, 0.125],
        [0.25, 0.25, 0.25, 0.25],
        [1.0, 0.0, 0.0, 0.0],
        [0.75, 0.125, 0.125, 0.0],
    ]
)


def _frames(*rows: int) -> torch.Tensor:
    """``[1, 1, T, 4]`` probabilities: frame t has the distribution ``PROBS[rows[t]]``."""
    return PROBS[list(rows)][None, None]


def _all(T: int) -> torch.Tensor:
    return torch.ones((1, 1, T), dtype=torch.bool)


# ---------------------------------------------------------------- pure functions


def test_margins_and_entropies_of_hand_made_distributions():
    assert spans.frame_margins(PROBS).tolist() == [0.25, 0.0, 1.0, 0.625]
    entropies = spans.frame_entropies(PROBS)
    expected = [
        1.75 * math.log(2),
        math.log(4),
        0.0,
        -0.75 * math.log(0.75) + 0.25 * math.log(8),
    ]
    torch.testing.assert_close(entropies, torch.tensor(expected), rtol=0, atol=1e-6)
    assert entropies[2].item() == 0.0  # 0 log 0 = 0, no NaN


def test_margin_ranks_the_smallest_margin_first():
    # frames as units: the tie (margin 0) first, the sure frame last
    scores = spans.margin_scores(_frames(0, 1, 2, 3), _all(4), spans.STRIDE1, 1, spans.SCORING_MAX)
    assert scores.shape == (1, 1, 4)
    assert scores[0, 0].tolist() == [0.75, 1.0, 0.0, 0.375]
    assert torch.argsort(scores[0, 0], descending=True).tolist() == [1, 0, 3, 2]
    # chunks of 2: 'max' = as sure as the surest frame, 'prod' = the sum over the frames
    probs = _frames(1, 3, 0, 1)
    assert spans.margin_scores(probs, _all(4), spans.NONOVERLAP, 2, "max")[0, 0].tolist() == [0.375, 0.75]
    assert spans.margin_scores(probs, _all(4), spans.NONOVERLAP, 2, "prod")[0, 0].tolist() == [1.375, 1.75]


def test_entropy_ranks_the_flattest_distribution_first():
    scores = spans.entropy_scores(_frames(0, 1, 2, 3), _all(4), spans.STRIDE1, 1, spans.SCORING_MAX)
    assert torch.argsort(scores[0, 0], descending=True).tolist() == [1, 0, 3, 2]
    assert scores[0, 0, 1].item() == pytest.approx(math.log(4)) and scores[0, 0, 2].item() == 0.0
    # chunks of 2: 'max' takes the least entropy of the chunk's frames, 'prod' their sum
    probs = _frames(1, 2, 3, 3)
    by_max = spans.entropy_scores(probs, _all(4), spans.NONOVERLAP, 2, "max")[0, 0]
    by_sum = spans.entropy_scores(probs, _all(4), spans.NONOVERLAP, 2, "prod")[0, 0]
    h3 = -0.75 * math.log(0.75) + 0.25 * math.log(8)
    assert by_max.tolist() == [0.0, pytest.approx(h3)]
    assert by_sum.tolist() == [pytest.approx(math.log(4)), pytest.approx(2 * h3)]


def test_orders_never_remask_units_not_predicted_at_the_step():
    mask = torch.tensor([[[True, True, False, False, True, True]]])
    probs = _frames(1, 1, 1, 1, 0, 0)
    for scores in (
        spans.margin_scores(probs, mask, spans.NONOVERLAP, 2, "max"),
        spans.entropy_scores(probs, mask, spans.NONOVERLAP, 2, "prod"),
        spans.random_scores(mask, spans.NONOVERLAP, 2, torch.Generator().manual_seed(0)),
    ):
        assert scores.shape == (1, 1, 3) and scores.dtype == torch.float32
        assert scores[0, 0, 1].item() == NEVER and (scores[0, 0, [0, 2]] > NEVER).all()
    with pytest.raises(ValueError, match="span scoring"):
        spans.margin_scores(probs, mask, spans.NONOVERLAP, 2, "mean")


def test_random_scores_are_the_generators_uniform_draws():
    mask = torch.tensor([[[True] * 6], [[True, True, True, False, False, False]]])
    scores = spans.random_scores(mask, spans.NONOVERLAP, 3, torch.Generator().manual_seed(42))
    drawn = torch.rand((2, 1, 2), generator=torch.Generator().manual_seed(42))
    assert torch.equal(scores[0], drawn[0]) and scores[1, 0, 0] == drawn[1, 0, 0]
    assert scores[1, 0, 1].item() == NEVER
    again = spans.random_scores(mask, spans.NONOVERLAP, 3, torch.Generator().manual_seed(42))
    other = spans.random_scores(mask, spans.NONOVERLAP, 3, torch.Generator().manual_seed(43))
    assert torch.equal(scores, again) and not torch.equal(scores, other)
    # frames as units (stride1): one draw per frame
    assert spans.random_scores(mask, spans.STRIDE1, 3, torch.Generator()).shape == (2, 1, 6)


def test_fixed_scores_after_a_step():
    fixed = torch.tensor([[[0.3, NEVER, NEVER, NEVER, 0.9]]])
    scores = torch.tensor([[[NEVER, 0.5, 0.7, 0.2, NEVER]]])
    predicted = torch.tensor([[[False, True, True, True, False]]])
    next_units = torch.tensor([[[False, False, True, False, True]]])  # unit 4 is revised
    after = spans.fixed_scores_after(fixed, scores, predicted, next_units)
    assert after[0, 0].tolist() == [pytest.approx(0.3), 0.5, NEVER, pytest.approx(0.2), NEVER]


def test_revision_mask_picks_the_least_sure_share_of_fixed_units():
    # 5 fixed chunks of 2 frames (unit 2 is not fixed): share 0.5 revises floor(2.5) = 2, the least sure
    fixed = torch.tensor([[[0.1, 0.8, NEVER, 0.4, 0.9, 0.2]]])
    mask = spans.revision_mask(fixed, 0.5, spans.NONOVERLAP, 2)
    assert mask.shape == (1, 1, 12)
    assert mask[0, 0].tolist() == [False] * 2 + [True] * 2 + [False] * 4 + [True] * 2 + [False] * 2
    assert spans.revision_mask(fixed, 0.0, spans.NONOVERLAP, 2).sum() == 0
    assert spans.revision_mask(fixed, 0.19, spans.NONOVERLAP, 2).sum() == 0  # floor(0.95) = 0
    assert [spans.revision_count(5, s) for s in (0.0, 0.2, 0.3, 0.5)] == [0, 1, 1, 2]
    # per item: an item with nothing fixed revises nothing
    two = torch.cat([fixed, torch.full_like(fixed, NEVER)])
    assert spans.revision_mask(two, 0.5, spans.NONOVERLAP, 2)[1].sum() == 0


def test_stride1_revision_takes_whole_windows_of_fixed_frames():
    # frames 0-7 fixed (8 frames, share 0.5: at most 4), frame 8 masked; windows of 3
    fixed = torch.tensor([[[0.1, 0.1, 0.1, 0.9, 0.8, 0.7, 0.2, 0.2, NEVER]]])
    mask = spans.revision_mask(fixed, 0.5, spans.STRIDE1, 3)[0, 0]
    # window sums from frame 0: 0.3, 1.1, 1.8, 2.4, 1.7, 1.1 (6-8 holds a masked frame): 3-5 first,
    # then 2-4 adds frame 2 (4 frames); no other window fits
    assert mask.tolist() == [False] * 2 + [True] * 4 + [False] * 3
    # under one window's frames: nothing
    assert spans.revision_mask(fixed, 0.3, spans.STRIDE1, 3).sum() == 0  # floor(2.4) = 2 < 3
    assert (
        spans.revision_mask(fixed, 0.4, spans.STRIDE1, 3)[0, 0].tolist()
        == [False] * 3 + [True] * 3 + [False] * 3
    )


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            dict(unmasking_order="topk"),
            "unmasking_order 'topk': choose one of confidence, random, margin, entropy",
        ),
        (dict(revision_share=0.6), "revision_share must be <= 0.5"),
        (dict(revision_share=-0.1), "revision_share must be >= 0.0"),
        (dict(revision_share=float("nan")), "revision_share must be a finite number"),
    ],
)
def test_bad_order_or_share_raises_a_readable_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        DecodingConfig(**changes)


def test_defaults_are_magnets():
    config = DecodingConfig()
    assert config.unmasking_order == "confidence" and config.revision_share == 0.0
    assert spans.UNMASKING_ORDERS[0] == "confidence"


# ---------------------------------------------------------------- decoding


def _run(engine, config=CONFIG, seed=5, **kwargs):
    return engine.decode(PROMPTS, config, seed=seed, with_audio=False, **kwargs)


def _assert_records_equal(a, b):
    assert len(a.records) == len(b.records)
    for x, y in zip(a.records, b.records, strict=True):
        for field in dataclasses.fields(x):
            if field.name in TIMING_FIELDS:
                continue
            u, v = getattr(x, field.name), getattr(y, field.name)
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=True), field.name
            else:
                assert u == v, field.name


@pytest.fixture(scope="module")
def default(engine):
    return _run(engine)


def test_explicit_defaults_are_bit_for_bit_the_default_decoding(engine, default):
    explicit = _run(engine, CONFIG.replace(unmasking_order="confidence", revision_share=0.0))
    _assert_records_equal(explicit, default)
    for record in default.records:
        assert record.revised.shape == record.mask_before.shape and not record.revised.any()
        assert record.fixed_scores is None


@pytest.mark.parametrize("order", ["random", "margin", "entropy"])
@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_each_order_decodes_and_differs_from_the_default(engine, order, arrangement):
    base = CONFIG.replace(span_arrangement=arrangement)
    plain = _run(engine, base)
    result = _run(engine, base.replace(unmasking_order=order))
    assert result.tokens.shape == plain.tokens.shape
    assert (result.tokens != engine.lm.special_token_id).all()
    assert not torch.equal(result.tokens, plain.tokens)
    for mine, theirs in zip(result.records, plain.records, strict=True):
        # the sampler draws the same numbers (the order draws none of them); the schedule is the
        # same (stride1's binary search over spans only comes near it)
        assert np.array_equal(mine.rng_state, theirs.rng_state)
        assert mine.num_masked == theirs.num_masked or arrangement == "stride1"
        assert not mine.revised.any()
        if arrangement == "nonoverlap":  # without revision the masked set only shrinks
            assert not (mine.mask_after & ~mine.mask_before).any()


def test_the_random_order_is_reproducible_and_resumes(engine):
    config = CONFIG.replace(unmasking_order="random")
    first, again, other = _run(engine, config), _run(engine, config), _run(engine, config, seed=6)
    _assert_records_equal(first, again)
    assert not torch.equal(first.tokens, other.tokens)
    resumed = _run(engine, config, seed=0, resume_from=first.records[1])
    assert torch.equal(resumed.tokens, first.tokens)
    # greedy draws nothing from the sampler: the order still changes from step to step
    greedy = _run(engine, config.replace(use_sampling=False))
    first_step, second_step = (r.scores[:, 0] for r in greedy.records[:2])
    both = second_step > NEVER  # units predicted at both steps
    assert both.sum() > 10 and not np.array_equal(first_step[both], second_step[both])


class _FlatRescorer:
    calls = 0

    def token_probs(self, tokens, prompts):
        self.calls += 1
        return torch.full(tokens.shape, 0.5)


def test_only_the_confidence_order_is_rescored(tiny_model):
    rescorer = _FlatRescorer()
    engine = Engine(tiny_model, rescorer)
    result = _run(engine, CONFIG.replace(unmasking_order="margin", rescore_weight=0.5))
    assert rescorer.calls == 0
    assert all(r.rescore_weight == 0.0 and r.rescorer_confidence is None for r in result.records)
    _run(engine, CONFIG.replace(rescore_weight=0.5))
    assert rescorer.calls > 0


# ---------------------------------------------------------------- revision


def _chunks(frames: np.ndarray, how: str = "any") -> np.ndarray:
    """``[B, T]`` frame mask -> ``[B, N]`` chunks of 3 frames: any (or all) of its frames."""
    per_chunk = frames.reshape(frames.shape[0], -1, 3)
    return per_chunk.any(axis=-1) if how == "any" else per_chunk.all(axis=-1)


def _check_revision(result, share: float, given_frames: np.ndarray, exact: bool):
    """Revised frames: fixed at an earlier step of the stage, re-masked and predicted again, never
    given, at most ``share`` of the units fixed before the step (exactly its floor for chunks)."""
    records = result.records
    for i, record in enumerate(records):
        revised = record.revised
        assert not (revised & given_frames[None]).any()
        assert not (revised & record.mask_before).any() and not (revised & ~record.mask_after).any()
        if record.step == 0 or record.is_stage_end:
            assert not revised.any()
            continue
        if not exact:  # stride1: frames are units, revised by whole windows
            fixed_before = ~record.mask_before & ~given_frames[None]
            assert (revised.sum(-1) <= np.floor(share * fixed_before.sum(-1))).all()
        else:
            # a chunk only partly given is decoded like the others (its given frames put back)
            wholly_given = _chunks(given_frames[None], "all")
            fixed_before = ~_chunks(record.mask_before) & ~wholly_given
            expected = [spans.revision_count(int(n), share) for n in fixed_before.sum(-1)]
            assert _chunks(revised).sum(-1).tolist() == expected
        # the next step predicts the revised frames again
        assert (records[i + 1].mask_before[revised]).all()


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_revision_remasks_a_bounded_share_of_fixed_units(engine, arrangement):
    share = 0.5
    config = CONFIG.replace(span_arrangement=arrangement, revision_share=share)
    result = _run(engine, config)
    T = result.tokens.shape[-1]
    _check_revision(result, share, np.zeros(T, dtype=bool), exact=arrangement == "nonoverlap")
    assert sum(int(r.revised.sum()) for r in result.records) > 0
    assert (result.tokens != engine.lm.special_token_id).all()
    assert not torch.equal(result.tokens, _run(engine, config.replace(revision_share=0.0)).tokens)
    # resuming (the record holds the fixed units' scores) repeats the run
    resumed = _run(engine, config, resume_from=result.records[1])
    assert torch.equal(resumed.tokens, result.tokens)


def _given_run(engine, config, first: int, last: int, seed: int = 5):
    """A run with every codebook's frames ``first:last`` given; returns it, its given frames [T]
    and the given tokens there [K, G]."""
    T = engine.frames(config)
    mask = torch.zeros((1, 4, T), dtype=torch.bool)
    mask[..., first:last] = True
    tokens = torch.randint(0, engine.lm.card, (1, 4, T), generator=torch.Generator().manual_seed(3))
    result = _run(engine, config, seed=seed, given_tokens=tokens, given_mask=mask)
    given = mask[0, 0].numpy()
    return result, given, tokens[0][:, given].numpy()


def _check_given_and_earlier_stages(result, given: np.ndarray, given_tokens: np.ndarray):
    stage_ends = {}
    for record in result.records:
        assert (record.tokens[:, :, given] == given_tokens).all()
        for stage, end in stage_ends.items():
            assert np.array_equal(record.tokens[:, stage], end)  # an earlier stage never changes
        if record.is_stage_end:
            stage_ends[record.stage] = record.tokens[:, record.stage].copy()


def test_revision_never_touches_given_tokens_or_earlier_stages(engine):
    share = 0.4
    # frames 10-11 and 39 belong to chunks only partly given
    result, given, given_tokens = _given_run(engine, CONFIG.replace(revision_share=share), 10, 40)
    _check_revision(result, share, given, exact=True)
    assert sum(int(r.revised.sum()) for r in result.records) > 0
    _check_given_and_earlier_stages(result, given, given_tokens)


def test_a_partly_given_chunk_is_revised_without_its_given_frames(engine):
    # 4 chunks to decode, the last (frames 9-11) only partly given: revised, it shows frame 9 only
    share = 0.5
    config = CONFIG.replace(decoding_steps=(6, 3, 2, 2), revision_share=share)
    for seed in range(8):
        result, given, given_tokens = _given_run(engine, config, 10, 99, seed)
        _check_revision(result, share, given, exact=True)
        _check_given_and_earlier_stages(result, given, given_tokens)
        if any(r.revised[:, 9].any() for r in result.records):
            break
    else:
        pytest.fail("no seed revised the partly given chunk")


def test_records_pickled_before_revised_existed_read_all_false(default):
    record = default.records[3]
    state = dict(record.__dict__)
    del state["revised"], state["fixed_scores"]
    old = type(record).__new__(type(record))
    old.__setstate__(state)  # what unpickling an old record does
    assert old.revised.shape == record.mask_before.shape and not old.revised.any()
    assert old.fixed_scores is None
    loaded = pickle.loads(pickle.dumps(record))
    assert np.array_equal(loaded.revised, record.revised) and loaded.nbytes == record.nbytes
