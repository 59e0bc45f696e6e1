"""The embedded model's spectral codec: token layout, checkpoint round trip, training signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from magnet_demo.checkpoints import COMPRESSION_FILE, FRAME_RATE, load_package
from magnet_demo.codec import (
    CODEC_NAME,
    HOP,
    SpectralCodec,
    build_codec,
    codec_config,
    load_codec,
    save_codec,
    true_frequency_offset,
    vocoder_phase,
)
from magnet_demo.compat import import_audiocraft
from magnet_demo.train.train_codec import (
    FINE_RESOLUTION,
    QUICK_ARGS,
    SpectralLoss,
    codec_loss,
    encode_corpus,
    fine_logmel_loss,
    head_frequency_loss,
    head_magnitude_loss,
    head_phase_loss,
    logmel_l1,
    synthetic_audio,
)

import_audiocraft()
from audiocraft.models.encodec import CompressionModel  # noqa: E402

SR = 16_000
TEN_SECONDS = 10 * SR


def _audio(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Synthetic music-like audio [batch, 1, length]."""
    return torch.from_numpy(synthetic_audio(np.random.default_rng(seed), batch, length))[:, None]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec() -> SpectralCodec:
    """A default-size codec whose codebooks were k-means initialised on real latents, in eval mode."""
    torch.manual_seed(0)
    model = build_codec(codec_config())
    with torch.no_grad():
        model.quantizer.kmeans_init(model.encoder(model.features(_audio(4, SR))))
    return model.eval()


def test_is_an_audiocraft_compression_model(codec):
    assert isinstance(codec, CompressionModel)
    assert codec.sample_rate == SR and codec.channels == 1
    assert codec.frame_rate == FRAME_RATE and SR / codec.frame_rate == HOP == 320
    assert codec.cardinality == 256
    assert codec.num_codebooks == codec.total_codebooks == 4


def test_ten_seconds_is_500_frames(codec):
    with torch.no_grad():
        codes, scale = codec.encode(_audio(1, TEN_SECONDS))
        assert scale is None
        assert codes.shape == (1, 4, 500) and codes.dtype == torch.int64
        assert 0 <= int(codes.min()) and int(codes.max()) < 256
        audio = codec.decode(codes)
        assert audio.shape == (1, 1, TEN_SECONDS)
        # any frame count decodes to exactly frames * hop samples; odd lengths round up
        assert codec.decode(codes[..., :7]).shape == (1, 1, 7 * HOP)
        assert codec.encode(_audio(2, 1000))[0].shape == (2, 4, 4)
        assert codec(_audio(2, 1000)).x.shape == (2, 1, 1000)


def test_fewer_codebooks(codec):
    with torch.no_grad():
        x = _audio(1, SR)
        codes, _ = codec.encode(x)
        codec.set_num_codebooks(2)
        try:
            assert codec.num_codebooks == 2
            assert torch.equal(codec.encode(x)[0], codes[:, :2])
        finally:
            codec.set_num_codebooks(4)
        assert codec.decode(codes[:, :2]).shape == (1, 1, SR)


def test_stft_framing_is_perfectly_invertible(codec):
    x = _audio(2, 3 * SR)[..., : 3 * SR - 5 * HOP]  # a whole number of hops
    spec = codec.stft(x)
    assert spec.shape == (2, 513, x.shape[-1] // HOP)
    assert torch.allclose(codec.istft(spec), x, atol=1e-5)


def test_deterministic(codec):
    x = _audio(2, 2 * SR, seed=3)
    with torch.no_grad():
        codes_a, codes_b = codec.encode(x)[0], codec.encode(x)[0]
        assert torch.equal(codes_a, codes_b)
        assert torch.equal(codec.decode(codes_a), codec.decode(codes_b))


def test_checkpoint_round_trip(codec, tmp_path):
    path = save_codec(codec, tmp_path)
    assert path == tmp_path / COMPRESSION_FILE
    pkg = load_package(path)
    cfg = OmegaConf.create(pkg["xp.cfg"])  # as the loader sees it: a DictConfig from YAML
    assert cfg.compression_model == CODEC_NAME and cfg.sample_rate == SR and cfg.channels == 1
    rebuilt = build_codec(cfg)
    rebuilt.load_state_dict(pkg["best_state"])
    rebuilt.eval()
    x = _audio(1, 2 * SR, seed=5)
    with torch.no_grad():
        codes = codec.encode(x)[0]
        assert torch.equal(rebuilt.encode(x)[0], codes)
        assert torch.equal(rebuilt.decode(codes), codec.decode(codes))
        assert torch.equal(load_codec(tmp_path).decode(codes), codec.decode(codes))
    assert build_codec(codec_config(**rebuilt.arguments)).arguments == codec.arguments


def _tone(frequencies: list[float], seconds: float = 1.0) -> torch.Tensor:
    n = torch.arange(int(seconds * SR), dtype=torch.float64)
    return sum(torch.cos(2 * np.pi * f * n / SR + i) for i, f in enumerate(frequencies)).float()[None, None]


def _steady_part_error(codec: SpectralCodec, x: torch.Tensor, phase: torch.Tensor) -> float:
    """Relative error of the re-analysed magnitude where x [1, 1, T] has energy, frames 10..F-10."""
    magnitude = codec.stft(x).abs()
    again = codec.stft(codec.istft(magnitude * phase)).abs()
    loud = magnitude > 0.05 * magnitude.max()
    loud[..., :10] = False
    loud[..., -10:] = False
    return float(((again - magnitude).abs()[loud] / magnitude[loud]).max())


@pytest.mark.parametrize(
    ("frequencies", "bound"), [([1000.0], 1e-3), ([440.0], 0.03), ([110.0, 277.2, 1234.5], 0.15)]
)
def test_vocoder_phase_rebuilds_steady_partials(codec, frequencies, bound):
    """Partials between bins come back from their magnitude alone; a random phase smears them."""
    x = _tone(frequencies)
    log_mag = torch.log(codec.stft(x).abs().clamp(min=1e-5))
    phase = vocoder_phase(log_mag, codec.n_fft, codec.hop)
    assert phase.shape == log_mag.shape and torch.allclose(phase.abs(), torch.ones(()))
    assert _steady_part_error(codec, x, phase) < bound  # 1000 Hz is a bin centre: no interpolation error
    random = torch.polar(
        torch.ones_like(log_mag), torch.rand(log_mag.shape, generator=torch.Generator().manual_seed(0)) * 6.3
    )
    assert _steady_part_error(codec, x, random) > 0.9


def test_true_frequency_offset_of_a_steady_partial(codec):
    """A partial at bin 28.4 (437.5 Hz): the bins of its main lobe all report it, in bins from their
    own centre."""
    bin_hz = SR / codec.n_fft
    offset = true_frequency_offset(codec.stft(_tone([28.4 * bin_hz])), codec.n_fft, codec.hop)
    assert offset.shape == (1, codec.n_freq, SR // HOP - 1)
    steady = offset[0, :, 10:-10]
    for k in (27, 28, 29):
        assert torch.allclose(steady[k], torch.full_like(steady[k], 28.4 - k), atol=1e-3), k
    assert float(offset.abs().max()) <= codec.frequency_range + 1e-6


@pytest.mark.parametrize(("frequencies", "bound"), [([440.0], 0.01), ([110.0, 277.2, 1234.5], 0.06)])
def test_vocoder_with_true_frequencies_beats_interpolated_peaks(codec, frequencies, bound):
    """Given each bin's true frequency, the phase vocoder rebuilds partials between bins more
    exactly than from the parabolic peak (the job of a ``phase="frequency"`` codec's head)."""
    x = _tone(frequencies)
    spec = codec.stft(x)
    log_mag = torch.log(spec.abs().clamp(min=1e-5))
    truth = true_frequency_offset(spec, codec.n_fft, codec.hop)
    offset = torch.cat([truth[..., :1], truth], dim=-1)  # frame 0 has no advance: take frame 1's
    learned = _steady_part_error(codec, x, vocoder_phase(log_mag, codec.n_fft, codec.hop, offset))
    interpolated = _steady_part_error(codec, x, vocoder_phase(log_mag, codec.n_fft, codec.hop))
    assert learned < bound and learned < interpolated / 2.5, (learned, interpolated)


def test_frequency_mode_head_loss_and_reset(codec):
    """``phase="frequency"`` reads px as an offset in bins: reset gives 0 (peaks at bin centres), the
    loss is computed for this mode only and is 0 only for the true offsets; a few decoder steps
    on it lower it."""
    model = build_codec(codec_config(**QUICK_ARGS, phase="frequency"))
    x = _audio(1, SR, seed=4)
    target = model.stft(x)
    with torch.no_grad():
        model.quantizer.kmeans_init(model.encoder(model.features(x)))
    model.reset_frequency_head()
    model.eval()
    with torch.no_grad():
        zq = model.quantizer(model.encoder(model.features(x)))[0]
        log_mag, phase_head = model.spectrum(zq)
    assert phase_head.shape == (1, 2, model.n_freq, log_mag.shape[-1])
    assert torch.equal(model.frequency_offset(phase_head), torch.zeros_like(log_mag))
    weight = (target[..., 1:].abs() * target[..., :-1].abs()).sqrt()
    truth = true_frequency_offset(target, model.n_fft, model.hop)
    expected = float((weight * truth.abs()).sum() / weight.sum())
    assert float(head_frequency_loss(model, phase_head, target)) == pytest.approx(expected, rel=1e-5)
    exact = torch.stack(
        [torch.atanh(torch.cat([truth[..., :1], truth], -1) / model.frequency_range * 0.999999)] * 2, 1
    )
    assert float(head_frequency_loss(model, exact, target)) < 1e-4
    spectral = SpectralLoss()
    _, terms, _ = codec_loss(model, spectral, x)
    assert terms["frequency"] == pytest.approx(expected, rel=1e-5)
    _, vocoder_terms, _ = codec_loss(codec, spectral, x)
    assert "frequency" not in vocoder_terms
    model.train()
    model.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.decoder.parameters()], lr=3e-3)
    for _ in range(20):
        loss, terms, _ = codec_loss(model, spectral, x, {"logmel": 0, "logstft": 0, "wave": 0, "commit": 0})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert terms["frequency"] < 0.8 * expected, (terms["frequency"], expected)


def test_phase_mode_is_part_of_the_checkpoint(codec, tmp_path):
    assert codec.arguments["phase"] == "vocoder" and codec_config()[CODEC_NAME]["phase"] == "vocoder"
    learned = build_codec(codec_config(phase="learned"))
    learned.load_state_dict(codec.state_dict())
    learned.eval()
    codes = codec.encode(_audio(1, SR, seed=2))[0]
    with torch.no_grad():
        assert not torch.allclose(learned.decode(codes), codec.decode(codes))
        save_codec(learned, tmp_path)
        assert torch.equal(load_codec(tmp_path).decode(codes), learned.decode(codes))
    with pytest.raises(ValueError, match="phase"):
        build_codec(codec_config(phase="griffin-lim"))
    log_mag, phase_head = codec.spectrum(codec.decode_latent(codes))
    with pytest.raises(ValueError, match="phase must be one of"):
        codec.phase_of("griffin-lim", log_mag, phase_head)


def test_head_losses_are_zero_on_the_target_only(codec):
    target = codec.stft(_tone([440.0, 660.0]))
    unit = target / target.abs().clamp(min=1e-8)
    assert float(head_magnitude_loss(torch.log(target.abs()), target)) < 1e-6
    assert float(head_phase_loss(unit, target)) < 1e-6
    # a constant phase offset keeps every phase derivative: no loss
    assert float(head_phase_loss(unit * torch.polar(torch.ones(()), torch.tensor(1.0)), target)) < 1e-5
    # louder by e: one natural-log unit = 1 / ln 10 in log10 (with noise, no bin is under the floor)
    noisy = codec.stft(
        _tone([440.0]) + 0.01 * torch.randn(1, 1, SR, generator=torch.Generator().manual_seed(0))
    )
    louder = head_magnitude_loss(torch.log(noisy.abs()) + 1, noisy)
    assert float(louder) == pytest.approx(1 / np.log(10), rel=1e-4)
    flat = torch.ones_like(unit)  # zero phase everywhere: the partials' advance is lost
    assert float(head_phase_loss(flat, target)) > 0.5


def test_config_rejects_unknown_arguments():
    with pytest.raises(TypeError):
        codec_config(not_an_argument=1)
    with pytest.raises(ValueError):
        build_codec({"compression_model": "encodec"})


def test_logmel_l1_metric():
    x = (_audio(1, SR)[0, 0] + 0.01 * torch.randn(SR)).numpy()  # no silence: no magnitude under the floor
    assert logmel_l1(x, x) == 0.0
    # a uniform gain of 2 costs log10(2) in every bin, whichever way, as numpy or torch, [T] or [B, C, T]
    assert logmel_l1(torch.from_numpy(x), 0.5 * x) == pytest.approx(np.log10(2), rel=1e-3)
    assert logmel_l1(x[None, None], 2 * x) == pytest.approx(np.log10(2), rel=1e-3)


def test_short_overfit_lowers_logmel():
    """30 steps on one clip must lower its reconstruction error clearly (fails if the loss is broken)."""
    torch.manual_seed(0)
    model = build_codec(codec_config(**QUICK_ARGS))
    x = _audio(1, SR, seed=7) + 1e-3 * torch.randn(1, 1, SR)  # a noise floor, like rendered audio
    with torch.no_grad():
        model.quantizer.kmeans_init(model.encoder(model.features(x)))
    model.eval()
    with torch.no_grad():
        before = logmel_l1(model(x).x, x)
    model.train()
    spectral = SpectralLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss, _terms, _ = codec_loss(model, spectral, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = logmel_l1(model(x).x, x)
    assert after < 0.6 * before, (before, after)


def test_codec_loss_terms_and_bfloat16_autocast():
    """Terms of weight 0 are not computed; bfloat16 autocast of the networks keeps the loss close to
    float32's, leaves the weights float32 and still trains them."""
    torch.manual_seed(0)
    model = build_codec(codec_config(**QUICK_ARGS))
    x = _audio(2, SR, seed=3)
    with torch.no_grad():
        model.quantizer.kmeans_init(model.encoder(model.features(x)))
    spectral = SpectralLoss()
    model.eval()  # no EMA update or dead-code reset between the two calls
    full, terms, _ = codec_loss(model, spectral, x, {"mag": 1.0, "phase": 0.5})
    assert set(terms) == {"loss", "logmel", "logstft", "wave", "commit", "mag", "phase"}
    _, default_terms, _ = codec_loss(model, spectral, x)
    assert set(default_terms) == {"loss", "logmel", "logstft", "wave", "commit"}
    _, fine_terms, decoded = codec_loss(model, spectral, x, {"fine": 2.0})
    assert fine_terms["fine"] == pytest.approx(float(fine_logmel_loss(decoded[:, 0], x[:, 0])), rel=1e-5)
    assert fine_terms["loss"] == pytest.approx(
        float(default_terms["loss"]) + 2 * fine_terms["fine"], rel=1e-4
    )
    low, low_terms, _ = codec_loss(model, spectral, x, {"mag": 1.0, "phase": 0.5}, low_precision=True)
    low_value = float(low.detach())
    assert low.dtype == torch.float32 and low_terms.keys() == terms.keys()
    full_value = float(full.detach())
    assert low_value == pytest.approx(full_value, rel=0.02) and low_value != full_value
    low.backward()
    grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_encode_corpus(codec, tmp_path):
    clips = (_audio(3, TEN_SECONDS, seed=11)[:, 0].numpy() * 32767).astype(np.int16)
    np.save(tmp_path / "audio.npy", clips)
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps({"split": "train"}) + "\n" for _ in clips))
    out = encode_corpus(codec, tmp_path, tmp_path / "tokens.npy", batch=2)
    tokens = np.load(out)
    assert tokens.dtype == np.int16 and tokens.shape == (3, 4, 500)
    with torch.no_grad():
        expected = codec.encode(torch.from_numpy(clips[2:].astype(np.float32) / 32768)[:, None])[0]
    assert np.array_equal(tokens[2:], expected.numpy())
    assert not list(tmp_path.glob("*.tmp*"))


def test_audiocraft_magnet_pipeline_uses_it(codec):
    """audiocraft's MAGNeT wraps, decodes and prompt-encodes with the codec as it would with EnCodec."""
    from audiocraft.models import MAGNeT, builders

    from magnet_demo.checkpoints import magnet_lm_config

    cfg = OmegaConf.create(
        magnet_lm_config(
            card=256, dim=32, num_heads=2, num_layers=1, memory_efficient=False, segment_duration=1
        )
    )
    lm = builders.get_lm_model(cfg)
    lm.cfg = cfg
    model = MAGNeT(name="tiny", compression_model=codec, lm=lm)
    assert (model.frame_rate, model.sample_rate, model.audio_channels) == (FRAME_RATE, SR, 1)
    codes = torch.randint(0, 256, (2, 4, FRAME_RATE))
    with torch.no_grad():
        assert torch.equal(model.generate_audio(codes), codec.decode(codes))
        _attrs, prompt_tokens = model._prepare_tokens_and_attributes(["a prompt"], _audio(1, SR // 2))
    assert prompt_tokens.shape == (1, 4, FRAME_RATE // 2)


def test_decoder_only_training_keeps_the_tokens(tmp_path):
    """--init + --decoder-only: the decoder learns, encoder and codebooks (so the tokens) stay."""
    from magnet_demo.train import train_codec

    first = tmp_path / "first"
    common = ["--quick", "--minutes", "0.03", "--eval-clips", "1", "--threads", "1"]
    train_codec.main([*common, "--run-dir", str(tmp_path / "run1"), "--out", str(first)])
    trained_on = json.loads((tmp_path / "run1" / "metrics.json").read_text())["device"]
    assert trained_on == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    second = tmp_path / "second"
    train_codec.main(
        [
            *common,
            "--run-dir",
            str(tmp_path / "run2"),
            "--out",
            str(second),
            "--init",
            str(first),
            "--decoder-only",
        ]
    )
    before, after = load_codec(first), load_codec(second)
    x = _audio(2, SR, seed=4)
    with torch.no_grad():
        assert torch.equal(before.encode(x)[0], after.encode(x)[0])
    old, new = before.state_dict(), after.state_dict()
    for name in old:
        unchanged = torch.equal(old[name], new[name])
        assert unchanged == (not name.startswith("decoder.")), name


def test_fine_logmel_loss():
    """The ``fine`` term is the log-mel L1 at FINE_RESOLUTION: 0 for identical audio, log10(2) for a
    gain of 2, and it tells apart two low notes a semitone apart."""
    noise = 0.01 * torch.randn(1, SR, generator=torch.Generator().manual_seed(0))
    a = _tone([110.0, 220.0])[:, 0] + noise
    b = _tone([110.0 * 2 ** (1 / 12), 220.0 * 2 ** (1 / 12)])[:, 0] + noise
    assert float(fine_logmel_loss(a, a)) == 0.0
    assert float(fine_logmel_loss(a, 2 * a)) == pytest.approx(np.log10(2), rel=1e-3)
    assert float(fine_logmel_loss(a, b)) == pytest.approx(float(SpectralLoss((FINE_RESOLUTION,))(a, b)[0]))
    assert float(fine_logmel_loss(a, b)) > 0.03


def test_growing_the_decoder_keeps_the_output(tmp_path):
    """--init with more decoder blocks: the new blocks start as identities, so the grown codec
    decodes exactly as the exported one; then they train."""
    from magnet_demo.train import train_codec

    torch.manual_seed(0)
    small = build_codec(codec_config(**QUICK_ARGS)).eval()
    grown = build_codec(codec_config(**{**QUICK_ARGS, "decoder_blocks": 3})).eval()
    assert grown.load_growing_decoder(small.state_dict()) == 2
    codes = torch.randint(0, 256, (2, 4, 25), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(small.decode(codes), grown.decode(codes))
    assert small.load_growing_decoder(small.state_dict()) == 0
    with pytest.raises(ValueError, match="not a smaller decoder"):
        small.load_growing_decoder(grown.state_dict())
    bigger_encoder = build_codec(codec_config(**{**QUICK_ARGS, "encoder_blocks": 2}))
    with pytest.raises(ValueError, match="not a smaller decoder"):
        bigger_encoder.load_growing_decoder(small.state_dict())

    save_codec(small, tmp_path / "small")
    common = ["--quick", "--minutes", "0.03", "--eval-clips", "1", "--threads", "1", "--decoder-only"]
    out = tmp_path / "grown"
    train_codec.main(
        [*common, "--run-dir", str(tmp_path / "run"), "--out", str(out), "--init", str(tmp_path / "small")]
        + ["--codec-arg", "decoder_blocks=3"]
    )
    trained = load_codec(out)
    assert trained.arguments["decoder_blocks"] == 3
    assert all(float(block.gamma.abs().sum()) > 0 for block in trained.decoder.blocks)


def test_phase_refinement_makes_the_spectrum_consistent(codec):
    """Decoding with ``phase_refinement`` iterations brings the STFT of the audio closer to the
    decoder's magnitude than the vocoder phase alone; 0 (the default) decodes as before."""
    codes = torch.randint(0, 256, (1, 4, 50), generator=torch.Generator().manual_seed(2))
    latent = codec.decode_latent(codes)
    with torch.no_grad():
        log_mag, phase_head = codec.spectrum(latent)
        magnitude = torch.exp(log_mag)
        plain = codec.istft(magnitude * codec.output_phase(log_mag, phase_head))
        assert codec.phase_refinement == 0 and torch.equal(codec.decode(codes), plain)
        errors = []
        for iters in (0, 4, 16):
            codec.phase_refinement = iters
            try:
                audio = codec.decode(codes)
            finally:
                codec.phase_refinement = 0
            errors.append(float((codec.stft(audio).abs() - magnitude).abs().mean() / magnitude.mean()))
    assert errors[0] > errors[1] > errors[2], errors
    # plain Griffin-Lim from zero phase, as train_codec's reference uses it, is the same loop
    one = codec.griffin_lim(magnitude, iters=1)
    again = codec.stft(codec.istft(magnitude.to(torch.complex64)))
    assert torch.allclose(one, magnitude * again / again.abs().clamp(min=1e-8))
