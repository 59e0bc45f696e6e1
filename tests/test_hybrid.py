"""Hybrid-MAGNeT at inference (:mod:`magnet_demo.hybrid`) on tiny seeded models.

A tiny MAGNeT (:func:`magnet_demo.tiny.write_tiny_checkpoint`) and its MusicGen-style partner on
the same codec (:func:`magnet_demo.tiny.write_tiny_rescorer`: delays ``0, 1, 2, 3``, 64 codes).
1 s at 50 Hz: the AR canvas has 50 frames, MAGNeT decodes 48 (16 spans of 3). A 0.2 s prefix is
P = 10 frames, complete in every codebook after 10 + 3 = 13 AR sequence steps (steps 1..13).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from magnet_demo.autoregressive import ARConfig, AREngine
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.hybrid import PHASE_AR, PHASE_MAGNET, HybridEngine, PhaseRecord, prefix_frames
from magnet_demo.models import load_model
from magnet_demo.rescoring import load_rescorer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ("slow piano", "fast drums")
SEED = 1234
DURATION = 1.0
AR_FRAMES = 50
FRAMES = 48
DELAYS = (0, 1, 2, 3)
PREFIX_SECONDS = 0.2
P = 10
AR_STEPS = P + DELAYS[-1]  # 13: steps 1..13 complete frame 9 of codebook 3
CONFIG = DecodingConfig(duration=DURATION, decoding_steps=(4, 2, 2, 2))
AR_CONFIG = ARConfig(top_k=10, frames_per_record=4)


@pytest.fixture(scope="module")
def folders(tiny_pair):
    return tiny_pair


@pytest.fixture(scope="module")
def model(folders):
    return load_model(str(folders["magnet"]), device="cpu")


@pytest.fixture(scope="module")
def rescorer(folders):
    return load_rescorer(str(folders["ar"]))


@pytest.fixture(scope="module")
def ar_engine(rescorer):
    return AREngine.from_rescorer(rescorer)


@pytest.fixture(scope="module")
def hybrid(model, ar_engine):
    return HybridEngine(model, ar_engine)


@pytest.fixture(scope="module")
def result(hybrid):
    return hybrid.decode(
        PROMPTS, CONFIG, prefix_seconds=PREFIX_SECONDS, seed=SEED, ar_config=AR_CONFIG, with_audio=False
    )


def _ints(array) -> np.ndarray:
    return np.asarray(array, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# the AR phase


def test_prefix_is_the_ar_runs_first_frames_in_every_codebook(result, ar_engine):
    alone = ar_engine.decode(PROMPTS, ARConfig(duration=DURATION, top_k=10), seed=SEED).tokens
    assert alone.shape == (2, 4, AR_FRAMES) and (alone != 64).all()  # the AR run alone, to the end
    assert result.prefix.shape == (2, 4, P)
    assert torch.equal(result.prefix, alone[..., :P])
    assert torch.equal(result.tokens[..., :P], alone[..., :P])
    assert not torch.equal(result.prefix[0], result.prefix[1])  # the prompts condition the prefix
    # another seed writes another prefix: the seed reaches the AR phase
    other = ar_engine.decode(PROMPTS, ARConfig(duration=DURATION, top_k=10), seed=SEED + 1).tokens
    assert not torch.equal(other[..., :P], result.prefix)


def test_ar_phase_writes_the_diagonal_tail_and_stops_when_the_prefix_is_complete(result):
    ar = result.phase_records(PHASE_AR)
    # 13 steps in records of 4: [1, 5), [5, 9), [9, 13), [13, 14)
    assert [(r.step_start, r.step_stop) for r in ar] == [(1, 5), (5, 9), (9, 13), (13, 14)]
    assert sum(r.num_steps for r in ar) == AR_STEPS
    assert [r.frames_done for r in ar] == [1, 5, 9, 10]  # frames complete in every codebook
    last = ar[-1]
    assert last.frames_done == P and not last.is_last
    written = last.tokens != last.mask_id
    # codebook k holds frames 0 .. P + 3 - k - 1: the prefix plus its diagonal tail
    assert [int(written[0, k].sum()) for k in range(4)] == [13, 12, 11, 10]
    assert written[..., :P].all()
    # the tail (frames >= P of codebooks 0..2) does not go on: MAGNeT decodes those frames anew
    first_magnet = result.phase_records(PHASE_MAGNET)[0]
    assert (first_magnet.tokens[:, 1:, P:] == first_magnet.mask_id).all()


# --------------------------------------------------------------------------------------------
# the MAGNeT phase


def test_magnet_phase_is_the_continuation_of_the_prefix(result, model):
    expected = Engine(model).decode(PROMPTS, CONFIG, seed=SEED, prompt_tokens=result.prefix, with_audio=False)
    magnet = result.phase_records(PHASE_MAGNET)
    assert len(magnet) == sum(CONFIG.decoding_steps) == len(expected.records)
    for got, want in zip(magnet, expected.records, strict=True):
        assert (got.stage, got.step, got.global_step) == (want.stage, want.step, want.global_step)
        assert np.array_equal(got.tokens, want.tokens)
        assert np.array_equal(got.mask_before, want.mask_before)
        assert np.array_equal(got.rng_state, want.rng_state)
    assert torch.equal(result.tokens, expected.tokens)
    assert result.tokens.shape == (2, 4, FRAMES) and (result.tokens != 64).all()
    # the prefix is given and kept in every step; MAGNeT decodes the rest
    for record in magnet:
        assert record.given[..., :P].all() and not record.given[..., P:].any()
        assert np.array_equal(_ints(record.tokens[..., :P]), result.prefix.numpy())
        assert not record.mask_before[:, :P].any()
    assert magnet[0].mask_before[:, P:].all()  # the first step masks every frame after the prefix
    # a MAGNeT run without the prefix writes other frames after it
    free = Engine(model).decode(PROMPTS, CONFIG, seed=SEED, with_audio=False).tokens
    assert not torch.equal(free[..., P:], result.tokens[..., P:])


def test_an_lm_rescorer_partner_gives_the_same_run(model, rescorer, result):
    again = HybridEngine(model, rescorer).decode(
        PROMPTS, CONFIG, prefix_seconds=PREFIX_SECONDS, seed=SEED, ar_config=AR_CONFIG
    )
    assert torch.equal(again.tokens, result.tokens)
    assert again.audio is not None and again.audio.shape[0] == 2


# --------------------------------------------------------------------------------------------
# phases, times


def test_records_are_tagged_in_phase_order_and_timed(hybrid):
    pause = 0.02
    seen: list[PhaseRecord] = []

    def hold(record):
        seen.append(record)
        time.sleep(pause)  # a slow consumer: not counted in the phases' times

    start = time.perf_counter()
    result = hybrid.decode(
        PROMPTS, CONFIG, prefix_seconds=PREFIX_SECONDS, seed=SEED, ar_config=AR_CONFIG, on_record=hold,
        with_audio=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    phases = [r.phase for r in result.records]
    assert phases == [PHASE_AR] * 4 + [PHASE_MAGNET] * 10
    assert [r.index for r in result.records] == list(range(14))
    assert seen == list(result.records)
    assert all(r.prefix_frames == P and r.frames == FRAMES for r in result.records)
    assert all(r.tokens.shape == (2, 4, FRAMES) for r in result.records)  # the AR canvas cut to T
    assert result.records[0].record.tokens.shape == (2, 4, AR_FRAMES)
    ar = [r for r in result.records if r.phase == PHASE_AR]
    magnet = [r for r in result.records if r.phase == PHASE_MAGNET]
    for phase in (ar, magnet):
        times = [r.phase_seconds for r in phase]
        assert times[0] > 0 and times == sorted(times)
    assert all(r.elapsed == r.phase_seconds for r in ar)
    assert all(r.elapsed == pytest.approx(result.ar_seconds + r.phase_seconds, abs=1e-12) for r in magnet)
    assert result.ar_seconds == ar[-1].phase_seconds and result.magnet_seconds == magnet[-1].phase_seconds
    assert result.records[-1].is_last and not result.cancelled
    held = pause * len(result.records)
    assert result.records[-1].elapsed <= wall - held


def test_cancel_during_the_ar_phase_stops_before_magnet(hybrid):
    cancel = threading.Event()

    def stop(record):
        cancel.set()

    result = hybrid.decode(
        PROMPTS, CONFIG, prefix_seconds=PREFIX_SECONDS, seed=SEED, ar_config=AR_CONFIG, cancel=cancel,
        on_record=stop,
    )  # fmt: skip
    assert [r.phase for r in result.records] == [PHASE_AR]
    assert result.cancelled and result.prefix is None and result.audio is None
    assert result.magnet_seconds == 0.0


# --------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    "prefix_seconds,message",
    [
        (0, "must be > 0"),
        (-1.0, "must be > 0"),
        (float("nan"), "finite number"),
        (float("inf"), "finite number"),
        (True, "number of seconds"),
        ("1", "number of seconds"),
        (1.0, r"shorter than the clip \(1 s\)"),
        (2.5, r"shorter than the clip \(1 s\)"),
        (0.04, r"2 frames: give at least one span \(3 frames = 0.06 s\)"),
        (0.98, r"49 frames, but MAGNeT decodes 48 frames"),
    ],
)
def test_bad_prefix_seconds_is_refused_before_any_step(hybrid, prefix_seconds, message):
    with pytest.raises(ValueError, match=message):
        hybrid.steps(PROMPTS, CONFIG, prefix_seconds=prefix_seconds, ar_config=AR_CONFIG)


def test_prefix_frames_counts_whole_frames():
    assert prefix_frames(0.2, 50, FRAMES, 3, DURATION) == 10
    assert prefix_frames(0.06, 50, FRAMES, 3, DURATION) == 3  # one span exactly
    assert prefix_frames(0.079, 50, FRAMES, 3, DURATION) == 3
    assert prefix_frames(0.94, 50, FRAMES, 3, DURATION) == 47  # the last frame left to MAGNeT


def test_other_bad_inputs_are_refused(model, hybrid, folders):
    with pytest.raises(ValueError, match="other tokens"):
        HybridEngine(model, AREngine(load_rescorer(str(folders["ar"])).lm, frame_rate=25))
    with pytest.raises(ValueError, match="AREngine or an LMRescorer"):
        HybridEngine(model, object())
    with pytest.raises(ValueError, match="decoding_steps has 2 entries"):
        hybrid.steps(PROMPTS, CONFIG.replace(decoding_steps=(2, 2)), prefix_seconds=PREFIX_SECONDS)
    with pytest.raises(ValueError, match="Prompt 2 is empty"):
        hybrid.steps(["piano", " "], CONFIG, prefix_seconds=PREFIX_SECONDS, ar_config=AR_CONFIG)
