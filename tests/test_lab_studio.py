"""Autoregressive and Hybrid runs in the studio, through the page's handlers on a tiny model that
offers its own tiny autoregressive partner: they stream to the canvas, end with audio and files,
say their phases' times, and refuse what they cannot do, readably."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from visitors import FakeRequest

from bench.space_emulation import GENERATE
from magnet_demo.canvas_feed import parse
from magnet_demo.sources import ModelSources
from magnet_demo.studio.handlers import DemoApp, screen_of
from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer

pytestmark = pytest.mark.usefixtures("one_thread", "hub_offline")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lab")
    paired, alone = root / "paired", root / "alone"
    write_tiny_checkpoint(paired)
    write_tiny_rescorer(paired / "rescorer", paired)  # offered for the folder (its own partner)
    write_tiny_checkpoint(alone)
    return {"paired": str(paired), "alone": str(alone)}


@pytest.fixture(scope="module")
def app(folders, tmp_path_factory) -> DemoApp:
    return DemoApp(
        default_model=folders["paired"],
        output_root=tmp_path_factory.mktemp("outputs"),
        sources=ModelSources(roots=(str(tmp_path_factory.getbasetemp()),)),
    )


def settings(model: str, **changes) -> dict:
    ours = dict(prompt="calm piano", model=model, decoding_steps="3, 2, 2, 2", seed=5, duration=2.0)
    return {**GENERATE, **ours, **changes}


def files_of(app: DemoApp, key: str) -> dict:
    """The last update of the files that follow a run (outside the decoding slot)."""
    return [screen_of(u) for u in app.run_files(request=FakeRequest(key))][-1]


def run_all(app: DemoApp, key: str, **changes) -> list[dict]:
    model = changes.pop("model", app.studio.catalog.default_model)
    return [screen_of(u) for u in app.generate(**settings(model, **changes), request=FakeRequest(key))]


def test_an_autoregressive_run_streams_its_diagonal_and_ends_with_audio_and_files(app):
    screens = run_all(app, "ar", method="autoregressive")
    run = app.studio.sessions.get("ar").runs[0]
    assert run.status == "finished" and run.total_steps == 11  # 100 frames + 3 delays, 10 steps a record
    assert len(run.records) == 11 and all(r.is_autoregressive for r in run.records)
    steps = [line for line in parse(screens[-1]["canvas"]) if line["kind"] == "step"]
    assert [line["index"] for line in steps] == list(range(11)) and all("rows" in line for line in steps)
    assert any("autoregressive · record" in (s.get("status") or "") for s in screens)
    sample_rate, samples = next(s["audio"]["value"] for s in screens if (s.get("audio") or {}).get("value"))
    assert samples.size == 100 * 640  # every frame the autoregressive model wrote (no span trimming)
    names = sorted(f.rsplit("/", 1)[-1] for f in files_of(app, "ar")["downloads"])
    assert names == ["run01-trace.npz", "run01.gif", "run01.wav"]
    sound, text = app.inspect(1, 3, request=FakeRequest("ar"))
    assert "written" in text and sound[1].size == 27 * 640  # 30 steps: 27 frames of every codebook
    # re-decoding from record 3 with the same settings writes the same clip (the generator state
    # and the canvas are in the record; the model's cache is rebuilt)
    list(app.fork(1, 3, **settings(app.studio.catalog.default_model), request=FakeRequest("ar")))
    parent, fork = app.studio.sessions.get("ar").runs
    assert fork.status == "finished" and len(fork.records) == 11 and fork.records[2] is parent.records[2]
    assert np.array_equal(fork.records[-1].tokens, parent.records[-1].tokens)


def test_a_hybrid_run_says_the_time_of_each_phase(app):
    screens = run_all(app, "hybrid", method="hybrid", prefix_seconds=0.5)
    run = app.studio.sessions.get("hybrid").runs[0]
    assert run.status == "finished" and run.total_steps == 3 + 9  # 25 frames + 3 delays, then 3-2-2-2
    assert [r.is_autoregressive for r in run.records] == [True] * 3 + [False] * 9
    statuses = [s.get("status") or "" for s in screens]
    assert any("Hybrid, autoregressive prefix (0.5 s)" in s for s in statuses)
    assert any("Hybrid, MAGNeT phase" in s for s in statuses)
    assert "autoregressive prefix" in statuses[-1] and "MAGNeT" in statuses[-1]
    names = sorted(f.rsplit("/", 1)[-1] for f in files_of(app, "hybrid")["downloads"])
    assert names == ["run01-trace.npz", "run01.gif", "run01.wav"]  # every file written, none refused
    last = run.records[-1]
    assert np.array_equal(last.tokens[..., :25], run.records[2].tokens[..., :25])  # the prefix stays
    assert last.given[0, :, :25].all() and not (last.tokens == last.mask_id).any()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(method="hybrid", prefix_seconds=2.0), "The Hybrid prefix .* must be shorter than the clip"),
        (dict(method="diffusion"), "Method must be one of magnet, hybrid, autoregressive"),
        (dict(method="autoregressive", mode="continue"), "write from the prompt alone"),
    ],
)
def test_lab_settings_are_refused_readably(app, changes, message):
    with pytest.raises(gr.Error, match=message):
        run_all(app, "refused", audio=None if "mode" not in changes else "x.wav", **changes)


def test_a_model_without_a_partner_refuses_the_lab_methods(app, folders):
    with pytest.raises(gr.Error, match="need the model's autoregressive partner"):
        run_all(app, "alone", model=folders["alone"], method="autoregressive")


def test_the_compare_preset_makes_three_runs_and_the_view_shows_two(app):
    key = "preset"
    updates = list(
        app.compare_methods(
            **settings(app.studio.catalog.default_model, random_seed=True), request=FakeRequest(key)
        )
    )
    runs = app.studio.sessions.get(key).runs
    assert [r.method for r in runs] == ["magnet", "hybrid", "autoregressive"]
    assert len({r.seed for r in runs}) == 1 and all(r.status == "finished" for r in runs)
    starts = [screen_of(u)["status"] for u in updates if "starting" in (screen_of(u).get("status") or "")]
    assert len(starts) == 3  # each run streams from its own start
    table, run_a, run_b, canvas_a, canvas_b, audio_a, audio_b, timing = app.views.compare_latest(
        request=FakeRequest(key)
    )
    assert [row[:2] for row in table["data"]] == [
        [1, "MAGNeT"],
        [2, "Hybrid (AR prefix, then MAGNeT)"],
        [3, "Autoregressive"],
    ]
    # model passes: 9 MAGNeT steps; a 1 s prefix (50 frames + 3 delays) then 9; 100 + 3 AR steps
    assert [row[6] for row in table["data"]] == [9, 53 + 9, 103]
    assert run_a["value"] == 1 and run_b["value"] == 3
    assert canvas_a.shape[2] == canvas_b.shape[2] == 3 and abs(canvas_a.shape[1] - canvas_b.shape[1]) <= 12
    assert audio_a["value"] is not None and audio_b["value"] is not None
    assert "run #1 (MAGNeT)" in timing and "run #3 (Autoregressive)" in timing and "x the time of A" in timing
    picked = app.views.compare(2, 1, request=FakeRequest(key))
    assert picked[1]["value"] == 2 and "autoregressive prefix" in picked[-1]
