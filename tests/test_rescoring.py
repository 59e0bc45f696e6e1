"""Rescoring: the engine's mixing convention, the autoregressive rescorer, the pairing rule.

Tiny random models are exported to temp folders and loaded through the real loaders: a MAGNeT
(:func:`magnet_demo.tiny.write_tiny_checkpoint`) and a MusicGen-style twin sharing its codec
(:func:`magnet_demo.tiny.write_tiny_rescorer`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model
from magnet_demo.rescoring import (
    LMRescorer,
    Rescorer,
    pair_rescorer,
    rescorer_choices,
    rescorer_for,
    tokenizer_of,
)
from magnet_demo.spans import NEVER_REMASK
from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer

PROMPTS = ("slow piano", "fast drums")
STEPS = (3, 2, 2, 2)
#: 1 s at 50 Hz, trimmed to 48 frames (16 chunks of 3) by the nonoverlap arrangement
DURATION = 1.0
#: fields of a record that measure time and so differ between two identical runs
TIMING_FIELDS = {"step_seconds", "elapsed"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescoring")
    magnet = write_tiny_checkpoint(root / "magnet", seed=0)
    write_tiny_rescorer(magnet / "rescorer", magnet, seed=1)
    other_codec = write_tiny_checkpoint(root / "other_codec", seed=5)
    small_card = write_tiny_checkpoint(root / "small_card", seed=0, card=32)
    return {"magnet": magnet, "other_codec": other_codec, "small_card": small_card}


@pytest.fixture(scope="module")
def model(folders):
    return load_model(str(folders["magnet"]), device="cpu")


@pytest.fixture(scope="module")
def rescorer(model, folders):
    return pair_rescorer(model, str(folders["magnet"] / "rescorer"))


class CountingRescorer(Rescorer):
    """Wraps a rescorer and counts its calls."""

    def __init__(self, inner: Rescorer):
        self.inner, self.name, self.tokenizer, self.calls = inner, inner.name, inner.tokenizer, 0

    def token_probs(self, tokens, prompts):
        self.calls += 1
        return self.inner.token_probs(tokens, prompts)


class TableRescorer(Rescorer):
    """Returns fixed per-frame probabilities ``[T]`` for every item and codebook."""

    name = "table"
    tokenizer = None

    def __init__(self, per_frame: list[float]):
        self.per_frame = torch.tensor(per_frame, dtype=torch.float32)

    def token_probs(self, tokens, prompts):
        B, K, T = tokens.shape
        return self.per_frame[:T].expand(B, K, T).clone()


def _assert_records_equal(a, b):
    for field in dataclasses.fields(a):
        if field.name in TIMING_FIELDS:
            continue
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y, equal_nan=True), field.name
        else:
            assert x == y, field.name


def test_weight_zero_is_bit_identical_to_plain_magnet(model, rescorer):
    config = DecodingConfig(decoding_steps=STEPS, duration=DURATION, rescore_weight=0.0)
    plain = Engine(model).decode(PROMPTS, config, seed=7, with_audio=False)
    counting = CountingRescorer(rescorer)
    rescored = Engine(model, counting).decode(PROMPTS, config, seed=7, with_audio=False)
    assert counting.calls == 0
    assert torch.equal(plain.tokens, rescored.tokens)
    assert len(plain.records) == len(rescored.records) == sum(STEPS)
    for a, b in zip(plain.records, rescored.records, strict=True):
        _assert_records_equal(a, b)
        assert b.rescorer_confidence is None


def test_weight_one_ranks_spans_by_the_rescorer_alone(model):
    # 0.4 s = 20 frames, trimmed to 18 = 6 chunks of 3. The rescorer's best frame in chunk c has
    # probability CHUNK_MAX[c]; with w = 1 a chunk's score is 1 - CHUNK_MAX[c]:
    #   scores [0.1, 0.8, 0.5, 0.2, 0.9, 0.4]
    # step 1 masks int(cos(pi/4) * 6) = 4 chunks, the highest scores: chunks {1, 2, 4, 5};
    # step 2 masks 1 chunk among those re-predicted at step 1: chunk 4.
    chunk_max = [0.9, 0.2, 0.5, 0.8, 0.1, 0.6]
    per_frame = [p * f for p in chunk_max for f in (1.0, 0.5, 0.25)]
    expected_after_step0 = np.repeat([False, True, True, False, True, True], 3)
    expected_after_step1 = np.repeat([False, False, False, False, True, False], 3)
    config = DecodingConfig(decoding_steps=(3, 1, 1, 1), duration=0.4, rescore_weight=1.0)
    engine = Engine(model, TableRescorer(per_frame))
    for seed in (0, 1):  # MAGNeT's own probabilities (which depend on the seed) play no part
        records = list(engine.steps(PROMPTS, config, seed=seed))
        for item in range(len(PROMPTS)):
            assert records[0].mask_before[item].all()
            assert np.array_equal(records[0].mask_after[item], expected_after_step0)
            assert np.array_equal(records[1].mask_before[item], expected_after_step0)
            assert np.array_equal(records[1].mask_after[item], expected_after_step1)
    # the same run without the rescorer picks other chunks (so the check above means something)
    plain = list(Engine(model).steps(PROMPTS, config.replace(rescore_weight=0.0), seed=0))
    assert not np.array_equal(plain[0].mask_after, records[0].mask_after) or not np.array_equal(
        plain[1].mask_after, records[1].mask_after
    )


def test_records_carry_both_confidences_and_the_documented_mix(model, rescorer):
    weight = 0.3
    config = DecodingConfig(decoding_steps=STEPS, duration=DURATION, rescore_weight=weight)
    result = Engine(model, rescorer).decode(PROMPTS, config, seed=3, with_audio=False)
    B, T = len(PROMPTS), result.tokens.shape[-1]
    for record in result.records:
        if record.is_stage_end:  # its scores choose no mask: the rescorer is not called
            assert record.rescorer_confidence is None and record.rescore_weight == 0.0
            continue
        assert record.confidence.shape == record.rescorer_confidence.shape == (B, T)
        assert record.rescore_weight == weight
        assert np.isfinite(record.rescorer_confidence).all()
        # the rescorer scored exactly the canvas of the record, at the stage being decoded
        tokens = torch.as_tensor(record.tokens.astype(np.int64))
        expected = rescorer.token_probs(tokens, PROMPTS)[:, record.stage].numpy()
        assert np.array_equal(record.rescorer_confidence, expected)
        # confidence = (1 - w) * p_magnet + w * p_rescorer, then 'max' span scoring per chunk
        mixed = (1 - weight) * record.confidence + weight * record.rescorer_confidence
        chunk_scores = 1 - mixed.reshape(B, -1, model.lm.span_len).max(axis=-1)
        masked_chunks = record.mask_before[:, :: model.lm.span_len]
        expected_scores = np.where(masked_chunks, chunk_scores, NEVER_REMASK)
        np.testing.assert_allclose(record.scores[:, 0], expected_scores, rtol=0, atol=1e-6)


def test_rescorer_probabilities_equal_compute_predictions(rescorer):
    from audiocraft.modules.conditioners import ConditioningAttributes

    lm = rescorer.lm
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, lm.card, (2, lm.num_codebooks, 30), generator=generator)
    tokens[:, 2:] = lm.special_token_id  # stages 2 and 3 not decoded yet
    probs = rescorer.token_probs(tokens, PROMPTS)

    conditions = [ConditioningAttributes(text={"description": p}) for p in PROMPTS]
    with torch.no_grad():
        logits = lm.compute_predictions(tokens, conditions, keep_only_valid_steps=False).logits
    known = tokens != lm.special_token_id
    gathered = torch.softmax(logits, dim=-1).gather(-1, tokens.clamp(max=lm.card - 1)[..., None])[..., 0]
    assert torch.equal(probs[known], gathered[known])
    assert torch.isnan(probs[~known]).all()
    assert torch.isfinite(probs[known]).all()
    nll = rescorer.mean_nll(tokens, PROMPTS)
    expected_nll = -torch.log(gathered[:, :2]).mean(dim=(1, 2))
    torch.testing.assert_close(nll, expected_nll)


def test_rescorer_is_causal_through_the_delay_pattern(rescorer):
    lm = rescorer.lm
    tokens = torch.randint(0, lm.card, (1, lm.num_codebooks, 20), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[:, 0, 10:] = (changed[:, 0, 10:] + 1) % lm.card
    a, b = rescorer.token_probs(tokens, PROMPTS[:1]), rescorer.token_probs(changed, PROMPTS[:1])
    # codebook 0 at frame t sees codebook 0 before t; codebook 1 at frame t sees codebook 0 up to t
    assert torch.equal(a[:, 0, :10], b[:, 0, :10])
    assert torch.equal(a[:, 1, :10], b[:, 1, :10])
    assert not torch.equal(a[:, 0, 11], b[:, 0, 11])
    assert not torch.equal(a[:, 1, 10], b[:, 1, 10])


def test_condition_tensors_are_cached_per_prompt_tuple(rescorer):
    tokens = torch.zeros((2, rescorer.lm.num_codebooks, 9), dtype=torch.long)
    rescorer.token_probs(tokens, ("cache me", "please"))
    hits = rescorer.condition_cache_hits
    rescorer.token_probs(tokens, ("cache me", "please"))
    assert rescorer.condition_cache_hits == hits + 1


def test_pairing_refuses_other_codec_weights(model, folders, tmp_path):
    # a rescorer folder holding another codec is refused before its language model is read
    write_tiny_rescorer(tmp_path / "r", folders["other_codec"])
    (tmp_path / "r" / "state_dict.bin").unlink()
    with pytest.raises(ValueError, match="tokenizers differ.*codec 'weights sha256:"):
        pair_rescorer(model, str(tmp_path / "r"))


def test_pairing_refuses_other_codebook_size(folders):
    small = load_model(str(folders["small_card"]), device="cpu")
    with pytest.raises(ValueError, match="codebook size 32 vs 64"):
        pair_rescorer(small, str(folders["magnet"] / "rescorer"))


def test_pairing_refuses_non_autoregressive_and_untagged_models(model, rescorer):
    with pytest.raises(ValueError, match="MAGNeT"):
        LMRescorer(model.lm, rescorer.tokenizer, "magnet")
    with pytest.raises(ValueError, match="tokenizer"):
        pair_rescorer(model, rescorer.lm)
    assert pair_rescorer(model, rescorer.lm, tokenizer=tokenizer_of(model)).lm is rescorer.lm


def test_hub_pairing_rule_needs_no_download():
    assert rescorer_for("facebook/magnet-small-10secs")[0] == "facebook/musicgen-small"
    assert rescorer_for("facebook/magnet-medium-30secs")[0] == "facebook/musicgen-small"
    assert rescorer_for("facebook/audio-magnet-small")[0] == "facebook/audiogen-medium"
    choices = {c.name: c for c in rescorer_choices("facebook/audio-magnet-medium")}
    assert choices["facebook/audiogen-medium"].offered
    assert not choices["facebook/musicgen-small"].offered
    assert "sample rate 16000 Hz vs 32000 Hz" in choices["facebook/musicgen-small"].reason


def test_folder_rescorer_is_offered_first(folders):
    name, reason = rescorer_for(str(folders["magnet"]))
    assert name == str(folders["magnet"] / "rescorer")
    assert "same tokens" in reason
    choices = rescorer_choices(str(folders["magnet"]))
    assert [c.offered for c in choices] == sorted((c.offered for c in choices), reverse=True)
    assert all("codebook size 64 vs 2048" in c.reason for c in choices if not c.offered)
    assert rescorer_for(str(folders["other_codec"]))[0] is None


def test_rescorer_follows_the_model_precision(folders, rescorer):
    """A named rescorer paired with a bfloat16 model loads in bfloat16; its float32 probabilities
    stay close to the float32 rescorer's."""
    model16 = load_model(str(folders["magnet"]), device="cpu", precision="bfloat16")
    rescorer16 = pair_rescorer(model16, str(folders["magnet"] / "rescorer"))
    assert {p.dtype for p in rescorer16.lm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in rescorer.lm.parameters()} == {torch.float32}
    tokens = torch.randint(
        0, rescorer.lm.card, (2, rescorer.lm.num_codebooks, 12), generator=torch.Generator().manual_seed(3)
    )
    probs16 = rescorer16.token_probs(tokens, PROMPTS)
    probs32 = rescorer.token_probs(tokens, PROMPTS)
    assert probs16.dtype == torch.float32
    assert torch.allclose(probs16, probs32, atol=0.02), (probs16 - probs32).abs().max()
    assert not torch.equal(probs16, probs32)  # it really ran in bfloat16
