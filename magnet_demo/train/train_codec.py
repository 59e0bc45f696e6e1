"""Train the embedded model's spectral codec, evaluate it, and encode the corpus into tokens.

Commands::

    python -m magnet_demo.train.train_codec --corpus data/corpus --minutes 20 --out assets/embedded
    python -m magnet_demo.train.train_codec --quick --out /tmp/codec          # ~20 s micro codec
    python -m magnet_demo.train.train_codec encode --corpus data/corpus --codec assets/embedded \\
        --out data/tokens.npy
    python -m magnet_demo.train.train_codec eval --corpus data/corpus --codec assets/embedded

Training samples one-second crops from the corpus's 'train' clips (``audio.npy``: int16 [N, 160000],
``meta.jsonl``: one JSON per clip with a ``split`` field); without a corpus it falls back to
synthetic audio (tones and noise bursts). The loss is DESIGN.md section 8's: multi-resolution
log-mel L1 + 0.2 x log-STFT L1 + waveform L1 + commitment. The budget is wall time (or, with
``--clock cpu``, this process's CPU time, which makes runs on a shared machine comparable):
``--minutes`` is the total over all resumed sessions of a run folder. Checkpoints go to ``--run-dir``
every ``--save-every`` seconds and at the end, when the codec is exported and evaluated on held-out
clips. ``--device auto`` (the default) trains on the GPU when torch sees one (``cuda``), else on
the CPU; the evaluation and the export run on the CPU either way, so the exported codec is the
same file.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magnet_demo.codec import (
    CODEC_NAME,
    SAMPLE_RATE,
    SpectralCodec,
    build_codec,
    codec_config,
    load_codec,
    save_codec,
    true_frequency_offset,
)
from magnet_demo.controls import TRAIN_PRECISIONS
from magnet_demo.train.adversarial import (
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from magnet_demo.train.device import add_device_argument, resolve_device, training_precision

log = logging.getLogger("train_codec")

CLIP_SAMPLES = 10 * SAMPLE_RATE
INT16_SCALE = 32768.0
#: (n_fft, hop, n_mels) of the multi-resolution spectral loss and of the log-mel L1 metric
RESOLUTIONS = ((512, 128, 64), (1024, 256, 80), (2048, 512, 128))
#: (n_fft, hop, n_mels) of the ``fine`` loss: a log-mel fine enough in frequency to resolve the
#: partials of low notes (3.9 Hz bins; 256 mel bands 7-12 Hz apart below 500 Hz, against 14-46 Hz
#: for RESOLUTIONS). With weight 3 it took the reconstructions from 0.88 to 0.90 of real (docs/embedded_model.md)
FINE_RESOLUTION = (4096, 512, 256)
#: floor of magnitudes before log10, in both the loss and the metric
LOG_FLOOR = 1e-5
#: loss weights (DESIGN.md section 8)
#: ``mag`` and ``phase`` are losses on the decoder head itself (:func:`head_magnitude_loss`,
#: :func:`head_phase_loss`), off by default: in a 7-minute A/B on 2 cores (``--loss-weight mag=1
#: --loss-weight phase=1``) they halved the head's magnitude error (0.39 vs 0.73 log10 L1) but left
#: the classifier accuracy of reconstructions unchanged (0.604 both) and the log-mel L1 a little worse
#: (0.312 vs 0.297)
#: ``frequency`` fits the learned frequencies of a ``phase="frequency"`` codec
#: (:func:`head_frequency_loss`); it is computed for such codecs only
LOSS_WEIGHTS = {
    "logmel": 1.0,
    "logstft": 0.2,
    "wave": 1.0,
    "commit": 1.0,
    "mag": 0.0,
    "phase": 0.0,
    "frequency": 1.0,
    "adversarial": 0.0,
    "feature": 0.0,
    "fine": 0.0,
}
#: Adam betas of the discriminator (a GAN's usual low first moment)
DISC_BETAS = (0.5, 0.9)
#: micro configuration of ``--quick``: same token layout (4 x 256 at 50 Hz), tiny network
QUICK_ARGS = {"dim": 64, "hidden": 128, "encoder_blocks": 1, "decoder_blocks": 1}
QUICK_SECONDS = 12  # training only: with start-up, k-means init, evaluation and export ~20 s


# --- spectral loss and metric -----------------------------------------------------------------


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular HTK-mel filters from 0 Hz to Nyquist: [n_mels, n_fft // 2 + 1]."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = 2595 * math.log10(1 + sample_rate / 2 / 700)
    edges = 700 * (10 ** (torch.linspace(0, top, n_mels + 2, dtype=torch.float64) / 2595) - 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0).float()


class SpectralLoss(nn.Module):
    """Multi-resolution log10-mel and log10-STFT-magnitude L1 between audio batches [B, T]."""

    def __init__(self, resolutions=RESOLUTIONS, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.resolutions = resolutions
        for n_fft, _, n_mels in resolutions:
            self.register_buffer(f"mel_{n_fft}", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)
            self.register_buffer(f"win_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-mel L1, log-STFT L1), each averaged over resolutions, of estimate y vs target x [B, T]."""
        mel_terms, stft_terms = [], []
        both = torch.cat([y, x])
        for n_fft, hop, _ in self.resolutions:
            spec = torch.stft(both, n_fft, hop, window=getattr(self, f"win_{n_fft}"), return_complex=True)
            mag = spec.abs()  # [2B, n_freq, frames]
            mel = torch.matmul(getattr(self, f"mel_{n_fft}"), mag)
            log_mag = torch.log10(mag.clamp(min=LOG_FLOOR))
            log_mel = torch.log10(mel.clamp(min=LOG_FLOOR))
            my, mx = log_mel.chunk(2)
            sy, sx = log_mag.chunk(2)
            mel_terms.append((my - mx).abs().mean())
            stft_terms.append((sy - sx).abs().mean())
        return torch.stack(mel_terms).mean(), torch.stack(stft_terms).mean()


@functools.cache
def _spectral_loss(resolutions: tuple[tuple[int, int, int], ...]) -> SpectralLoss:
    """One shared :class:`SpectralLoss` per set of resolutions (its filterbanks are built once)."""
    return SpectralLoss(resolutions)


def fine_logmel_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log10-mel L1 at :data:`FINE_RESOLUTION` between audio batches y and x [B, T] (the ``fine`` term)."""
    return _spectral_loss((FINE_RESOLUTION,)).to(y.device)(y, x)[0]


def _as_batch(a: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().float().cpu()
    return t.reshape(-1, t.shape[-1])


def logmel_l1(a: Any, b: Any) -> float:
    """Multi-resolution log10-mel L1 between 16 kHz audio a and b (numpy or torch; [T], [C, T] or
    [B, C, T]; cropped to the shorter length). Lower is better; identical audio gives 0."""
    ta, tb = _as_batch(a), _as_batch(b)
    n = min(ta.shape[-1], tb.shape[-1])
    with torch.no_grad():
        return float(_spectral_loss(RESOLUTIONS)(ta[..., :n], tb[..., :n])[0])


def head_magnitude_loss(log_mag: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log10 L1 between the head's log-magnitude [B, n_freq, F] (natural log) and the target STFT
    [B, n_freq, F] (complex) on the codec's own grid, both floored at :data:`LOG_FLOOR`.

    Unlike the losses on the resynthesised audio, it does not depend on the predicted phase, so the
    magnitude gets a clean gradient while the phase is still incoherent.
    """
    floor = math.log(LOG_FLOOR)
    predicted = torch.maximum(log_mag, log_mag.new_tensor(floor)) / math.log(10)
    return (predicted - torch.log10(target.abs().clamp(min=LOG_FLOOR))).abs().mean()


def head_phase_loss(phase: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Magnitude-weighted phase-derivative loss between unit phases [B, n_freq, F] (complex) and the
    target STFT [B, n_freq, F]: 1 - cos of the error in instantaneous frequency (phase advance from
    frame to frame) and in group delay (phase step from bin to bin), in [0, 2].

    Absolute phase is arbitrary; its derivatives are not: a steady partial advances by a fixed angle
    per hop, and a coherent advance is what keeps harmonics sharp in windows longer than a frame.
    """
    unit = target / target.abs().clamp(min=1e-8)
    terms = []
    for dim in (2, 1):  # time (instantaneous frequency), then frequency (group delay)
        n = target.shape[dim]
        now, before = (slice(1, n), slice(0, n - 1))
        pick = [slice(None)] * 3
        pick_now, pick_before = list(pick), list(pick)
        pick_now[dim], pick_before[dim] = now, before
        pick_now, pick_before = tuple(pick_now), tuple(pick_before)
        step_hat = phase[pick_now] * phase[pick_before].conj()
        step_true = unit[pick_now] * unit[pick_before].conj()
        weight = (target[pick_now].abs() * target[pick_before].abs()).sqrt()
        error = 1 - (step_hat * step_true.conj()).real
        terms.append((weight * error).sum() / weight.sum().clamp(min=1e-8))
    return torch.stack(terms).mean()


def head_frequency_loss(codec: SpectralCodec, phase_head: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Magnitude-weighted L1, in bins, between the head's learned frequency offsets
    (:meth:`SpectralCodec.frequency_offset` of ``phase_head`` [B, 2, n_freq, F]) and the true ones
    of the target STFT [B, n_freq, F] (:func:`magnet_demo.codec.true_frequency_offset`), frames 1..F-1.

    The weight is the geometric mean of the two frames' true magnitudes: partials count, the
    aliased offsets of near-silent bins do not.
    """
    truth = true_frequency_offset(target, codec.n_fft, codec.hop)  # [B, n_freq, F - 1]
    predicted = codec.frequency_offset(phase_head)[..., 1:]
    weight = (target[..., 1:].abs() * target[..., :-1].abs()).sqrt()
    return (weight * (predicted - truth).abs()).sum() / weight.sum().clamp(min=1e-8)


def codec_loss(
    codec: SpectralCodec,
    spectral: SpectralLoss,
    x: torch.Tensor,
    weights: dict[str, float] | None = None,
    low_precision: bool = False,
    discriminator: MultiResolutionDiscriminator | None = None,
) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Training loss of ``codec`` on audio x [B, 1, T]; returns (loss, float terms for the log,
    the decoded audio y [B, 1, T]).

    ``weights`` overrides entries of :data:`LOSS_WEIGHTS`; terms of weight 0 are not computed.
    ``low_precision`` runs the encoder and decoder networks under bfloat16 autocast; the STFTs,
    the quantiser and the losses stay float32. The ``adversarial`` and ``feature`` terms need a
    ``discriminator`` (:mod:`magnet_demo.train.adversarial`); its own update is
    :func:`discriminator_step`, on the returned y.
    """
    w = {**LOSS_WEIGHTS, **(weights or {})}
    autocast = functools.partial(torch.autocast, x.device.type, dtype=torch.bfloat16, enabled=low_precision)
    target = codec.stft(x)  # [B, n_freq, F] complex, the grid the decoder head predicts on
    with autocast():
        latent = codec.encoder(codec.log_magnitude(target))
    zq, _, commit = codec.quantizer(latent.float())
    with autocast():
        log_mag, phase_head = codec.spectrum(zq)
    # the audio is made as decode() makes it (with a vocoder phase the resynthesis losses train
    # the magnitude only)
    y = codec.istft(torch.exp(log_mag) * codec.output_phase(log_mag, phase_head))[..., : x.shape[-1]]
    logmel, logstft = spectral(y[:, 0], x[:, 0])
    terms = {"logmel": logmel, "logstft": logstft, "wave": F.l1_loss(y, x), "commit": commit}
    optional_terms = {  # computed only when weighted
        "mag": lambda: head_magnitude_loss(log_mag, target),
        "phase": lambda: head_phase_loss(codec.learned_phase(phase_head), target),
        "fine": lambda: fine_logmel_loss(y[:, 0], x[:, 0]),
    }
    if codec.phase == "frequency":
        optional_terms["frequency"] = lambda: head_frequency_loss(codec, phase_head, target)
    terms.update({name: term() for name, term in optional_terms.items() if w[name]})
    if discriminator is not None and (w["adversarial"] or w["feature"]):
        fake_logits, fake_features = discriminator(y)
        with torch.no_grad():
            _, real_features = discriminator(x)
        terms["adversarial"] = generator_loss(fake_logits)
        terms["feature"] = feature_matching_loss(real_features, fake_features)
    terms = {name: value for name, value in terms.items() if w[name]}
    loss = sum(w[k] * v for k, v in terms.items())
    return loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}, y


def discriminator_step(
    discriminator: MultiResolutionDiscriminator,
    optimizer: torch.optim.Optimizer,
    real: torch.Tensor,
    fake: torch.Tensor,
) -> float:
    """One hinge-loss update of the discriminator on real and decoded audio [B, 1, T]; returns its loss."""
    real_logits, _ = discriminator(real)
    fake_logits, _ = discriminator(fake.detach())
    loss = discriminator_loss(real_logits, fake_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# --- data -------------------------------------------------------------------------------------


def synthetic_audio(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """n clips [n, length] float32 of harmonic notes with decaying envelopes plus noise bursts."""
    t = np.arange(length) / SAMPLE_RATE
    out = np.zeros((n, length), np.float32)
    for i in range(n):
        for _ in range(rng.integers(2, 8)):  # notes
            start = rng.uniform(-0.5, t[-1])
            f0 = 55 * 2 ** rng.uniform(0, 5)
            env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(1, 8)), 0)
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5) if f0 * h < SAMPLE_RATE / 2)
            out[i] += 0.2 * env * tone
        for _ in range(rng.integers(0, 6)):  # percussive noise bursts
            start = rng.uniform(0, t[-1])
            env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(15, 60)), 0)
            out[i] += 0.3 * env * rng.standard_normal(length)
    return np.clip(out, -1, 1)


class Corpus:
    """Clips of a rendered corpus (memory-mapped) or, without one, a fixed synthetic set."""

    SYNTHETIC_CLIPS = (48, 8)  # train, test

    def __init__(self, corpus_dir: str | Path | None, seed: int = 0):
        self.dir = Path(corpus_dir) if corpus_dir else None
        if self.dir is not None and (self.dir / "audio.npy").exists():
            self.audio = np.load(self.dir / "audio.npy", mmap_mode="r")  # int16 [N, T]
            self.scale = INT16_SCALE
            with open(self.dir / "meta.jsonl") as f:
                splits = [json.loads(line).get("split", "train") for line in f if line.strip()]
            if len(splits) != len(self.audio):
                raise ValueError(f"{len(splits)} meta lines for {len(self.audio)} clips in {self.dir}")
            self.train = np.array([i for i, s in enumerate(splits) if s != "test"])
            self.test = np.array([i for i, s in enumerate(splits) if s == "test"])
            self.synthetic = False
        else:
            if self.dir is not None:
                log.warning("no corpus at %s: using synthetic audio", self.dir)
            n_train, n_test = self.SYNTHETIC_CLIPS
            self.audio = synthetic_audio(np.random.default_rng(seed), n_train + n_test, CLIP_SAMPLES)
            self.scale = 1.0
            self.train, self.test = np.arange(n_train), np.arange(n_train, n_train + n_test)
            self.synthetic = True

    def clips(self, indices) -> torch.Tensor:
        """Whole clips [len(indices), 1, T] as float audio in [-1, 1]."""
        return torch.from_numpy(np.stack([self.audio[i] for i in indices]).astype(np.float32) / self.scale)[
            :, None
        ]

    def crops(self, rng: np.random.Generator, batch: int, length: int) -> torch.Tensor:
        """Random crops [batch, 1, length] of training clips."""
        rows = rng.choice(self.train, batch)
        starts = rng.integers(0, self.audio.shape[1] - length + 1, batch)
        data = np.stack([self.audio[r, s : s + length] for r, s in zip(rows, starts, strict=True)])
        return torch.from_numpy(data.astype(np.float32) / self.scale)[:, None]


# --- evaluation -------------------------------------------------------------------------------


def code_stats(codes: torch.Tensor, bins: int) -> dict[str, list[float]]:
    """Per-codebook usage (fraction of entries used) and entropy (bits) of codes [B, K, F]."""
    usage, entropy = [], []
    for k in range(codes.shape[1]):
        counts = torch.bincount(codes[:, k].reshape(-1), minlength=bins).double()
        p = counts[counts > 0] / counts.sum()
        usage.append(round(float((counts > 0).double().mean()), 4))
        entropy.append(round(float(-(p * p.log2()).sum()), 3))
    return {"usage": usage, "entropy_bits": entropy}


def griffin_lim(codec: SpectralCodec, audio: torch.Tensor, iters: int = 32) -> torch.Tensor:
    """Reference reconstruction [B, 1, F * hop] from the true STFT magnitude of audio [B, 1, T]."""
    return codec.istft(codec.griffin_lim(codec.stft(audio).abs(), iters=iters))


@torch.no_grad()
def evaluate(
    codec: SpectralCodec, corpus: Corpus, n_clips: int = 64, batch: int = 8, gl: bool = False
) -> dict:
    """Held-out log-mel L1 of reconstructions (full clips), code statistics, encode+decode time."""
    codec.eval()
    indices = corpus.test[:n_clips]
    errors, gl_errors, all_codes, seconds = [], [], [], 0.0
    for i in range(0, len(indices), batch):
        x = corpus.clips(indices[i : i + batch])
        start = time.perf_counter()
        codes, _ = codec.encode(x)
        y = codec.decode(codes)
        seconds += time.perf_counter() - start
        all_codes.append(codes)
        errors += [logmel_l1(y[j], x[j]) for j in range(len(x))]
        if gl:
            g = griffin_lim(codec, x)
            gl_errors += [logmel_l1(g[j], x[j]) for j in range(len(x))]
    x = corpus.clips(indices[:1])
    start = time.perf_counter()
    codec.decode(codec.encode(x)[0])
    one = time.perf_counter() - start
    result = {
        "clips": len(indices),
        "logmel_l1": round(float(np.mean(errors)), 4),
        "encode_decode_10s_s": round(one, 4),
        "encode_decode_per_clip_batched_s": round(seconds / max(len(indices), 1), 4),
        **code_stats(torch.cat(all_codes), codec.cardinality),
    }
    if gl:
        result["griffin_lim_logmel_l1"] = round(float(np.mean(gl_errors)), 4)
    return result


# --- training ---------------------------------------------------------------------------------


def learning_rate(base: float, step: int, progress: float, warmup: int = 200, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` x base by the end of the budget."""
    ramp = min(1.0, (step + 1) / warmup)
    return base * ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _parse_item(item: str, kind: type) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    return key, kind(value)


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) a codec for the time budget, export it and return held-out metrics."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(args.corpus, seed=args.seed)
    state_path = run_dir / "last.pt"
    budget = args.minutes * 60
    device = resolve_device(args.device)
    log.info("training device: %s", device)

    overrides = dict(QUICK_ARGS) if args.quick else {}
    defaults = codec_config()[CODEC_NAME]
    for item in args.codec_arg:
        key, value = _parse_item(item, str)
        overrides[key] = type(defaults[key])(value)
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        codec = build_codec(state["cfg"])
        codec.load_state_dict(state["model"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        cpu = state.get("cpu", 0.0)
        rng = np.random.default_rng([args.seed, step])
        log.info("resumed %s at step %d, %.1f of %.1f min", state_path, step, elapsed / 60, args.minutes)
    elif args.init:  # continue from an exported codec (its architecture; --codec-arg may change phase)
        exported = load_codec(args.init)
        codec = build_codec(codec_config(**{**exported.arguments, **overrides}))
        grown = codec.load_growing_decoder(exported.state_dict())
        if grown:
            log.info("decoder grown by %d identity-initialised blocks", grown)
        if codec.phase == "frequency" and exported.phase != "frequency":
            codec.reset_frequency_head()  # px held a phase direction: start from offsets of 0
        state, step, elapsed, cpu, history = None, 0, 0.0, 0.0, []
        log.info("initialised from %s", args.init)
    else:
        codec = build_codec(codec_config(**overrides)).to(device)
        state, step, elapsed, cpu, history = None, 0, 0.0, 0.0, []
        with torch.no_grad():  # k-means init of the codebooks on many crops, before any update
            x = corpus.crops(rng, args.init_crops, args.crop).to(device)
            codec.quantizer.kmeans_init(codec.encoder(codec.features(x)))
    codec.to(device)  # a resumed or initialised codec was built on the CPU
    n_params = sum(p.numel() for p in codec.parameters())
    log.info(
        "codec %.2fM parameters, %s, corpus %s (%d train / %d test clips)",
        n_params / 1e6,
        codec.arguments,
        "synthetic" if corpus.synthetic else corpus.dir,
        len(corpus.train),
        len(corpus.test),
    )
    weights = {**LOSS_WEIGHTS, **dict(_parse_item(item, float) for item in args.loss_weight)}
    log.info("loss weights %s", weights)
    spectral = SpectralLoss().to(device)
    if args.decoder_only:  # the encoder and codebooks stay as they are, so the tokens do too
        for module in (codec.encoder, codec.quantizer):
            module.requires_grad_(False)
        log.info("decoder only: encoder and codebooks frozen (tokens unchanged)")
    trained = [p for p in codec.parameters() if p.requires_grad]
    low_precision = training_precision(args.precision, device) == "bfloat16"
    log.info("training precision: %s", "bfloat16 autocast" if low_precision else "float32")
    opt = torch.optim.AdamW(trained, lr=args.lr, betas=(0.8, 0.99), weight_decay=1e-2)
    if state is not None:
        opt.load_state_dict(state["opt"])
    discriminator = disc_opt = None
    if weights["adversarial"] or weights["feature"]:
        discriminator = MultiResolutionDiscriminator().to(device)
        disc_opt = torch.optim.AdamW(discriminator.parameters(), lr=args.disc_lr, betas=DISC_BETAS)
        if state is not None and "disc" in state:
            discriminator.load_state_dict(state["disc"])
            disc_opt.load_state_dict(state["disc_opt"])
        log.info("discriminator %.2fM parameters", sum(p.numel() for p in discriminator.parameters()) / 1e6)

    codec.train()
    if args.decoder_only:
        codec.encoder.eval()
        codec.quantizer.eval()  # no EMA updates, no dead-code resets
    last_save = last_log = time.monotonic()
    session_start, session_steps, window = time.monotonic(), 0, []
    # the budget runs on wall time, or on this process's CPU time (comparable runs on a shared machine)
    clock = time.process_time if args.clock == "cpu" else time.monotonic
    while elapsed < budget:
        t0, c0 = clock(), time.process_time()
        lr = learning_rate(args.lr, step, elapsed / budget, warmup=args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        crops = corpus.crops(rng, args.batch, args.crop).to(device)
        loss, terms, decoded = codec_loss(codec, spectral, crops, weights, low_precision, discriminator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        if discriminator is not None:
            terms["disc"] = discriminator_step(discriminator, disc_opt, crops, decoded)
        step, session_steps = step + 1, session_steps + 1
        elapsed += clock() - t0
        cpu += time.process_time() - c0
        window.append(terms)
        now = time.monotonic()
        if now - last_log >= args.log_every or elapsed >= budget:
            mean = {k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}
            rate = session_steps / (now - session_start)
            log.info(
                "step %d  %.1f/%.1f min  %.2f steps/s  %.2f steps/cpu-s  lr %.2e  %s",
                step,
                elapsed / 60,
                args.minutes,
                rate,
                step / max(cpu, 1e-9),
                lr,
                mean,
            )
            history.append(
                {
                    "step": step,
                    "elapsed": round(elapsed, 1),
                    "cpu": round(cpu, 1),
                    "steps_per_s": round(rate, 3),
                    **mean,
                }
            )
            window, last_log = [], now
        if now - last_save >= args.save_every or elapsed >= budget:
            state = {
                "model": codec.state_dict(),
                "opt": opt.state_dict(),
                "cfg": codec_config(**codec.arguments),
                "step": step,
                "elapsed": elapsed,
                "cpu": cpu,
                "history": history,
            }
            if discriminator is not None:
                state.update(disc=discriminator.state_dict(), disc_opt=disc_opt.state_dict())
            _save_state(state_path, state)
            last_save = now

    codec.cpu()  # evaluated and exported on the CPU, whatever it trained on
    metrics = evaluate(codec, corpus, n_clips=args.eval_clips)
    metrics.update(
        {
            "steps": step,
            "train_minutes": round(elapsed / 60, 2),
            "train_cpu_minutes": round(cpu / 60, 2),
            "clock": args.clock,
            "device": str(device),
            "params": n_params,
            "corpus": "synthetic" if corpus.synthetic else str(corpus.dir),
        }
    )
    if history:
        metrics["steps_per_s"] = history[-1]["steps_per_s"]
    log.info("held-out: %s", metrics)
    if args.out:
        path = save_codec(codec.eval(), args.out)
        log.info("exported %s", path)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


# --- encoding the corpus ----------------------------------------------------------------------


@torch.no_grad()
def encode_corpus(
    codec: SpectralCodec, corpus_dir: str | Path, out_path: str | Path, batch: int = 16
) -> Path:
    """Encode every clip of ``corpus_dir/audio.npy`` in corpus order into ``out_path``: int16 [N, K, F].

    Written atomically (a temporary file in the same folder, then renamed), so readers never see a
    partial file.
    """
    codec.eval()
    audio = np.load(Path(corpus_dir) / "audio.npy", mmap_mode="r")
    n, length = audio.shape
    frames = math.ceil(length / codec.hop)
    tokens = np.empty((n, codec.num_codebooks, frames), np.int16)
    for i in range(0, n, batch):
        x = torch.from_numpy(np.asarray(audio[i : i + batch], dtype=np.float32) / INT16_SCALE)[:, None]
        tokens[i : i + batch] = codec.encode(x)[0].numpy().astype(np.int16)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.npy")
    np.save(tmp, tokens)
    os.replace(tmp, out_path)
    return out_path


# --- command line -----------------------------------------------------------------------------


def _setup_logging(run_dir: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(run_dir) / "train.log"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", handlers=handlers
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("encode", "eval"):
        command, argv = argv[0], argv[1:]
        p = argparse.ArgumentParser(prog=f"train_codec {command}")
        p.add_argument("--corpus", default="data/corpus")
        p.add_argument("--codec", default="assets/embedded", help="folder (or file) of the exported codec")
        p.add_argument("--threads", type=int, default=1)
        if command == "encode":
            p.add_argument("--out", default="data/tokens.npy")
            p.add_argument("--batch", type=int, default=16)
        else:
            p.add_argument("--clips", type=int, default=64)
            p.add_argument("--griffin-lim", action="store_true", help="also score the Griffin-Lim reference")
        args = p.parse_args(argv)
        _setup_logging(None)
        torch.set_num_threads(args.threads)
        codec = load_codec(args.codec)
        start = time.monotonic()
        if command == "encode":
            path = encode_corpus(codec, args.corpus, args.out, args.batch)
            log.info(
                "wrote %s %s in %.1f s", path, np.load(path, mmap_mode="r").shape, time.monotonic() - start
            )
        else:
            log.info("%s", json.dumps(evaluate(codec, Corpus(args.corpus), args.clips, gl=args.griffin_lim)))
        return

    p = argparse.ArgumentParser(prog="train_codec", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="data/corpus", help="corpus folder; synthetic audio when missing")
    p.add_argument("--out", default="assets/embedded", help="export folder (compression_state_dict.bin)")
    p.add_argument(
        "--run-dir", default=None, help="checkpoints and log (default runs/codec, runs/codec_quick)"
    )
    p.add_argument("--minutes", type=float, default=None, help="total wall-time budget of the run")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what --minutes measures")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--init", default=None, help="start from an exported codec (folder or file)")
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="train only the decoder: encoder and codebooks frozen, so tokens of the corpus stay valid",
    )
    p.add_argument("--quick", action="store_true", help=f"micro codec, {QUICK_SECONDS} s budget")
    p.add_argument(
        "--codec-arg", action="append", default=[], metavar="KEY=VALUE", help="codec constructor override"
    )
    p.add_argument("--loss-weight", action="append", default=[], metavar="TERM=W", help="e.g. wave=0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=SAMPLE_RATE, help="crop length in samples (one second)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--disc-lr", type=float, default=2e-4, help="discriminator (adversarial=W or feature=W)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 200, 20 with --quick)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--precision",
        default="auto",
        choices=TRAIN_PRECISIONS,
        help="matrix products of the encoder and decoder (auto, the default: bfloat16 autocast on CPUs with AMX or AVX-512 BF16 and on GPUs that support it, else float32; as train_magnet)",
    )
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-crops", type=int, default=64, help="crops for the k-means codebook init")
    p.add_argument("--eval-clips", type=int, default=64)
    p.add_argument("--log-every", type=float, default=30.0, help="seconds")
    p.add_argument("--save-every", type=float, default=120.0, help="seconds")
    args = p.parse_args(argv)
    if args.minutes is None:
        args.minutes = QUICK_SECONDS / 60 if args.quick else 20.0
    if args.warmup is None:
        args.warmup = 20 if args.quick else 200
    if args.run_dir is None:
        args.run_dir = "runs/codec_quick" if args.quick else "runs/codec"
    if args.quick:
        args.eval_clips = min(args.eval_clips, 8)
        args.log_every = min(args.log_every, 5.0)
    _setup_logging(args.run_dir)
    train(args)


if __name__ == "__main__":
    main()
