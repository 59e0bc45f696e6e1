"""A public studio against hostile visitors: what one visitor does costs no other visitor anything.

Each test is one attack of the issue (floods of made-up sessions, a second run from one session,
the queue skipped, a run that never ends, memory and files filled by one visitor), with the server
answering as it should. The crafted audio files are in ``test_hostile_audio.py``, forged controls
files in ``test_channel_limits.py``.
"""

from __future__ import annotations

import logging
import os
import time

import gradio as gr
import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from test_ui import FakeRequest, live, settings  # noqa: E402  (tests/ is on sys.path)

import app as app_module
from magnet_demo.budgets import FileBudget, MemoryBudget
from magnet_demo.controls import Limits
from magnet_demo.form import Settings
from magnet_demo.incidents import visitor_message, without_paths
from magnet_demo.models import HUB_MODELS, ModelLoadError
from magnet_demo.session import RUNNING, Session, SessionStore, private_root
from magnet_demo.sources import ModelSources
from magnet_demo.studio.handlers import DemoApp, screen_of
from magnet_demo.studio.wiring import launch_local
from magnet_demo.tiny import write_tiny_checkpoint

#: a run of the tiny model that lasts seconds: 400 steps (the server's cap) of 10 s
LONG = dict(duration=10.0, decoding_steps="250, 50, 50, 50")
#: made-up session hashes sent by the flood (more than the 64 sessions a server keeps)
FLOOD = 70


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("hostile") / "tiny"))


def _app(model: str, root, **kwargs) -> DemoApp:
    return DemoApp(default_model=model, output_root=root, **kwargs)  # the handlers, no page


def _wait_until_decoding(app: DemoApp, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sessions = list(app.studio.sessions._sessions.values())
        if any(s.active is not None and len(s.active.records) >= 2 for s in sessions):
            return
        time.sleep(0.05)
    raise AssertionError("no run started decoding")


# ---------------------------------------------------------------------------------------------
# through the server, as visitors reach it


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    app = DemoApp(default_model=model, output_root=out, sources=ModelSources(extra=(model,)))
    demo, url = launch_local(app)
    yield app, url, out
    demo.close()


def _stop_as(http: httpx.Client, session_hash: str) -> str:
    reply = http.post("/gradio_api/run/stop", json={"data": [], "session_hash": session_hash})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"][0]


@pytest.mark.slow
def test_a_flood_of_made_up_sessions_neither_evicts_nor_blocks_a_visitors_stop(server, model):
    app, url, out = server
    victim = Client(url, verbose=False, download_files=False)
    job = victim.submit(**settings(model, **LONG), api_name="/generate")
    _wait_until_decoding(app)
    folders_before = sorted(p.name for p in out.iterdir())
    with httpx.Client(base_url=url, timeout=30) as http:
        replies = {_stop_as(http, f"made-up-{i}") for i in range(FLOOD)}
    assert replies == {"Nothing is decoding."}
    assert len(app.studio.sessions._sessions) == 1  # the flood made no session
    assert sorted(p.name for p in out.iterdir()) == folders_before  # nor a folder
    assert victim.predict(api_name="/stop") == "Stopping run #1 after its current step…"
    status = job.result(timeout=120)[0]
    assert "stopped after step" in status, status
    session = app.studio.sessions.get(victim.session_hash)
    assert session.runs[0].status == "stopped" and 2 <= len(session.runs[0].records) < 400


@pytest.mark.slow
def test_two_visitors_can_neither_see_nor_stop_each_others_runs(server, model):
    app, url, _ = server
    owner = Client(url, verbose=False, download_files=False)
    other = Client(url, verbose=False, download_files=False)
    job = owner.submit(
        **settings(model, duration=10.0, decoding_steps="40, 20, 20, 20"), api_name="/generate"
    )
    _wait_until_decoding(app)
    assert other.predict(api_name="/stop") == "Nothing is decoding."
    assert other.predict(1, 1, api_name="/show_run")[0] == "No run yet."
    assert other.predict(1, 1, 1, api_name="/step")[1] == "No step to show yet: generate a run first."
    assert app.studio.sessions.get(other.session_hash) is None
    assert "finished" in job.result(timeout=120)[0]  # not stopped by the other visitor


@pytest.mark.slow
def test_one_session_runs_one_run_at_a_time_and_a_second_is_refused(server, model):
    app, url, _ = server
    first, waiting = (Client(url, verbose=False, download_files=False) for _ in range(2))
    running = first.submit(**settings(model, **LONG), api_name="/generate")
    _wait_until_decoding(app)
    with pytest.raises(Exception, match="Run #1 of this session is still decoding: stop it or wait"):
        first.predict(**settings(model), api_name="/generate")
    queued = waiting.submit(**settings(model), api_name="/generate")  # waits for the only slot
    time.sleep(1.0)
    with pytest.raises(Exception, match="This session already has a run waiting in the queue"):
        waiting.predict(**settings(model), api_name="/inpaint", audio=None, region_start=0, region_end=1)
    first.predict(api_name="/stop")
    assert "stopped after step" in running.result(timeout=120)[0]
    assert "finished" in queued.result(timeout=120)[0]  # the waiting run was served, once
    assert len(app.studio.sessions.get(waiting.session_hash).runs) == 1


@pytest.mark.slow
def test_a_crafted_file_is_refused_before_it_waits_in_the_queue(server, model, tmp_path):
    app, url, _ = server
    busy, crafty = (Client(url, verbose=False, download_files=False) for _ in range(2))
    running = busy.submit(**settings(model, **LONG), api_name="/generate")  # holds the only slot
    _wait_until_decoding(app)
    many = tmp_path / "many.wav"
    sf.write(many, np.zeros((8000, 16), np.float32), 8000)
    started = time.monotonic()
    with pytest.raises(Exception, match="'many.wav' has 16 channels; at most 8 are accepted"):
        crafty.predict(
            audio=handle_file(many), region_start=0, region_end=0.5, **settings(model), api_name="/inpaint"
        )
    assert time.monotonic() - started < 10 and app.studio.sessions.get(crafty.session_hash) is None
    page_mode = dict(mode="re-decode region", audio=handle_file(many), region_start=0, region_end=0.5)
    with pytest.raises(Exception, match="has 16 channels"):  # the page's button: /generate's mode
        crafty.predict(**settings(model), **page_mode, api_name="/generate")
    busy.predict(api_name="/stop")
    running.result(timeout=120)


@pytest.mark.slow
def test_the_queue_cannot_be_skipped(server, model):
    app, url, _ = server
    sessions = len(app.studio.sessions._sessions)
    body = {"data": list(settings(model).values()), "session_hash": "skipper"}
    reply = httpx.post(url + "gradio_api/run/generate", json=body, timeout=30)
    assert reply.status_code == 404 and "join the queue" in reply.text
    assert len(app.studio.sessions._sessions) == sessions and app.studio.sessions.get("skipper") is None


# ---------------------------------------------------------------------------------------------
# the handlers and their bounds


def test_a_run_past_the_wall_clock_limit_stops_and_keeps_its_steps(model, tmp_path):
    app = _app(model, tmp_path, limits=Limits(max_run_seconds=0.5))
    key = FakeRequest("slow")
    updates = list(app.generate(**settings(model, **LONG), request=key))
    run = app.studio.sessions.get("slow").runs[0]
    assert run.status == "stopped" and 0 < len(run.records) < 400
    assert "(this server stops a run after 0.5 s)" in run.message
    assert any("this server stops a run after 0.5 s" in str(screen_of(u).get("status")) for u in updates)
    list(app.run_files(request=key))  # the trace and animation, written after the audio
    assert [p.suffix for p in run.files] == [".wav", ".npz", ".gif"] and all(p.exists() for p in run.files)
    sound, _ = app.inspect(1, len(run.records), request=key)  # its steps stay audible
    assert sound is not None


def test_a_runs_work_is_capped_and_a_fork_counts_its_parent(model, tmp_path):
    app = _app(model, tmp_path)
    too_much = settings(model, samples=8, duration=2.0, decoding_steps="100, 100, 100, 100")
    with pytest.raises(gr.Error, match=r"400 steps x 8 samples x 2 s = 6400; it allows at most 4000"):
        list(app.generate(**too_much, request=FakeRequest("work")))
    assert app.studio.sessions.get("work").runs == []
    list(app.generate(**settings(model, samples=2, duration=2.0), request=FakeRequest("work")))
    parent = app.studio.sessions.get("work").runs[0]
    limits = Limits(max_work=50)  # the parent's 9 steps x 2 samples x 2 s = 36 fit; 30 more do not
    fork = Settings("p", decoding_steps="3, 10, 10, 10")
    with pytest.raises(ValueError, match=r"33 steps x 2 samples x 2 s = 132"):
        fork.fork_config(parent.config, parent.records[2], limits, card=64, samples=2)


def test_a_second_run_of_a_session_is_refused_while_one_decodes(model, tmp_path):
    app = _app(model, tmp_path)
    key = FakeRequest("twice")
    first = app.generate(**settings(model, **LONG), request=key)
    next(first), next(first)  # decoding
    with pytest.raises(gr.Error, match="Run #1 of this session is still decoding"):
        list(app.generate(**settings(model), request=key))
    with pytest.raises(gr.Error, match="Run #1 is still decoding"):
        list(app.fork(1, 1, **settings(model), request=key))
    assert app.admit(key, waiting=0).startswith("Run #1 of this session is still decoding")
    app.stop(key)
    list(first)
    assert app.admit(key, waiting=0) is None
    assert app.admit(key, waiting=1).startswith("This session already has a run waiting")


def test_stop_steer_step_show_and_fork_make_no_session(model, tmp_path):
    app = _app(model, tmp_path)
    ghost = FakeRequest("ghost")
    assert app.stop(ghost) == "Nothing is decoding."
    assert app.steer(ghost, **live()).startswith("Live controls")
    assert app.inspect(1, 1, request=ghost)[1] == "No step to show yet: generate a run first."
    assert screen_of(app.show_run(1, 1, ghost)) == {"status": "No run yet."}
    with pytest.raises(gr.Error, match="Nothing to fork yet"):
        list(app.fork(1, 1, **settings(model), request=ghost))
    app.forget(ghost)
    assert app.studio.sessions.get("ghost") is None and list(tmp_path.iterdir()) == []


def test_memory_is_bounded_across_sessions_and_a_released_run_says_so(model, tmp_path):
    app = _app(model, tmp_path, memory_mb=1e-6)  # one byte: every idle run but the newest goes
    list(app.generate(**settings(model), request=FakeRequest("a")))
    list(app.run_files(request=FakeRequest("a")))  # a run writing its files is not released
    first = app.studio.sessions.get("a").runs[0]
    assert not first.steps_released  # the newest run is never the one released
    list(app.generate(**settings(model), request=FakeRequest("b")))
    assert first.steps_released and first.records == [] and first.audio is None
    assert (
        first.memory_bytes() == 0
        and app.studio.sessions.memory.used <= app.studio.sessions.get("b").runs[0].memory_bytes()
    )
    assert [p.suffix for p in first.files] == [".wav", ".npz", ".gif"] and all(
        p.exists() for p in first.files
    )
    shown = app.show_run(1, 1, FakeRequest("a"))
    status, player = screen_of(shown)["status"], screen_of(shown)["audio"]
    assert "its steps were released to keep this server's memory bounded" in status and "seed 7" in status
    assert player["value"] == str(first.files[0])  # its audio, from its file
    assert "its steps were released" in app.inspect(1, 1, request=FakeRequest("a"))[1]
    with pytest.raises(gr.Error, match="its steps were released"):
        list(app.fork(1, 1, **settings(model), request=FakeRequest("a")))
    assert "released/9 steps" in app.studio.sessions.get("a").choices()[0][0]


class _Held:
    """A run as the memory budget sees it."""

    def __init__(self, size: int, running: bool = False):
        self.size, self.is_busy, self.steps_released = size, running, False

    def memory_bytes(self) -> int:
        return self.size

    def release(self) -> None:
        self.steps_released = True


def test_the_memory_budget_releases_least_recently_used_never_a_running_run():
    budget = MemoryBudget(max_bytes=100)
    running, old, recent = _Held(60, running=True), _Held(30), _Held(30)
    for run in (running, old, recent):
        budget.charge(run)
    assert old.steps_released and not recent.steps_released and not running.steps_released
    running.size = 500  # a decoding run may exceed the budget: nothing else is left to release
    assert budget.charge(running) == [recent] and not running.steps_released


def test_a_session_keeps_two_step_previews(model, tmp_path):
    app = _app(model, tmp_path)
    key = FakeRequest("previews")
    list(app.generate(**settings(model), request=key))
    for step in (1, 2, 3, 4, 2):
        assert app.inspect(1, step, request=key)[0] is not None
    assert list(app.studio.sessions.get("previews")._previews) == [(1, 3), (1, 1)]  # (run, step index)


def test_one_visitors_many_runs_delete_only_their_own_files(tmp_path):
    budget = FileBudget(keep_runs=4, per_session=2)
    honest, flooder = Session("honest", tmp_path / "h"), Session("flood", tmp_path / "f")

    kept = _finished(honest)
    budget.add(kept)
    flood = [_finished(flooder) for _ in range(50)]
    for run in flood:
        budget.add(run)
    assert not kept.files_deleted and kept.files[0].exists()
    assert [r.files_deleted for r in flood] == [True] * 48 + [False, False]


def _finished(session: Session):
    from magnet_demo.controls import DecodingConfig

    run = session.new_run(
        model_name="m", prompts=("p",), config=DecodingConfig(), seed=1, sample_rate=8000, frame_rate=50
    )
    path = session.directory / f"{run.name}.wav"
    path.write_bytes(b"RIFF")
    run.files.append(path)
    run.status = "finished"
    return run


def test_sessions_are_made_only_by_runs_and_a_decoding_one_is_never_evicted(tmp_path):
    store = SessionStore(tmp_path, capacity=2)
    assert store.get("nobody") is None and list(tmp_path.iterdir()) == []
    busy = store.open("busy")
    run = _finished(busy)
    run.status = RUNNING
    for key in ("b", "c", "d"):
        store.open(key)
    assert store.get("busy") is busy and store.get("b") is None
    store.forget("busy")
    assert store.get("busy") is busy  # a page that closed while decoding: its run is kept
    assert "busy" not in busy.directory.name and len(busy.directory.name) == len("20261203-") + 12
    assert oct(busy.directory.stat().st_mode & 0o777) == "0o700"


# ---------------------------------------------------------------------------------------------
# what the server lets out and in


def test_visitors_read_no_server_paths_or_class_names(caplog):
    text = (
        "No checkpoint in /root/.cache/huggingface/hub/models--t5-base/snapshots/abc (see https://x.org/a/b)"
    )
    assert without_paths(text) == "No checkpoint in abc (see https://x.org/a/b)"
    assert without_paths("'/srv/models/mine' under /srv/models") == "'mine' under models"
    with caplog.at_level(logging.ERROR):
        message = visitor_message(KeyError("/secret/place"), logging.getLogger("t"), "run 1")
    assert (
        message.startswith("an internal error (id ") and "KeyError" not in message and "secret" not in message
    )
    incident = message.split("id ")[1][:6]
    assert incident in caplog.text and "/secret/place" in caplog.text


def test_the_released_models_are_offered_on_a_cpu_only_by_the_operator(model, tmp_path):
    cpu = ModelSources(hub_offered=False, extra=(model,))
    with pytest.raises(ModelLoadError, match="this server has no GPU.*--hub-models-on-cpu"):
        cpu.check("facebook/magnet-small-10secs")
    assert ModelSources(hub_offered=False, extra=("facebook/magnet-small-10secs",)).check(
        "facebook/magnet-small-10secs"
    )
    app = DemoApp(default_model=model, output_root=tmp_path, sources=cpu)
    assert not set(app.studio.catalog.choices()) & set(HUB_MODELS)
    offered = DemoApp(default_model=model, output_root=tmp_path, sources=ModelSources(extra=(model,)))
    assert set(HUB_MODELS) <= set(offered.studio.catalog.choices())


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--share"], {}),
        (["--host", "0.0.0.0"], {}),
        ([], {"SPACE_ID": "me/demo"}),
        ([], {"GRADIO_SERVER_NAME": "0.0.0.0"}),
    ],
)
def test_any_model_is_refused_on_a_public_server(argv, env, monkeypatch, capsys):
    for name in ("SPACE_ID", "SYSTEM", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        app_module.parse_args(["--allow-any-model", *argv])
    assert "--allow-any-model lets visitors make the server load any file: refused" in capsys.readouterr().err


def test_any_model_is_allowed_on_this_machine_only(monkeypatch):
    for name in ("SPACE_ID", "SYSTEM", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert app_module.parse_args(["--allow-any-model"]).allow_any_model
    assert app_module.parse_args(["--allow-any-model", "--host", "127.0.0.1"]).allow_any_model


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder of another user needs root")
def test_the_output_root_is_private_and_never_another_users(tmp_path):
    mine = private_root(tmp_path / "new")
    assert oct(mine.stat().st_mode & 0o777) == "0o700"
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert oct(private_root(loose).stat().st_mode & 0o777) == "0o700"
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chown(planted, 12345, 12345)
    with pytest.raises(ValueError, match="belongs to another user"):
        private_root(planted)
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(ValueError, match="is a link or not a folder"):
        private_root(tmp_path / "link")
