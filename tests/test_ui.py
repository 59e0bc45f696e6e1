"""The page's handlers on a tiny exported model, then the launched app driven by gradio_client."""

from __future__ import annotations

import time

import gradio as gr
import huggingface_hub.constants
import numpy as np
import pytest
from gradio_client import Client
from visitors import FakeRequest

from bench.space_emulation import GENERATE
from magnet_demo import viz
from magnet_demo.canvas_feed import parse, unb64
from magnet_demo.sources import ModelSources
from magnet_demo.studio.handlers import DemoApp, screen_of
from magnet_demo.studio.page import MainView
from magnet_demo.studio.wiring import launch_local
from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer
from magnet_demo.trace import load_trace

STEPS = "3, 2, 2, 2"
TOTAL = 9
LONG_STEPS = "20, 10, 10, 10"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    write_tiny_checkpoint(folder)
    write_tiny_rescorer(folder / "rescorer", folder)  # offered for the folder (its own rescorer)
    return str(folder)


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory) -> DemoApp:
    roots = (str(tmp_path_factory.getbasetemp()),)  # the tests' checkpoint folders are offered
    demo_app = DemoApp(
        default_model=tiny_model,
        output_root=tmp_path_factory.mktemp("outputs"),
        sources=ModelSources(roots=roots),
    )
    return demo_app


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Hub names fail at once instead of retrying the network for ~40 s."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def settings(model_name: str, **changes) -> dict:
    """Every input of /generate (bench.space_emulation's request, 3-2-2-2 steps of 2 s)."""
    ours = dict(
        prompt="an upbeat, happy pop track with piano and drums",
        model=model_name,
        decoding_steps=STEPS,
        seed=7,
    )
    return {**GENERATE, **ours, **changes}


#: the live controls as /steer takes them (form.LIVE_FIELDS), at the page's defaults
LIVE = dict(
    max_cfg_coef=10.0,
    min_cfg_coef=1.0,
    cfg_schedule="linear",
    cfg_curve="",
    temperature=3.0,
    rescore_weight=0.0,
)


def live(**changes) -> dict:
    return {**LIVE, **changes}


def step_updates(app: DemoApp, updates: list[tuple]) -> list[dict]:
    infos = [screen_of(u).get("step_info") or {} for u in updates]
    return [info for info in infos if "global_step" in info]


def final_audio(app: DemoApp, updates: list[tuple]) -> dict:
    """The audio update that carries sound (the run-start update only relabels the player)."""
    players = [screen_of(u).get("audio") or {} for u in updates]
    return next(player for player in players if player.get("value") is not None)


def streamed_in_order(steps: list[dict]) -> bool:
    """Step updates as a page gets them: in order, at most one per step, the last step last
    (a page slower than the decoding skips steps; the run records them all)."""
    shown = [s["global_step"] for s in steps]
    return shown == sorted(set(shown)) and shown[-1] == TOTAL - 1


def test_generate_streams_the_steps_then_audio_and_files(app, tiny_model):
    updates = list(app.generate(**settings(tiny_model), request=FakeRequest("generate")))
    steps = step_updates(app, updates)
    assert streamed_in_order(steps)
    feeds = [screen_of(u)["canvas"] for u in updates]
    assert all(later.startswith(earlier) for earlier, later in zip(feeds, feeds[1:], strict=False))
    lines = parse(feeds[-1])
    assert [line["index"] for line in lines if line["kind"] == "step"] == list(range(TOTAL))
    audio = final_audio(app, updates)
    sample_rate, samples = audio["value"]
    assert sample_rate == 32000 and samples.dtype == np.int16
    assert samples.size == 99 * 640  # nonoverlap trims 100 frames to 33 spans of 3; 640 samples a frame
    # the audio frees the decoding slot with its WAV; the trace and animation follow (/run_files)
    assert [f.rsplit("/", 1)[-1] for f in screen_of(updates[-1])["downloads"]] == ["run01.wav"]
    files_updates = [screen_of(u) for u in app.run_files(request=FakeRequest("generate"))]
    assert files_updates[0]["spectrogram"].ndim == 3
    files = files_updates[-1]["downloads"]
    assert sorted(f.rsplit("/", 1)[-1] for f in files) == ["run01-trace.npz", "run01.gif", "run01.wav"]
    assert list(app.run_files(request=FakeRequest("generate"))) == []  # shown once
    run = app.studio.sessions.get("generate").runs[0]
    assert run.status == "finished" and len(run.records) == TOTAL
    assert "finished" in screen_of(updates[-1])["status"]


def test_late_files_of_a_run_leave_the_run_on_screen_there(app, tiny_model):
    """A run's files are written after its audio frees the slot: a visitor may start the next run
    (or put another back on screen) first. Their late arrival adds them to the downloads only."""
    key = FakeRequest("late-files")
    list(app.generate(**settings(tiny_model), request=key))
    late = app.run_files(request=key)
    assert screen_of(next(late))["spectrogram"].ndim == 3  # run #1's follow-up has begun ...
    second = list(app.generate(**settings(tiny_model, seed=8), request=key))  # ... run #2 comes on screen
    screen = screen_of(next(late))
    assert set(screen) == {"downloads"}  # not run #1's canvas, status and details over run #2's
    names = sorted(f.rsplit("/", 1)[-1] for f in screen["downloads"])
    assert names == ["run01-trace.npz", "run01.gif", "run01.wav", "run02.wav"]
    assert list(late) == []
    assert "Run #2" in screen_of(second[-1])["status"]
    mine = [screen_of(u) for u in app.run_files(request=key)]
    assert "**Run #2** finished" in mine[-1]["status"] and parse(mine[-1]["canvas"])[0]["run"] == 2
    # run #3 finishes, run #1 is put back on screen, then run #3's files arrive: run #1 stays
    list(app.generate(**settings(tiny_model, seed=9), request=key))
    assert "Run #1" in screen_of(app.show_run(1, request=key))["status"]
    assert [set(screen_of(u)) for u in app.run_files(request=key)] == [{"downloads"}]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"decoding_steps": "3, 2"}, "one step count per codebook"),
        ({"decoding_steps": "3, x, 2, 2"}, "'x' is not a whole number"),
        ({"decoding_steps": "3, 0, 2, 2"}, "must be an integer >= 1"),
        (
            {"duration": 61.0},
            "longer than this server decodes (60 s; clips longer than the model's 12 s window",
        ),
        ({"cfg_schedule": "curve", "cfg_curve": "5"}, "at least 2 points"),
        ({"samples": 9}, "between 1 and 8"),
        ({"model": "facebook/magnet-small-10secs"}, "Could not load 'facebook/magnet-small-10secs'"),
        ({"model": "/no/such/folder"}, "This server does not offer that model"),
    ],
)
def test_bad_settings_give_readable_errors(app, tiny_model, changes, message):
    with pytest.raises(gr.Error) as error:
        list(app.generate(**settings(tiny_model, **changes), request=FakeRequest("errors")))
    assert message in error.value.message
    assert "Traceback" not in error.value.message


def test_model_picker_reports_instead_of_raising(app, tiny_model):
    info, steps, *_ = app.model_changed("/no/such/folder")
    assert "cannot be used" in info and "This server does not offer that model" in info
    info, steps, duration, examples, weight, *sampling = app.model_changed(tiny_model, 10.0)
    assert "4 codebooks" in info and steps == "20, 10, 10, 10"
    assert duration["maximum"] == 60.0  # the server's longest clip (longer than the window: windows)
    assert "rescorer" in weight["info"]
    # no recommended settings: audiocraft's defaults, in SETTINGS_FIELDS' order
    assert [u["value"] for u in sampling] == [3.0, 0.9, 0, 10.0, 1.0, "max"]
    assert "recommended sampling" not in info


def test_model_picker_sets_the_models_recommended_sampling(app, tiny_folder, tmp_path):
    import json
    import shutil

    from magnet_demo.models import SETTINGS_FIELDS, SETTINGS_FILE

    folder = tmp_path / "tuned"
    shutil.copytree(tiny_folder, folder)
    (folder / SETTINGS_FILE).write_text(json.dumps({"temperature": 2.0, "max_cfg_coef": 4.0}))
    info, *_, temperature, top_p, top_k, max_cfg, min_cfg, scoring = app.model_changed(str(folder), 10.0)
    assert "recommended sampling: temperature 2.0, max_cfg_coef 4.0" in info
    values = [u["value"] for u in (temperature, top_p, top_k, max_cfg, min_cfg, scoring)]
    assert dict(zip(SETTINGS_FIELDS, values, strict=True)) == {
        "temperature": 2.0,
        "top_p": 0.9,
        "top_k": 0,
        "max_cfg_coef": 4.0,
        "min_cfg_coef": 1.0,
        "span_scoring": "max",
    }


def test_stop_cancels_between_steps_and_the_app_stays_usable(app, tiny_model):
    key = FakeRequest("stop")
    updates = app.generate(**settings(tiny_model, decoding_steps=LONG_STEPS), request=key)
    next(updates)  # run started
    next(updates)  # first step
    assert app.stop(key).startswith("Stopping run #1")
    list(updates)
    run = app.studio.sessions.get("stop").runs[0]
    assert run.status == "stopped" and 1 <= len(run.records) < 50
    assert run.audio is not None and any(p.suffix == ".wav" for p in run.files)
    assert app.stop(key) == "Nothing is decoding."
    list(app.generate(**settings(tiny_model), request=key))
    assert app.studio.sessions.get("stop").runs[1].status == "finished"


def test_live_steering_applies_from_a_later_step(app, tiny_model):
    key = FakeRequest("steer")
    updates = app.generate(**settings(tiny_model, decoding_steps="60, 20, 20, 20"), request=key)
    next(updates)
    next(updates)
    note = app.steer(key, **live(max_cfg_coef=20.0, cfg_schedule="constant", temperature=2.0))
    assert note.startswith("Applied to run #1")
    list(updates)
    records = app.studio.sessions.get("steer").runs[0].records
    changed = [r.controls.cfg.kind == "constant" for r in records]
    assert not changed[0]
    first = changed.index(True)
    assert all(changed[first:])  # from the step after the change on (exactly: tests/test_workers.py)
    assert records[-1].cfg_coef == 20.0 and records[-1].controls.temperature == 2.0
    assert app.steer(key, **live(cfg_schedule="curve", cfg_curve="3")).startswith("⚠️")
    assert app.steer(key, **live()) == "Live controls: used by the next run."


def test_fork_resumes_from_a_step_and_keeps_the_parent(app, tiny_model):
    key = FakeRequest("fork")
    list(app.generate(**settings(tiny_model), request=key))
    parent = app.studio.sessions.get("fork").runs[0]
    # same settings: the generator state is resumed too, so the fork reproduces the parent exactly
    list(app.fork(1, 4, **settings(tiny_model), request=key))
    same = app.studio.sessions.get("fork").runs[1]
    assert same.parent is parent and same.records[:4] == parent.records[:4]
    np.testing.assert_array_equal(same.records[-1].tokens, parent.records[-1].tokens)
    list(app.fork(1, 4, **settings(tiny_model, temperature=1.0, decoding_steps="9, 9, 3, 3"), request=key))
    other = app.studio.sessions.get("fork").runs[2]
    # step 4 is codebook 2's first step: codebooks 1-2 keep their step counts, 3-4 take the new ones
    assert other.config.decoding_steps == (3, 2, 3, 3) and other.notes
    assert len(other.records) == 3 + 2 + 3 + 3 and other.records[4].controls.temperature == 1.0
    assert len(parent.records) == TOTAL and parent.status == "finished"
    with pytest.raises(gr.Error, match="nothing is left"):
        list(app.fork(1, TOTAL, **settings(tiny_model), request=key))
    labels = [label for label, _ in app.studio.sessions.get("fork").choices()]
    assert labels[0].startswith("#3 ← #1 step 4")


def test_inspect_any_step_and_show_a_run(app, tiny_model):
    key = FakeRequest("inspect")
    assert app.inspect(1, 1, 1, key)[1].startswith("No step")
    list(app.generate(**settings(tiny_model), request=key))
    (sample_rate, audio), text = app.inspect(1, 2, 1, key)
    (_, last_audio), _ = app.inspect(1, TOTAL, 1, key)
    assert "step 2 of 9" in text and sample_rate == 32000
    assert not np.array_equal(audio, last_audio)
    shown = app.show_run(1, 1, key)
    assert screen_of(shown)["scrub"]["value"] == TOTAL
    header, *lines = parse(screen_of(shown)["canvas"])
    assert header["run"] == 1 and sum(line["kind"] == "step" for line in lines) == TOTAL


def test_temperature_annealing_is_a_setting(app, tiny_model):
    key = FakeRequest("anneal")
    list(app.generate(**settings(tiny_model, anneal_temp=False), request=key))
    list(app.generate(**settings(tiny_model), request=key))
    flat, annealed = app.studio.sessions.get("anneal").runs
    assert {r.temperature for r in flat.records} == {3.0} and not flat.config.anneal_temp
    assert min(r.temperature for r in annealed.records) < 3.0 and annealed.config.anneal_temp
    with pytest.raises(gr.Error, match="Temperature annealing must be true or false, got 'yes'"):
        list(app.generate(**settings(tiny_model, anneal_temp="yes"), request=key))


def test_the_unmasking_order_and_revision_are_settings_and_revised_spans_show(app, tiny_model, tmp_path):
    key = FakeRequest("orders")
    changes = dict(unmasking_order="entropy", revision_share=0.25, decoding_steps="6, 4, 4, 4")
    updates = list(app.generate(**settings(tiny_model, **changes), request=key))
    run = app.studio.sessions.get("orders").runs[0]
    assert (run.config.unmasking_order, run.config.revision_share) == ("entropy", 0.25)
    revised = [r for r in run.records if r.revised.any()]
    assert revised, "a quarter of the fixed spans are predicted again"
    lines = parse(screen_of(updates[-1])["canvas"])
    assert lines[0]["revision"] is True
    states = {int(v) for line in lines if line["kind"] == "step" for v in unb64(line["state"], np.uint8)}
    assert viz.STATE_REVISED in states
    files = [screen_of(u) for u in app.run_files(request=key)]
    assert files[-1]["status"].endswith("seed 7")  # every file written
    records, _ = load_trace(next(p for p in run.files if p.suffix == ".npz"))
    for loaded, kept in zip(records, run.records, strict=True):  # revision survives a trace
        assert np.array_equal(loaded.revised, kept.revised)
        assert (loaded.fixed_scores is None) == (kept.fixed_scores is None)
        assert kept.fixed_scores is None or np.array_equal(loaded.fixed_scores, kept.fixed_scores)
    with pytest.raises(gr.Error, match="Revision share must be between 0 and 0.5, got 0.9"):
        list(app.generate(**settings(tiny_model, revision_share=0.9), request=key))
    with pytest.raises(gr.Error, match="Unknown unmasking_order 'fastest'"):
        list(app.generate(**settings(tiny_model, unmasking_order="fastest"), request=key))


def test_several_samples_each_get_audio_and_a_picture(app, tiny_model):
    key = FakeRequest("samples")
    updates = list(app.generate(**settings(tiny_model, samples=2, sample_shown=2), request=key))
    run = app.studio.sessions.get("samples").runs[0]
    assert run.audio.shape[0] == 2
    assert sorted(p.name for p in run.files if p.suffix == ".wav") == [
        "run01-sample1.wav",
        "run01-sample2.wav",
    ]
    audio = final_audio(app, updates)
    np.testing.assert_array_equal(
        audio["value"][1], (run.audio[1] / np.abs(run.audio[1]).max() * 32767).astype(np.int16)
    )
    (_, first), _ = app.inspect(1, 3, 1, key)
    (_, second), _ = app.inspect(1, 3, 2, key)
    assert not np.array_equal(first, second)
    canvases = [parse(screen_of(app.show_run(1, shown, key))["canvas"]) for shown in (1, 2)]
    assert [c[0]["sample"] for c in canvases] == [0, 1]
    assert canvases[0][-1]["tokens"] != canvases[1][-1]["tokens"]


def test_rescoring_weight_uses_the_models_rescorer(app, tiny_model):
    key = FakeRequest("rescore")
    list(app.generate(**settings(tiny_model, rescore_weight=0.5), request=key))
    records = app.studio.sessions.get("rescore").runs[0].records
    rescored = [r for r in records if not r.is_stage_end]  # a stage's last step is never rescored
    assert rescored and all(r.rescore_weight == 0.5 and r.rescorer_confidence is not None for r in rescored)


def test_launched_app_streams_every_step_to_gradio_client(tiny_model, tmp_path):
    app = DemoApp(default_model=tiny_model, output_root=tmp_path)
    demo, url = launch_local(app)
    try:
        client = Client(url, verbose=False, download_files=False)
        info = MainView.position("step_info")
        started = time.perf_counter()
        job = client.submit(**settings(tiny_model), api_name="/generate")
        outputs = list(job)
        steps = [o[info] for o in outputs if isinstance(o[info], dict) and "global_step" in o[info]]
        assert streamed_in_order(steps)
        assert outputs[-1][info]["status"] == "finished" and outputs[-1][info]["steps_done"] == TOTAL
        assert time.perf_counter() - started < 30
        with pytest.raises(Exception, match="prompt is empty") as error:
            client.predict(**settings(tiny_model, prompt=""), api_name="/generate")
        assert "Traceback" not in str(error.value)
        # the queue goes on serving after an error
        again = client.predict(**settings(tiny_model, seed=8), api_name="/generate")
        assert "finished" in again[0]
        assert client.predict(api_name="/stop") == "Nothing is decoding."
    finally:
        demo.close()


class DyingWorker:
    """A worker whose process ends after two steps (what ProcessWorker raises then)."""

    def __init__(self, inner):
        self.inner = inner

    def run(self, job, controls, stop):
        from magnet_demo.workers import WorkerDied

        for count, item in enumerate(self.inner.run(job, controls, stop)):
            if count == 2:
                stop.set()
                raise WorkerDied("The decoding worker stopped unexpectedly (exit code -9) after 2 steps.")
            yield item


def test_a_worker_that_dies_leaves_a_readable_error_and_the_steps_so_far(app, tiny_model):
    key = FakeRequest("dying")
    healthy = app.studio.worker
    app.studio.worker = DyingWorker(healthy)
    try:
        with pytest.raises(
            gr.Error, match="failed after 2 of its steps: The decoding worker stopped unexpectedly"
        ):
            list(app.generate(**settings(tiny_model), request=key))
    finally:
        app.studio.worker = healthy
    failed = app.studio.sessions.get("dying").runs[-1]
    assert failed.status == "failed" and len(failed.records) == 2
    sound, text = app.inspect(failed.number, 2, request=key)  # still viewable and audible
    assert sound is not None and "step 2 of 2" in text
    steps = parse(screen_of(app.show_run(failed.number, 1, key))["canvas"])
    assert sum(line["kind"] == "step" for line in steps) == 2
    list(app.generate(**settings(tiny_model), request=key))  # the next run is served
    assert app.studio.sessions.get("dying").runs[-1].status == "finished"


def test_a_run_whose_files_the_budget_deleted_says_so(tiny_model, tmp_path):
    app = DemoApp(
        default_model=tiny_model, output_root=tmp_path, keep_runs=1, model_note="Opened with **x**: why."
    )
    key = FakeRequest("budget")
    for seed in (1, 2):
        list(app.generate(**settings(tiny_model, seed=seed), request=key))
        list(app.run_files(request=key))  # the page's follow-up: the files are counted once written
    first, second = app.studio.sessions.get("budget").runs
    assert first.files_deleted and not any(p.exists() for p in first.files) and second.files
    status = screen_of(app.show_run(1, request=key))["status"]
    assert "its files were deleted (this server keeps the files of its last 1 runs)" in status
    assert "seed 1" in status  # with the settings in Step details, what makes it again
    assert app.studio.sessions.get("budget").files() == [str(p) for p in second.files]
