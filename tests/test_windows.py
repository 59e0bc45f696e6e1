"""Clips longer than the model's window: the window arithmetic (magnet_demo.windows) on exact
numbers, and a real 3-window decode (magnet_demo.windowed) on the tiny model (50 frames/s, spans of 3)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from magnet_demo.controls import DecodingConfig, LiveControls
from magnet_demo.windowed import WindowedEngine
from magnet_demo.windows import (
    Window,
    assemble_tokens,
    check_windows,
    plan_seconds,
    plan_windows,
    window_seed,
)

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = (3, 2, 2, 2)
CONFIG = DecodingConfig(decoding_steps=STEPS, duration=1.0)  # its duration is the windows' business
PROMPTS = ["calm strings", "loud brass"]
SEED = 7
#: 114 frames in windows of 60 frames overlapping by 24: [0, 60), [36, 96), [72, 114)
TOTAL, WINDOW, OVERLAP = 114, 60, 24
PLAN = plan_windows(TOTAL, WINDOW, OVERLAP, 3)


# ---------------------------------------------------------------- arithmetic


def test_windows_overlap_and_the_last_is_partial():
    assert PLAN == (Window(0, 0, 60, 0), Window(1, 36, 96, 24), Window(2, 72, 114, 24))
    first, middle, last = PLAN
    assert (first.frames, first.new_start, first.new_frames) == (60, 0, 60)
    assert (middle.frames, middle.new_start, middle.new_frames) == (60, 60, 36)
    assert (last.frames, last.new_start, last.new_frames) == (42, 96, 18)


def test_no_overlap_short_clips_and_exact_fits():
    assert plan_windows(150, 60, 0, 3) == (Window(0, 0, 60, 0), Window(1, 60, 120, 0), Window(2, 120, 150, 0))
    assert plan_windows(30, 60, 24, 3) == (Window(0, 0, 30, 0),)  # shorter than a window: one run
    assert plan_windows(60, 60, 24, 3) == (Window(0, 0, 60, 0),)
    assert plan_windows(96, 60, 24, 3) == (Window(0, 0, 60, 0), Window(1, 36, 96, 24))
    assert plan_windows(5, 4, 1) == (Window(0, 0, 4, 0), Window(1, 3, 5, 1))  # stride1: frames


def test_plans_from_seconds_count_frames_like_the_engine():
    # MAGNeT's 10 s window at 50 Hz in spans of 3 is 498 frames; half of it overlaps
    plan = plan_seconds(30, 10, 50, span_len=3)
    assert [(w.start, w.stop, w.given) for w in plan] == [
        (0, 498, 0),
        (249, 747, 249),
        (498, 996, 249),
        (747, 1245, 249),
        (996, 1494, 249),
        (1245, 1500, 249),
    ]
    without = plan_seconds(30, 10, 50, overlap_seconds=0, span_len=3)
    assert [(w.start, w.stop) for w in without] == [(0, 498), (498, 996), (996, 1494), (1494, 1500)]
    assert plan_seconds(30, 10, 50, overlap_seconds=2, span_len=3)[1] == Window(1, 399, 897, 99)  # 100 -> 99
    assert plan_seconds(0.29, 10, 100) == (Window(0, 0, 28, 0),)  # int(0.29 * 100): the engine's count


@pytest.mark.parametrize(
    "args, message",
    [
        ((114, 60, 60, 3), "must be shorter than the window"),
        ((114, 60, 72, 3), "must be shorter than the window"),
        ((114, 60, -3, 3), "overlap_frames must be at least 0"),
        ((114, 60, 25, 3), r"overlap_frames \(25\) must be a multiple of the span"),
        ((115, 60, 24, 3), r"total_frames \(115\) must be a multiple"),
        ((114, 61, 24, 3), r"window_frames \(61\) must be a multiple"),
        ((2, 60, 0, 3), "total_frames must be at least 3 frames"),
        ((114, 0, 0, 1), "window_frames must be at least 1 frame"),
        ((114.0, 60, 24, 3), "total_frames must be a whole number"),
        ((114, True, 0, 3), "window_frames must be a whole number"),
        ((114, 60, 24, 0), "span_len must be at least 1"),
    ],
)
def test_bad_frame_plans_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        plan_windows(*args)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"overlap_seconds": 10}, r"overlap \(10 s\) must be shorter than the window \(10 s\)"),
        ({"overlap_seconds": 9.99}, "leaves nothing new"),
        ({"overlap_seconds": -1}, "overlap_seconds must be >= 0"),
        ({"total_seconds": 0}, "total_seconds must be > 0"),
        ({"total_seconds": float("nan")}, "total_seconds must be a finite number"),
        ({"total_seconds": 0.05}, "shorter than one span"),
        ({"window_seconds": 0.05}, "shorter than one span"),
        ({"frame_rate": 0}, "frame_rate must be > 0"),
    ],
)
def test_bad_second_plans_are_refused(kwargs, message):
    args = {"total_seconds": 30, "window_seconds": 10, "frame_rate": 50, "span_len": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        plan_seconds(**args)


def test_windows_that_do_not_chain_are_refused():
    with pytest.raises(ValueError, match="no new frame"):
        Window(1, 36, 60, 24)
    with pytest.raises(ValueError, match="does not continue window 0"):
        check_windows([Window(0, 0, 60, 0), Window(1, 30, 90, 24)])
    with pytest.raises(ValueError, match="Window 0 must start at frame 0"):
        check_windows([Window(0, 3, 60, 0)])
    with pytest.raises(ValueError, match="whole spans of 3"):
        check_windows([Window(0, 0, 59, 0)], 3)
    with pytest.raises(ValueError, match="No windows"):
        check_windows([])


def test_window_seeds_count_up_from_the_run_seed():
    assert [window_seed(SEED, n) for n in range(3)] == [7, 8, 9]


# ---------------------------------------------------------------- decoding on the tiny model


@pytest.fixture(scope="module")
def windowed(engine):
    return WindowedEngine(engine)


@pytest.fixture(scope="module")
def clip(windowed):
    return windowed.decode(PROMPTS, CONFIG, windows=PLAN, seed=SEED)


def _window_records(result, index):
    return [item.record for item in result.records if item.window.index == index]


def test_every_step_says_its_window(clip):
    per_window = sum(STEPS)
    assert len(clip.records) == 3 * per_window and not clip.cancelled
    assert [item.clip_step for item in clip.records] == list(range(3 * per_window))
    assert {item.clip_steps for item in clip.records} == {3 * per_window}
    assert [clip.records[i].status for i in (0, per_window, 2 * per_window)] == [
        "window 1/3",
        "window 2/3",
        "window 3/3",
    ]
    assert [item.seed for item in clip.records[::per_window]] == [7, 8, 9]
    assert [item.is_window_end for item in clip.records].count(True) == 3
    assert clip.records[-1].is_last and not clip.records[per_window - 1].is_last
    for item in clip.records:
        assert item.record.tokens.shape == (2, 4, item.window.frames) and item.total_frames == TOTAL


def test_each_window_keeps_the_frames_it_continues(clip):
    for before, window in zip(PLAN, PLAN[1:], strict=False):
        previous = _window_records(clip, before.index)[-1].tokens
        taken = previous[..., before.frames - window.given :]
        for record in _window_records(clip, window.index):
            assert np.array_equal(record.tokens[..., : window.given], taken)  # every codebook, every step
            assert record.given[..., : window.given].all() and not record.given[..., window.given :].any()
    assert _window_records(clip, 0)[0].given is None


def test_the_clip_is_whole_and_its_audio_as_long_as_its_frames(clip, tiny_model):
    mask_id = _window_records(clip, 0)[-1].mask_id
    assert clip.tokens.shape == (2, 4, TOTAL) and clip.tokens.dtype == torch.long
    assert not (clip.tokens == mask_id).any() and int(clip.tokens.min()) >= 0
    finals = [_window_records(clip, w.index)[-1].tokens for w in PLAN]
    assert torch.equal(clip.tokens, assemble_tokens(PLAN, finals))
    for window, final in zip(PLAN, finals, strict=True):
        assert np.array_equal(clip.tokens[..., window.start : window.stop].numpy(), final)
    hop = tiny_model.sample_rate / tiny_model.frame_rate
    assert clip.audio.shape[0] == 2 and clip.sample_rate == tiny_model.sample_rate
    assert abs(clip.audio.shape[-1] - TOTAL * hop) <= hop  # TOTAL / frame_rate seconds, within a hop


def test_window_zero_is_the_plain_run_and_later_windows_reproduce_alone(clip, engine):
    plain = list(engine.steps(PROMPTS, CONFIG.replace(duration=WINDOW / 50), seed=SEED))
    windowed = _window_records(clip, 0)
    assert len(plain) == len(windowed)
    for a, b in zip(plain, windowed, strict=True):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.rng_state, b.rng_state)
    # window 1 alone: seed + 1, continuing window 0's last 24 frames
    second = PLAN[1]
    prompt = torch.from_numpy(np.array(windowed[-1].tokens[..., WINDOW - OVERLAP :], dtype=np.int64))
    alone = list(engine.steps(PROMPTS, CONFIG.replace(duration=1.2), seed=SEED + 1, prompt_tokens=prompt))
    assert np.array_equal(alone[-1].tokens, _window_records(clip, second.index)[-1].tokens)


def test_live_controls_pass_through_and_cancel_stops_between_steps(windowed):
    controls, cancel = LiveControls.from_config(CONFIG), threading.Event()
    stop_after = sum(STEPS) + 2  # inside window 1

    def on_step(item):
        if item.clip_step == sum(STEPS) - 1:  # window 0's last step: window 1 starts with the change
            controls.update(temperature=1.5)
        if item.clip_step == stop_after:
            cancel.set()

    result = windowed.decode(
        PROMPTS, CONFIG, windows=PLAN, seed=SEED, controls=controls, cancel=cancel, on_step=on_step
    )
    assert result.cancelled and len(result.records) == stop_after + 1
    assert [item.record.controls.temperature for item in result.records[sum(STEPS) - 1 : sum(STEPS) + 1]] == [
        CONFIG.temperature,
        1.5,
    ]
    assert result.tokens.shape == (2, 4, WINDOW)  # the finished window only
    assert result.audio.shape[-1] > 0


def test_bad_runs_are_refused_before_any_step(windowed):
    with pytest.raises(ValueError, match="either total_seconds"):
        windowed.steps(PROMPTS, CONFIG)
    with pytest.raises(ValueError, match="either total_seconds"):
        windowed.steps(PROMPTS, CONFIG, total_seconds=3, windows=PLAN)
    with pytest.raises(ValueError, match="must be shorter than the window"):
        windowed.steps(PROMPTS, CONFIG, total_seconds=30, overlap_seconds=12)
    with pytest.raises(ValueError, match="longer than this model supports"):
        windowed.steps(PROMPTS, CONFIG, windows=plan_windows(1200, 660, 0, 3))  # the tiny model's is 600
    with pytest.raises(ValueError, match="longer than this model's window"):
        windowed.plan(CONFIG, 30, window_seconds=13)
    with pytest.raises(ValueError, match="Prompt 1 is empty"):
        windowed.steps([""], CONFIG, windows=PLAN)


def test_the_model_plans_its_own_windows(windowed, tiny_model):
    assert tiny_model.max_duration == 12
    plan = windowed.plan(CONFIG, 30)  # windows of 600 frames overlapping by 300
    assert [(w.start, w.stop) for w in plan] == [(0, 600), (300, 900), (600, 1200), (900, 1500)]
    stride1 = windowed.plan(
        CONFIG.replace(span_arrangement="stride1"), 1.01, overlap_seconds=0.5, window_seconds=0.6
    )
    assert stride1 == (
        Window(0, 0, 30, 0),
        Window(1, 5, 35, 25),
        Window(2, 10, 40, 25),
        Window(3, 15, 45, 25),
        Window(4, 20, 50, 25),
    )
