"""Audio in: reading and encoding a clip, given tokens for continuation and region re-decoding
(inpainting), and the engine's given-token mask, on the seeded tiny model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from magnet_demo import audio_in, spans
from magnet_demo.controls import DecodingConfig

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = (4, 2, 2, 2)
CONFIG = DecodingConfig(decoding_steps=STEPS, duration=2.0)
PROMPTS = ["calm strings", "loud brass"]
RATE, FPS, SPAN = 32000, 50, 3


def _tone(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.shape)
    return (0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def clip_codes(tiny_model):
    """Codes [1, 4, 100] of a 2 s clip."""
    clip = audio_in.prepare_audio(_tone(2.0), RATE, RATE, max_seconds=2.0)
    codes = audio_in.encode_clip(tiny_model, clip)
    assert codes.shape == (1, 4, 100) and codes.dtype == torch.long
    return codes


def _decode(engine, config=CONFIG, seed=3, **kwargs):
    return engine.decode(PROMPTS, config, seed=seed, with_audio=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# inpainting on the engine


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
@pytest.mark.parametrize(
    "region, frames",
    [((0.0, 0.5), (0, 27)), ((0.7, 1.3), (33, 66)), ((1.5, 2.0), (75, None))],
    ids=["start", "middle", "end"],
)
def test_region_is_redecoded_and_everything_else_kept(engine, clip_codes, arrangement, region, frames):
    config = CONFIG.replace(span_arrangement=arrangement)
    T = engine.frames(config)
    start, end = frames[0], frames[1] or T
    given = audio_in.region_given(clip_codes, *region, T, FPS, SPAN)
    assert (given.start_s, given.end_s) == (start / FPS, end / FPS)
    kept = np.ones((4, T), dtype=bool)
    kept[:, start:end] = False
    assert given.mask.shape == (1, 4, T) and np.array_equal(given.mask[0].numpy(), kept)

    result = _decode(engine, config, given_tokens=given.tokens, given_mask=given.mask)
    source = clip_codes[0, :, :T].numpy()
    chunks = arrangement == "nonoverlap"
    free_units = (end - start) // SPAN if chunks else end - start
    kept_units = kept[:, ::SPAN] if chunks else kept  # the region is on whole spans: no partial chunk
    for record in result.records:
        assert record.given is result.records[0].given and np.array_equal(record.given[0], kept)
        assert (record.scores[:, 0][:, kept_units[record.stage]] == spans.NEVER_REMASK).all()
        if chunks:  # no kept chunk is ever chosen for masking
            assert not (record.mask_after & kept[record.stage]).any()
        assert (record.tokens[:, kept] == source[kept]).all()  # every codebook, at every step
        assert not (record.mask_before & kept[record.stage]).any()
        assert (record.committed_tokens()[:, kept] == source[kept]).all()
        assert record.num_units == free_units
    first = result.records[0]
    assert first.mask_before[:, start:end].all()
    if arrangement == "nonoverlap":
        assert first.num_masked == free_units
    final = result.tokens.numpy()
    assert (final[:, kept] == source[kept]).all()
    assert (final != engine.lm.special_token_id).all()
    # the region is re-decoded: in every codebook of every sample it differs from the input
    assert (final[:, :, start:end] != source[:, start:end]).any(axis=-1).all()


@pytest.fixture(scope="module")
def region_run(engine, clip_codes):
    given = audio_in.region_given(clip_codes, 0.7, 1.3, engine.frames(CONFIG), FPS, SPAN)
    return given, _decode(engine, given_tokens=given.tokens, given_mask=given.mask)


@pytest.mark.parametrize("k", [1, 5])
def test_resume_keeps_the_given_tokens(engine, region_run, k):
    given, baseline = region_run
    record = baseline.records[k]
    # the record carries them (mask and canvas) ...
    resumed = _decode(engine, seed=999, resume_from=record)
    assert torch.equal(resumed.tokens, baseline.tokens)
    for a, b in zip(resumed.records, baseline.records[k + 1 :], strict=True):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.given, b.given)
    # ... and passing the same ones again changes nothing
    again = _decode(engine, resume_from=record, given_tokens=given.tokens, given_mask=given.mask)
    assert torch.equal(again.tokens, baseline.tokens)


def test_resume_refuses_other_given_tokens(engine, clip_codes, region_run):
    given, baseline = region_run
    T = engine.frames(CONFIG)
    other = audio_in.region_given(clip_codes, 0.0, 0.6, T, FPS, SPAN)
    with pytest.raises(ValueError, match="the given tokens differ from the record's"):
        engine.steps(
            PROMPTS, CONFIG, resume_from=baseline.records[2], given_tokens=other.tokens, given_mask=other.mask
        )
    changed = given.tokens.clone()
    changed[0, 0, 0] = (changed[0, 0, 0] + 1) % 64
    with pytest.raises(ValueError, match="the given tokens differ from the record's"):
        engine.steps(
            PROMPTS, CONFIG, resume_from=baseline.records[2], given_tokens=changed, given_mask=given.mask
        )
    plain = _decode(engine)
    with pytest.raises(ValueError, match="decoded without given tokens"):
        engine.steps(
            PROMPTS, CONFIG, resume_from=plain.records[2], given_tokens=given.tokens, given_mask=given.mask
        )


def test_a_partly_given_chunk_is_decoded_and_its_given_frames_kept(engine, clip_codes):
    """Region edges off the span grid (frames 31 and 65): the chunks [30, 33) and [63, 66) are decoded
    like free chunks, and their given frames are put back after every masking."""
    T = engine.frames(CONFIG)
    mask = torch.ones((1, 4, T), dtype=torch.bool)
    mask[..., 31:65] = False
    result = _decode(engine, given_tokens=clip_codes[..., :T], given_mask=mask)
    kept = mask[0].numpy()
    source = clip_codes[0, :, :T].numpy()
    for record in result.records:
        assert record.num_units == 12  # chunks 10..21: 30..65 in frames
        assert (record.tokens[:, kept] == source[kept]).all()
        assert not (record.mask_before & kept[record.stage]).any()
        assert (record.committed_tokens()[:, kept] == source[kept]).all()
    assert result.records[0].mask_before[:, 31:65].all() and not result.records[0].mask_before[:, 30].any()
    assert (result.tokens.numpy() != engine.lm.special_token_id).all()


def test_a_whole_clip_region_is_plain_generation(engine, clip_codes):
    T = engine.frames(CONFIG)
    given = audio_in.region_given(clip_codes, 0.0, 2.0, T, FPS, SPAN)
    assert (
        given.note
        == audio_in.PLAIN_GENERATION_NOTE
        == ("The region covers the whole clip: nothing is kept, this is plain generation.")
    )
    assert not given.mask.any() and (given.start_s, given.end_s) == (0.0, T / FPS)
    result = _decode(engine, given_tokens=given.tokens, given_mask=given.mask)
    assert all(record.given is None for record in result.records)
    assert torch.equal(result.tokens, _decode(engine).tokens)


def test_frames_past_a_short_clip_are_decoded(clip_codes):
    short = clip_codes[..., :40]  # 0.8 s of a 99-frame output
    given = audio_in.region_given(short, 0.2, 0.4, 99, FPS, SPAN)
    expected = np.zeros(99, dtype=bool)
    expected[:9] = expected[21:39] = True  # the clip's last, partial span (39, 40) is decoded too
    assert (
        np.array_equal(given.mask[0, 0].numpy(), expected)
        and given.mask.all(dim=1).eq(given.mask[:, 0]).all()
    )
    assert torch.equal(given.tokens[given.mask], short[..., :99].expand(1, 4, 40)[given.mask[..., :40]])
    whole = audio_in.region_given(short, 0.0, 0.8, 99, FPS, SPAN)
    assert whole.note == audio_in.PLAIN_GENERATION_NOTE and not whole.mask.any()


def test_continuation_given_keeps_the_first_frames(engine, clip_codes):
    tokens, mask = audio_in.continuation_given(clip_codes, 0.5, 99, FPS)
    assert mask.shape == tokens.shape == (1, 4, 99)
    assert mask[..., :25].all() and not mask[..., 25:].any()
    assert torch.equal(tokens[..., :25], clip_codes[..., :25])
    result = _decode(engine, given_tokens=tokens, given_mask=mask)
    assert torch.equal(result.tokens[..., :25], clip_codes[..., :25].expand(2, -1, -1))
    assert result.records[0].num_units == 33 - 8  # 8 chunks wholly kept, the 9th (24..27) partly


def test_trace_round_trip_keeps_given(engine, region_run, tmp_path):
    from magnet_demo.trace import load_trace, save_trace

    _, result = region_run
    records, _ = load_trace(save_trace(result, tmp_path / "run.npz"))
    for a, b in zip(records, result.records, strict=True):
        assert np.array_equal(a.given, b.given) and a.given.dtype == np.bool_
        assert not a.given.flags.writeable
    assert records[3].given is records[0].given
    again = _decode(engine, seed=0, resume_from=records[4])
    assert torch.equal(again.tokens, result.tokens)


def _bad_given(kind, clip_codes):
    T = 99
    tokens, mask = clip_codes[..., :T].clone(), torch.zeros((1, 4, T), dtype=torch.bool)
    mask[..., :30] = True
    if kind == "tokens only":
        return dict(given_tokens=tokens)
    if kind == "int mask":
        return dict(given_tokens=tokens, given_mask=mask.int())
    if kind == "shape":
        return dict(given_tokens=tokens[..., :50], given_mask=mask[..., :50])
    if kind == "batch":
        two = torch.cat([mask, mask]).clone()
        two[1, :, 40] = True
        return dict(given_tokens=tokens, given_mask=two)
    if kind == "codes":
        tokens[0, 1, 3] = 64
        return dict(given_tokens=tokens, given_mask=mask)
    if kind == "everything":
        mask[:, 2] = True
        return dict(given_tokens=tokens, given_mask=mask)
    if kind == "both":
        return dict(given_tokens=tokens, given_mask=mask, prompt_tokens=tokens[..., :10].expand(2, -1, -1))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("tokens only", "given_tokens and given_mask go together"),
        ("int mask", "given_mask must be a bool array"),
        ("shape", r"given_tokens must have shape \[2, 4, 99\] \(or \[1, 4, 99\]"),
        ("batch", "given_mask must be the same for every prompt"),
        ("codes", r"given_tokens must be codes in \[0, 64\) where given_mask is True"),
        ("everything", "Everything is given in codebook 2: nothing is left to decode"),
        ("both", "either prompt_tokens or given_tokens/given_mask"),
    ],
)
def test_engine_refuses_bad_given_tokens(engine, clip_codes, kind, message):
    with pytest.raises(ValueError, match=message):
        engine.steps(PROMPTS, CONFIG, **_bad_given(kind, clip_codes))


# ---------------------------------------------------------------------------------------------
# given tokens: refusals and snapping


@pytest.mark.parametrize(
    "region, message",
    [
        ((1.0, 1.0), "The region 1-1 s has zero length"),
        ((1.2, 0.4), "The region 1.2-0.4 s is reversed"),
        ((-0.1, 0.5), r"The region -0.1-0.5 s is outside the clip \(0-2 s\)"),
        ((1.5, 2.5), r"The region 1.5-2.5 s is outside the clip \(0-2 s\)"),
        ((1.98, 2.0), r"The region 1.98-2 s is past the end of the output \(1.98 s\)"),
        ((float("nan"), 1.0), "The region's start must be a number of seconds"),
    ],
)
def test_bad_regions_are_refused(clip_codes, region, message):
    with pytest.raises(ValueError, match=message):
        audio_in.region_given(clip_codes, *region, 99, FPS, SPAN)


def test_regions_snap_outwards_to_whole_spans(clip_codes):
    widened = audio_in.region_given(clip_codes, 0.7, 1.3, 99, FPS, SPAN)
    assert (widened.start_s, widened.end_s) == (0.66, 1.32)
    assert widened.note == "The region was widened to whole spans: 0.66-1.32 s."
    exact = audio_in.region_given(clip_codes, 0.6, 1.2, 99, FPS, SPAN)
    assert (exact.start_s, exact.end_s, exact.note) == (0.6, 1.2, "")
    assert audio_in.snap_region(0.7, 0.7001, FPS, SPAN, 99) == (33, 36)


@pytest.mark.parametrize(
    "keep, message",
    [
        (0.0, "The length to keep must be more than 0 s"),
        (-1.0, "The length to keep must be more than 0 s"),
        (float("inf"), "The length to keep must be a number of seconds"),
        (1.98, "Keeping 1.98 s leaves nothing to generate: keep less than the output's 1.98 s"),
        (0.005, "keeps no frame: keep at least 0.02 s"),
        (1.0, "Cannot keep 1 s: the audio is only 0.8 s long"),
    ],
)
def test_bad_continuations_are_refused(clip_codes, keep, message):
    with pytest.raises(ValueError, match=message):
        audio_in.continuation_given(clip_codes[..., :40], keep, 99, FPS)


# ---------------------------------------------------------------------------------------------
# reading audio


def test_a_stereo_file_is_mixed_and_resampled(tmp_path):
    left, right = _tone(1.0, 44100, seed=1), _tone(1.0, 44100, seed=2)
    sf.write(tmp_path / "x.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    clip = audio_in.read_audio(tmp_path / "x.wav", RATE, max_seconds=12)
    assert clip.audio.shape == (RATE,) and clip.audio.dtype == np.float32
    assert (clip.sample_rate, clip.source_seconds, clip.note) == (RATE, 1.0, "")
    same = audio_in.read_audio(tmp_path / "x.wav", 44100, max_seconds=12)
    np.testing.assert_allclose(same.audio, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("fmt, tolerance", [("flac", 0), ("ogg", 0), ("mp3", 3000)])
def test_compressed_formats_are_read(tmp_path, fmt, tolerance):
    path = tmp_path / f"x.{fmt}"
    sf.write(path, _tone(1.5), RATE)
    clip = audio_in.read_audio(path, RATE, max_seconds=12)
    assert abs(len(clip.audio) - 48000) <= tolerance and np.abs(clip.audio).max() > 0.1


def test_a_long_file_is_cropped_to_the_run_reading_only_that(tmp_path, monkeypatch):
    stereo = np.stack([_tone(3.0, seed=1), _tone(3.0, seed=2)], axis=1)
    sf.write(tmp_path / "x.wav", stereo, RATE, subtype="FLOAT")
    asked = []
    real_read = sf.SoundFile.read
    monkeypatch.setattr(
        sf.SoundFile, "read", lambda self, frames, **k: asked.append(frames) or real_read(self, frames, **k)
    )
    clip = audio_in.read_audio(tmp_path / "x.wav", RATE, max_seconds=1.0)
    block = audio_in.READ_BLOCK_FRAMES
    assert asked == [block] * (RATE // block) + [RATE % block]  # a block at a time, the run's second only
    assert len(clip.audio) == RATE and clip.source_seconds == 3.0
    assert clip.note == "Used the first 1 s of the 3 s audio."
    assert np.array_equal(clip.audio, stereo[:RATE].mean(axis=1))  # mixed to mono block by block


def test_an_upload_over_the_cap_is_refused_before_decoding(tmp_path, monkeypatch):
    sf.write(tmp_path / "ten_minutes.wav", np.zeros(600 * 1000, np.int16), 1000)
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("the file was decoded"))
    with pytest.raises(ValueError, match="The audio is 600.0 s long; the longest upload is 60 s"):
        audio_in.read_audio(tmp_path / "ten_minutes.wav", RATE, max_seconds=10)
    with pytest.raises(ValueError, match="The audio is 61.0 s long; the longest upload is 60 s"):
        audio_in.prepare_audio(np.zeros(61 * 1000, np.float32), 1000, RATE, max_seconds=10)


def test_unreadable_and_empty_files_are_refused(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="'empty.wav' is empty"):
        audio_in.read_audio(tmp_path / "empty.wav", RATE, max_seconds=2)
    sf.write(tmp_path / "silent.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(ValueError, match="'silent.wav' is empty: it has no samples"):
        audio_in.read_audio(tmp_path / "silent.wav", RATE, max_seconds=2)
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ValueError, match="Could not read 'junk.wav': it is not a valid WAV file"):
        audio_in.read_audio(tmp_path / "junk.wav", RATE, max_seconds=2)
    with pytest.raises(
        ValueError, match="No audio file 'missing.wav': it is missing or not a file"
    ) as refusal:
        audio_in.read_audio(tmp_path / "missing.wav", RATE, max_seconds=2)
    assert str(tmp_path) not in str(refusal.value)  # a message names the file, never its folder
    with pytest.raises(ValueError, match="The audio is empty: it has no samples"):
        audio_in.prepare_audio(np.zeros((0, 2), np.float32), RATE, RATE, max_seconds=2)


@pytest.mark.parametrize("ffmpeg", [True, False], ids=["ffmpeg", "no ffmpeg"])
def test_other_formats_go_through_ffmpeg(tmp_path, monkeypatch, ffmpeg):
    """A name soundfile does not claim, content it cannot read: ffmpeg's bounded path (see
    test_hostile_audio.py), or a readable refusal on a server without ffmpeg."""
    if ffmpeg and shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    if not ffmpeg:
        monkeypatch.setattr(shutil, "which", lambda name: None)
    (tmp_path / "junk.m4a").write_bytes(np.random.default_rng(0).bytes(4000))
    expected = (
        "it is not an audio file this server can decode. Use WAV, FLAC, OGG or MP3."
        if ffmpeg
        else "this server cannot decode '.m4a' files; use WAV, FLAC, OGG or MP3."
    )
    with pytest.raises(ValueError) as refusal:
        audio_in.read_audio(tmp_path / "junk.m4a", RATE, max_seconds=2)
    assert str(refusal.value) == f"Could not read 'junk.m4a': {expected}"


def test_a_clip_shorter_than_one_span_is_refused(tiny_model, tmp_path):
    sf.write(tmp_path / "click.wav", _tone(0.03), RATE)
    with pytest.raises(ValueError, match=r"The audio is too short: 30 ms, and at least 60 ms \(one span"):
        audio_in.audio_codes(tiny_model, tmp_path / "click.wav", duration=2.0)
    codes, note = audio_in.audio_codes(tiny_model, _tone(0.06), duration=2.0, source_rate=RATE)
    assert codes.shape == (1, 4, 3) and note == ""


@pytest.mark.parametrize("rate", [0, -8000, 500, 10**9, 44100.5, float("nan"), None])
def test_sample_rates_that_cannot_be_resampled_are_refused(rate):
    with pytest.raises(ValueError, match=rf"The audio's sample rate \({rate} Hz\) cannot be resampled"):
        audio_in.prepare_audio(_tone(1.0), rate, RATE, max_seconds=2)


def test_a_file_with_an_absurd_rate_is_refused(tmp_path):
    sf.write(tmp_path / "slow.wav", np.zeros(400, np.int16), 200)
    with pytest.raises(ValueError, match=r"The sample rate of 'slow.wav' \(200 Hz\) cannot be resampled"):
        audio_in.read_audio(tmp_path / "slow.wav", RATE, max_seconds=2)


def test_arrays_integer_pcm_and_layouts(monkeypatch):
    pcm = np.array([16384, -32768, 0, 8192], np.int16)
    clip = audio_in.prepare_audio(pcm, RATE, RATE, max_seconds=1)
    assert clip.audio.tolist() == [0.5, -1.0, 0.0, 0.25]
    with pytest.raises(
        ValueError, match=r"\[samples, channels\] with at most 8 channels, got shape \[2, 32000\]"
    ):
        audio_in.prepare_audio(np.zeros((2, RATE), np.float32), RATE, RATE, max_seconds=1)
    with monkeypatch.context() as patch:  # the shape is refused before any conversion of the array
        patch.setattr(audio_in, "_as_float", lambda samples: pytest.fail("converted before the check"))
        with pytest.raises(ValueError, match=r"got shape \[2, 32000\]"):
            audio_in.prepare_audio(np.zeros((2, RATE), np.int16), RATE, RATE, max_seconds=1)
    stereo = np.array([[32767, -32768], [16384, 0]], np.int16)
    clip = audio_in.prepare_audio(stereo, RATE, RATE, max_seconds=1)
    assert clip.audio.dtype == np.float32 and clip.audio.tolist() == [
        (32767 / 32768 - 1) / 2,
        0.25,
    ]
    with pytest.raises(ValueError, match="NaN or infinite"):
        audio_in.prepare_audio(np.full(100, np.nan, np.float32), RATE, RATE, max_seconds=1)


def test_a_decode_job_carries_given_tokens_to_the_worker(tiny_folder, clip_codes, tmp_path):
    import functools
    import pickle

    from magnet_demo.channel import SharedControls, StopFlag
    from magnet_demo.model_cache import ModelCache
    from magnet_demo.models import load_model
    from magnet_demo.records import StepRecord
    from magnet_demo.workers import DecodeJob, FinalAudio, InProcessWorker

    config = CONFIG.replace(decoding_steps=(2, 1, 1, 1))
    given = audio_in.region_given(clip_codes, 0.6, 1.2, 99, FPS, SPAN)
    job = DecodeJob(
        model=str(tiny_folder),
        prompts=("a",),
        config=config,
        seed=3,
        given_tokens=given.tokens.numpy(),
        given_mask=given.mask.numpy(),
    )
    job = pickle.loads(pickle.dumps(job))
    worker = InProcessWorker(ModelCache(functools.partial(load_model, device="cpu")))
    items = list(worker.run(job, SharedControls(tmp_path, config.controls()), StopFlag(tmp_path)))
    records = [item for item in items if isinstance(item, StepRecord)]
    assert len(records) == 5 and isinstance(items[-1], FinalAudio)
    kept = given.mask.numpy()
    assert all(np.array_equal(r.given, kept) for r in records)
    assert (records[-1].tokens[kept] == given.tokens.numpy()[kept]).all()
