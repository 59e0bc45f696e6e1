"""Continuation parity: audiocraft's ``MAGNeT.generate_continuation`` against the engine fed the
same prompt's codes through :mod:`magnet_demo.audio_in`, seed for seed.

As in tests/test_parity.py, audiocraft's CPU path runs unpatched only at 600 frames (the tiny
model's 12 s segment). audiocraft encodes the prompt waveform with its codec (its rate is the
codec's, so ``convert_audio`` leaves it alone), fills the first P frames of every codebook with
it and never re-masks them; P = 52 frames is not a multiple of the span (3), so 'nonoverlap' also
exercises the partly given chunk.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet_demo import audio_in
from magnet_demo.controls import DecodingConfig

STEPS = (3, 2, 2, 2)
PROMPTS = ["slow piano", "fast drums"]
PROMPT_FRAMES = 52
HOP = 640  # samples per frame of the tiny codec (32 kHz / 50 Hz)


@pytest.fixture(scope="module")
def reference(tiny_folder):
    from audiocraft.models import MAGNeT

    magnet = MAGNeT.get_pretrained(str(tiny_folder), device="cpu")
    magnet.duration = 12
    return magnet


@pytest.fixture(scope="module")
def prompt_wav():
    """A 1.04 s waveform at the codec's rate: 52 frames."""
    rng = np.random.default_rng(5)
    t = np.arange(PROMPT_FRAMES * HOP) / 32000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)
    return wav.astype(np.float32)


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_continuation_tokens_equal_audiocraft(reference, engine, tiny_model, prompt_wav, arrangement):
    seed = 321
    reference.set_generation_params(decoding_steps=list(STEPS), span_arrangement=arrangement)
    wav = torch.from_numpy(prompt_wav)[None, None].expand(len(PROMPTS), 1, -1)
    torch.manual_seed(seed)
    _, expected = reference.generate_continuation(wav, 32000, PROMPTS, return_tokens=True)

    clip = audio_in.prepare_audio(prompt_wav, 32000, tiny_model.sample_rate, max_seconds=12)
    codes = audio_in.encode_clip(tiny_model, clip)
    assert codes.shape == (1, 4, PROMPT_FRAMES)
    config = DecodingConfig(decoding_steps=STEPS, duration=12, span_arrangement=arrangement)
    T = engine.frames(config)
    tokens, mask = audio_in.continuation_given(codes, PROMPT_FRAMES / 50, T, tiny_model.frame_rate)
    result = engine.decode(PROMPTS, config, seed=seed, given_tokens=tokens, given_mask=mask, with_audio=False)
    assert result.tokens.shape == expected.shape == (2, 4, 600)
    assert torch.equal(result.tokens[..., :PROMPT_FRAMES], codes.expand(2, -1, -1))
    assert torch.equal(result.tokens, expected)
