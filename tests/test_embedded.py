"""The embedded model shipped in assets/ loads offline through the one loader and generates."""

from __future__ import annotations

import numpy as np

from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model


def test_embedded_model_loads_and_generates():
    model = load_model("embedded", device="cpu")
    assert model.kind == "embedded" and set(model.custom_parts) == {"codec", "conditioner"}
    assert (model.sample_rate, model.frame_rate, model.num_codebooks, model.lm.card) == (16000, 50, 4, 256)
    config = DecodingConfig(decoding_steps=(3, 2, 2, 2), duration=1.0)
    result = Engine(model).decode(["a slow sad piano ballad with strings"], config, seed=0)
    assert result.tokens.shape == (1, 4, 48) and int(result.tokens.max()) < 256
    assert result.audio.shape == (1, 48 * 320) and np.isfinite(result.audio).all()
