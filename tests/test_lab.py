"""The decoding lab's runs as the studio's records (magnet_demo.lab) on a tiny seeded MAGNeT and
its tiny autoregressive partner: the records match the engines', the plan matches the records,
the canvas feed carries every codebook's row."""

from __future__ import annotations

import numpy as np
import pytest

from magnet_demo import viz
from magnet_demo.audio import preview_codes
from magnet_demo.autoregressive import AREngine
from magnet_demo.canvas_feed import CanvasFeed, parse, unb64
from magnet_demo.controls import METHOD_AR, METHOD_HYBRID, DecodingConfig
from magnet_demo.hybrid import HybridEngine
from magnet_demo.lab import FRAMES_PER_RECORD, ar_config, lab_plan, lab_steps, planned_schedules
from magnet_demo.models import load_model
from magnet_demo.rescoring import load_rescorer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ("slow piano",)
SEED = 99
STEPS = (3, 2, 2, 2)
AR = DecodingConfig(duration=1.0, decoding_steps=STEPS, method=METHOD_AR)
HYBRID = DecodingConfig(duration=1.0, decoding_steps=STEPS, method=METHOD_HYBRID, prefix_seconds=0.2)


@pytest.fixture(scope="module")
def model(tiny_pair):
    return load_model(str(tiny_pair["magnet"]), device="cpu")


@pytest.fixture(scope="module")
def partner(tiny_pair):
    return load_rescorer(str(tiny_pair["ar"]))


def plan_of(model, config):
    return lab_plan(
        config, model.num_codebooks, model.frame_rate, model.frames(config), int(model.lm.span_len)
    )


def test_the_plan_counts_records_of_ten_sequence_steps(model):
    ar = plan_of(model, AR)
    assert (ar.segments, ar.frames) == ((6,), 50)  # 50 frames + 3 delays = 53 steps, 10 a record
    hybrid = plan_of(model, HYBRID)
    assert (hybrid.segments, hybrid.frames, hybrid.prefix_frames) == ((2, 3, 2, 2, 2), 48, 10)
    assert hybrid.total_steps == 11 and hybrid.ar_steps == 2
    with pytest.raises(ValueError, match="shorter than the clip"):
        plan_of(model, HYBRID.replace(prefix_seconds=1.0))


def test_an_autoregressive_run_is_the_engines_run_record_for_record(model, partner):
    records = list(lab_steps(model, partner, PROMPTS, AR, seed=SEED))
    expected = AREngine.from_rescorer(partner).decode(PROMPTS, ar_config(1.0, partner.lm.card), seed=SEED)
    assert len(records) == plan_of(model, AR).total_steps == len(expected.records)
    for ours, theirs in zip(records, expected.records, strict=True):
        assert np.array_equal(ours.tokens, theirs.tokens) and np.array_equal(ours.written, theirs.written)
    assert [r.global_step for r in records] == list(range(6)) and records[-1].is_last
    assert not (records[-1].tokens == records[-1].mask_id).any()
    # the first record wrote steps 1-10: frames 0-9 of codebook 0, 0-6 of codebook 3 (delay 3)
    assert records[0].written[0].sum(axis=1).tolist() == [10, 9, 8, 7]
    states = viz.canvas_states(records[0])
    assert (states[3, :7] == viz.STATE_NEW).all() and (states[3, 7:] == viz.STATE_MASKED).all()
    assert (states[0, :10] == viz.STATE_NEW).all() and (states[0, 10:] == viz.STATE_MASKED).all()
    assert viz.canvas_states(records[1])[0, :10].tolist() == [viz.STATE_FIXED] * 10
    # heard: the frames complete in every codebook (7 after the first record), all of them at the end
    assert preview_codes(records[0]).shape == (1, 4, 7) and preview_codes(records[-1]).shape == (1, 4, 50)
    assert records[0].mask_rate == 1.0 and "autoregressive" in viz.step_title(records[0])


def test_a_hybrid_run_is_the_hybrid_engines_run_renumbered(model, partner):
    records = list(lab_steps(model, partner, PROMPTS, HYBRID, seed=SEED))
    settings = ar_config(1.0, partner.lm.card)
    expected = HybridEngine(model, partner).decode(
        PROMPTS, HYBRID, prefix_seconds=0.2, seed=SEED, ar_config=settings, with_audio=False
    )
    assert len(records) == len(expected.records) == 11
    assert [r.global_step for r in records] == list(range(11)) and {r.total_steps for r in records} == {11}
    assert [r.is_autoregressive for r in records] == [True] * 2 + [False] * 9
    assert records[-1].is_last and np.array_equal(records[-1].tokens, np.asarray(expected.tokens))
    # the MAGNeT phase continues the first 10 frames the autoregressive phase wrote, given
    prefix = records[1].tokens[..., :10]
    assert np.array_equal(records[-1].tokens[..., :10], prefix)
    assert records[2].given[0, :, :10].all() and not records[2].given[0, :, 10:].any()
    assert records[2].elapsed >= records[1].elapsed


def test_a_lab_feed_sends_every_row_and_the_phases_plan(model, partner):
    records = list(lab_steps(model, partner, PROMPTS, HYBRID, seed=SEED))
    plan = plan_of(model, HYBRID)
    controls = HYBRID.controls()
    feed = CanvasFeed(
        1,
        plan.segments,
        plan.frames,
        50.0,
        codebooks=4,
        planner=lambda values: planned_schedules(plan, values, True),
    )
    lines = parse(feed.sync(records, controls))
    header, plans = lines[0], [line for line in lines if line["kind"] == "plan"]
    steps = [line for line in lines if line["kind"] == "step"]
    assert header["codebooks"] == 4 and header["decoding_steps"] == [2, 3, 2, 2, 2]
    assert len(plans) == 1 and len(plans[0]["mask_rate"]) == 11  # the AR steps draw on the run's plan
    assert plans[0]["mask_rate"][:2] == [1.0, 0.5] and plans[0]["cfg_coef"][:3] == [3.0, 3.0, 10.0]
    assert {step["plan"] for step in steps} == {0}
    rows = unb64(steps[0]["rows"], np.uint8).reshape(4, 48)
    assert np.array_equal(rows, viz.canvas_states(records[0]))
    tokens = unb64(steps[-1]["row_tokens"], np.uint16).reshape(4, 48)
    assert np.array_equal(tokens, records[-1].tokens[0])
    assert FRAMES_PER_RECORD == 10


def test_a_hybrid_runs_trace_reads_back_record_for_record(model, partner, tmp_path):
    from magnet_demo.trace import load_trace, save_trace

    records = list(lab_steps(model, partner, PROMPTS, HYBRID, seed=SEED))
    loaded, info = load_trace(save_trace(records, tmp_path / "hybrid.npz"))
    assert info["written_steps"] == [True] * 2 + [False] * 9
    for ours, back in zip(records, loaded, strict=True):
        assert np.array_equal(ours.tokens, back.tokens) and np.array_equal(ours.scores, back.scores)
        assert (ours.written is None) == (back.written is None) and ours.global_step == back.global_step
        if ours.written is not None:
            assert np.array_equal(ours.written, back.written)
