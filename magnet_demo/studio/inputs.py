"""Input audio on the canvas before any run: a clip encoded with a model's codec and shown as given
tokens, cropped to the run's duration (drag across it to pick a region to re-decode). No Gradio."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magnet_demo import audio_in
from magnet_demo.canvas_feed import CanvasFeed
from magnet_demo.controls import DecodingConfig
from magnet_demo.models import LoadedModel


def input_canvas(model: LoadedModel, path: Path, name: str, seconds: float) -> tuple[str, str]:
    """(the canvas feed's text, the status line) of the clip at ``path`` as given tokens of a run of
    ``seconds`` on ``model``; ValueError when the audio cannot be used."""
    config = DecodingConfig(duration=seconds)
    codes, note = audio_in.audio_codes(model, path, duration=seconds)
    T = model.frames(config)
    tokens = np.zeros((model.num_codebooks, T), dtype=np.int64)
    given = np.zeros_like(tokens, dtype=bool)
    kept = min(T, codes.shape[-1])
    tokens[:, :kept], given[:, :kept] = codes[0, :, :kept].numpy(), True
    feed = CanvasFeed(
        0,
        config.decoding_steps,
        T,
        model.frame_rate,
        given=given,
        given_tokens=tokens,
        title=f"Input audio: {name}, {kept / model.frame_rate:g} s as given tokens",
    )
    return feed.text, f"Input audio {name} ready. {note}".strip()
