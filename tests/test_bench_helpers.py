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


def test_timing_of_reads_start_audio_and_end_from_a_jobs_updates():
    from datetime import datetime
    from types import SimpleNamespace

    from gradio_client.utils import Status

    from bench.slot import timing_of

    def status(code, second):
        return SimpleNamespace(type="status", code=code, time=datetime.fromtimestamp(second))

    def output(audio):
        return SimpleNamespace(type="output", outputs=["status", audio])

    updates = [
        status(Status.IN_QUEUE, 100.0),
        status(Status.PROCESSING, 101.0),
        output({"__type__": "update", "value": None, "label": "decoding…"}),  # the run's start
        status(Status.ITERATING, 101.5),
        output({"__type__": "update"}),  # a step: the player untouched
        status(Status.ITERATING, 102.0),
        output({"__type__": "update", "value": {"path": "/x/audio.wav"}}),
        status(Status.ITERATING, 103.0),
        output({"__type__": "update"}),  # the spectrogram, the files
        status(Status.ITERATING, 104.0),
        status(Status.FINISHED, 105.0),
        SimpleNamespace(type="output", outputs={"data": []}),  # the job's result
    ]
    timing = timing_of(updates, audio_at=1)
    assert (timing.to_audio, timing.slot) == pytest.approx((2.0, 4.0))
    with pytest.raises(RuntimeError, match="no audio"):
        timing_of([u for u in updates if u.type == "status"], audio_at=1)


def test_figures_give_medians_handoffs_and_runs_per_minute():
    from bench.slot import Timing, figures

    # one slot: each run starts when the one before ends (+0.1 s), the last one is freed late
    runs = [Timing(0.0, 2.0, 2.0), Timing(2.1, 4.1, 4.1), Timing(4.2, 6.2, 7.2)]
    f = figures(list(reversed(runs)))  # in any order
    assert f["runs"] == 3
    assert f["slot"] == pytest.approx(2.0) and f["to_audio"] == pytest.approx(2.0)
    assert f["ratio"] == pytest.approx(1.0) and f["worst"] == pytest.approx(1.5)
    assert f["handoff"] == pytest.approx(0.1)
    assert f["per_minute"] == pytest.approx(60 * 3 / 7.2)


def test_parse_presets_reads_step_counts_and_keeps_codebook_0_the_largest():
    from bench.fast_preset import parse_presets, preset_name

    assert parse_presets("10,5,5,5; 6,3,3,3") == [(10, 5, 5, 5), (6, 3, 3, 3)]
    assert preset_name((10, 5, 5, 5)) == "10,5,5,5"
    with pytest.raises(ValueError, match="not comma-separated integers"):
        parse_presets("10,5,x,5")
    with pytest.raises(ValueError, match="at least 1 step"):
        parse_presets("10,0,5,5")
    with pytest.raises(ValueError, match="codebook 0 needs at least as many steps"):
        parse_presets("5,10,10,10")
    with pytest.raises(ValueError, match="given twice"):
        parse_presets("6,3,3,3;6,3,3,3")


def test_clip_scores_and_paired_change_compare_the_same_clips():
    from bench.fast_preset import clip_scores, paired_change

    labels = [{"drums": 1, "mode": 0}, {"drums": 0, "mode": 0}, {"drums": 1, "mode": 1}]
    base = clip_scores({"drums": np.array([1, 0, 1]), "mode": np.array([0, 1, 0])}, labels)
    other = clip_scores({"drums": np.array([0, 0, 1]), "mode": np.array([0, 1, 1])}, labels)
    np.testing.assert_allclose(base, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(other, [0.5, 0.5, 1.0])
    mean, se = paired_change(base, other)
    assert mean == pytest.approx(0.0)
    assert se == pytest.approx(np.std([-0.5, 0.0, 0.5], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="paired"):
        paired_change(base, other[:2])


def test_recommend_takes_the_fewest_steps_whose_loss_is_ruled_out_beyond_the_noise():
    from bench.fast_preset import recommend

    fast = {"steps": [10, 5, 5, 5], "change": 0.01, "change_se": 0.02}  # lower bound -0.03
    faster = {"steps": [6, 3, 3, 3], "change": -0.02, "change_se": 0.02}  # lower bound -0.06
    assert recommend([fast, faster], noise_floor=0.05) is fast  # faster's loss may exceed the noise
    assert recommend([fast, faster], noise_floor=0.07) is faster
    assert recommend([fast, faster], noise_floor=0.02) is None


def test_decode_interleaved_pairs_seeds_across_presets_and_rotates_their_order(engine, monkeypatch):
    from bench.fast_preset import SEED_STRIDE, decode_interleaved
    from magnet_demo.controls import DecodingConfig

    base = DecodingConfig(decoding_steps=(3, 2, 2, 2), duration=1.0)
    configs = [base, base.replace(decoding_steps=(2, 1, 1, 1))]
    calls = []
    decode = engine.decode

    def recording(prompts, config, **kwargs):
        calls.append((prompts[0], config.decoding_steps, kwargs["seed"]))
        return decode(prompts, config, **kwargs)

    monkeypatch.setattr(engine, "decode", recording)
    audio, seconds = decode_interleaved(engine, ["calm strings", "fast drums"], [0, 1], configs)
    first, second = (3, 2, 2, 2), (2, 1, 1, 1)
    assert [(steps, seed) for _, steps, seed in calls] == [
        (first, 0), (second, 0),  # caption 0, seed 0
        (second, SEED_STRIDE), (first, SEED_STRIDE),  # caption 0, seed 1: the order rotated
        (first, 1), (second, 1),
        (second, SEED_STRIDE + 1), (first, SEED_STRIDE + 1),
    ]  # fmt: skip
    assert [len(s) for s in seconds] == [4, 4] and all(t > 0 for s in seconds for t in s)
    assert all(len(audio[j][seed]) == 2 for j in range(2) for seed in (0, 1))
    plain = decode(["fast drums"], configs[1], seed=SEED_STRIDE + 1).audio[0]
    np.testing.assert_array_equal(audio[1][1][1], plain)  # per seed, in caption order
