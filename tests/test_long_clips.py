"""Clips longer than the model's window in the studio: a 30 s run of a 12 s tiny model through the
page's handler and through /generate's API path, window after window on one canvas."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from visitors import FakeRequest

from bench.space_emulation import GENERATE
from magnet_demo.canvas_feed import parse, unb64
from magnet_demo.studio.decoding import job_of
from magnet_demo.studio.handlers import DemoApp, screen_of
from magnet_demo.tiny import write_tiny_checkpoint
from magnet_demo.trace import load_trace

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = "3, 2, 2, 2"


@pytest.fixture(scope="module")
def app(tmp_path_factory, hub_offline):
    root = tmp_path_factory.mktemp("long")
    model = write_tiny_checkpoint(root / "model")  # a 12 s window, 50 Hz, spans of 3
    yield DemoApp(default_model=str(model), output_root=root / "outputs")


def settings(app, **changes) -> dict:
    ours = dict(prompt="calm piano", model=app.studio.catalog.default_model, decoding_steps=STEPS, seed=3)
    return {**GENERATE, **ours, **changes}


def test_a_30_s_clip_is_decoded_window_after_window_on_one_canvas(app):
    key = FakeRequest("long")
    updates = [
        screen_of(u) for u in app.generate(**settings(app, duration=30.0, overlap_seconds=5.0), request=key)
    ]
    run = app.studio.sessions.get("long").runs[0]
    windows = run.plan.windows
    # 1500 frames; windows of 600 (12 s) continuing the last 249 (5 s cut to spans of 3)
    assert [(w.start, w.stop, w.given) for w in windows] == [
        (0, 600, 0),
        (351, 951, 249),
        (702, 1302, 249),
        (1053, 1500, 249),
    ]
    assert run.status == "finished" and len(run.records) == run.total_steps == 4 * 9
    assert job_of(run, False).planned_steps == 36  # what ZeroGPU's duration counts
    assert any("window 3/4" in (u.get("status") or "") for u in updates)
    # tokens inside each window's given span equal the previous window's, in every codebook
    ends = [r for r in run.records if r.is_stage_end and r.stage == 3]
    assert len(ends) == 4
    for before, after in zip(ends, ends[1:], strict=False):
        start, given = after.window[2], windows[after.window[0]].given
        assert np.array_equal(
            after.tokens[..., start : start + given], before.tokens[..., start : start + given]
        )
    final = run.records[-1].tokens
    assert final.shape[-1] == 1500 and not (final == run.records[-1].mask_id).any()
    # the canvas covers 30 s: its header, and the last step's rows all fixed or given
    lines = parse(updates[-1]["canvas"])
    assert lines[0]["frames"] == 1500 and lines[0]["codebooks"] == 4
    rows = unb64([line for line in lines if line["kind"] == "step"][-1]["rows"], np.uint8).reshape(4, 1500)
    assert set(np.unique(rows)) <= {1, 2, 4}  # fixed, newly unmasked, given: nothing masked
    # a middle step: earlier windows done, later ones not begun
    middle = parse(updates[-1]["canvas"])[1 + 1 + 9 + 4]  # header, plan, window 0, window 1's 5th step
    assert middle["kind"] == "step"
    rows = unb64(middle["rows"], np.uint8).reshape(4, 1500)
    assert (rows[:, :351] == 1).all() and (rows[:, 951:] == 0).all()
    # the audio is 30 s; the trace keeps the windows
    sample_rate, samples = next(u["audio"]["value"] for u in updates if (u.get("audio") or {}).get("value"))
    assert samples.size == 1500 * 640
    list(app.run_files(request=key))
    records, _ = load_trace(next(p for p in run.files if p.suffix == ".npz"))
    assert [r.window for r in records] == [r.window for r in run.records]
    sound, text = app.inspect(1, 12, request=key)  # window 2's third step: heard up to its end
    assert sound[1].size == 951 * 640 and "step 12 of 36" in text


def test_long_clips_are_refused_readably_where_they_cannot_be(app):
    with pytest.raises(gr.Error, match="Autoregressive runs need the model.s autoregressive partner"):
        list(app.generate(**settings(app, duration=20.0, method="autoregressive"), request=FakeRequest("r1")))
    with pytest.raises(gr.Error, match="longer than this server decodes \\(60 s"):
        list(app.generate(**settings(app, duration=61.0), request=FakeRequest("r2")))
    with pytest.raises(gr.Error, match="The overlap \\(12 s\\) must be shorter than the window \\(12 s\\)"):
        list(app.generate(**settings(app, duration=20.0, overlap_seconds=12.0), request=FakeRequest("r3")))
