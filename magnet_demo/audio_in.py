"""Audio in: an audio file or array turned into given tokens for a model.

Three steps, each a function of its own:

1. read: :func:`read_audio` (a file) or :func:`prepare_audio` (an array) give an :class:`AudioClip`,
   mono float32 at the codec's sample rate, cropped to what the run can use;
2. encode: :func:`encode_clip` gives the clip's codes ``[1, K, T_clip]`` from the model's own codec
   (:func:`audio_codes` does 1 and 2 for a model and a run length);
3. given tokens: :func:`continuation_given` (keep the first seconds, decode the rest) or
   :func:`region_given` (keep everything outside ``[start, end)``, re-decode inside) give
   ``[1, K, T]`` tokens and a bool mask for ``Engine.steps(given_tokens=..., given_mask=...)``,
   which uses a batch of one for every prompt. ``T`` is the run's length in frames,
   ``Engine.frames(config)``.

Every limit is a named constant below; every refusal is a ValueError whose message is for people.
Steps 1 and 3 are pure functions of their inputs.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch

#: the longest upload accepted, in seconds; a longer file is refused from its header, before
#: decoding (a file whose header has no length is decoded up to just past this and then refused)
MAX_UPLOAD_SECONDS = 60.0
#: the largest file the server accepts at all (Gradio refuses bigger uploads before storing them)
MAX_UPLOAD_MB = 64
#: sample rates that can be resampled, in Hz (whole numbers only)
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
#: the most channels an array or file may have (they are mixed to mono); more means the array
#: is probably ``[channels, samples]`` instead of ``[samples, channels]``
MAX_CHANNELS = 8
#: the resampler's quality (soxr, the resampler librosa uses)
RESAMPLE_QUALITY = "HQ"
#: file extensions that soundfile reads itself; a file with one of them that soundfile cannot
#: open is broken, and other extensions (m4a, aac, ...) are tried with librosa (needs ffmpeg)
SOUNDFILE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "au", "caf", "w64", "rf64"}
)
#: note of a region that covers the whole clip
PLAIN_GENERATION_NOTE = "The region covers the whole clip: nothing is kept, this is plain generation."


@dataclass(frozen=True)
class AudioClip:
    """Mono audio ready for a codec.

    Attributes:
        audio: ``[samples]`` float32 at ``sample_rate``.
        sample_rate: Hz (the codec's).
        source_seconds: length of the source before cropping, in seconds.
        note: a sentence for people when the source was cropped, else "".
    """

    audio: np.ndarray
    sample_rate: int
    source_seconds: float
    note: str = ""

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


class RegionGiven(NamedTuple):
    """What :func:`region_given` returns.

    Attributes:
        tokens: ``[B, K, T]`` long, the clip's codes (0 where nothing is given).
        mask: ``[B, K, T]`` bool, True on given tokens (kept), False inside the region and past
            the clip's end (decoded).
        start_s, end_s: the region after snapping to whole spans, in seconds.
        note: a sentence for people ("" when there is nothing to say).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    start_s: float
    end_s: float
    note: str


# ---------------------------------------------------------------------------------------------
# 1. reading


def check_sample_rate(rate, what: str = "The audio's sample rate") -> int:
    """``rate`` as an int Hz, or a ValueError when it cannot be resampled (not a whole number in
    [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`])."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value != int(value) or not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{what} ({rate} Hz) cannot be resampled: it must be a whole number of Hz "
            f"from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}."
        )
    return int(value)


def _as_float(samples: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1] (integer PCM is scaled, as soundfile and browsers store it)."""
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind == "i":
        return (samples / float(-np.iinfo(samples.dtype).min)).astype(np.float32)
    if samples.dtype.kind == "u":
        middle = (float(np.iinfo(samples.dtype).max) + 1) / 2
        return ((samples - middle) / middle).astype(np.float32)
    raise ValueError(f"Audio samples must be numbers, got {samples.dtype}.")


def _mono(samples: np.ndarray) -> np.ndarray:
    """``[samples]`` or ``[samples, channels]`` -> ``[samples]`` (the channels' mean)."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2 or samples.shape[1] > MAX_CHANNELS:
        raise ValueError(
            f"Audio must be [samples] or [samples, channels] with at most {MAX_CHANNELS} channels, "
            f"got shape {list(samples.shape)}."
        )
    return samples.mean(axis=1)


def _fmt(seconds: float) -> str:
    """Seconds for people: at most 2 decimals, no trailing zeros (``1.5``, ``2``, ``0.06``)."""
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def _too_long(seconds: float) -> ValueError:
    return ValueError(
        f"The audio is {seconds:.1f} s long; the longest upload is {MAX_UPLOAD_SECONDS:g} s: "
        "cut it shorter first."
    )


def resample(audio: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """``[samples]`` float32 at ``source_rate`` -> ``[samples']`` float32 at ``sample_rate`` (soxr)."""
    if source_rate == sample_rate:
        return audio
    import soxr  # librosa's resampler; imported here, only when needed

    return soxr.resample(audio, source_rate, sample_rate, quality=RESAMPLE_QUALITY).astype(np.float32)


def prepare_audio(
    samples: np.ndarray,
    source_rate,
    sample_rate: int,
    *,
    max_seconds: float,
    min_seconds: float = 0.0,
    source_seconds: float | None = None,
) -> AudioClip:
    """Audio samples -> an :class:`AudioClip` at ``sample_rate``, at most ``max_seconds`` long.

    Args:
        samples: ``[samples]`` or ``[samples, channels]`` (soundfile's and Gradio's layout),
            float in [-1, 1] or integer PCM (scaled to [-1, 1]); channels are mixed to mono.
        source_rate: their sample rate (Hz).
        sample_rate: the rate wanted (the codec's).
        max_seconds: crop to the first ``max_seconds`` (the run's length); the note says so.
        min_seconds: refuse audio shorter than this (one span of the codec's frames).
        source_seconds: the source's full length when ``samples`` is already a cropped read.
    Raises:
        ValueError: empty, too short, longer than :data:`MAX_UPLOAD_SECONDS`, a sample rate that
            cannot be resampled, non-finite samples, a bad shape or dtype.
    """
    source_rate = check_sample_rate(source_rate)
    sample_rate = check_sample_rate(sample_rate, "The model's sample rate")
    samples = np.asarray(samples)
    if samples.size == 0:
        raise ValueError("The audio is empty: it has no samples.")
    audio = _mono(_as_float(samples))
    full = len(audio) / source_rate if source_seconds is None else float(source_seconds)
    if full > MAX_UPLOAD_SECONDS:
        raise _too_long(full)
    if not np.isfinite(audio).all():
        raise ValueError("The audio has NaN or infinite samples.")
    keep = min(len(audio), max(1, round(max_seconds * source_rate)))
    note = ""
    if full * source_rate > keep + 0.5:  # the source is longer than what is kept
        note = f"Used the first {_fmt(keep / source_rate)} s of the {_fmt(full)} s audio."
    audio = audio[:keep]
    seconds = len(audio) / source_rate
    if seconds < min_seconds:
        raise ValueError(
            f"The audio is too short: {seconds * 1000:.0f} ms, and at least {min_seconds * 1000:.0f} ms "
            "(one span of the codec's frames) is needed."
        )
    return AudioClip(resample(audio, source_rate, sample_rate), sample_rate, full, note)


def _read_with_librosa(path: Path) -> tuple[np.ndarray, int]:
    """Formats soundfile cannot read (through audioread, which needs ffmpeg): ``[samples, channels]``,
    at most a little more than :data:`MAX_UPLOAD_SECONDS` decoded."""
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            audio, rate = librosa.load(path, sr=None, mono=False, duration=MAX_UPLOAD_SECONDS + 1.0)
    except Exception as error:
        raise ValueError(
            f"Could not read '{path.name}': it is not an audio file this machine can decode "
            f"({type(error).__name__}). Use WAV, FLAC, OGG or MP3."
        ) from None
    return np.atleast_2d(audio).T, rate


def read_audio(
    path: str | os.PathLike, sample_rate: int, *, max_seconds: float, min_seconds: float = 0.0
) -> AudioClip:
    """An audio file -> an :class:`AudioClip` (mono float32 at ``sample_rate``, at most ``max_seconds``).

    WAV, FLAC, OGG and MP3 are read with soundfile, reading only the first ``max_seconds``; a
    file longer than :data:`MAX_UPLOAD_SECONDS` is refused from its header, before any decoding.
    Other formats go through librosa (audioread, so ffmpeg), decoded up to just past the cap.
    See :func:`prepare_audio` for ``min_seconds`` and the refusals (ValueError).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No audio file at '{path}'.")
    if path.stat().st_size == 0:
        raise ValueError(f"'{path.name}' is empty.")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError:
        if path.suffix.lower().lstrip(".") in SOUNDFILE_EXTENSIONS:
            raise ValueError(
                f"Could not read '{path.name}': it is not a valid {path.suffix.lstrip('.').upper()} file."
            ) from None
        samples, rate = _read_with_librosa(path)
        return prepare_audio(samples, rate, sample_rate, max_seconds=max_seconds, min_seconds=min_seconds)
    if info.frames <= 0:
        raise ValueError(f"'{path.name}' is empty: it has no samples.")
    rate = check_sample_rate(info.samplerate, f"The sample rate of '{path.name}'")
    if info.duration > MAX_UPLOAD_SECONDS:
        raise _too_long(info.duration)
    frames = min(info.frames, max(1, round(max_seconds * rate)))
    try:
        samples, _ = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except sf.SoundFileError as error:
        raise ValueError(f"Could not read '{path.name}': {error}") from None
    return prepare_audio(
        samples,
        rate,
        sample_rate,
        max_seconds=max_seconds,
        min_seconds=min_seconds,
        source_seconds=info.frames / rate,
    )


# ---------------------------------------------------------------------------------------------
# 2. encoding


@torch.no_grad()
def encode_clip(model, clip: AudioClip) -> torch.Tensor:
    """Codes ``[1, K, T_clip]`` (long, CPU) of ``clip`` with ``model``'s own codec.

    ``model`` is a :class:`~magnet_demo.models.LoadedModel`; ``K`` its codebooks and ``T_clip``
    the codec's frames for the clip (``ceil(samples / hop)`` for EnCodec).
    """
    codec = model.compression_model
    if clip.sample_rate != int(codec.sample_rate):
        raise ValueError(
            f"The clip is at {clip.sample_rate} Hz but the codec wants {int(codec.sample_rate)} Hz."
        )
    device = next(codec.parameters()).device
    wav = torch.from_numpy(np.ascontiguousarray(clip.audio, dtype=np.float32)).to(device)
    wav = wav[None, None].expand(1, int(getattr(codec, "channels", 1)), -1)
    codes, scale = codec.encode(wav)
    if scale is not None:
        raise ValueError("This codec renormalises its input: its codes cannot be used as given tokens.")
    K = model.num_codebooks
    if codes.shape[1] < K:
        raise ValueError(f"The codec gave {codes.shape[1]} codebooks; the model needs {K}.")
    return codes[:, :K].long().cpu()


def audio_codes(model, source, *, duration: float, source_rate=None) -> tuple[torch.Tensor, str]:
    """Read and encode audio for a run of ``duration`` seconds on ``model``.

    Args:
        model: a :class:`~magnet_demo.models.LoadedModel`.
        source: a file path, or samples (see :func:`prepare_audio`) with ``source_rate``.
        duration: the run's length (``config.duration``): the audio is cropped to it.
    Returns:
        codes ``[1, K, T_clip]`` and the note of :class:`AudioClip` ("" when not cropped).
    Raises:
        ValueError: see :func:`read_audio` / :func:`prepare_audio`; audio shorter than one span.
    """
    span_seconds = model.lm.span_len / model.frame_rate
    if isinstance(source, str | os.PathLike):
        clip = read_audio(source, model.sample_rate, max_seconds=duration, min_seconds=span_seconds)
    else:
        if source_rate is None:
            raise ValueError("Audio samples need their sample rate.")
        clip = prepare_audio(
            source, source_rate, model.sample_rate, max_seconds=duration, min_seconds=span_seconds
        )
    return encode_clip(model, clip), clip.note


# ---------------------------------------------------------------------------------------------
# 3. given tokens


def _codes(codes) -> torch.Tensor:
    codes = codes if isinstance(codes, torch.Tensor) else torch.from_numpy(np.array(codes))
    if codes.dim() != 3 or codes.shape[-1] == 0:
        raise ValueError(f"codes must have shape [B, K, T_clip] with T_clip > 0, got {list(codes.shape)}.")
    return codes.long().cpu()


def _seconds(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds.")
    return value


def continuation_given(
    codes, keep_seconds: float, T: int, frame_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Given tokens that keep the first ``keep_seconds`` of a clip and decode the rest.

    ``P = round(keep_seconds * frame_rate)`` frames are kept, in every codebook, not snapped to
    spans: as audiocraft's ``generate_continuation``, whose prompt is the clip itself (for its
    exact tokens, encode only the kept audio: the codec looks ahead, so codes near the cut depend
    on what follows it).

    Args:
        codes: ``[B, K, T_clip]`` codes of the clip (:func:`encode_clip`).
        keep_seconds: how much of the clip's start to keep.
        T: the run's length in frames (``Engine.frames(config)``).
        frame_rate: the codec's frames per second.
    Returns:
        ``(given_tokens, given_mask)``, ``[B, K, T]`` long and bool (True on the first P frames).
    Raises:
        ValueError: ``keep_seconds`` not above 0, not below the output's length, or longer than
            the clip.
    """
    codes = _codes(codes)
    keep = _seconds(keep_seconds, "The length to keep")
    if keep <= 0:
        raise ValueError(f"The length to keep must be more than 0 s, got {keep:g} s.")
    P = round(keep * frame_rate)
    if P >= T:
        raise ValueError(
            f"Keeping {_fmt(keep)} s leaves nothing to generate: keep less than the output's "
            f"{_fmt(T / frame_rate)} s."
        )
    if P < 1:
        raise ValueError(f"Keeping {keep:g} s keeps no frame: keep at least {_fmt(1 / frame_rate)} s.")
    if P > codes.shape[-1]:
        raise ValueError(
            f"Cannot keep {_fmt(keep)} s: the audio is only {_fmt(codes.shape[-1] / frame_rate)} s long."
        )
    B, K, _ = codes.shape
    tokens = torch.zeros((B, K, T), dtype=torch.long)
    tokens[..., :P] = codes[..., :P]
    mask = torch.zeros((B, K, T), dtype=torch.bool)
    mask[..., :P] = True
    return tokens, mask


def snap_region(start_s: float, end_s: float, frame_rate: float, span_len: int, T: int) -> tuple[int, int]:
    """``[start_s, end_s)`` in seconds -> frames ``[start, end)`` on whole spans.

    Each end is first rounded to the nearest frame; then the start moves down and the end up to a
    multiple of ``span_len`` (the region grows to whole spans, never shrinks), and the end stops
    at ``T``.
    """
    start = round(start_s * frame_rate)
    end = round(end_s * frame_rate)
    start = span_len * (start // span_len)
    end = min(T, span_len * -(-max(end, start + 1) // span_len))
    return start, end


def region_given(
    codes, start_s: float, end_s: float, T: int, frame_rate: float, span_len: int
) -> RegionGiven:
    """Given tokens that keep a clip outside ``[start_s, end_s)`` and re-decode inside (inpainting).

    The region is snapped to whole spans (:func:`snap_region`: it grows outwards to span
    boundaries) so that no span is partly given; the snapped seconds are returned. Outside it the
    clip's tokens are given in every codebook. Where the clip is shorter than the output, frames
    past its end are decoded too; so is the clip's last span when the clip ends inside one (the
    given part ends on a span boundary). A region that covers the whole clip leaves nothing given:
    plain generation, said in the note.

    Args:
        codes: ``[B, K, T_clip]`` codes of the clip (:func:`encode_clip`).
        start_s, end_s: the region to re-decode, in seconds from the clip's start.
        T: the run's length in frames (``Engine.frames(config)``).
        frame_rate: the codec's frames per second.
        span_len: the model's span length (``lm.span_len``).
    Raises:
        ValueError: a region of zero length, reversed, or outside the clip.
    """
    codes = _codes(codes)
    start_s = _seconds(start_s, "The region's start")
    end_s = _seconds(end_s, "The region's end")
    B, K, clip_frames = codes.shape
    clip_s = clip_frames / frame_rate
    region = f"The region {_fmt(start_s)}-{_fmt(end_s)} s"
    if end_s == start_s:
        raise ValueError(f"{region} has zero length: choose an end after its start.")
    if end_s < start_s:
        raise ValueError(f"{region} is reversed: its start is after its end.")
    if start_s < 0 or end_s > clip_s + 0.5 / frame_rate:
        raise ValueError(f"{region} is outside the clip (0-{_fmt(clip_s)} s).")
    start, end = snap_region(start_s, end_s, frame_rate, span_len, T)
    if start >= T:
        raise ValueError(f"{region} is past the end of the output ({_fmt(T / frame_rate)} s).")
    clip_frames = min(clip_frames, T)
    kept_end = clip_frames if clip_frames == T else span_len * (clip_frames // span_len)
    tokens = torch.zeros((B, K, T), dtype=torch.long)
    tokens[..., :kept_end] = codes[..., :kept_end]
    mask = torch.zeros((B, K, T), dtype=torch.bool)
    mask[..., :kept_end] = True
    mask[..., start:end] = False
    start_snapped, end_snapped = start / frame_rate, end / frame_rate
    if not mask.any():
        note = PLAIN_GENERATION_NOTE
    elif (start_snapped, end_snapped) != (start_s, end_s):
        note = f"The region was widened to whole spans: {_fmt(start_snapped)}-{_fmt(end_snapped)} s."
    else:
        note = ""
    return RegionGiven(tokens, mask, start_snapped, end_snapped, note)
