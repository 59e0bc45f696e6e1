"""What a run will cost, said before it starts: the work arithmetic, the line the page shows and how
it follows the settings, the probe that measures a model's speed, and learning from runs."""

from __future__ import annotations

import pytest
from visitors import FakeRequest

from bench.space_emulation import GENERATE
from magnet_demo.controls import METHOD_AR, METHOD_HYBRID, METHOD_MAGNET, DecodingConfig
from magnet_demo.costs import PROBE, CostModel, duration_text, work_units
from magnet_demo.lab import LabPlan
from magnet_demo.studio.handlers import DemoApp
from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def app(tmp_path_factory, hub_offline):
    root = tmp_path_factory.mktemp("costs")
    model = write_tiny_checkpoint(root / "model")
    write_tiny_rescorer(root / "model" / "rescorer", model)
    yield DemoApp(default_model=str(model), output_root=root / "outputs")


def test_work_is_counted_by_kind():
    config = DecodingConfig(duration=10.0)
    assert work_units(LabPlan(METHOD_MAGNET, (20, 10, 10, 10), 498), config, 2) == {METHOD_MAGNET: 1000.0}
    assert work_units(LabPlan(METHOD_AR, (51,), 500), config, 2) == {METHOD_AR: 102}
    hybrid = work_units(LabPlan(METHOD_HYBRID, (6, 20, 10, 10, 10), 498, 50), config, 1)
    assert hybrid == {METHOD_MAGNET: 500.0, METHOD_AR: 6}
    assert [duration_text(s) for s in (0.42, 12.4, 280.0, 61)] == ["0.4 s", "12 s", "4 min 40 s", "1 min 1 s"]


def expected(app, **changes) -> str:
    values = dict(
        duration=2.0, decoding_steps="20, 10, 10, 10", samples=1, method="magnet", prefix_seconds=1.0
    )
    values.update(changes)
    return app.views.expected_time(app.studio.catalog.default_model, **values)


def test_the_line_follows_the_steps_duration_and_samples(app):
    first = expected(app)  # the first ask probes the model: one step per codebook
    model = app.studio.catalog.name(app.studio.catalog.default_model)
    rate = app.studio.costs.rate(model, METHOD_MAGNET)
    assert rate is not None and rate.source == PROBE and "MAGNeT from a probe" in first
    # a known rate, so that the arithmetic shows: 1 s per step of one 1 s sample
    app.studio.costs._set(model, METHOD_MAGNET, 1.0, 1.0, PROBE)
    assert "**about 1 min 40 s** for 2 s with 50 steps" in expected(app)
    assert "**about 50 s** for 2 s with 25 steps" in expected(app, decoding_steps="10, 5, 5, 5")
    assert "**about 50 s** for 1 s with 50 steps" in expected(app, duration=1.0)
    assert "**about 3 min 20 s** for 2 s × 2 samples with 50 steps" in expected(app, samples=2)
    # 20 s of a 12 s model: 3 windows of 12 s (each continuing 5 s of the one before), 50 steps each
    assert "**about 30 min 0 s** for 20 s in 3 windows with 150 steps" in expected(app, duration=20.0)
    assert "not measured yet for autoregressive runs" in expected(app, method="autoregressive")
    assert expected(app, decoding_steps="20, 10").startswith(
        "Expected time: — (Decoding steps: give one step count per codebook"
    )
    assert "too much work for this server: 60 steps x 8 samples x 10 s = 4800" in expected(
        app, decoding_steps="30, 10, 10, 10", samples=8, duration=10.0
    )


def test_a_finished_run_teaches_its_rate_and_the_fast_preset_has_fewer_steps(app):
    settings = {**GENERATE, "prompt": "calm piano", "model": app.studio.catalog.default_model}
    settings.update(duration=2.0, decoding_steps="3, 2, 2, 2", seed=1, method="autoregressive")
    list(app.generate(**settings, request=FakeRequest("learn")))
    model = app.studio.catalog.name(app.studio.catalog.default_model)
    run = app.studio.sessions.get("learn").runs[0]
    rate = app.studio.costs.rate(model, METHOD_AR)
    assert rate.source == "run #1"
    assert rate.seconds_per_unit == pytest.approx(run.records[-1].elapsed / 11)  # 11 records, 1 sample
    line = expected(app, method="autoregressive")
    assert "autoregressive from run #1" in line and "11 steps" in line
    assert app.views.fast_steps(app.studio.catalog.default_model) == "10, 5, 5, 5"


def test_a_rate_is_the_newest_measurement():
    costs = CostModel()
    plan, config = LabPlan(METHOD_MAGNET, (1,), 50), DecodingConfig(decoding_steps=(1,), duration=1.0)
    costs._set("m", METHOD_MAGNET, 2.0, 1.0, PROBE)
    costs._set("m", METHOD_MAGNET, 1.0, 1.0, "run #3")
    assert costs.estimate("m", plan, config, 1) == (1.0, ["MAGNeT from run #3"])
    costs._set("m", METHOD_MAGNET, float("nan"), 1.0, "run #4")  # ignored
    assert costs.rate("m", METHOD_MAGNET).source == "run #3"
