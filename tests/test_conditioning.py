"""The embedded model's word-level text conditioner: tokenisation, null condition, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE, save_package
from magnet_demo.conditioning import (
    FIRST_BUCKET_ID,
    MODEL_TYPE,
    NUMBER_ID,
    PAD_ID,
    WordConditioner,
    build_conditioner,
    build_vocab,
    split_words,
)

CAPTIONS = [
    "A fast, happy pop song with piano and drums at 128 bpm",
    "slow sad piano ballad, no drums",
    "upbeat guitar track in F# minor, 140 bpm",
    "fast drums and bass",
]
OUTPUT_DIM = 24


def _conditioner(seed: int = 0, **kwargs) -> WordConditioner:
    torch.manual_seed(seed)
    args = {"dim": 16, "num_layers": 1, "num_heads": 2, "max_words": 12, "hash_buckets": 4, **kwargs}
    return WordConditioner(build_vocab(CAPTIONS, min_count=1), OUTPUT_DIM, **args).eval()


def test_split_words_lowercases_and_separates_numbers():
    assert split_words("Fast 120BPM, F# minor") == ["fast", "120", "bpm", "f#", "minor"]
    assert split_words("120-bpm") == split_words("120 BPM") == ["120", "bpm"]
    assert split_words("mid-tempo... 3.5x!") == ["mid", "tempo", "3.5", "x"]
    assert split_words("  ") == []


def test_vocab_excludes_numbers_and_rare_words():
    vocab = build_vocab(CAPTIONS, min_count=2)
    assert "fast" in vocab and "piano" in vocab and "bpm" in vocab
    assert "128" not in vocab and "ballad" not in vocab  # number; seen once
    assert vocab == build_vocab(list(reversed(CAPTIONS)), min_count=2)  # order-independent


def test_word_ids_known_unknown_numbers():
    cond = _conditioner()
    ids, values, mask = cond.tokenize(["FAST piano 97 bpm zyzzyva"])
    assert ids[0, 0] == cond.word_ids["fast"] and ids[0, 1] == cond.word_ids["piano"]
    assert ids[0, 2] == NUMBER_ID and values[0, 2] == 97.0
    assert FIRST_BUCKET_ID <= ids[0, 4] < FIRST_BUCKET_ID + cond.hash_buckets  # hashed unknown word
    assert mask[0].tolist() == [1] * 5 + [0] * (cond.max_words - 5)
    assert (ids[0, 5:] == PAD_ID).all()
    # the hash is stable (not Python's salted hash()) and case-insensitive
    assert cond.tokenize(["Zyzzyva"])[0][0, 0] == ids[0, 4]


def test_long_text_is_truncated():
    cond = _conditioner()
    ids, _, mask = cond.tokenize([" ".join(["piano"] * 40)])
    assert ids.shape == (1, cond.max_words) and int(mask.sum()) == cond.max_words


def test_null_condition_is_zero_and_empty_text_is_null():
    cond = _conditioner()
    emb, mask = cond(cond.tokenize([None, "", "fast piano"]))
    assert emb.shape == (3, cond.max_words, OUTPUT_DIM) and mask.shape == (3, cond.max_words)
    assert torch.isfinite(emb).all()
    assert (emb[:2] == 0).all() and (mask[:2] == 0).all()
    assert emb[2, :2].abs().sum() > 0 and (emb[2, 2:] == 0).all()


def test_pooled_variant_gives_one_vector_per_text():
    cond = _conditioner(pool=True)
    emb, mask = cond(cond.tokenize([None, "fast piano", "fast piano at 120 bpm"]))
    assert emb.shape == (3, 1, OUTPUT_DIM) and mask.tolist() == [[0], [1], [1]]
    assert (emb[0] == 0).all() and not torch.allclose(emb[1], emb[2])


def test_output_is_deterministic_and_independent_of_the_batch():
    cond = _conditioner()
    alone, _ = cond(cond.tokenize(["fast piano at 120 bpm"]))
    batched, _ = cond(
        cond.tokenize([None, "slow sad piano ballad with no drums at all", "fast piano at 120 bpm"])
    )
    assert torch.allclose(alone[0], batched[2], atol=1e-6)
    again, _ = _conditioner()(cond.tokenize(["fast piano at 120 bpm"]))
    assert torch.equal(alone, again)


def test_numbers_are_embedded_by_value():
    cond = _conditioner()
    e = {v: cond(cond.tokenize([f"{v} bpm"]))[0][0, 0] for v in (118, 120, 60)}
    assert (e[118] - e[120]).norm() < (e[60] - e[120]).norm()


def test_word_dropout_only_in_training_and_keeps_a_word():
    cond = _conditioner(word_dropout=0.99)
    tokens = cond.tokenize(["fast happy piano song", None])
    cond.train()
    torch.manual_seed(0)
    _, mask = cond(tokens)
    assert int(mask[0].sum()) == 1 and int(mask[1].sum()) == 0
    cond.eval()
    assert int(cond(tokens)[1][0].sum()) == 4


def test_build_conditioner_rejects_unknown_types():
    with pytest.raises(ValueError, match=MODEL_TYPE):
        build_conditioner("bert", {}, output_dim=8)


def test_round_trip_through_build_lm_save_package_load_model(tmp_path):
    from magnet_demo.codec import build_codec, codec_config, save_codec
    from magnet_demo.controls import DecodingConfig
    from magnet_demo.engine import Engine
    from magnet_demo.models import build_lm, load_model
    from magnet_demo.train.train_magnet import condition_tensors, lm_config

    torch.manual_seed(0)
    text = {"dim": 16, "num_layers": 1, "num_heads": 2}
    cfg = lm_config(build_vocab(CAPTIONS, min_count=1), {"dim": 32, "num_heads": 2, "num_layers": 1}, text)
    lm = build_lm(cfg).eval()
    save_package(lm.state_dict(), cfg, tmp_path / LM_FILE)
    save_codec(build_codec(codec_config(dim=16, hidden=32, encoder_blocks=1, decoder_blocks=1)), tmp_path)
    assert (tmp_path / COMPRESSION_FILE).is_file()

    model = load_model(str(tmp_path), device="cpu")
    assert "conditioner" in model.custom_parts
    conditioners = model.lm.condition_provider.conditioners
    assert set(conditioners) == {"description", "description_global"}  # cross-attention and sum
    assert conditioners["description_global"].pool and not conditioners["description"].pool
    loaded = conditioners["description"]
    assert isinstance(loaded, WordConditioner) and loaded.vocab == build_vocab(CAPTIONS, min_count=1)
    texts = ["fast piano at 133 bpm", None, "an unknown word"]
    with torch.no_grad():
        before, after = condition_tensors(lm, texts), condition_tensors(model.lm, texts)
    for name in conditioners:
        assert torch.equal(before[name][0], after[name][0]) and torch.equal(before[name][1], after[name][1])

    config = DecodingConfig(duration=0.3, decoding_steps=(2, 1, 1, 1))
    result = Engine(model).decode(["fast piano"], config, seed=0)
    assert result.tokens.shape == (1, 4, 15) and int(result.tokens.max()) < 256
