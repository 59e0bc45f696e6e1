"""Pictures of a run (magnet_demo.viz): exact canvas colours, shapes, schedules, spectrogram, GIF.

Records are built by hand (3 codebooks x 6 frames), so no model is needed.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magnet_demo import viz
from magnet_demo.controls import ControlValues
from magnet_demo.records import StepRecord
from magnet_demo.schedules import CFGSchedule

K, T, MASK_ID = 3, 6, 64


def record(
    stage: int,
    step: int,
    mask_before: list[bool],
    mask_after: list[bool],
    confidence: list[float] | None = None,
    rescorer: list[float] | None = None,
    steps_in_stage: int = 2,
    cfg: float = 3.0,
) -> StepRecord:
    before = np.array([mask_before])
    after = np.array([mask_after])
    tokens = np.full((1, K, T), MASK_ID, dtype=np.int16)
    tokens[:, : stage + 1] = 7
    if confidence is None:
        confidence = [0.5 if m else np.nan for m in mask_before]
    return StepRecord(
        stage=stage,
        step=step,
        steps_in_stage=steps_in_stage,
        global_step=stage * steps_in_stage + step,
        total_steps=K * steps_in_stage,
        mask_rate=1.0 if step == 0 else 0.0,
        num_masked=int(before.sum()),
        num_units=T,
        cfg_coef=cfg,
        temperature=1.0,
        rescore_weight=0.0 if rescorer is None else 0.5,
        controls=ControlValues(CFGSchedule("linear", 3.0, 1.0), 2.0, 0.0),
        tokens=tokens,
        mask_before=before,
        mask_after=after,
        confidence=np.array([confidence], dtype=np.float32),
        rescorer_confidence=None if rescorer is None else np.array([rescorer], dtype=np.float32),
        scores=np.zeros((1, 1, T), dtype=np.float32),
        rng_state=np.zeros(4, dtype=np.uint8),
        mask_id=MASK_ID,
    )


# stage 1 (codebook 2), step 1: frames 0-1 fixed earlier, 2-3 unmasked now, 4-5 re-masked
MIDDLE = record(1, 0, [False, False, True, True, True, True], [False, False, False, False, True, True])
EXPECTED = np.array(
    [
        [viz.STATE_FIXED] * T,
        [viz.STATE_FIXED] * 2 + [viz.STATE_NEW] * 2 + [viz.STATE_REMASKED] * 2,
        [viz.STATE_MASKED] * T,
    ]
)


def pixel(image: np.ndarray, codebook: int, frame: int, fw: int) -> tuple[int, ...]:
    y = codebook * (viz.ROW_PX + viz.ROW_GAP) + viz.ROW_PX // 2
    return tuple(int(c) for c in image[y, frame * fw + fw // 2])


def test_canvas_states_per_codebook_and_frame():
    np.testing.assert_array_equal(viz.canvas_states(MIDDLE), EXPECTED)


def test_canvas_pixels_have_exact_state_colours():
    fw = 4
    image = viz.canvas_image(MIDDLE, frame_px=fw)
    assert image.shape == (K * viz.ROW_PX + (K - 1) * viz.ROW_GAP, T * fw, 3)
    assert image.dtype == np.uint8
    for k in range(K):
        for t in range(T):
            assert pixel(image, k, t, fw) == tuple(int(c) for c in viz.STATE_COLOURS[EXPECTED[k, t]])
    # every pixel of a frame's band has its colour; the gaps between bands are background
    band = image[viz.ROW_PX + viz.ROW_GAP : 2 * viz.ROW_PX + viz.ROW_GAP, 2 * fw : 4 * fw]
    assert (band == viz.STATE_COLOURS[viz.STATE_NEW]).all()
    assert (image[viz.ROW_PX : viz.ROW_PX + viz.ROW_GAP] == viz.BACKGROUND).all()


def test_state_colours_are_distinct_and_legend_matches():
    assert len({tuple(c) for c in viz.STATE_COLOURS}) == len(viz.STATE_LABELS) == 6
    items = viz.legend_items()
    assert [label for label, _ in items] == list(viz.STATE_LABELS)
    assert items[viz.STATE_NEW][1] == viz.hex_colour(viz.STATE_COLOURS[viz.STATE_NEW])


def test_first_and_last_steps():
    first = record(0, 0, [True] * T, [True, True, False, False, True, True])
    assert (
        list(viz.canvas_states(first)[0])
        == [viz.STATE_REMASKED] * 2 + [viz.STATE_NEW] * 2 + [viz.STATE_REMASKED] * 2
    )
    assert (viz.canvas_states(first)[1:] == viz.STATE_MASKED).all()
    last = record(2, 1, [False, True, False, False, False, False], [False] * T)
    states = viz.canvas_states(last)
    assert (states[:2] == viz.STATE_FIXED).all()
    assert list(states[2]) == [viz.STATE_FIXED, viz.STATE_NEW] + [viz.STATE_FIXED] * 4


def test_confidence_strip_colours():
    rec = record(
        0, 0, [True] * 3 + [False] * 3, [False] * T, confidence=[0.0, 1.0, 0.5, np.nan, np.nan, np.nan]
    )
    strip = viz.confidence_image(rec, frame_px=1)
    assert strip.shape == (viz.STRIP_PX, T, 3)
    lut = viz._CONFIDENCE_LUT
    assert tuple(strip[0, 0]) == tuple(lut[0])
    assert tuple(strip[0, 1]) == tuple(lut[255])
    assert tuple(strip[0, 2]) == tuple(lut[128])
    assert tuple(strip[0, 3]) == viz.NOT_PREDICTED
    rescored = record(0, 0, [True] * T, [False] * T, rescorer=[0.0] * T)
    both = viz.confidence_image(rescored, frame_px=1)
    assert both.shape == (2 * viz.STRIP_PX + viz.STRIP_GAP, T, 3)
    assert tuple(both[-1, 0]) == tuple(lut[0])


def test_step_image_embeds_the_canvas():
    image = viz.step_image(MIDDLE, frame_rate=50)
    fw = viz.frame_width(T)
    canvas = viz.canvas_image(MIDDLE, frame_px=fw)
    top, left = viz.HEADER_PX, viz.LABEL_PX
    assert image.shape[1] == viz.LABEL_PX + T * fw + viz.RIGHT_PX
    np.testing.assert_array_equal(image[top : top + canvas.shape[0], left : left + canvas.shape[1]], canvas)
    assert "codebook 2/3" in viz.step_title(MIDDLE)


def test_frame_width_targets_the_canvas_width():
    assert viz.frame_width(498) == 2
    assert viz.frame_width(1500) == 1
    assert viz.frame_width(250) == 4


def test_planned_schedules():
    controls = ControlValues(CFGSchedule("linear", 10.0, 1.0), 3.0, 0.0)
    plan = viz.planned_schedules((4, 2), controls)
    assert plan["mask_rate"].shape == (6,)
    assert plan["mask_rate"][0] == pytest.approx(1.0)
    assert plan["mask_rate"][3] == pytest.approx(0.0, abs=1e-6)
    assert plan["cfg_coef"][0] == pytest.approx(10.0)
    assert plan["cfg_coef"][3] == pytest.approx(1.0, abs=1e-5)
    assert plan["temperature"][0] == pytest.approx(3.0 * 3 / 4)
    assert plan["temperature"][4] == pytest.approx(3.0 * 1 / 2)


def test_spectrogram_of_a_sine():
    sr, freq = 16000, 1000.0
    audio = np.sin(2 * np.pi * freq * np.arange(sr) / sr).astype(np.float32)
    db = viz.spectrogram_db(audio)
    assert db.shape[0] == viz.SPECTROGRAM_FFT // 2 + 1
    assert abs(int(db.mean(axis=1).argmax()) - round(freq * viz.SPECTROGRAM_FFT / sr)) <= 1
    image = viz.spectrogram_image(audio, sr, "sine")
    width, height = viz.SPECTROGRAM_SIZE_PX
    assert image.shape == (height, width, 3)


def test_animation_gif(tmp_path):
    records = [record(0, 0, [True] * T, [True] * 3 + [False] * 3), MIDDLE]
    path = viz.animation_gif(records, tmp_path / "run.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 2
        assert gif.size == (viz.step_image(MIDDLE).shape[1], viz.step_image(MIDDLE).shape[0])
    with pytest.raises(ValueError):
        viz.animation_gif([], tmp_path / "empty.gif")
