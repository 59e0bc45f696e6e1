"""Trace export round trip."""

from __future__ import annotations

import dataclasses

import numpy as np

from magnet_demo.controls import DecodingConfig, LiveControls
from magnet_demo.trace import config_from_trace, load_trace, save_trace


def test_trace_round_trip(engine, tmp_path):
    config = DecodingConfig(
        decoding_steps=(3, 2, 2, 2), duration=1.0, cfg_schedule="curve", cfg_curve=(5.0, 1.0)
    )
    controls = LiveControls.from_config(config)
    result = engine.decode(["a", "b"], config, seed=4, controls=controls, with_audio=False)
    path = save_trace(result, tmp_path / "run.npz", meta={"model": "tiny"}, json_sidecar=True)
    records, info = load_trace(path)
    assert info["prompts"] == ["a", "b"] and info["seed"] == 4 and info["model"] == "tiny"
    assert config_from_trace(info) == config
    assert (tmp_path / "run.json").is_file()
    assert len(records) == len(result.records)
    for a, b in zip(records, result.records, strict=True):
        for field in dataclasses.fields(b):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if isinstance(y, np.ndarray):
                assert np.array_equal(x, y, equal_nan=y.dtype.kind == "f") and x.dtype == y.dtype
            else:
                assert x == y, field.name
    # a loaded record resumes exactly like the original
    again = engine.decode(["a", "b"], config, seed=0, resume_from=records[4], with_audio=False)
    assert np.array_equal(again.tokens.numpy(), result.tokens.numpy())
