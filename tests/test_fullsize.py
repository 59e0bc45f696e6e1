"""The full-size benchmark's restricted-context check, on a tiny ``memory_efficient`` model.

``bench/fullsize_cpu.py`` runs it on a 300M model; here the same check runs in a second on a tiny
model exported like the released checkpoints (``memory_efficient`` set, 10 s segments, so
audiocraft's own stage mask is sized for 504 frames and the loader's CPU fallback is exercised).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "fullsize_cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fullsize_cpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_restricted_context_at_500_frames(bench, tmp_path):
    from magnet_demo.models import load_model
    from magnet_demo.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "m", segment_duration=10, memory_efficient=True)
    model = load_model(str(folder), device="cpu")
    assert not model.lm.transformer.layers[0].self_attn.memory_efficient  # CPU fallback
    errors = bench.check_restricted_context(model)
    assert errors["first_layer_vs_reference"] < bench.RTOL
    assert errors["logits_vs_audiocraft_forward"] < bench.RTOL
    assert errors["first_layer_vs_unrestricted"] > 100 * bench.RTOL
