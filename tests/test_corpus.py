"""The rendered corpus: determinism, storage format, captions and labels."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from magnet_demo.train import corpus

try:  # pyfluidsynth raises ImportError when libfluidsynth is missing
    import fluidsynth  # noqa: F401

    FLUIDSYNTH_MISSING = ""
except (ImportError, OSError) as error:
    FLUIDSYNTH_MISSING = f"FluidSynth is not installed ({error}); apt-get install fluidsynth"

needs_fluidsynth = pytest.mark.skipif(bool(FLUIDSYNTH_MISSING), reason=FLUIDSYNTH_MISSING)
N_COMPOSED = 400  # clips composed (not rendered) to check captions and labels


def small_soundfont() -> str:
    return str(corpus.default_soundfont(small=True))


def composed(seed: int = 0, n: int = N_COMPOSED):
    """(attributes, captions) of n clips, composed but not rendered."""
    for index in range(n):
        attrs = {
            k: v for k, v in corpus.compose_clip(seed, index).attributes.items() if not k.startswith("_")
        }
        yield attrs, corpus.make_captions(attrs, np.random.default_rng([seed, index, corpus.CAPTION_STREAM]))


@needs_fluidsynth
def test_render_is_a_pure_function_of_seed_and_index():
    renderer = corpus.Renderer(small_soundfont())
    first, meta = corpus.render_clip(renderer, 0, 1)
    assert first.shape == (corpus.CLIP_SAMPLES,) and first.dtype == np.int16
    assert meta["index"] == 1 and meta["seed"] == 0
    corpus.render_clip(renderer, 0, 0)  # another clip in between must not leak into the next
    again, _ = corpus.render_clip(corpus.Renderer(small_soundfont()), 0, 1)
    assert again.tobytes() == first.tobytes()
    other_seed, _ = corpus.render_clip(renderer, 1, 1)
    assert other_seed.tobytes() != first.tobytes()
    rms = np.sqrt(np.mean((first / corpus.INT16_SCALE) ** 2))
    assert abs(rms - corpus.TARGET_RMS) < 0.02  # the limiter only lowers it a little
    assert np.abs(first).max() <= corpus.LIMIT_PEAK * corpus.INT16_SCALE + 1


@needs_fluidsynth
def test_build_and_load(tmp_path):
    soundfont = small_soundfont()
    out = corpus.build_corpus(tmp_path / "c", 3, seed=7, soundfont=soundfont, workers=1, log_every=0)
    audio, meta = corpus.load_corpus(out)
    assert (
        isinstance(audio, np.memmap) and audio.dtype == np.int16 and audio.shape == (3, corpus.CLIP_SAMPLES)
    )
    assert [m["index"] for m in meta] == [0, 1, 2]
    for record in meta:
        assert {"index", "seed", "split", "caption", "captions", "attributes", "labels"} <= set(record)
        assert record["seed"] == 7 and record["caption"] == record["captions"][0]
        assert record["split"] == corpus.clip_split(7, record["index"])
        assert record["labels"] == corpus.clip_labels(record["attributes"])
    info = json.loads((out / "corpus.json").read_text())
    assert info["sample_rate"] == corpus.SAMPLE_RATE and info["clip_seconds"] == corpus.CLIP_SECONDS
    assert info["n"] == 3 and info["seed"] == 7 and info["soundfont"] == soundfont
    assert info["labels"] == {k: list(v) for k, v in corpus.LABELS.items()}
    assert not (tmp_path / "c.partial").exists()
    with pytest.raises(FileExistsError):
        corpus.build_corpus(out, 1, soundfont=soundfont, workers=1)

    # two worker processes give the same bytes as one
    parallel = corpus.build_corpus(tmp_path / "p", 3, seed=7, soundfont=soundfont, workers=2, log_every=0)
    assert np.load(parallel / "audio.npy").tobytes() == np.asarray(audio).tobytes()
    assert (parallel / "meta.jsonl").read_text() == (out / "meta.jsonl").read_text()


def test_captions_describe_the_attributes():
    minor_words = set(corpus.MODE_WORDS["minor"]) | {"minor"}
    major_words = set(corpus.MODE_WORDS["major"]) | {"major"}
    for attrs, captions in composed():
        assert len(captions) >= 4 and len(set(captions)) == len(captions)
        primary = captions[0]
        assert attrs["lead"] in primary
        assert (
            any(w in primary for w in corpus.TEMPO_WORDS[attrs["tempo"]]) or f"{attrs['bpm']} bpm" in primary
        )
        assert any(w in primary for w in corpus.MODE_WORDS[attrs["mode"]] + (attrs["mode"],))
        for caption in captions:
            words = set(re.findall(r"[a-z]+", caption.lower()))
            assert not words & (major_words if attrs["mode"] == "minor" else minor_words), caption
            assert all(int(b) == attrs["bpm"] for b in re.findall(r"(\d+) bpm", caption)), caption
            negated = any(phrase in caption for phrase in corpus.NO_DRUMS)
            if attrs["drums"]:
                assert not negated, caption
            else:
                without_negation = caption
                for phrase in corpus.NO_DRUMS:
                    without_negation = without_negation.replace(phrase, "")
                assert not re.search(r"\bdrums?\b|\bbeat\b", without_negation), caption
        if attrs["drums"]:
            assert "drums" in primary or "drum beat" in primary
        else:
            assert any(phrase in primary for phrase in corpus.NO_DRUMS)


def test_labels_follow_the_attributes():
    counts = {name: np.zeros(len(classes), int) for name, classes in corpus.LABELS.items()}
    for attrs, _ in composed():
        labels = corpus.clip_labels(attrs)
        assert corpus.LABELS["family"][labels["family"]] == attrs["family"]
        assert attrs["lead"] in {v.name for v in corpus.LEADS[attrs["family"]]}
        assert labels["drums"] == int(attrs["drums"]) and (attrs["groove"] == "none") == (not attrs["drums"])
        assert corpus.LABELS["mode"][labels["mode"]] == attrs["mode"]
        assert corpus.LABELS["tempo"][labels["tempo"]] == attrs["tempo"] == corpus.tempo_band(attrs["bpm"])
        for name, index in labels.items():
            counts[name][index] += 1
    for name, count in counts.items():  # every class is drawn, none dominates
        assert count.min() > 0.5 * N_COMPOSED / len(count), (name, count)
    assert [corpus.tempo_band(b) for b in (89, 90, 130, 131)] == ["slow", "medium", "medium", "fast"]


def test_split_is_deterministic_and_about_five_percent():
    splits = [corpus.clip_split(0, i) for i in range(4000)]
    assert splits == [corpus.clip_split(0, i) for i in range(4000)]
    assert 0.035 < splits.count("test") / len(splits) < 0.065
    assert splits != [corpus.clip_split(1, i) for i in range(4000)]


def test_default_soundfont(monkeypatch, tmp_path):
    monkeypatch.setenv(corpus.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    assert corpus.default_soundfont().is_file()  # falls back past a missing override
    chosen = tmp_path / "mine.sf2"
    chosen.write_bytes(b"")
    monkeypatch.setenv(corpus.SOUNDFONT_ENV, str(chosen))
    assert corpus.default_soundfont() == chosen
