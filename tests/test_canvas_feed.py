"""The canvas feed (magnet_demo.canvas_feed): what the page draws from, exact and append-only.

Records come from the real engine on the tiny model; the feed's lines must give back exactly the
states, tokens and (quantised) confidences the server-side pictures use.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from magnet_demo import canvas_feed, viz
from magnet_demo.canvas_feed import CanvasFeed, confidence_bytes, parse, unb64
from magnet_demo.controls import DecodingConfig
from magnet_demo.schedules import CFGSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = (4, 2, 2, 2)
TEN_SECONDS = DecodingConfig(decoding_steps=STEPS, duration=10.0)
#: the issue's budget for one step of one 10 s sample
MAX_STEP_BYTES = 10_000


@pytest.fixture(scope="module")
def ten_seconds(engine):
    return engine.decode(["slow piano"], TEN_SECONDS, seed=3, with_audio=False)


def feed_of(result, **kwargs) -> CanvasFeed:
    T = result.tokens.shape[-1]
    return CanvasFeed(7, STEPS, T, 50.0, **kwargs)


def test_steps_give_back_states_tokens_and_confidences(ten_seconds):
    feed = feed_of(ten_seconds)
    lines = parse(feed.sync(ten_seconds.records))
    header, plan, *steps = lines
    assert header["kind"] == "run" and header["frames"] == 498 and header["codebooks"] == 4
    assert [item["label"] for item in header["legend"]] == list(viz.STATE_LABELS)
    assert plan["kind"] == "plan" and len(plan["mask_rate"]) == sum(STEPS)
    assert [s["index"] for s in steps] == list(range(sum(STEPS)))
    for record, step in zip(ten_seconds.records, steps, strict=True):
        states = viz.canvas_states(record)
        np.testing.assert_array_equal(unb64(step["state"], np.uint8), states[record.stage])
        np.testing.assert_array_equal(unb64(step["tokens"], np.uint16), record.tokens[0, record.stage])
        confidence = unb64(step["confidence"], np.uint8)
        predicted = np.isfinite(record.confidence[0])
        assert (confidence[~predicted] == canvas_feed.NOT_PREDICTED_BYTE).all()
        np.testing.assert_allclose(
            confidence[predicted] / 254, record.confidence[0][predicted], atol=0.5 / 254
        )
        assert step["title"] == viz.step_title(record)
        assert step["cfg_coef"] == round(record.cfg_coef, 4) and step["rescorer"] is None


def test_a_step_of_ten_seconds_is_under_ten_kilobytes(ten_seconds):
    feed = feed_of(ten_seconds)
    sizes = []
    for n in range(1, len(ten_seconds.records) + 1):
        before = len(feed.text)
        sizes.append(len(feed.sync(ten_seconds.records[:n]).encode()) - before)
    assert max(sizes) < MAX_STEP_BYTES
    assert max(sizes[1:]) < 3_000  # 498 states + 498 confidences + 498 uint16 tokens, base64, and a title


def test_the_text_only_grows_and_each_plan_is_sent_once(ten_seconds):
    records = list(ten_seconds.records)
    steered = dataclasses.replace(records[0].controls, cfg=CFGSchedule("linear", 7.0, 7.0))
    records[5:] = [dataclasses.replace(r, controls=steered) for r in records[5:]]
    feed = feed_of(ten_seconds)
    texts = [feed.sync(records[:n]) for n in range(len(records) + 1)]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
    lines = parse(texts[-1])
    plans = [line for line in lines if line["kind"] == "plan"]
    assert [p["id"] for p in plans] == [0, 1]
    assert plans[1]["cfg_coef"] == [7.0] * sum(STEPS)
    assert [s["plan"] for s in lines if s["kind"] == "step"] == [0] * 5 + [1] * (len(records) - 5)
    # a second feed of the same run is a new picture: its header differs
    assert feed_of(ten_seconds).text.splitlines()[0] != texts[0].splitlines()[0]


def test_a_run_without_steps_has_its_plan(ten_seconds):
    feed = feed_of(ten_seconds)
    lines = parse(feed.sync([], ten_seconds.records[0].controls))
    assert [line["kind"] for line in lines] == ["run", "plan"]


def test_given_tokens_travel_as_bits_and_ids(ten_seconds):
    T = ten_seconds.tokens.shape[-1]
    given = np.zeros((4, T), dtype=bool)
    given[:, :60] = True
    given[:, 300:330] = True
    tokens = np.arange(4 * T, dtype=np.int64).reshape(4, T) % 64
    header = parse(feed_of(ten_seconds, given=given, given_tokens=tokens).text)[0]
    bits = np.unpackbits(unb64(header["given"], np.uint8))[: 4 * T].reshape(4, T)
    np.testing.assert_array_equal(bits.astype(bool), given)
    ids = unb64(header["given_tokens"], np.uint16).reshape(4, T)
    np.testing.assert_array_equal(ids, np.where(given, tokens, 0))


def test_confidence_bytes_are_exact_at_the_ends():
    values = np.array([0.0, 1.0, 0.5, np.nan, 1.7, -0.2], dtype=np.float32)
    assert confidence_bytes(values).tolist() == [0, 254, 127, 255, 254, 0]
