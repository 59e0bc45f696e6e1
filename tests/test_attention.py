"""The CPU forward used by the engine: restricted context for codebooks > 0 at any T."""

from __future__ import annotations

import math

import pytest
import torch

from magnet_demo.models import load_model, stage_logits
from magnet_demo.tiny import write_tiny_checkpoint

CONTEXT = 5


def _conditions(lm, texts):
    from audiocraft.modules.conditioners import ConditioningAttributes

    attributes = [ConditioningAttributes(text={"description": t}) for t in texts]
    return lm.condition_provider(lm.condition_provider.tokenize(attributes))


def _reference_self_attention(attn, x, context):
    """Multi-head self-attention of ``x [B, T, D]`` with keys limited to |i - j| <= context."""
    B, T, D = x.shape
    H = attn.num_heads
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (y.reshape(B, T, H, D // H).transpose(1, 2) for y in (q, k, v))
    weights = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    pos = torch.arange(T)
    weights = weights.masked_fill((pos[:, None] - pos[None, :]).abs() > context, float("-inf"))
    out = (weights.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    return attn.out_proj(out)


@pytest.mark.parametrize("T", [250, 500])
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_stage_attention_matches_reference(tmp_path, T, memory_efficient):
    folder = write_tiny_checkpoint(
        tmp_path / "m", seed=1, segment_duration=12, memory_efficient=memory_efficient
    )
    model = load_model(str(folder), device="cpu")
    lm = model.lm
    attn = lm.transformer.layers[0].self_attn
    seen = {}

    def capture(module, args, kwargs, output):
        seen["x"], seen["out"] = args[0], output[0]

    handle = attn.register_forward_hook(capture, with_kwargs=True)
    tokens = torch.randint(0, lm.card, (1, 4, T), generator=torch.Generator().manual_seed(T))
    tokens[:, 2:] = lm.special_token_id
    with torch.no_grad():
        stage_logits(lm, tokens, _conditions(lm, ["a"]), stage=1)
        expected = _reference_self_attention(attn, seen["x"], CONTEXT)
    handle.remove()
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)


def test_memory_efficient_checkpoint_gives_the_same_logits(tmp_path):
    plain = load_model(str(write_tiny_checkpoint(tmp_path / "a", seed=2, memory_efficient=False)))
    efficient = load_model(str(write_tiny_checkpoint(tmp_path / "b", seed=2, memory_efficient=True)))
    assert efficient.lm.transformer.layers[0].self_attn.memory_efficient is False  # CPU: einsum path
    tokens = torch.randint(0, 64, (1, 4, 333), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for stage in range(4):
            a = stage_logits(plain.lm, tokens, _conditions(plain.lm, ["x"]), stage)
            b = stage_logits(efficient.lm, tokens, _conditions(efficient.lm, ["x"]), stage)
            assert torch.equal(a, b)


def test_context_is_restricted_for_upper_codebooks_only(tmp_path):
    """With one layer, frame 0's logits see frame 40 at stage 0 but not at stage 1."""
    folder = write_tiny_checkpoint(tmp_path / "one", seed=3, num_layers=1)
    lm = load_model(str(folder)).lm
    tokens = torch.randint(0, 64, (1, 4, 100), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[:, 0, 40] = (tokens[:, 0, 40] + 1) % 64
    conditions = _conditions(lm, ["x"])
    with torch.no_grad():
        for stage, sees_it in ((0, True), (1, False), (3, False)):
            a = stage_logits(lm, tokens, conditions, stage)[:, 0]
            b = stage_logits(lm, changed, conditions, stage)[:, 0]
            assert (not torch.equal(a, b)) is sees_it
        near = changed.clone()
        near[:, 0, 40] = tokens[:, 0, 40]
        near[:, 0, 5] = (tokens[:, 0, 5] + 1) % 64
        assert not torch.equal(
            stage_logits(lm, tokens, conditions, 1)[:, 0], stage_logits(lm, near, conditions, 1)[:, 0]
        )
