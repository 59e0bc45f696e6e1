"""Autoregressive decoding as a run (:mod:`magnet_demo.autoregressive`) on tiny seeded models.

A tiny MusicGen-style AR model (:func:`magnet_demo.tiny.write_tiny_rescorer`: delay pattern
``[0, 1, 2, 3]``, 64 codes, cfg_coef 3) is exported and loaded through the real loader. Parity:
``torch.manual_seed(seed)`` then audiocraft's ``LMModel.generate`` gives the engine's tokens for
the same seed (its own generator). 1 s at 50 Hz = 50 frames, 54 sequence steps (1 + 50 + 3).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from magnet_demo.autoregressive import (
    ARConfig,
    AREngine,
    DelayPattern,
    pattern_of,
)
from magnet_demo.controls import LiveControls
from magnet_demo.models import load_lm
from magnet_demo.rescoring import load_rescorer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ("slow piano", "fast drums")
DURATION = 1.0
FRAMES = 50
#: the tiny model's delays: codebook k starts k steps after codebook 0
DELAYS = (0, 1, 2, 3)
SEQUENCE_LENGTH = FRAMES + DELAYS[-1] + 1
CARD = 64
SEED = 1234


@pytest.fixture(scope="module")
def folders(tiny_pair):
    return tiny_pair


@pytest.fixture(scope="module")
def lm(folders):
    return load_rescorer(str(folders["ar"])).lm


@pytest.fixture(scope="module")
def engine(folders):
    return AREngine.from_rescorer(load_rescorer(str(folders["ar"])))


def _audiocraft(lm, seed, prompt=None, **params):
    from audiocraft.modules.conditioners import ConditioningAttributes

    conditions = [ConditioningAttributes(text={"description": p}) for p in PROMPTS]
    torch.manual_seed(seed)
    return lm.generate(prompt, conditions, max_gen_len=FRAMES, **params)


# --------------------------------------------------------------------------------------------
# the delay pattern's index maps


@pytest.mark.parametrize("delays", [(0, 1, 2, 3), (0, 0, 0, 0), (0, 2, 3, 5)])
def test_delay_pattern_equals_audiocraft_pattern(delays):
    from audiocraft.modules.codebooks_patterns import DelayedPatternProvider

    T, special = 7, CARD
    reference = DelayedPatternProvider(len(delays), list(delays)).get_pattern(T)
    pattern = DelayPattern(delays, T)
    codes = torch.randint(0, CARD, (2, len(delays), T), generator=torch.Generator().manual_seed(0))
    sequence, _, _ = reference.build_pattern_sequence(codes, special)
    assert pattern.length == sequence.shape[-1]
    assert torch.equal(pattern.to_sequence(codes, special), sequence)
    assert torch.equal(pattern.to_codes(sequence), codes)
    reverted, _, _ = reference.revert_pattern_sequence(sequence, special)
    assert torch.equal(pattern.to_codes(sequence), reverted[..., :T])
    for prefix in range(T):
        assert pattern.first_step(prefix) == reference.get_first_step_with_timesteps(prefix)
    for step in range(pattern.length):
        coords = {(c.q, c.t) for c in reference.layout[step] if c.t < T}
        assert set(pattern.frames_at(step)) == coords


def test_unsupported_patterns_are_refused():
    from audiocraft.modules.codebooks_patterns import DelayedPatternProvider

    flattened = SimpleNamespace(pattern_provider=DelayedPatternProvider(4, flatten_first=2))
    with pytest.raises(ValueError, match="not a plain delay pattern"):
        pattern_of(flattened, 10)
    with pytest.raises(ValueError, match="sorted"):
        DelayPattern((1, 0), 10)


# --------------------------------------------------------------------------------------------
# parity with audiocraft

CASES = [
    # (name, audiocraft's generate params, ARConfig params); two prompts, CFG in every case
    ("sampling-cfg", dict(top_k=0), dict(top_k=0)),
    ("top_k", dict(top_k=10), dict(top_k=10)),
    ("top_p", dict(top_k=0, top_p=0.9), dict(top_k=0, top_p=0.9)),
    ("greedy", dict(use_sampling=False), dict(use_sampling=False)),
    ("temperature-0", dict(top_k=10, temp=0.0), dict(top_k=10, temperature=0.0)),
    ("hot-cfg-2", dict(top_k=20, temp=1.5, cfg_coef=2.0), dict(top_k=20, temperature=1.5, cfg_coef=2.0)),
    # audiocraft's two-step path ignores its cfg_coef argument: leave the model's (3)
    ("two-step-cfg", dict(top_k=10, two_step_cfg=True), dict(top_k=10, two_step_cfg=True)),
]


@pytest.mark.parametrize("name,audiocraft_params,params", CASES, ids=[c[0] for c in CASES])
def test_tokens_equal_audiocraft_generate(lm, engine, name, audiocraft_params, params):
    expected = _audiocraft(lm, SEED, **audiocraft_params)
    result = engine.decode(PROMPTS, ARConfig(duration=DURATION, **params), seed=SEED)
    assert expected.shape == result.tokens.shape == (2, 4, FRAMES)
    assert torch.equal(result.tokens, expected)
    assert len(torch.unique(expected)) > CARD // 2  # a varied clip, not a constant one
    assert not torch.equal(expected[0], expected[1])  # the prompts condition the items


def test_other_seed_or_coefficient_gives_other_tokens(lm, engine):
    base = engine.decode(PROMPTS, ARConfig(duration=DURATION, top_k=10), seed=SEED).tokens
    assert not torch.equal(base, engine.decode(PROMPTS, ARConfig(duration=DURATION, top_k=10), seed=1).tokens)
    greedy = ARConfig(duration=DURATION, use_sampling=False)
    assert not torch.equal(
        engine.decode(PROMPTS, greedy.replace(cfg_coef=1.0)).tokens,
        engine.decode(PROMPTS, greedy).tokens,
    )


def test_prefix_matches_audiocraft_and_is_kept(lm, engine):
    prompt = torch.randint(0, CARD, (2, 4, 13), generator=torch.Generator().manual_seed(7))
    expected = _audiocraft(lm, 99, prompt=prompt, top_k=10)
    config = ARConfig(duration=DURATION, top_k=10, frames_per_record=6)
    result = engine.decode(PROMPTS, config, seed=99, prompt_tokens=prompt)
    assert torch.equal(result.tokens, expected)
    assert torch.equal(result.tokens[..., :13], prompt)
    first = result.records[0]
    assert (first.step_start, first.run_start, first.prefix_frames) == (14, 14, 13)
    assert np.array_equal(first.tokens[..., :13], prompt.numpy())  # the prefix shows from the start
    for record in result.records:
        assert not record.written[..., :13].any()
    # after one step the prefix's last frames of codebooks 1..3 are still ahead of the front
    early = engine.decode(PROMPTS, config.replace(frames_per_record=1), seed=99, prompt_tokens=prompt)
    resumed = engine.decode(PROMPTS, config, resume_from=early.records[0])
    assert torch.equal(resumed.tokens, expected)


def test_global_rng_is_left_alone(engine):
    torch.manual_seed(3)
    before = torch.get_rng_state()
    engine.decode(PROMPTS, ARConfig(duration=0.2, top_k=10), seed=0)
    assert torch.equal(before, torch.get_rng_state())


# --------------------------------------------------------------------------------------------
# records


def _front(step: int, prefix: int = 0) -> np.ndarray:
    """[K, T] bool: frames written before sequence step ``step`` (codebook k: t + 1 + k < step)."""
    k, t = np.arange(len(DELAYS))[:, None], np.arange(FRAMES)[None, :]
    return (t + 1 + k < step) | (t < prefix)


def test_records_show_the_diagonal_front(engine):
    config = ARConfig(duration=DURATION, top_k=10, frames_per_record=7)
    records = engine.decode(PROMPTS, config, seed=SEED).records
    assert len(records) == math.ceil((SEQUENCE_LENGTH - 1) / 7)
    assert [r.index for r in records] == list(range(len(records)))
    assert records[0].step_start == 1 and records[-1].step_stop == SEQUENCE_LENGTH
    assert records[-1].is_last and not records[-2].is_last
    for previous, record in zip(records, records[1:], strict=False):
        assert record.step_start == previous.step_stop
    seen = np.zeros((2, 4, FRAMES), dtype=int)
    for record in records:
        assert record.tokens.dtype == np.int16 and record.probs.dtype == np.float32
        assert not record.tokens.flags.writeable
        known = record.tokens != record.mask_id
        assert np.array_equal(known, np.broadcast_to(_front(record.step_stop), known.shape))
        band = _front(record.step_stop) & ~_front(record.step_start)
        assert np.array_equal(record.written, np.broadcast_to(band, known.shape))
        assert np.isnan(record.probs[~record.written]).all()
        assert ((record.probs[record.written] > 0) & (record.probs[record.written] <= 1)).all()
        seen += record.written
    assert (seen == 1).all()  # every frame of every codebook written exactly once
    # the 3rd record runs steps 15..21: codebook 0 reaches frame 20, codebook 3 frame 17
    third = records[2]
    assert (third.step_start, third.step_stop) == (15, 22)
    assert [int(third.written[0, k].nonzero()[0].max()) for k in range(4)] == [20, 19, 18, 17]
    assert third.frames_done == 18  # frames 0..17 are written in every codebook


def test_probabilities_are_the_guided_distribution(lm, engine):
    """Greedy at temperature 1: each written token's probability is the softmax of the guided
    logits of a teacher-forced pass over the final tokens (no KV cache)."""
    from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes

    result = engine.decode(PROMPTS, ARConfig(duration=DURATION, use_sampling=False), seed=0)
    probs = np.full((2, 4, FRAMES), np.nan, dtype=np.float32)
    for record in result.records:
        probs[record.written] = record.probs[record.written]
    attributes = [ConditioningAttributes(text={"description": p}) for p in PROMPTS]
    provider = lm.condition_provider
    conditions = provider(provider.tokenize(attributes + ClassifierFreeGuidanceDropout(p=1.0)(attributes)))
    with torch.no_grad():
        both = lm.compute_predictions(
            torch.cat([result.tokens] * 2), [], conditions, keep_only_valid_steps=False
        ).logits
    cond, uncond = both.split(2)
    expected = torch.softmax(uncond + (cond - uncond) * lm.cfg_coef, dim=-1)
    assert torch.equal(expected.argmax(-1), result.tokens)  # greedy: the most probable token
    expected = expected.gather(-1, result.tokens[..., None])[..., 0].numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# resume, live controls, cancel


def _assert_same_records(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x.index, x.step_start, x.step_stop) == (y.index, y.step_start, y.step_stop)
        assert np.array_equal(x.tokens, y.tokens)
        assert np.array_equal(x.written, y.written)
        assert np.array_equal(x.probs, y.probs, equal_nan=True)
        assert np.array_equal(x.rng_state, y.rng_state)


@pytest.mark.parametrize("two_step", [False, True], ids=["batched-cfg", "two-step-cfg"])
@pytest.mark.parametrize("with_prefix", [False, True], ids=["no-prefix", "prefix"])
def test_resume_from_a_record_gives_the_uninterrupted_run(engine, two_step, with_prefix):
    prefix = (
        torch.randint(0, CARD, (2, 4, 9), generator=torch.Generator().manual_seed(2)) if with_prefix else None
    )
    config = ARConfig(duration=DURATION, top_k=10, two_step_cfg=two_step, frames_per_record=6)
    full = engine.decode(PROMPTS, config, seed=SEED, prompt_tokens=prefix)
    for r in (0, 3):
        resumed = engine.decode(PROMPTS, config, seed=0, resume_from=full.records[r])  # seed unused
        assert resumed.resumed_from == r and not resumed.cancelled
        assert torch.equal(resumed.tokens, full.tokens)
        _assert_same_records(resumed.records, full.records[r + 1 :])


def test_prefill_replay_keeps_the_record_and_finishes(engine):
    config = ARConfig(duration=DURATION, top_k=10, frames_per_record=6)
    full = engine.decode(PROMPTS, config, seed=SEED)
    record = full.records[4]
    resumed = engine.decode(PROMPTS, config, resume_from=record, replay="prefill")
    known = record.tokens != record.mask_id
    assert np.array_equal(resumed.tokens.numpy()[known], record.tokens[known])
    assert resumed.records[-1].is_last and (resumed.tokens != record.mask_id).all()


def test_live_controls_are_read_at_each_record(engine):
    """Temperature 0 set after record 0 makes records 1.. greedy, as a run resumed from record 0
    with temperature 0 is; the CFG coefficient set at the same time shows in those records."""
    config = ARConfig(duration=DURATION, top_k=10, frames_per_record=10)
    controls = LiveControls(config.controls(engine.lm.cfg_coef))
    records = []
    for record in engine.steps(PROMPTS, config, seed=SEED, controls=controls):
        records.append(record)
        if record.index == 0:
            controls.update(temperature=0.0, max_cfg_coef=5.0, min_cfg_coef=5.0)
    assert (records[0].temperature, records[0].cfg_coef) == (1.0, 3.0)
    assert all((r.temperature, r.cfg_coef) == (0.0, 5.0) for r in records[1:])
    assert records[1].controls.temperature == 0.0
    greedy = config.replace(temperature=0.0, cfg_coef=5.0)
    expected = engine.decode(PROMPTS, greedy, resume_from=records[0])
    _assert_same_records(expected.records, records[1:])
    unchanged = engine.decode(PROMPTS, config, resume_from=records[0])
    assert not np.array_equal(unchanged.tokens.numpy(), records[-1].tokens)


class CancelAfter:
    """A cancel that is set from its ``n + 1``-th ``is_set`` call on; counts the calls."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.n


def test_cancel_stops_within_one_step(engine):
    config = ARConfig(duration=DURATION, top_k=10, frames_per_record=5)
    full = engine.decode(PROMPTS, config, seed=SEED)
    cancel = CancelAfter(13)
    result = engine.decode(PROMPTS, config, seed=SEED, cancel=cancel)
    assert result.cancelled
    assert [(r.step_start, r.step_stop) for r in result.records] == [(1, 6), (6, 11), (11, 14)]
    assert cancel.calls == 13 + 2  # one per step, the refusing one, and the next batch's
    last = result.records[-1]
    assert np.array_equal(last.tokens != last.mask_id, np.broadcast_to(_front(14), last.tokens.shape))
    known = last.tokens != last.mask_id
    assert np.array_equal(last.tokens[known], full.tokens.numpy()[known])  # the same run, cut short
    # set before the first step: no record at all
    with pytest.raises(ValueError, match="cancelled before its first step"):
        engine.decode(PROMPTS, config, seed=SEED, cancel=CancelAfter(0))


# --------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(frames_per_record=0), "frames_per_record must be an integer >= 1"),
        (dict(top_k=2.5), "top_k must be an integer"),
        (dict(top_p=1.5), "top_p must be <= 1"),
        (dict(temperature=-1.0), "temperature must be >= 0"),
        (dict(duration=float("nan")), "duration must be a finite number"),
        (dict(duration=0), "duration must be > 0"),
        (dict(cfg_coef=-2.0), "cfg_coef must be >= 0"),
    ],
)
def test_bad_config_is_refused(params, message):
    with pytest.raises(ValueError, match=message):
        ARConfig(**params)


def test_bad_run_inputs_are_refused(engine, folders):
    config = ARConfig(duration=DURATION, top_k=10)
    prefix = torch.zeros((2, 4, 5), dtype=torch.long)
    cases = [
        (dict(prompts=[]), "No prompt given"),
        (dict(prompts=["piano", "  "]), "Prompt 2 is empty"),
        (dict(prompts=["piano"] * 9), "At most 8 prompts"),
        (dict(config=config.replace(duration=11.0)), r"longer than this model supports \(10 s\)"),
        (dict(config=config.replace(duration=0.01)), "too short"),
        (dict(config=config.replace(top_k=100)), r"top_k \(100\) is larger than the codebook size \(64\)"),
        (dict(prompt_tokens=prefix[:1]), r"prompt_tokens must be \[B=2, K=4, P\]"),
        (dict(prompt_tokens=prefix.float()), "integer codes"),
        (dict(prompt_tokens=prefix + CARD), r"codes in \[0, 64\)"),
        (dict(prompt_tokens=torch.zeros((2, 4, FRAMES), dtype=torch.long)), "between 1 and 49"),
        (dict(replay="fast"), "Unknown replay 'fast'"),
    ]
    for overrides, message in cases:
        kwargs = {"prompts": PROMPTS, "config": config, **overrides}
        with pytest.raises(ValueError, match=message):
            engine.steps(kwargs.pop("prompts"), kwargs.pop("config"), **kwargs)
    records = engine.decode(PROMPTS, config.replace(duration=0.2)).records
    with pytest.raises(ValueError, match="after the last record"):
        engine.steps(PROMPTS, config.replace(duration=0.2), resume_from=records[-1])
    with pytest.raises(ValueError, match=r"record's canvas is \[2, 4, 10\] but this run's is \[1, 4, 10\]"):
        engine.steps(PROMPTS[:1], config.replace(duration=0.2), resume_from=records[0])
    with pytest.raises(ValueError, match="pass no prompt_tokens"):
        engine.steps(PROMPTS, config.replace(duration=0.2), resume_from=records[0], prompt_tokens=prefix)
    with pytest.raises(ValueError, match="MAGNeT"):
        AREngine(load_lm(str(folders["magnet"])), frame_rate=50)
