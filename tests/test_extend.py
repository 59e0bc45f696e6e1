"""Clips of several windows for every method, the Extend button, and forks of them all (issue #28).

An extension of a run decodes, token for token, what a longer run of the same seed decodes there;
long clips and extensions work for MAGNeT, autoregressive and Hybrid runs; a fork from any step of
any of them with unchanged settings decodes its parent's clip again, and with other settings keeps
what was decoded before the step; what cannot be extended is refused readably."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from visitors import FakeRequest

from bench.space_emulation import GENERATE
from magnet_demo.canvas_feed import parse, unb64
from magnet_demo.sources import ModelSources
from magnet_demo.studio.decoding import job_of
from magnet_demo.studio.handlers import DemoApp, screen_of
from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer
from magnet_demo.trace import load_trace

pytestmark = pytest.mark.usefixtures("one_thread", "hub_offline")

STEPS = "3, 2, 2, 2"
MASKED, GIVEN = 0, 4  # canvas states (viz.STATE_LABELS)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> DemoApp:
    root = tmp_path_factory.mktemp("extend")
    model = write_tiny_checkpoint(root / "model")  # a 12 s window, 50 Hz, spans of 3
    return DemoApp(default_model=str(model), output_root=root / "outputs")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> DemoApp:
    """A 6 s MAGNeT model with its own autoregressive partner (which writes up to 10 s)."""
    root = tmp_path_factory.mktemp("extend-lab")
    model = write_tiny_checkpoint(root / "paired", segment_duration=6)
    write_tiny_rescorer(model / "rescorer", model)
    return DemoApp(
        default_model=str(model), output_root=root / "outputs", sources=ModelSources(roots=(str(root),))
    )


def settings(app: DemoApp, **changes) -> dict:
    ours = dict(prompt="calm piano", model=app.studio.catalog.default_model, decoding_steps=STEPS, seed=3)
    return {**GENERATE, **ours, **changes}


def run_all(updates) -> list[dict]:
    return [screen_of(update) for update in updates]


def test_extending_a_run_decodes_what_a_longer_run_of_its_seed_decodes(app):
    key = FakeRequest("ext")
    run_all(app.generate(**settings(app, duration=12.0), request=key))
    updates = run_all(app.extend(1, 6.0, request=key))
    parent, extension = app.studio.sessions.get("ext").runs
    assert extension.status == "finished" and "extends #1 by 6 s" in extension.label()
    assert "extends #1 by 6 s" in updates[0]["status"]
    # one new window continuing the run's last 249 frames (5 s cut to spans); seeds go on counting
    assert [(w.index, w.start, w.stop, w.given) for w in extension.plan.windows] == [(1, 351, 900, 249)]
    assert len(extension.records) == extension.total_steps == 9
    assert extension.records[0].given is extension.records[-1].given  # one array, counted once
    run_all(app.generate(**settings(app, duration=18.0), request=FakeRequest("long")))
    longer = app.studio.sessions.get("long").runs[0]
    assert [(w.start, w.stop) for w in longer.plan.windows] == [(0, 600), (351, 900)]
    assert np.array_equal(extension.records[-1].tokens, longer.records[-1].tokens)
    assert np.array_equal(extension.records[-1].tokens[..., :600], parent.records[-1].tokens)
    assert len(parent.records) == 9 and parent.audio.shape == (1, 600 * 640)  # the run stays as it was
    # the canvas covers 18 s: the run extended is given, the rest masked until decoded
    lines = parse(updates[-1]["canvas"])
    assert lines[0]["frames"] == 900
    first = unb64([line for line in lines if line["kind"] == "step"][0]["rows"], np.uint8).reshape(4, 900)
    assert (first[:, :600] == GIVEN).all() and (first[3, 600:] == MASKED).all()
    sample_rate, samples = next(u["audio"]["value"] for u in updates if (u.get("audio") or {}).get("value"))
    assert samples.size == 900 * 640
    job = job_of(extension, False)
    assert job.head_tokens.shape == (1, 4, 600) and job.given_tokens is None and job.planned_steps == 9
    list(app.run_files(request=key))
    records, meta = load_trace(next(p for p in extension.files if p.suffix == ".npz"))
    assert [r.window for r in records] == [(0, 1, 351, 900)] * 9
    assert meta["config"]["clip_seconds"] == 18.0 and meta["source"] == "extends #1 by 6 s"


def test_an_extension_extends_further_and_what_cannot_be_extended_is_refused(app):
    key = FakeRequest("chain")
    run_all(app.generate(**settings(app, duration=4.0), request=key))  # 198 frames
    run_all(app.extend(1, 3.0, request=key))
    run_all(app.extend(2, 2.0, request=key))
    first, second, third = app.studio.sessions.get("chain").runs
    assert [(w.index, w.start, w.stop, w.given) for w in second.plan.windows] == [(1, 0, 348, 198)]
    assert [(w.index, w.start, w.stop, w.given) for w in third.plan.windows] == [(2, 99, 447, 249)]
    assert np.array_equal(third.records[-1].tokens[..., :348], second.records[-1].tokens)
    assert not (third.records[-1].tokens == third.records[-1].mask_id).any()
    with pytest.raises(gr.Error, match="This session has no run #9"):
        list(app.extend(9, 2.0, request=key))
    with pytest.raises(gr.Error, match="Extend by must be a number"):
        list(app.extend(1, "longer", request=key))
    with pytest.raises(gr.Error, match="Extend by at least one span \\(0.06 s\\)"):
        list(app.extend(1, 0.0, request=key))
    with pytest.raises(gr.Error, match="this server decodes clips of at most 60 s: add at most 51.06 s"):
        list(app.extend(3, 52.0, request=key))
    with pytest.raises(gr.Error, match="Nothing to extend yet"):
        list(app.extend(None, 2.0, request=FakeRequest("nobody")))
    stopping = app.generate(**settings(app, duration=4.0), request=key)
    next(stopping)
    app.stop(request=key)
    list(stopping)
    assert app.studio.sessions.get("chain").runs[-1].status == "stopped"
    with pytest.raises(gr.Error, match="is stopped: only a finished run holds a whole clip"):
        list(app.extend(4, 2.0, request=key))


def test_autoregressive_and_hybrid_clips_run_window_after_window(lab):
    key = FakeRequest("ar-long")
    updates = run_all(lab.generate(**settings(lab, duration=8.0, method="autoregressive"), request=key))
    run = lab.studio.sessions.get("ar-long").runs[0]
    # 6 s windows continuing 5 s: the autoregressive model continues the last 249 frames of each
    assert [(w.start, w.stop, w.given) for w in run.plan.windows] == [
        (0, 300, 0),
        (51, 351, 249),
        (102, 399, 249),
    ]
    assert run.plan.segments == (31, 6, 6)  # 303 sequence steps, then 399 - 249 + 3 ... in records of 10
    assert (
        run.status == "finished" and len(run.records) == 43 and all(r.is_autoregressive for r in run.records)
    )
    assert any("window 3/3 · record" in (u.get("status") or "") for u in updates)
    tokens = run.records[-1].tokens
    assert tokens.shape == (1, 4, 399) and not (tokens == run.records[-1].mask_id).any()
    ends = [r for r in run.records if r.is_last or r.global_step in (30, 36)]
    for before, after in zip(ends, ends[1:], strict=False):
        start, stop = after.window[2], after.window[2] + 249
        assert np.array_equal(after.tokens[..., start:stop], before.tokens[..., start:stop])
    assert run.audio.shape == (1, 399 * 640)

    hybrid_key = FakeRequest("hy-long")
    updates = run_all(lab.generate(**settings(lab, duration=8.0, method="hybrid"), request=hybrid_key))
    hybrid = lab.studio.sessions.get("hy-long").runs[0]
    # window 0 is a Hybrid run (an autoregressive second, then MAGNeT); later windows continue
    # their given frames with MAGNeT
    assert hybrid.plan.segments == (6,) + (3, 2, 2, 2) * 3 and hybrid.plan.ar_flags[:2] == (True, False)
    assert [r.is_autoregressive for r in hybrid.records] == [True] * 6 + [False] * 27
    assert hybrid.status == "finished" and hybrid.records[-1].tokens.shape == (1, 4, 399)
    assert (
        "autoregressive prefix" in updates[-1]["status"]
        and "window 3/3 · codebook 4/4" in updates[-2]["status"]
    )


def test_an_autoregressive_run_is_extended_by_its_own_model(lab):
    key = FakeRequest("ar-ext")
    run_all(lab.generate(**settings(lab, duration=2.0, method="autoregressive"), request=key))  # 100 frames
    run_all(lab.extend(1, 1.0, request=key))
    parent, extension = lab.studio.sessions.get("ar-ext").runs
    # the whole run (cut to spans: 99 frames) is the prompt of the autoregressive model's window
    assert [(w.start, w.stop, w.given) for w in extension.plan.windows] == [(1, 148, 99)]
    assert extension.status == "finished" and len(extension.records) == 6  # 147 + 3 - 99 steps
    assert all(r.is_autoregressive for r in extension.records)
    assert np.array_equal(extension.records[-1].tokens[..., :100], parent.records[-1].tokens)
    assert extension.audio.shape == (1, 148 * 640)


def fork_of(app: DemoApp, key: str, step: int, generate: dict, **changes):
    """Generate a run of ``generate``, fork it at ``step`` with ``changes``: (parent, fork)."""
    run_all(app.generate(**settings(app, **generate), request=FakeRequest(key)))
    run_all(app.fork(1, step, **settings(app, **generate, **changes), request=FakeRequest(key)))
    parent, fork = app.studio.sessions.get(key).runs
    assert fork.status == "finished" and len(fork.records) == fork.total_steps == parent.total_steps
    assert fork.records[step - 1] is parent.records[step - 1]
    return parent, fork


@pytest.mark.parametrize(
    "method, step",
    [
        ("magnet", 12),  # window 2's third step
        ("autoregressive", 35),  # window 2's fifth record
        ("hybrid", 3),  # window 1's autoregressive phase
        ("hybrid", 20),  # window 2 (a MAGNeT continuation)
    ],
)
def test_a_fork_of_a_long_clip_with_the_same_settings_decodes_it_again(lab, method, step):
    parent, fork = fork_of(lab, f"fork-{method}-{step}", step, dict(duration=8.0, method=method))
    assert len(fork.plan.windows) == 3 and fork.records[step].window == parent.records[step].window
    assert np.array_equal(fork.records[-1].tokens, parent.records[-1].tokens)


def test_a_fork_of_a_long_clip_with_other_settings_keeps_what_came_before(lab):
    parent, fork = fork_of(lab, "fork-cfg", 12, dict(duration=8.0), max_cfg_coef=3.0)
    window = fork.records[11].window  # (1, 3, 51, 351): the record forked from is in window 2
    assert window == (1, 3, 51, 351) and fork.records[12].cfg_coef != parent.records[12].cfg_coef
    kept, final = parent.records[-1].tokens, fork.records[-1].tokens
    assert np.array_equal(final[..., :51], kept[..., :51]) and not np.array_equal(final, kept)


@pytest.mark.parametrize("method, step", [("autoregressive", 4), ("hybrid", 2), ("hybrid", 8)])
def test_a_fork_of_an_autoregressive_or_hybrid_run_decodes_it_again(lab, method, step):
    parent, fork = fork_of(lab, f"fork1-{method}-{step}", step, dict(duration=2.0, method=method))
    assert np.array_equal(fork.records[-1].tokens, parent.records[-1].tokens)


def test_a_fork_of_an_extension_decodes_it_again(app):
    key = FakeRequest("fork-ext")
    run_all(app.generate(**settings(app, duration=3.0), request=key))
    run_all(app.extend(1, 2.0, request=key))
    run_all(app.fork(2, 4, **settings(app, duration=3.0), request=key))
    extension, fork = app.studio.sessions.get("fork-ext").runs[1:]
    assert fork.plan.head_frames == 150 and job_of(fork, False).head_tokens.shape == (1, 4, 150)
    assert np.array_equal(fork.records[-1].tokens, extension.records[-1].tokens)
