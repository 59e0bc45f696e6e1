"""An attribute classifier for 16 kHz, 10 s clips: one head per :data:`corpus.LABELS` attribute.

It scores generated audio by whether it has the attributes that the prompt asked for (lead
instrument family, drums or not, tempo band, major or minor). Three branches read three views of
the same STFT, each built for the attribute it serves best:

- a small 2D CNN on a log spectrogram with one bin per whole tone (timbre, drums, density);
- an MLP on the autocorrelation of the onset envelope (tempo: beat periods are its peaks);
- a small 1D CNN over the sequence of half-second chroma and bass-chroma frames, applied to all 12
  rotations of the pitch classes and max-pooled over them, so that it sees intervals and not the
  key (mode). It must see time: in this corpus minor progressions use the same chords as major
  ones (i-VI-III-VII is vi-IV-I-V of the relative major), so which chord comes first, and the
  raised leading tone, are what tell the modes apart.

CLI::

    python -m magnet_demo.train.classifier --corpus data/corpus --out assets/classifier.pt --minutes 6
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magnet_demo.train.corpus import CLIP_SAMPLES, LABELS, SAMPLE_RATE, TARGET_RMS, load_corpus

N_FFT = 2048
HOP = 320  # 50 frames/s
LOWEST_PITCH = 24  # C1: the semitone filterbank spans MIDI pitches 24 .. 24 + N_PITCHES - 1
N_PITCHES = 96  # up to B8 (7.9 kHz), just below Nyquist
BASS_PITCHES = 36  # chroma of the lowest three octaves is the bass chroma
SPEC_POOL = (2, 4)  # the CNN sees whole tones at 12.5 frames/s (mode has its own branch)
MAX_LAG = 150  # onset autocorrelation up to 3 s (20 bpm) at 50 frames/s
CHROMA_POOL = 25  # chroma frames of half a second
CHROMA_HEAD = 4  # the first two seconds get their own summary
LOG_FLOOR = 1e-4
INT16_SCALE = 32767
BATCH = 32
FEATURE_CHUNK = 64
EMBED = 128


@functools.cache
def semitone_filterbank(n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular filters centred on each MIDI pitch, half a semitone wide on each side.

    Returns float32 [N_PITCHES, n_fft // 2 + 1]. Low filters narrower than an FFT bin keep the
    nearest bin, so no pitch row is empty.
    """
    bin_hz = sample_rate / n_fft
    freqs = torch.arange(n_fft // 2 + 1) * bin_hz
    pitches = torch.arange(LOWEST_PITCH, LOWEST_PITCH + N_PITCHES, dtype=torch.float64)
    centres = 440.0 * 2.0 ** ((pitches - 69) / 12)
    # distance in semitones from each filter's centre, triangle of half-width one semitone
    distance = 12 * torch.log2(freqs.clamp(min=bin_hz / 2)[None, :] / centres[:, None])
    bank = (1 - distance.abs()).clamp(min=0)
    nearest = torch.round(centres / bin_hz).long()
    bank[torch.arange(N_PITCHES), nearest] = bank[torch.arange(N_PITCHES), nearest].clamp(min=1.0)
    return (bank / bank.sum(dim=1, keepdim=True)).float()


def features(audio: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Float audio [N, T] at 16 kHz (T >= 1 s) -> the three views the classifier reads.

    spec [N, 1, N_PITCHES / 2, frames / 4] log magnitude per whole tone (float32);
    tempo [N, MAX_LAG] onset autocorrelation at lags 1..MAX_LAG frames, normalised by lag 0;
    chroma [N, 2, 12, frames / CHROMA_POOL] chroma and bass chroma per half second (pitch class
    0 = C), each frame summing to 1 (0 where silent).
    """
    audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    bank = semitone_filterbank()
    out = {"spec": [], "tempo": [], "chroma": []}
    for chunk in audio.split(FEATURE_CHUNK):
        window = torch.hann_window(N_FFT)
        magnitude = torch.stft(chunk, N_FFT, HOP, window=window, return_complex=True).abs()
        pitch = torch.einsum("pf,nft->npt", bank, magnitude)  # [n, N_PITCHES, frames]
        log_pitch = torch.log(pitch + LOG_FLOOR)
        out["spec"].append(F.avg_pool2d(log_pitch[:, None], SPEC_POOL))
        out["tempo"].append(_onset_autocorrelation(log_pitch))
        out["chroma"].append(_chroma(pitch))
    return {name: torch.cat(parts) for name, parts in out.items()}


def _onset_autocorrelation(log_pitch: torch.Tensor) -> torch.Tensor:
    """[n, pitches, frames] -> [n, MAX_LAG]: autocorrelation of the spectral-flux onset envelope."""
    flux = torch.diff(log_pitch, dim=-1).clamp(min=0).mean(dim=1)
    flux = flux - flux.mean(dim=-1, keepdim=True)
    n = flux.shape[-1]
    spectrum = torch.fft.rfft(flux, n=2 * n)
    correlation = torch.fft.irfft(spectrum.abs() ** 2, n=2 * n)[:, : MAX_LAG + 1]
    if correlation.shape[-1] < MAX_LAG + 1:  # clips shorter than MAX_LAG frames
        correlation = F.pad(correlation, (0, MAX_LAG + 1 - correlation.shape[-1]))
    return correlation[:, 1:] / correlation[:, :1].clamp(min=1e-8)


def _chroma(pitch: torch.Tensor) -> torch.Tensor:
    """[n, N_PITCHES, frames] magnitudes -> [n, 2, 12, windows] chroma of all pitches and of the bass."""
    energy = F.avg_pool1d(pitch.pow(2), CHROMA_POOL).sqrt()  # [n, N_PITCHES, windows]
    classes = (torch.arange(N_PITCHES) + LOWEST_PITCH) % 12
    fold = F.one_hot(classes, 12).float()  # [N_PITCHES, 12]
    full = torch.einsum("npw,pc->ncw", energy, fold)
    bass = torch.einsum("npw,pc->ncw", energy[:, :BASS_PITCHES], fold[:BASS_PITCHES])
    both = torch.stack([full, bass], dim=1)
    return both / both.sum(dim=2, keepdim=True).clamp(min=1e-8)


def _conv_block(c_in: int, c_out: int, kernel=(3, 3), pool=(2, 2)) -> nn.Sequential:
    padding = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(pool),
    )


class AttributeClassifier(nn.Module):
    """Three branches (spectrogram CNN, tempo MLP, rotation-invariant chroma MLP), one head per label."""

    def __init__(self, labels: dict[str, tuple[str, ...]] = LABELS, width: int = 16, dropout: float = 0.3):
        super().__init__()
        self.labels = {name: tuple(classes) for name, classes in labels.items()}
        self.cnn = nn.Sequential(
            _conv_block(1, width, kernel=(7, 3), pool=(1, 2)),  # an octave of context along pitch
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 4 * width),
            _conv_block(4 * width, 6 * width),
        )
        pooled_pitches = N_PITCHES // SPEC_POOL[0] // 8
        self.cnn_out = nn.Linear(2 * 6 * width * pooled_pitches, EMBED)
        self.tempo = nn.Sequential(nn.Linear(MAX_LAG, EMBED), nn.ReLU(), nn.Linear(EMBED, EMBED // 2))
        self.chroma = nn.Sequential(
            nn.Conv1d(2 * 12, EMBED // 2, 3, padding=1), nn.ReLU(), nn.Conv1d(EMBED // 2, EMBED // 2, 3, padding=1)
        )  # fmt: skip
        self.chroma_out = nn.Linear(3 * EMBED // 2, EMBED // 2)
        joint = EMBED + EMBED // 2 + EMBED // 2
        # each branch normalised, so that the small chroma and tempo branches are heard beside the CNN
        self.norms = nn.ModuleList([nn.LayerNorm(EMBED), nn.LayerNorm(EMBED // 2), nn.LayerNorm(EMBED // 2)])
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(joint, len(classes)) for name, classes in labels.items()})

    def forward(
        self, spec: torch.Tensor, tempo: torch.Tensor, chroma: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """spec [N, 1, P, T], tempo [N, MAX_LAG], chroma [N, 2, 12, W] -> logits per label [N, classes]."""
        joint = self.dropout(self.embed(spec, tempo, chroma))
        return {name: head(joint) for name, head in self.heads.items()}

    def embed(self, spec: torch.Tensor, tempo: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
        """The joint embedding the heads read, ``[N, 2 * EMBED]`` (inputs as :meth:`forward`)."""
        x = self.cnn(spec)  # [N, C, P / 8, T']
        x = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1).flatten(1)
        x = F.relu(self.cnn_out(x))
        n, _, _, windows = chroma.shape
        chroma = chroma * 12  # frames sum to 12: pitch classes of mean 1
        rotations = torch.stack([chroma.roll(-k, dims=2) for k in range(12)], dim=1)  # [N, 12, 2, 12, W]
        h = F.relu(self.chroma(rotations.reshape(n * 12, 2 * 12, windows)))  # [N * 12, E / 2, W]
        summary = torch.cat([h.mean(dim=-1), h.amax(dim=-1), h[..., :CHROMA_HEAD].mean(dim=-1)], dim=1)
        c = self.chroma_out(summary).reshape(n, 12, -1).amax(dim=1)
        t = F.relu(self.tempo(tempo))
        joint = torch.cat([norm(branch) for norm, branch in zip(self.norms, (x, t, c), strict=True)], dim=1)
        return F.relu(joint)


def _to_float(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    return audio.astype(np.float32) / INT16_SCALE if audio.dtype == np.int16 else audio.astype(np.float32)


def _corpus_features(audio: np.ndarray, indices: np.ndarray, log=print) -> dict[str, torch.Tensor]:
    """Features of the corpus clips at ``indices``, computed in chunks (spec kept as float16)."""
    parts = []
    t0 = time.perf_counter()
    for start in range(0, len(indices), FEATURE_CHUNK):
        batch = features(_to_float(audio[indices[start : start + FEATURE_CHUNK]]))
        batch["spec"] = batch["spec"].half()
        parts.append(batch)
    log(f"features of {len(indices)} clips in {time.perf_counter() - t0:.0f} s")
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def train_classifier(
    corpus_dir: str | Path,
    out_path: str | Path,
    minutes: float,
    seed: int = 0,
    lr: float = 2e-3,
    threads: int = 1,
    log=print,
) -> dict[str, float]:
    """Train on the corpus's train split for ``minutes`` (wall time, features excluded), save to
    ``out_path`` and return the accuracy per attribute (and 'mean') on its test split."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        audio, meta = load_corpus(corpus_dir)
        splits = np.array([m["split"] for m in meta])
        train_idx, test_idx = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")
        labels = {name: torch.tensor([m["labels"][name] for m in meta]) for name in LABELS}
        train_x, test_x = _corpus_features(audio, train_idx, log), _corpus_features(audio, test_idx, log)
        model = AttributeClassifier()
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
        generator = torch.Generator().manual_seed(seed)
        budget, t0, step = minutes * 60.0, time.perf_counter(), 0
        model.train()
        while (elapsed := time.perf_counter() - t0) < budget:
            for group in optimiser.param_groups:  # cosine decay over the time budget
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
            batch = torch.randint(len(train_idx), (BATCH,), generator=generator)
            logits = model(train_x["spec"][batch].float(), train_x["tempo"][batch], train_x["chroma"][batch])
            targets = {name: labels[name][train_idx[batch]] for name in LABELS}
            loss = sum(F.cross_entropy(logits[name], targets[name]) for name in LABELS)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            if step % 100 == 0:
                log(f"step {step} ({elapsed:.0f} s): loss {loss.item():.3f}")
        model.eval()
        preds = _predict_features(model, test_x)
        scores = accuracy(preds, {name: labels[name][test_idx].numpy() for name in LABELS})
        log(f"{step} steps; held-out accuracy on {len(test_idx)} clips: {_fmt(scores)}")
        save_classifier(model, out_path, {"steps": step, "minutes": minutes, "held_out_accuracy": scores})
        return scores
    finally:
        torch.set_num_threads(previous_threads)


def save_classifier(model: AttributeClassifier, path: str | Path, info: dict | None = None):
    """Write the weights, labels and training info (plain types: loads with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {name: list(classes) for name, classes in model.labels.items()}
    torch.save({"state_dict": model.state_dict(), "labels": labels, "info": info or {}}, path)


def load_classifier(path: str | Path) -> AttributeClassifier:
    """The classifier saved at ``path``, in eval mode."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = AttributeClassifier({name: tuple(c) for name, c in checkpoint["labels"].items()})
    model.load_state_dict(checkpoint["state_dict"])
    model.info = checkpoint.get("info", {})
    return model.eval()


@torch.no_grad()
def _predict_features(model: AttributeClassifier, x: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out: dict[str, list] = {name: [] for name in model.labels}
    for start in range(0, len(x["tempo"]), BATCH):
        part = {k: v[start : start + BATCH] for k, v in x.items()}
        logits = model(part["spec"].float(), part["tempo"], part["chroma"])
        for name in out:
            out[name].append(logits[name].argmax(dim=-1))
    return {name: torch.cat(chunks).numpy() for name, chunks in out.items()}


@torch.no_grad()
def embeddings(model: AttributeClassifier, audio: np.ndarray) -> np.ndarray:
    """Float32 audio ``[N, samples]`` at 16 kHz (int16 is rescaled) -> joint embeddings ``[N, 2 * EMBED]``
    float64: what the attribute heads read, so a space where clips that differ in what the
    classifier hears lie apart (the embedding of ``bench.frechet``)."""
    was_training = model.training
    model.eval()
    try:
        x = features(_to_float(audio))
        parts = [
            model.embed(
                x["spec"][s : s + BATCH].float(), x["tempo"][s : s + BATCH], x["chroma"][s : s + BATCH]
            )
            for s in range(0, len(x["tempo"]), BATCH)
        ]
        return torch.cat(parts).double().numpy()
    finally:
        model.train(was_training)


def prepare_audio(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Audio ``[N, samples]`` from any source as the classifier saw the corpus: resampled to 16 kHz,
    zero-padded or cropped to a clip's length, and brought to the corpus loudness (RMS
    ``TARGET_RMS``), so that it judges what is played, not how loud a codec renders it."""
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(sample_rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, sample_rate // g, axis=-1).astype(np.float32)
    if audio.shape[-1] >= CLIP_SAMPLES:
        audio = audio[..., :CLIP_SAMPLES]
    else:
        audio = np.pad(audio, ((0, 0), (0, CLIP_SAMPLES - audio.shape[-1])))
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=-1, keepdims=True))
    return (audio * (TARGET_RMS / np.maximum(rms, 1e-8))).astype(np.float32)


def predict(model: AttributeClassifier, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Float32 audio [N, samples] at 16 kHz (int16 is rescaled) -> class index per label, [N] int."""
    was_training = model.training
    model.eval()
    try:
        return _predict_features(model, features(_to_float(audio)))
    finally:
        model.train(was_training)


def accuracy(preds: dict[str, np.ndarray], labels: dict[str, np.ndarray] | list[dict]) -> dict[str, float]:
    """Fraction correct per label, and their 'mean'. ``labels``: arrays per label, or per-clip dicts
    (the ``labels`` field of the corpus metadata)."""
    if isinstance(labels, list):
        labels = {name: np.array([clip[name] for clip in labels]) for name in preds}
    scores = {name: float(np.mean(np.asarray(preds[name]) == np.asarray(labels[name]))) for name in preds}
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in scores.items())


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("assets/classifier.pt"))
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    scores = train_classifier(args.corpus, args.out, args.minutes, args.seed, threads=args.threads)
    size_mb = args.out.stat().st_size / 2**20
    print(f"saved {args.out} ({size_mb:.1f} MiB); held-out accuracy: {_fmt(scores)}")


if __name__ == "__main__":
    main()
