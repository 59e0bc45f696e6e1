"""The released checkpoints' path, offline: stand-ins under the real names in a temporary Hub cache.

Each check runs in a fresh process whose ``HF_HOME`` is that cache (the Hub client reads it at
import), with ``HF_HUB_OFFLINE`` unset and every network connection refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.hub_load import write_standins

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

MISSING = """
import bench.hub_load as bench
network = bench.NetworkRefused()
from magnet_demo.models import ModelLoadError, load_model
try:
    load_model("facebook/magnet-small-10secs", device="cpu")
except ModelLoadError as error:
    print("ModelLoadError:", error)
"""


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf")
    write_standins(cache)
    return cache


def _offline_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_HOME": str(cache)}


def _python(args: list[str], cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        env=_offline_env(cache),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_released_format_loads_by_name_generates_and_rescores_offline(standins):
    out = _python(["-m", "bench.hub_load", "--cache", str(standins)], standins)
    assert "tokens [1, 4, 99], audio [1, 63360] at 32000 Hz" in out  # 2 s: 100 frames cut to 33 spans
    assert "6 of 10 steps rescored" in out  # every step but each codebook's last
    assert "hub_load: facebook/magnet-small-10secs loaded by name in" in out and "HF_HUB_OFFLINE unset" in out


@pytest.mark.parametrize(
    "remove, rename, named",
    [
        (["models--t5-base"], None, ["t5-base"]),
        # a cache holding only google-t5/t5-base: transformers would hand back a placeholder tokenizer
        ([], ("models--t5-base", "models--google-t5--t5-base"), ["t5-base"]),
        (["models--facebook--encodec_32khz"], None, ["facebook/encodec_32khz"]),
        (
            ["models--t5-base", "models--facebook--encodec_32khz", "models--facebook--magnet-small-10secs"],
            None,
            ["facebook/magnet-small-10secs", "t5-base", "facebook/encodec_32khz"],
        ),
    ],
)
def test_a_missing_piece_names_every_repo_and_its_cache(standins, tmp_path, remove, rename, named):
    cache = tmp_path / "hf"
    shutil.copytree(standins, cache)
    for folder in remove:
        shutil.rmtree(cache / "hub" / folder)
    if rename:
        (cache / "hub" / rename[0]).rename(cache / "hub" / rename[1])
    out = _python(["-c", MISSING], cache)
    assert out.startswith(
        "ModelLoadError: Could not load 'facebook/magnet-small-10secs': huggingface.co cannot be reached."
    )
    for repo in named:
        assert f"{repo} (" in out
    assert f"into {cache / 'hub'}" in out
    present = {"t5-base", "facebook/encodec_32khz", "facebook/magnet-small-10secs"} - set(named)
    assert not any(f"{repo} (" in out for repo in present)


INPAINT = """
import sys
import numpy as np
import bench.hub_load as bench
network = bench.NetworkRefused()
from magnet_demo import audio_in
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model

model = load_model("facebook/magnet-small-10secs", device="cpu")
config = DecodingConfig(decoding_steps=(2, 1, 1, 1), duration=2.0)
clip = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)  # 1 s at 48 kHz
codes, note = audio_in.audio_codes(model, clip, duration=config.duration, source_rate=48000)
T = model.frames(config)
region = audio_in.region_given(codes, 0.3, 0.6, T, model.frame_rate, model.lm.span_len)
result = Engine(model).decode(["a piano"], config, seed=1, given_tokens=region.tokens, given_mask=region.mask)
mask = region.mask.numpy()
kept = (result.tokens[mask] == region.tokens.numpy()[mask]).all()
print(f"inpainted {T} frames, region {region.start_s:g}-{region.end_s:g} s, kept {mask.sum()} tokens exactly: {kept}")
"""


def test_a_released_checkpoint_re_decodes_a_region_of_its_own_codecs_codes(standins):
    out = _python(["-c", INPAINT], standins)
    # 1 s of audio in a 2 s output: frames 15-30 re-decoded, and from 48 (the clip's last whole
    # span) on; frames 0-15 and 30-48 given: 33 frames x 4 codebooks
    assert "inpainted 99 frames, region 0.3-0.6 s, kept 132 tokens exactly: True" in out, out
