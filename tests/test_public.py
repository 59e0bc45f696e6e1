"""A public server: garbage sent to every named endpoint through ``gradio_client`` gets a readable
message, the next valid request succeeds, and refused model names touch neither disk nor network."""

from __future__ import annotations

import socket
import time

import httpx
import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from test_ui import TOTAL, settings  # noqa: E402  (tests/ is on sys.path)

from magnet_demo.sources import ModelSources
from magnet_demo.studio.handlers import DemoApp
from magnet_demo.studio.wiring import launch_local
from magnet_demo.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.slow

#: what a readable refusal is not
UNREADABLE = (
    "Traceback",
    "upstream Gradio app has raised an exception",
    "Error(",
    "KeyError",
    "could not convert",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    root = tmp_path_factory.mktemp("models")
    model = str(write_tiny_checkpoint(root / "tiny"))
    app = DemoApp(
        default_model=model,
        output_root=tmp_path_factory.mktemp("out"),
        sources=ModelSources(roots=(str(root),)),
    )
    demo, url = launch_local(app)
    yield app, model, url
    demo.close()


def _refused(client: Client, api_name: str, match: str, **kwargs) -> str:
    started = time.perf_counter()
    with pytest.raises(Exception) as error:
        client.predict(**kwargs, api_name=api_name)
    message = str(error.value)
    assert match in message, message
    assert not any(bad in message for bad in UNREADABLE), message
    assert time.perf_counter() - started < 5
    return message


GENERATE_GARBAGE = [
    (dict(seed="abc"), "Seed must be a number, got 'abc'"),
    (dict(seed=-1), "Seed must be between 0 and 2147483647, got -1"),  # Gradio's own message: readable
    (dict(seed=10**30), "Seed must be between 0 and 2147483647, got 1000000000000000000000000000000"),
    (dict(seed="nan"), "Seed must be a finite number, got 'nan'"),
    (dict(decoding_steps="1000000,1,1,1"), "1000003 steps in all; this server allows at most 400"),
    (dict(decoding_steps="9" * 400), "Decoding steps: '"),
    (dict(decoding_steps="4, two, 2, 2"), "Decoding steps: 'two' is not a whole number"),
    (dict(duration="long"), "Duration must be a number, got 'long'"),
    (dict(duration="inf"), "Duration must be a finite number, got 'inf'"),
    (dict(temperature="hot"), "must be a number, got 'hot'"),
    (dict(temperature="-inf"), "must be a finite number, got '-inf'"),
    (dict(top_p=2), "Top-p must be between 0 and 1, got 2"),
    (dict(top_k=2.7), "Top-k must be a whole number, got 2.7"),
    (dict(max_cfg_coef=1.0, min_cfg_coef=5.0), "CFG min (5) is above CFG max (1)"),
    (dict(cfg_schedule="curve", cfg_curve=" ".join(["1"] * 33)), "33 values given; at most 32"),
    (dict(rescore_weight="x"), "must be a number, got 'x'"),
    (dict(samples=1000), "Number of samples must be between 1 and 8, got 1000"),
    (dict(prompt="x" * 501), "501 characters long; at most 500"),
    (dict(span_arrangement="diagonal"), "Unknown span_arrangement 'diagonal'"),
    (dict(model="someone/any-model"), "This server does not offer that model"),
    (dict(model="/etc"), "This server does not offer that model"),
    (dict(model="../../etc"), "This server does not offer that model"),
]


@pytest.mark.parametrize("changes, match", GENERATE_GARBAGE, ids=[str(c)[:40] for c, _ in GENERATE_GARBAGE])
def test_generate_refuses_garbage_readably(server, changes, match):
    app, model, url = server
    client = Client(url, verbose=False, download_files=False)
    _refused(client, "/generate", match, **settings(model, **changes))


def test_every_other_endpoint_refuses_garbage_and_the_server_goes_on(server):
    app, model, url = server
    client = Client(url, verbose=False, download_files=False)
    fork = dict(run_number=1, step=2, **settings(model))
    _refused(client, "/fork", "Nothing to fork yet", **fork)  # a fresh session has no runs
    client.predict(**settings(model), api_name="/generate")
    _refused(client, "/fork", "This session has no run #7 (runs #1-#1)", **{**fork, "run_number": 7})
    _refused(client, "/fork", "Run number must be a number, got 'abc'", **{**fork, "run_number": "abc"})
    _refused(
        client, "/fork", f"Step 99 of run #1 is not decoded: it has {TOTAL} steps", **{**fork, "step": 99}
    )
    _refused(client, "/fork", "Step must be a whole number", **{**fork, "step": 1.5})
    _refused(client, "/fork", "Temperature must be a number, got 'hot'", **{**fork, "temperature": "hot"})
    _refused(client, "/step", "Step must be a number, got 'x'", run_number=1, step="x", sample_shown=1)
    _refused(client, "/step", "This session has no run #3", run_number=3, step=1, sample_shown=1)
    _refused(
        client, "/step", "Sample shown must be between 1 and 8, got 99", run_number=1, step=1, sample_shown=99
    )
    _refused(client, "/show_run", "Run number must be a finite number", run_number="nan", sample_shown=1)
    steer = dict(
        max_cfg_coef=10, min_cfg_coef=1, cfg_schedule="linear", cfg_curve="", temperature=3, rescore_weight=0
    )
    for changes, match in [
        (dict(max_cfg_coef="big"), "CFG max must be a number, got 'big'"),
        (dict(temperature="inf"), "Temperature must be a finite number, got 'inf'"),
        (dict(rescore_weight=2), "Rescoring weight must be between 0 and 1, got 2"),
        (dict(cfg_schedule="zigzag"), "Unknown CFG schedule 'zigzag'"),
        (dict(max_cfg_coef=1, min_cfg_coef=5), "CFG min (5) is above CFG max (1)"),
    ]:
        reply = client.predict(**{**steer, **changes}, api_name="/steer")
        assert reply.startswith(f"⚠️ {match}"), reply
    # a duration the model menu cannot read is left as it was, not an error
    assert "4 codebooks" in client.predict(model_name="auto", duration="x", api_name="/model_info")[0]
    info = client.predict(model_name="/etc", duration=5, api_name="/model_info")
    assert "This server does not offer that model" in info[0]
    assert client.predict(api_name="/stop") == "Nothing is decoding."
    # and the next valid request is served
    outputs = client.predict(**settings(model, seed=3), api_name="/generate")
    assert "finished" in outputs[0]


def test_refused_models_touch_neither_disk_nor_network(server, monkeypatch):
    app = server[0]
    touched = []
    for module, name in ((socket, "getaddrinfo"), (socket, "create_connection")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: touched.append(_n))
    import os

    for name in ("isdir", "isfile", "exists"):
        monkeypatch.setattr(os.path, name, lambda *a, _n=name, **k: touched.append(_n))
    messages = []
    for model in ("someone/any-model", "/etc", "/no/such/folder", "x" * 5000):
        started = time.perf_counter()
        with pytest.raises(ValueError) as error:
            app.studio.catalog.name(model)
        assert time.perf_counter() - started < 1
        messages.append(str(error.value))
    assert touched == []
    assert len(set(messages)) == 1  # /etc, a missing folder, a Hub repo: one message, nothing told
    assert messages[0].startswith("This server does not offer that model.")


def test_a_full_queue_says_busy_and_the_server_recovers(tmp_path):
    model = str(write_tiny_checkpoint(tmp_path / "tiny"))
    app = DemoApp(default_model=model, output_root=tmp_path / "out")
    demo, url = launch_local(app, queue_size=1)
    try:
        long_run = settings(model, duration=12.0, decoding_steps="60, 20, 20, 20")
        jobs = [
            Client(url, verbose=False, download_files=False).submit(**long_run, api_name="/generate")
            for _ in range(4)
        ]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=300)
                outcomes.append("served")
            except Exception as error:
                outcomes.append(str(error))
        assert outcomes.count("served") >= 1
        assert any("Queue is full! Please try again." in o for o in outcomes), outcomes
        after = Client(url, verbose=False, download_files=False).predict(
            **settings(model), api_name="/generate"
        )
        assert "finished" in after[0]
    finally:
        demo.close()


def _raw_call(url: str, api_name: str, data: list) -> str:
    """The error message of a call made without gradio_client (which uploads every local path):
    a refusal when the call joins the queue (HTTP 400), or the error event of its stream."""
    with httpx.Client(base_url=url, timeout=60) as http:
        joined = http.post(f"/gradio_api/call/{api_name}", json={"data": data})
        if joined.status_code == 400:
            return joined.json()["detail"]
        event = joined.json()["event_id"]
        stream = http.get(f"/gradio_api/call/{api_name}/{event}").text
    assert "event: error" in stream, stream
    return stream


def test_audio_endpoints_refuse_garbage_readably(server, tmp_path):
    app, model, url = server
    client = Client(url, verbose=False, download_files=False)
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.1 * np.sin(np.arange(3 * 8000) / 8000 * 2 * np.pi * 440), 8000)
    ten_minutes = tmp_path / "long.wav"
    sf.write(ten_minutes, np.zeros(600 * 8000, dtype=np.int16), 8000, subtype="PCM_16")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not a sound")
    run = settings(model, duration=3.0)
    region = dict(region_start=0.5, region_end=1.5)
    # a path the client did not upload (gradio_client would upload it: sent raw): Gradio refuses
    # it when the call joins the queue, before any handler runs (our own check, in the handler,
    # says "was not uploaded to this server": tests/test_audio_studio.py)
    foreign = {"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}
    runs_before = sum(len(session.runs) for session in app.studio.sessions._sessions.values())
    refusal = _raw_call(url, "continue", [foreign, 1, *run.values()])
    assert "was not uploaded by a user" in refusal and "Traceback" not in refusal
    assert sum(len(session.runs) for session in app.studio.sessions._sessions.values()) == runs_before
    _refused(client, "/continue", "needs audio", audio=None, keep_seconds=1, **run)
    _refused(
        client,
        "/continue",
        "Seconds to keep must be a number, got 'x'",
        audio=handle_file(clip),
        keep_seconds="x",
        **run,
    )
    _refused(client, "/inpaint", "is reversed", audio=handle_file(clip), region_start=2, region_end=1, **run)
    _refused(
        client,
        "/inpaint",
        "is outside the clip",
        audio=handle_file(clip),
        region_start=1,
        region_end=20,
        **run,
    )
    _refused(client, "/inpaint", "it is not a valid WAV file", audio=handle_file(not_audio), **region, **run)
    _refused(
        client,
        "/inpaint",
        "The audio is 600.0 s long; the longest upload is 60 s",
        audio=handle_file(ten_minutes),
        **region,
        **run,
    )
    _refused(client, "/generate", "Unknown mode 'remix'", **run, mode="remix", audio=handle_file(clip))
    # and a valid one is served
    outputs = client.predict(audio=handle_file(clip), **region, **run, api_name="/inpaint")
    assert "finished" in outputs[0]
