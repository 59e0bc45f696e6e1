"""The engine's contract: records, validation, live controls, resume, cancellation."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from magnet_demo import schedules
from magnet_demo.controls import DecodingConfig, LiveControls

STEPS = (4, 2, 2, 2)
CONFIG = DecodingConfig(decoding_steps=STEPS, duration=2.0)
PROMPTS = ["calm strings", "loud brass"]


def _run(engine, config=CONFIG, **kwargs):
    return engine.decode(PROMPTS, config, seed=kwargs.pop("seed", 11), with_audio=False, **kwargs)


@pytest.fixture(scope="module")
def baseline(engine):
    return _run(engine)


def test_one_frozen_record_per_step(baseline, engine):
    records = baseline.records
    assert len(records) == sum(STEPS)
    assert [r.global_step for r in records] == list(range(sum(STEPS)))
    assert [(r.stage, r.step) for r in records][:5] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    first = records[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.stage = 3
    with pytest.raises(ValueError):
        first.tokens[0, 0, 0] = 1  # read-only copy
    assert first.tokens.shape == (2, 4, 99) and first.tokens.dtype == np.int16  # 100 frames trimmed to 99
    assert first.mask_before.all()  # a blank canvas
    assert (first.tokens[:, 1:] == engine.lm.special_token_id).all()


def test_masks_follow_the_cosine_schedule_and_only_shrink(baseline):
    for record in baseline.records:
        n = record.steps_in_stage
        units = record.mask_before[0].reshape(-1, 3)[:, 0]
        assert units.sum() == record.num_masked
        assert record.num_masked == schedules.num_masked(schedules.mask_rate(record.step, n), 33)
        assert record.mask_rate == pytest.approx(float(schedules.mask_rate(record.step, n)))
        assert not (record.mask_after & ~record.mask_before).any()
        if record.is_stage_end:
            assert not record.mask_after.any()
        assert np.isnan(record.confidence[~record.mask_before]).all()
        assert (record.confidence[record.mask_before] > 0).all()
        kept = record.newly_fixed
        assert (
            record.committed_tokens()[:, record.stage][kept] == record.tokens[:, record.stage][kept]
        ).all()
    assert (baseline.records[-1].tokens != baseline.records[-1].mask_id).all()


def test_records_show_the_values_used(baseline):
    for record in baseline.records:
        rate = float(schedules.mask_rate(record.step, record.steps_in_stage))
        assert record.cfg_coef == rate * 10.0 + (1 - rate) * 1.0
        assert record.temperature == 3.0 * (record.steps_in_stage - 1 - record.step) / record.steps_in_stage


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(decoding_steps=(4, 2, 2)), "one step count per codebook"),
        (dict(decoding_steps=(4, 0, 2, 2)), "decoding_steps\\[1\\]"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(span_arrangement="zigzag"), "span_arrangement"),
        (dict(span_scoring="mean"), "span_scoring"),
        (dict(duration=0.0), "duration"),
        (dict(duration=13.0), "longer than this model supports"),
        (dict(cfg_schedule="cosine"), "CFG schedule"),
        (dict(max_cfg_coef=float("nan")), "max_coef"),
        (dict(rescore_weight=1.5), "rescore_weight"),
    ],
)
def test_bad_settings_raise_value_error(engine, changes, message):
    with pytest.raises(ValueError, match=message):
        config = CONFIG.replace(**changes)
        engine.steps(PROMPTS, config)


@pytest.mark.parametrize("prompts", [[], ["ok", "  "], "", [None]])
def test_bad_prompts_raise_value_error(engine, prompts):
    with pytest.raises(ValueError, match="prompt|Prompt"):
        engine.steps(prompts, CONFIG)


def test_live_change_during_step_k_shows_in_step_k_plus_1(engine, baseline):
    """Like diffusers' CFG callback test: change the CFG while step K runs."""
    K = 2
    controls = LiveControls.from_config(CONFIG)
    calls = {"n": 0}

    def during_forward(module, args):
        if calls["n"] == K:
            controls.update(max_cfg_coef=3.0, cfg_schedule="constant")
        calls["n"] += 1

    handle = engine.lm.transformer.register_forward_pre_hook(during_forward)
    try:
        result = _run(engine, controls=controls)
    finally:
        handle.remove()
    for before, after in zip(baseline.records[: K + 1], result.records[: K + 1], strict=True):
        assert after.cfg_coef == before.cfg_coef
        assert np.array_equal(after.tokens, before.tokens)
    assert [r.cfg_coef for r in result.records[K + 1 :]] == [3.0] * (sum(STEPS) - K - 1)
    assert result.records[K + 1].controls.cfg.kind == "constant"
    assert result.records[K].controls.cfg.kind == "linear"
    assert not np.array_equal(result.records[K + 1].tokens, baseline.records[K + 1].tokens)


def _transformer_batches(engine, **kwargs) -> list[int]:
    """The batch size of every transformer pass of one run."""
    batches = []
    handle = engine.lm.transformer.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        _run(engine, **kwargs)
    finally:
        handle.remove()
    return batches


def test_cfg_off_steps_skip_the_unconditional_half(engine):
    """Steps whose coefficient is 1 pass only the prompts' rows (parity: tests/test_parity.py)."""
    n = sum(STEPS)
    assert _transformer_batches(engine) == [2 * len(PROMPTS)] * n
    off = CONFIG.replace(max_cfg_coef=1.0, min_cfg_coef=1.0)
    assert _transformer_batches(engine, config=off) == [len(PROMPTS)] * n
    controls = LiveControls.from_config(CONFIG)
    controls.update(max_cfg_coef=1.0, cfg_schedule="constant")  # CFG off from the first step
    assert _transformer_batches(engine, controls=controls) == [len(PROMPTS)] * n


@pytest.mark.parametrize("k", [1, 3, 6])
def test_resume_with_same_settings_reproduces_the_run(engine, baseline, k):
    resumed = _run(engine, resume_from=baseline.records[k], seed=999)  # the record's RNG state wins
    assert resumed.resumed_from == k
    assert len(resumed.records) == sum(STEPS) - k - 1
    assert torch.equal(resumed.tokens, baseline.tokens)
    for a, b in zip(resumed.records, baseline.records[k + 1 :], strict=True):
        assert np.array_equal(a.tokens, b.tokens) and a.global_step == b.global_step


def test_resume_with_new_settings_forks(engine, baseline):
    forked = _run(engine, config=CONFIG.replace(temperature=0.5), resume_from=baseline.records[1])
    assert np.array_equal(forked.records[0].mask_before, baseline.records[2].mask_before)
    assert forked.records[0].temperature != baseline.records[2].temperature
    assert not torch.equal(forked.tokens, baseline.tokens)


def test_resume_rejects_a_record_that_does_not_fit(engine, baseline):
    with pytest.raises(ValueError, match="canvas"):
        engine.steps(PROMPTS[:1], CONFIG, resume_from=baseline.records[2])
    with pytest.raises(ValueError, match="last step"):
        engine.steps(PROMPTS, CONFIG, resume_from=baseline.records[-1])
    with pytest.raises(ValueError, match="decoding steps"):
        engine.steps(PROMPTS, CONFIG.replace(decoding_steps=(2, 2, 2, 2)), resume_from=baseline.records[3])


def test_cancel_stops_between_steps(engine, baseline, tiny_model):
    cancel = threading.Event()

    def stop_after_third(record):
        if record.global_step == 2:
            cancel.set()

    result = engine.decode(PROMPTS, CONFIG, seed=11, cancel=cancel, on_step=stop_after_third)
    assert result.cancelled and len(result.records) == 3
    assert np.array_equal(result.records[-1].tokens, baseline.records[2].tokens)
    # the audio of a cancelled run is the preview of its last step (codebook 0 proposals)
    assert result.audio.shape == (2, 99 * tiny_model.sample_rate // tiny_model.frame_rate)


def test_full_run_decodes_audio(engine, tiny_model):
    result = engine.decode(PROMPTS[:1], CONFIG, seed=0)
    assert not result.cancelled
    assert result.audio.shape == (1, 99 * 640) and result.audio.dtype == np.float32
    assert result.sample_rate == tiny_model.sample_rate == 32000
    assert np.isfinite(result.audio).all()


def test_same_seed_same_tokens_other_seed_differs(engine, baseline):
    assert torch.equal(_run(engine).tokens, baseline.tokens)
    assert not torch.equal(_run(engine, seed=12).tokens, baseline.tokens)


def test_live_controls_validate_and_are_thread_safe():
    controls = LiveControls.from_config(CONFIG)
    with pytest.raises(ValueError, match="rescore_weight"):
        controls.update(rescore_weight=2.0)
    assert controls.snapshot().rescore_weight == 0.0  # a refused update changes nothing
    threads = [threading.Thread(target=controls.update, kwargs={"temperature": float(i)}) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert controls.snapshot().temperature in {float(i) for i in range(16)}
