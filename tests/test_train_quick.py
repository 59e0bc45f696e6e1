"""``python -m magnet_demo.train.all --quick`` end to end: corpus, codec, tokens, MAGNeT, rescorer, classifier."""

from __future__ import annotations

import pytest

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE

#: training seconds per trained step: enough for a few optimiser steps of each micro model
TRAIN_SECONDS = 2


@pytest.mark.slow
def test_quick_retraining_produces_a_loadable_model(tmp_path):
    from magnet_demo.controls import DecodingConfig
    from magnet_demo.engine import Engine
    from magnet_demo.models import load_lm, load_model
    from magnet_demo.train import all as train_all
    from magnet_demo.train.classifier import load_classifier

    folder = tmp_path / "model"
    seconds = train_all.main(["--quick", "--out", str(folder), "--quick-seconds", str(TRAIN_SECONDS)])
    assert list(seconds) == list(train_all.STEPS)
    for path in (folder / LM_FILE, folder / COMPRESSION_FILE, folder / "rescorer" / LM_FILE):
        assert path.is_file()
    assert (folder / "rescorer" / COMPRESSION_FILE).is_file()  # the rescorer folder stands alone

    model = load_model(str(folder), device="cpu")
    assert model.sample_rate == 16_000 and model.num_codebooks == 4
    assert set(model.custom_parts) == {"codec", "conditioner"}
    config = DecodingConfig(duration=0.3, decoding_steps=(2, 1, 1, 1))
    result = Engine(model).decode(["a fast piano tune at 120 bpm"], config, seed=0)
    assert result.tokens.shape == (1, 4, 15)
    assert result.audio.shape[-1] > 0 and result.sample_rate == 16_000

    rescorer = load_lm(str(folder / "rescorer"))
    assert type(rescorer).__name__ == "LMModel" and rescorer.card == model.lm.card
    load_classifier(tmp_path / "classifier.pt")

    # a second call skips every step whose output exists
    assert train_all.main(["--quick", "--out", str(folder)]) == {}
