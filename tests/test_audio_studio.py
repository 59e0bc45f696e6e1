"""Audio in, through the studio's handlers: continue a clip, re-decode a region, and their refusals.

The handlers run the real engine on the tiny model; the input is a WAV written into Gradio's
upload folder (a temporary one), as an upload would be.
"""

from __future__ import annotations

import gradio as gr
import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from test_ui import FakeRequest, settings

from magnet_demo import audio_in
from magnet_demo.audio_modes import CONTINUE, REGION
from magnet_demo.canvas_feed import parse, unb64
from magnet_demo.sources import ModelSources
from magnet_demo.studio.handlers import DemoApp, screen_of
from magnet_demo.studio.page import MainView
from magnet_demo.studio.wiring import launch_local

DURATION = 3.0
T = 150  # 3 s at 50 Hz, a multiple of the span: 'nonoverlap' keeps every frame
CLIP_RATE = 44_100


@pytest.fixture(scope="module")
def tiny_model(tiny_folder) -> str:
    return str(tiny_folder)


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory) -> DemoApp:
    demo_app = DemoApp(
        default_model=tiny_model,
        output_root=tmp_path_factory.mktemp("outputs"),
        sources=ModelSources(roots=(str(tmp_path_factory.getbasetemp()),)),
    )
    return demo_app


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def upload(tmp_path, monkeypatch) -> dict:
    """A 3 s stereo clip at 44.1 kHz in a temporary upload folder, as Gradio's FileData."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    t = np.arange(int(DURATION * CLIP_RATE)) / CLIP_RATE
    left = 0.4 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
    right = 0.3 * np.sign(np.sin(2 * np.pi * 3 * t)) * np.random.default_rng(0).uniform(-1, 1, t.size)
    path = folder / "clip.wav"
    sf.write(path, np.stack([left, right], axis=1), CLIP_RATE)
    return {"path": str(path), "orig_name": "clip.wav"}


def run_settings(model: str, **changes) -> dict:
    return settings(model, duration=DURATION, **changes)


def last_run(app: DemoApp, key: str):
    return app.studio.sessions.get(key).runs[-1]


def test_inpaint_keeps_everything_outside_the_region(app, tiny_model, upload):
    key = FakeRequest("inpaint")
    updates = list(app.inpaint(upload, 1.0, 2.0, **run_settings(tiny_model), request=key))
    run = last_run(app, "inpaint")
    assert run.status == "finished" and run.source == "re-decodes 0.96-2.04 s of 'clip.wav'"
    assert "widened to whole spans: 0.96-2.04 s" in screen_of(updates[0])["status"]
    expected = np.ones((1, 4, T), dtype=bool)
    expected[..., 48:102] = False  # frames 50-100 grown to whole spans of 3
    np.testing.assert_array_equal(run.given, expected)
    for record in run.records:
        np.testing.assert_array_equal(
            record.tokens[:, :, expected[0, 0]], run.given_tokens[:, :, expected[0, 0]]
        )
    final = run.records[-1].tokens
    assert (final[..., 48:102] != run.given_tokens[..., 48:102]).any()
    header = parse(screen_of(updates[-1])["canvas"])[0]
    bits = np.unpackbits(unb64(header["given"], np.uint8))[: 4 * T].reshape(4, T).astype(bool)
    np.testing.assert_array_equal(bits, expected[0])
    assert "re-decodes 0.96-2.04 s of 'clip.wav'" in app.studio.sessions.get("inpaint").choices()[-1][0]


def test_continue_keeps_the_first_seconds(app, tiny_model, upload):
    key = FakeRequest("continue")
    list(app.continue_clip(upload, 1.0, **run_settings(tiny_model), request=key))
    run = last_run(app, "continue")
    assert run.source == "continues the first 1 s of 'clip.wav'"
    assert run.given[..., :50].all() and not run.given[..., 50:].any()
    codes, _ = audio_in.audio_codes(app.studio.catalog.load(tiny_model), upload["path"], duration=1.0)
    np.testing.assert_array_equal(run.records[-1].tokens[..., :50], codes.numpy()[..., :50])


def test_the_pages_generate_button_reaches_the_same_run(app, tiny_model, upload):
    key = FakeRequest("modes")
    list(app.inpaint(upload, 1.0, 2.0, **run_settings(tiny_model), request=key))
    page = dict(mode=REGION, audio=upload, region_start=1.0, region_end=2.0)
    list(app.generate(**run_settings(tiny_model), **page, request=key))
    api_run, page_run = app.studio.sessions.get("modes").runs
    np.testing.assert_array_equal(api_run.records[-1].tokens, page_run.records[-1].tokens)
    list(app.generate(**run_settings(tiny_model), mode=CONTINUE, audio=upload, keep_seconds=2.0, request=key))
    assert last_run(app, "modes").given[..., :100].all()


def test_fork_of_an_inpainting_run_keeps_the_given_tokens(app, tiny_model, upload):
    key = FakeRequest("fork-inpaint")
    list(app.inpaint(upload, 0.0, 1.5, **run_settings(tiny_model), request=key))
    parent = last_run(app, "fork-inpaint")
    list(app.fork(parent.number, 4, **run_settings(tiny_model, seed=99), request=key))
    child = last_run(app, "fork-inpaint")
    assert child.source == parent.source and child.status == "finished"
    kept = parent.given[0, 0]
    np.testing.assert_array_equal(child.records[-1].tokens[..., kept], parent.given_tokens[..., kept])


def test_a_region_over_the_whole_clip_is_plain_generation(app, tiny_model, upload):
    key = FakeRequest("whole")
    updates = list(app.inpaint(upload, 0.0, DURATION, **run_settings(tiny_model), request=key))
    run = last_run(app, "whole")
    assert audio_in.PLAIN_GENERATION_NOTE in screen_of(updates[0])["status"]
    assert run.given is None and run.status == "finished"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (dict(mode=REGION, region_start=2.0, region_end=1.0), "is reversed"),
        (dict(mode=REGION, region_start=1.0, region_end=1.0), "has zero length"),
        (dict(mode=REGION, region_start=1.0, region_end=9.0), "is outside the clip"),
        (dict(mode=CONTINUE, keep_seconds=3.0), "leaves nothing to generate"),
        (dict(mode=CONTINUE, keep_seconds=-1), "Seconds to keep must be"),
        (dict(mode="remix"), "Unknown mode 'remix'"),
    ],
)
def test_bad_requests_are_refused_with_a_message(app, tiny_model, upload, call, message):
    with pytest.raises(gr.Error, match=message):
        list(app.generate(**run_settings(tiny_model), audio=upload, **call, request=FakeRequest("bad")))


def test_only_uploaded_files_are_read(app, tiny_model, upload, tmp_path):
    elsewhere = tmp_path / "secret.wav"
    sf.write(elsewhere, np.zeros(32000), 32000)
    for audio in ({"path": str(elsewhere)}, str(elsewhere), {"path": upload["path"] + "/../../secret.wav"}):
        with pytest.raises(gr.Error, match="was not uploaded to this server"):
            list(app.continue_clip(audio, 1.0, **run_settings(tiny_model), request=FakeRequest("foreign")))
    with pytest.raises(gr.Error, match="needs audio"):
        list(app.continue_clip(None, 1.0, **run_settings(tiny_model), request=FakeRequest("foreign")))
    empty = tmp_path / "uploads" / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match="'empty.wav' is empty"):
        list(app.continue_clip(str(empty), 1.0, **run_settings(tiny_model), request=FakeRequest("foreign")))
    assert app.studio.sessions.get("foreign") is None or not app.studio.sessions.get("foreign").runs


def test_a_runs_audio_becomes_the_input(app, tiny_model):
    key = FakeRequest("reuse")
    list(app.generate(**run_settings(tiny_model), request=key))
    path = app.use_run_audio(1, 1, key)
    assert path.endswith("run01.wav")
    with pytest.raises(gr.Error, match="no run #7"):
        app.use_run_audio(7, 1, key)


def test_inpaint_endpoint_through_gradio_client(tiny_model, tmp_path, upload):
    app = DemoApp(default_model=tiny_model, output_root=tmp_path / "outputs")
    demo, url = launch_local(app)
    try:
        client = Client(url, verbose=False, download_files=False)
        outputs = client.predict(
            handle_file(upload["path"]), 1.0, 2.0, **run_settings(tiny_model), api_name="/inpaint"
        )
        header, *lines = parse(outputs[MainView.position("canvas")])
        assert header["given"] is not None and sum(line["kind"] == "step" for line in lines) == 9
        assert outputs[MainView.position("step_info")]["audio_in"] == "re-decodes 0.96-2.04 s of 'clip.wav'"
    finally:
        demo.close()
