"""The codec's adversarial loss: hinge and feature-matching values, the discriminators, and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet_demo.codec import build_codec, codec_config
from magnet_demo.train.adversarial import (
    RESOLUTIONS,
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from magnet_demo.train.train_codec import (
    QUICK_ARGS,
    SpectralLoss,
    codec_loss,
    discriminator_step,
    synthetic_audio,
)

SR = 16_000


pytestmark = pytest.mark.usefixtures("one_thread")


def test_hinge_losses_exact_values():
    real, fake = [torch.tensor([2.0, 0.5])], [torch.tensor([-2.0, 0.5])]
    # mean(relu(1 - [2, .5])) + mean(relu(1 + [-2, .5])) = 0.25 + 0.75
    assert float(discriminator_loss(real, fake)) == pytest.approx(1.0)
    assert float(generator_loss(fake)) == pytest.approx(1.75)  # mean(relu(1 - [-2, .5]))
    # summed over resolutions
    assert float(discriminator_loss(real * 2, fake * 2)) == pytest.approx(2.0)


def test_feature_matching_is_relative_l1():
    real = [[torch.tensor([1.0, -3.0]), torch.tensor([2.0, 2.0])]]
    assert float(feature_matching_loss(real, real)) == 0.0
    doubled = [[2 * r for r in real[0]]]
    assert float(feature_matching_loss(real, doubled)) == pytest.approx(1.0)  # |2r - r| / mean|r|


def test_discriminator_shapes_and_spectrogram():
    torch.manual_seed(0)
    disc = MultiResolutionDiscriminator()
    audio = torch.randn(2, 1, SR)
    logits, features = disc(audio)
    assert len(logits) == len(features) == len(RESOLUTIONS)
    for (n_fft, hop), out, maps in zip(RESOLUTIONS, logits, features, strict=True):
        bins, frames = n_fft // 2 + 1, SR // hop + 1
        strided = bins
        for _ in range(3):  # three layers strided by 2 along frequency
            strided = (strided - 1) // 2 + 1
        assert out.shape == (2, 1, strided, frames)
        assert len(maps) == 5 and maps[0].shape[-2:] == (bins, frames)
    one = disc.discriminators[1]
    expected = torch.stft(audio[:, 0], 1024, 256, window=torch.hann_window(1024), return_complex=True)
    torch.testing.assert_close(one.log_spectrogram(audio)[:, 0], torch.log(expected.abs() + 1e-5))


def test_discriminator_learns_to_tell_tones_from_noise():
    """Twenty hinge updates separate steady tones (real) from noise (fake) on held-out examples."""
    torch.manual_seed(0)
    t = torch.arange(SR // 2) / SR
    rng = np.random.default_rng(0)

    def tones(n):
        f0 = torch.from_numpy(rng.uniform(100, 800, (n, 1, 1))).float()
        return 0.3 * torch.sin(2 * torch.pi * f0 * t)

    def noise(n):
        return 0.1 * torch.randn(n, 1, len(t))

    disc = MultiResolutionDiscriminator()
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    with torch.no_grad():
        before = float(discriminator_loss(disc(tones(4))[0], disc(noise(4))[0]))
    losses = [discriminator_step(disc, opt, tones(4), noise(4)) for _ in range(20)]
    with torch.no_grad():
        real, fake = disc(tones(4))[0], disc(noise(4))[0]
    after = float(discriminator_loss(real, fake))
    assert after < 0.5 * before and losses[-1] < losses[0]
    assert all(float(r.mean()) > float(f.mean()) for r, f in zip(real, fake, strict=True))


def test_codec_loss_with_a_discriminator_trains_the_decoder_only_through_its_terms():
    torch.manual_seed(0)
    model = build_codec(codec_config(**QUICK_ARGS))
    x = torch.from_numpy(synthetic_audio(np.random.default_rng(1), 2, SR))[:, None]
    with torch.no_grad():
        model.quantizer.kmeans_init(model.encoder(model.features(x)))
    model.eval()
    disc = MultiResolutionDiscriminator()
    spectral = SpectralLoss()
    weights = {"logmel": 0, "logstft": 0, "wave": 0, "commit": 0, "adversarial": 1.0, "feature": 2.0}
    loss, terms, y = codec_loss(model, spectral, x, weights, discriminator=disc)
    assert set(terms) == {"loss", "adversarial", "feature"}
    assert terms["loss"] == pytest.approx(terms["adversarial"] + 2 * terms["feature"], rel=1e-5)
    assert y.shape == x.shape
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    # without a discriminator the terms are absent, whatever their weights
    _, plain, _ = codec_loss(model, spectral, x, {**weights, "logmel": 1.0})
    assert set(plain) == {"loss", "logmel"}


def test_adversarial_training_saves_and_resumes_the_discriminator(tmp_path):
    from magnet_demo.train import train_codec

    run = tmp_path / "run"
    argv = [
        "--quick",
        "--eval-clips",
        "1",
        "--threads",
        "1",
        "--run-dir",
        str(run),
        "--out",
        str(tmp_path / "out"),
    ]
    argv += ["--loss-weight", "adversarial=0.1", "--loss-weight", "feature=1"]
    train_codec.main([*argv, "--minutes", "0.02"])
    state = torch.load(run / "last.pt", weights_only=False)
    assert {"disc", "disc_opt"} <= set(state) and state["history"]
    assert "disc" in state["history"][-1] and "adversarial" in state["history"][-1]
    MultiResolutionDiscriminator().load_state_dict(state["disc"])
    # a budget beyond the time already spent (however slow the machine): at least one more step
    more = state["elapsed"] / 60 + 0.02
    train_codec.main([*argv, "--minutes", str(more), "--resume"])
    resumed = torch.load(run / "last.pt", weights_only=False)
    assert resumed["step"] > state["step"]
    # one discriminator update per codec step, counted across the two sessions: it was resumed
    assert int(resumed["disc_opt"]["state"][0]["step"]) == resumed["step"]
    assert int(state["disc_opt"]["state"][0]["step"]) == state["step"]
