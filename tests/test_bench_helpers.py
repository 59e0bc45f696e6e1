"""Helpers shared by the ``bench`` scripts whose JSON figures ship in ``assets/``."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval_embedded import evenly_spread, model_label, spread_clips
from bench.sampling_sweep import mean_accuracy, parse_seeds, parse_setting
from magnet_demo.models import EMBEDDED_DIR


def test_model_label_names_a_folder_inside_the_repository_relative_to_it(tmp_path):
    assert model_label(str(EMBEDDED_DIR)) == "assets/embedded"
    assert model_label(str(tmp_path)) == str(tmp_path)


def test_parse_setting_reads_numbers_and_refuses_what_is_not_key_value():
    assert parse_setting("default") == {}
    assert parse_setting("temperature=2.5, top_k=50") == {"temperature": 2.5, "top_k": 50}
    with pytest.raises(ValueError, match="'top_k' is not KEY=VALUE"):
        parse_setting("temperature=2.5,top_k")


def test_parse_setting_keeps_a_list_value_whole_and_names_a_bad_value():
    assert parse_setting("decoding_steps=[60,10,10,10],top_p=0.8") == {
        "decoding_steps": [60, 10, 10, 10],
        "top_p": 0.8,
    }
    with pytest.raises(ValueError, match="'hot' is not a JSON value"):
        parse_setting("temperature=hot")


def test_parse_seeds_wants_distinct_integers():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_seeds("0,a")
    with pytest.raises(ValueError, match="repeats a seed"):
        parse_seeds("1,1")


def test_mean_accuracy_averages_each_attribute_over_the_seeds():
    runs = [{"family": 0.5, "mean": 0.25}, {"family": 1.0, "mean": 0.75}]
    assert mean_accuracy(runs) == {"family": 0.75, "mean": 0.5}


def test_evenly_spread_keeps_both_ends_and_steps_evenly_between():
    assert evenly_spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spread(["a", "b", "c"], 1) == ["a"]


def test_spread_clips_takes_captions_and_labels_of_one_split_in_corpus_order(tmp_path):
    import json

    import numpy as np

    splits = ["train", "test", "train", "train", "test", "train"]
    np.save(tmp_path / "audio.npy", np.zeros((len(splits), 4), np.int16))
    rows = [{"split": s, "caption": f"clip {i}", "labels": {"drums": i}} for i, s in enumerate(splits)]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert spread_clips(str(tmp_path), "train", 2) == (["clip 0", "clip 5"], [{"drums": 0}, {"drums": 5}])
    assert spread_clips(str(tmp_path), "test", 10)[0] == ["clip 1", "clip 4"]  # no more than the split has


def test_generate_from_stage_shares_the_lower_codebooks_and_reproduces_plain_generation(engine):
    from bench.sampling_sweep import generate_from_stage
    from magnet_demo.controls import DecodingConfig

    captions = ["calm strings", "loud brass", "fast drums"]
    base = DecodingConfig(decoding_steps=(3, 2, 2, 2), duration=2.0)
    cooler = base.replace(temperature=0.5)
    plain, paired = generate_from_stage(engine, captions, [base, cooler], 1, batch=2, seed=5)
    expected = [engine.decode(captions[s : s + 2], base, seed=5 + s).audio for s in (0, 2)]
    assert plain.shape == paired.shape == (3, expected[0].shape[1])
    np.testing.assert_array_equal(plain, np.concatenate(expected))
    assert not np.array_equal(plain, paired)  # the cooler codebooks 1-3 changed the sound
    # the cooler run is plain generation at temperature 0.5 from codebook 1 on, after the same codebook 0
    shared = next(r for r in engine.steps(captions[:2], base, seed=5) if r.stage == 0 and r.is_stage_end)
    resumed = engine.decode(captions[:2], cooler, seed=5, resume_from=shared).audio
    np.testing.assert_array_equal(paired[:2], resumed)


def test_generate_from_stage_refuses_settings_that_change_the_shared_codebooks(engine):
    from bench.sampling_sweep import generate_from_stage
    from magnet_demo.controls import DecodingConfig

    base = DecodingConfig(decoding_steps=(3, 2, 2, 2), duration=2.0)
    with pytest.raises(ValueError, match="change the shared codebooks below 1"):
        generate_from_stage(engine, ["a"], [base, base.replace(decoding_steps=(4, 2, 2, 2))], 1, 1, 0)
    with pytest.raises(ValueError, match="--from-stage must be in 1..3"):
        generate_from_stage(engine, ["a"], [base], 4, 1, 0)


def test_time_settings_gives_one_median_per_setting(engine, monkeypatch):
    import bench.sampling_sweep as sweep
    from magnet_demo.controls import DecodingConfig

    monkeypatch.setattr(sweep, "SPEED_PROMPT", "calm strings")
    base = DecodingConfig(decoding_steps=(3, 2, 2, 2), duration=2.0)
    configs = [base, base.replace(decoding_steps=(3, 1, 1, 1))]
    decoded = []
    monkeypatch.setattr(engine, "decode", _recording(engine.decode, decoded))
    medians = sweep.time_settings(engine, configs, runs=2, from_stage=1)
    assert len(medians) == 2 and all(m > 0 for m in medians)
    # a warm-up round and two timed ones, settings interleaved, each resumed after codebook 0
    assert [steps for steps, resumed in decoded] == [(3, 2, 2, 2), (3, 1, 1, 1)] * 3
    assert all(resumed == 3 for _, resumed in decoded)  # resumed after the 3 steps of codebook 0


def _recording(decode, calls):
    def wrapper(prompts, config, **kwargs):
        resume = kwargs.get("resume_from")
        calls.append((config.decoding_steps, None if resume is None else resume.global_step + 1))
        return decode(prompts, config, **kwargs)

    return wrapper
