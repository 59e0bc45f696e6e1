"""The attribute classifier: features, a few training steps on rendered clips, predict, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet_demo.train import classifier, corpus

try:  # pyfluidsynth raises ImportError when libfluidsynth is missing
    import fluidsynth  # noqa: F401

    FLUIDSYNTH_MISSING = ""
except (ImportError, OSError) as error:
    FLUIDSYNTH_MISSING = f"FluidSynth is not installed ({error}); apt-get install fluidsynth"

N_CLIPS = 6
HELD_OUT = 0.5  # so that a handful of clips has both splits


def test_features_shapes_and_filterbank():
    bank = classifier.semitone_filterbank()
    assert bank.shape == (classifier.N_PITCHES, classifier.N_FFT // 2 + 1)
    assert torch.all(bank.sum(dim=1) > 0.99)
    t = np.arange(corpus.SAMPLE_RATE * 4) / corpus.SAMPLE_RATE
    a440 = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    x = classifier.features(np.stack([a440, 0.5 * a440]))
    assert x["spec"].shape == (2, 1, classifier.N_PITCHES // 2, 50)
    assert x["tempo"].shape == (2, classifier.MAX_LAG) and x["chroma"].shape == (2, 2, 12, 8)
    assert int(x["chroma"][0, 0].mean(dim=-1).argmax()) == 9  # A
    assert torch.allclose(x["chroma"][:, 0].sum(dim=1), torch.ones(2, 8), atol=1e-5)


def test_accuracy_takes_arrays_or_metadata_labels():
    preds = {"drums": np.array([0, 1, 1]), "mode": np.array([1, 1, 0])}
    scores = classifier.accuracy(
        preds, [{"drums": 0, "mode": 1}, {"drums": 1, "mode": 0}, {"drums": 0, "mode": 0}]
    )
    assert scores == pytest.approx({"drums": 2 / 3, "mode": 2 / 3, "mean": 2 / 3})
    assert classifier.accuracy(preds, {k: v.copy() for k, v in preds.items()})["mean"] == 1.0


@pytest.mark.skipif(bool(FLUIDSYNTH_MISSING), reason=FLUIDSYNTH_MISSING)
def test_train_predict_save_load(tmp_path):
    seed = next(s for s in range(50) if len({corpus.clip_split(s, i, HELD_OUT) for i in range(N_CLIPS)}) == 2)
    corpus_dir = corpus.build_corpus(
        tmp_path / "corpus",
        N_CLIPS,
        seed,
        corpus.default_soundfont(small=True),
        workers=1,
        held_out=HELD_OUT,
        log_every=0,
    )
    out = tmp_path / "classifier.pt"
    scores = classifier.train_classifier(corpus_dir, out, minutes=0.02, log=lambda *_: None)
    assert set(scores) == set(corpus.LABELS) | {"mean"} and all(0 <= v <= 1 for v in scores.values())
    assert out.stat().st_size < 5 * 2**20

    model = classifier.load_classifier(out)
    audio, meta = corpus.load_corpus(corpus_dir)
    waves = np.asarray(audio, dtype=np.float32) / classifier.INT16_SCALE
    preds = classifier.predict(model, waves)
    assert set(preds) == set(corpus.LABELS)
    again, from_int16 = classifier.predict(model, waves), classifier.predict(model, np.asarray(audio))
    for name, classes in corpus.LABELS.items():
        assert preds[name].shape == (N_CLIPS,) and preds[name].dtype.kind == "i"
        assert np.all((0 <= preds[name]) & (preds[name] < len(classes)))
        np.testing.assert_array_equal(preds[name], again[name])
        np.testing.assert_array_equal(preds[name], from_int16[name])
    model.train()
    np.testing.assert_array_equal(preds["family"], classifier.predict(model, waves)["family"])
    assert model.training  # predict restores the mode it found
    assert classifier.accuracy(preds, [m["labels"] for m in meta])["mean"] >= 0


def test_embeddings_are_what_the_heads_read():
    torch.manual_seed(0)
    model = classifier.AttributeClassifier(width=4).eval()
    audio = np.random.default_rng(0).standard_normal((3, corpus.SAMPLE_RATE * 2)).astype(np.float32) * 0.1
    joint = classifier.embeddings(model, audio)
    assert joint.shape == (3, 2 * classifier.EMBED) and joint.dtype == np.float64
    assert (joint >= 0).all()  # after the ReLU the heads see
    x = classifier.features(audio)
    logits = model(x["spec"].float(), x["tempo"], x["chroma"])
    for name, head in model.heads.items():
        from_joint = head(torch.from_numpy(joint).float())
        torch.testing.assert_close(from_joint, logits[name], rtol=1e-5, atol=1e-5)
    assert not model.training
