"""bench.stage0_rerank: its stage-0 candidates, its caption scores and its row mixing, on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.stage0_rerank import caption_scores, mixed_record, parse_rule, stage0_candidate, stage0_codes
from magnet_demo.controls import DecodingConfig
from magnet_demo.models import stage_logits
from magnet_demo.train.train_magnet import condition_tensors

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = DecodingConfig(decoding_steps=(3, 2, 2, 2), duration=1.0)
CAPTIONS = ["a slow sad piano ballad", "fast drums"]


def test_parse_rule_reads_kind_and_rate_and_names_what_is_wrong():
    assert parse_rule(" pmi@0.7") == ("pmi", 0.7)
    assert parse_rule("likelihood@1") == ("likelihood", 1.0)
    with pytest.raises(ValueError, match="KIND one of pmi, likelihood"):
        parse_rule("entropy@0.5")
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        parse_rule("pmi@1.5")
    with pytest.raises(ValueError, match="'high' is not a mask rate"):
        parse_rule("pmi@high")


def test_a_candidate_is_the_canvas_at_the_end_of_stage_0(engine):
    record = stage0_candidate(engine, CAPTIONS, CONFIG, seed=3)
    mask_id = engine.lm.special_token_id
    assert (record.stage, record.step, record.is_stage_end) == (0, 2, True)
    tokens = np.asarray(record.tokens)
    assert (tokens[:, 0] != mask_id).all() and (tokens[:, 1:] == mask_id).all()
    assert stage0_codes(record).dtype == torch.long
    assert stage0_codes(record).tolist() == tokens[:, 0].tolist()


def test_mixed_record_takes_each_row_from_its_chosen_candidate_and_the_rest_from_the_first(engine):
    first, second = (stage0_candidate(engine, CAPTIONS, CONFIG, seed=s) for s in (0, 1))
    assert not np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    mixed = mixed_record([first, second], np.array([1, 0]))
    assert np.array_equal(np.asarray(mixed.tokens)[0], np.asarray(second.tokens)[0])
    assert np.array_equal(np.asarray(mixed.tokens)[1], np.asarray(first.tokens)[1])
    assert np.array_equal(np.asarray(mixed.rng_state), np.asarray(first.rng_state))
    result = engine.decode(CAPTIONS, CONFIG, seed=0, resume_from=mixed)  # the resume path accepts it
    assert result.tokens[0, 0].tolist() == np.asarray(second.tokens)[0, 0].tolist()


def test_caption_scores_with_every_token_masked_are_the_mean_log_probability(engine):
    lm = engine.lm
    codes = stage0_codes(stage0_candidate(engine, CAPTIONS, CONFIG, seed=0))
    with_caption, without = caption_scores(lm, codes, CAPTIONS, rate=1.0, masks=2)
    masked = torch.full((2, lm.num_codebooks, codes.shape[1]), lm.special_token_id)
    for texts, got in ((CAPTIONS, with_caption), ([None, None], without)):
        with torch.no_grad():
            logits = stage_logits(lm, masked, condition_tensors(lm, texts), 0).float()
        expected = torch.log_softmax(logits, -1).gather(-1, codes[..., None])[..., 0].mean(1)
        torch.testing.assert_close(got, expected)
    assert not torch.allclose(with_caption, without)  # the tiny model's LUT conditioner matters


def test_caption_scores_of_a_row_do_not_depend_on_the_other_rows(engine):
    codes = stage0_codes(stage0_candidate(engine, CAPTIONS, CONFIG, seed=0))
    both = caption_scores(engine.lm, codes, CAPTIONS, rate=0.5, masks=1)
    alone = caption_scores(engine.lm, codes[:1], CAPTIONS[:1], rate=0.5, masks=1)
    for batch, single in zip(both, alone, strict=True):
        torch.testing.assert_close(batch[:1], single)
