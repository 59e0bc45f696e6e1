"""Tokens to waveforms, previews of unfinished steps, and WAV writing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from magnet_demo.records import StepRecord

#: peak level written to WAV files (leave headroom, never clip)
WAV_PEAK = 0.98


@torch.no_grad()
def decode_tokens(compression_model, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
    """Decode codes ``[B, K', T]`` (K' <= the codec's codebooks) to audio ``[B, samples]`` float32.

    Residual quantisers sum their codebooks, so a prefix of them decodes to a coarser version of
    the sound: that is how an unfinished step is previewed.
    """
    codes = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    device = next(compression_model.parameters()).device
    wav = compression_model.decode(codes.to(device), None)
    return wav[:, 0].float().cpu().numpy()


def preview_codes(record: StepRecord) -> np.ndarray:
    """``[B, stage + 1, T]`` codes that can be heard at ``record``: the finished codebooks, plus the
    current stage with its fixed tokens and the model's proposals for the frames still masked.

    A step of a long clip is heard up to the end of its window. An autoregressive record
    (``record.written`` set) is heard up to the frames written in every
    codebook: ``[B, K, T']`` (at least one frame: before any, a silent-ish frame of token 0)."""
    end = None if record.window is None else record.window[3]  # a long clip: up to the window's end
    if record.written is None:
        return np.asarray(record.tokens[:, : record.stage + 1, :end], dtype=np.int64)
    tokens = np.asarray(record.tokens[..., :end], dtype=np.int64)
    complete = (tokens != record.mask_id).all(axis=(0, 1))  # [T]
    frames = complete.size if complete.all() else int(np.argmin(complete))
    return np.where(tokens == record.mask_id, 0, tokens)[..., : max(frames, 1)]


def preview_audio(compression_model, record: StepRecord) -> np.ndarray:
    """Audio ``[B, samples]`` of a step (see :func:`preview_codes`)."""
    return decode_tokens(compression_model, preview_codes(record))


def normalise(audio: np.ndarray, peak: float = WAV_PEAK) -> np.ndarray:
    """Scale ``[samples]`` audio so that its peak is ``peak`` (silence stays silence)."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if top == 0.0 else audio * (peak / top)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono ``[samples]`` audio as 16-bit PCM WAV, peak-normalised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, normalise(np.asarray(audio, dtype=np.float32)), sample_rate, subtype="PCM_16")
    return path


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """The WAV file of :func:`write_wav` as bytes."""
    buffer = io.BytesIO()
    sf.write(
        buffer, normalise(np.asarray(audio, dtype=np.float32)), sample_rate, subtype="PCM_16", format="WAV"
    )
    return buffer.getvalue()
