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

import json
import math
import os
import selectors
import shutil
import subprocess
import time
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
#: sample rates accepted and resampled, in Hz (whole numbers only); a file outside is refused
#: from its header
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 192_000
#: the most channels an array or file may have (they are mixed to mono); more means the array
#: is probably ``[channels, samples]`` instead of ``[samples, channels]``, and a file with more is
#: refused from its header
MAX_CHANNELS = 8
#: bytes of one decoded sample (float32), for :data:`MAX_DECODED_BYTES`
DECODED_SAMPLE_BYTES = 4
#: the most a whole file may take decoded, all channels at its own rate (frames x channels x
#: :data:`DECODED_SAMPLE_BYTES`), checked from its header. It fits 60 s of stereo up to 96 kHz
#: (46 MB), 60 s of 5.1 at 44.1 kHz (63.5 MB) and 30 s of 8 channels at 48 kHz (46 MB); it refuses
#: 60 s of 5.1 at 48 kHz (69 MB), 60 s of 8 channels at 48 kHz (92 MB) and the largest file the
#: other limits allow, 60 s of 8 channels at 192 kHz (369 MB). Only the run's span is read, a block
#: at a time, so a read holds far less than this (see :func:`read_audio`).
MAX_DECODED_BYTES = 64_000_000
#: frames read from a file at a time, every channel (65536 x 8 x 4 B = 2 MB at most)
READ_BLOCK_FRAMES = 65_536
#: the resampler's quality (soxr, the resampler librosa uses)
RESAMPLE_QUALITY = "HQ"
#: file extensions that soundfile reads itself; a file with one of them that soundfile cannot
#: open is broken, and other extensions (m4a, aac, webm, ...) are decoded with ffmpeg when the
#: server has it (soundfile reads by content: a WAV named ``.m4a`` is still read as a WAV)
SOUNDFILE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "au", "caf", "w64", "rf64"}
)
#: the formats the server reads itself, named in refusals
READABLE_FORMATS = "WAV, FLAC, OGG or MP3"
#: the most seconds ffmpeg may take to decode a file, and ffprobe to read its header; past it
#: they are killed and the file refused
FFMPEG_TIMEOUT_SECONDS = 20.0
FFPROBE_TIMEOUT_SECONDS = 10.0
#: the most bytes of ffprobe's answer read (a header is a few hundred bytes)
FFPROBE_MAX_BYTES = 64_000
#: seconds of output allowed past what ffmpeg was asked for (its resampler's and decoders' edges),
#: beyond which it is killed
FFMPEG_SLACK_SECONDS = 1.0
#: bytes read from a pipe at a time
PIPE_READ_BYTES = 65_536
#: the only demuxers ffmpeg and ffprobe may use (``-format_whitelist``): audio containers, and no
#: playlist or list format (hls, concat, ...) that opens other files or addresses
FFMPEG_FORMATS = "mov,matroska,webm,aac,asf,ac3,eac3,amr,wv,ape,tta,mpc,mpc8,wav,w64,mp3,ogg,flac,aiff,caf,au"
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


def _check_header(name: str, channels: int, rate, frames: int | None) -> int:
    """Refuse a file from its header alone, before any sample is decoded; its rate as an int Hz.

    Args:
        name: the file's base name (refusals name it, never its folder).
        channels, rate: the header's; ``frames``: its length in frames, None when it has none.
    Raises:
        ValueError: no channel or more than :data:`MAX_CHANNELS`; a rate :func:`check_sample_rate`
            refuses; longer than :data:`MAX_UPLOAD_SECONDS`; over :data:`MAX_DECODED_BYTES` decoded.
    """
    if channels < 1:
        raise ValueError(f"'{name}' has no audio channel.")
    if channels > MAX_CHANNELS:
        raise ValueError(f"'{name}' has {channels} channels; at most {MAX_CHANNELS} are accepted.")
    rate = check_sample_rate(rate, f"The sample rate of '{name}'")
    if frames is None:
        return rate
    if frames / rate > MAX_UPLOAD_SECONDS:
        raise _too_long(frames / rate)
    decoded = frames * channels * DECODED_SAMPLE_BYTES
    if decoded > MAX_DECODED_BYTES:
        raise ValueError(
            f"'{name}' is too big once decoded: {decoded / 1e6:.0f} MB ({_fmt(frames / rate)} s, "
            f"{channels} channels at {rate} Hz); at most {MAX_DECODED_BYTES / 1e6:.0f} MB is accepted. "
            "Use fewer channels, a lower sample rate or a shorter clip."
        )
    return rate


def _as_float(samples: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1] (integer PCM is scaled, as soundfile and browsers store it)."""
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind == "i":  # float32 all along: a power-of-two scale is exact
        audio = samples.astype(np.float32)
        audio /= np.float32(-np.iinfo(samples.dtype).min)
        return audio
    if samples.dtype.kind == "u":
        middle = (float(np.iinfo(samples.dtype).max) + 1) / 2
        return ((samples - middle) / middle).astype(np.float32)
    raise ValueError(f"Audio samples must be numbers, got {samples.dtype}.")


def _check_layout(samples: np.ndarray) -> None:
    """Refuse anything but ``[samples]`` or ``[samples, channels]`` with at most :data:`MAX_CHANNELS`
    channels (from the shape alone: before any conversion of a big array)."""
    if samples.ndim == 1:
        return
    if samples.ndim != 2 or samples.shape[1] > MAX_CHANNELS:
        raise ValueError(
            f"Audio must be [samples] or [samples, channels] with at most {MAX_CHANNELS} channels, "
            f"got shape {list(samples.shape)}."
        )


def _mono(samples: np.ndarray) -> np.ndarray:
    """``[samples]`` or ``[samples, channels]`` -> ``[samples]`` (the channels' mean)."""
    _check_layout(samples)
    return samples if samples.ndim == 1 else samples.mean(axis=1)


def _fmt(seconds: float) -> str:
    """Seconds for people: at most 2 decimals, no trailing zeros (``1.5``, ``2``, ``0.06``)."""
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def _too_long(seconds: float, *, at_least: bool = False) -> ValueError:
    length = f"over {seconds:.1f} s" if at_least else f"{seconds:.1f} s"
    return ValueError(
        f"The audio is {length} long; the longest upload is {MAX_UPLOAD_SECONDS:g} s: cut it shorter first."
    )


def resample(audio: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """``[samples]`` float32 at ``source_rate`` -> ``[samples']`` float32 at ``sample_rate`` (soxr)."""
    if source_rate == sample_rate:
        return audio
    import soxr  # librosa's resampler; imported here, only when needed

    resampled = soxr.resample(audio, source_rate, sample_rate, quality=RESAMPLE_QUALITY)
    return resampled.astype(np.float32, copy=False)


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
            cannot be resampled, non-finite samples, a bad shape (refused before any conversion)
            or dtype.
    """
    source_rate = check_sample_rate(source_rate)
    sample_rate = check_sample_rate(sample_rate, "The model's sample rate")
    samples = np.asarray(samples)
    if samples.size == 0:
        raise ValueError("The audio is empty: it has no samples.")
    _check_layout(samples)
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


def _read_mono(sound: sf.SoundFile, frames: int) -> np.ndarray:
    """The next ``frames`` of an open file mixed to mono as they are read, a block of at most
    :data:`READ_BLOCK_FRAMES` frames (every channel) at a time.

    Returns ``[n]`` float32, the channels' mean, ``n <= frames`` (less when the file ends sooner
    than its header says). Holds the ``[frames]`` result and one ``[block, channels]`` block.
    """
    mono = np.empty(frames, np.float32)
    block = np.empty((min(frames, READ_BLOCK_FRAMES), sound.channels), np.float32)
    done = 0
    while done < frames:
        want = min(len(block), frames - done)
        got = len(sound.read(want, dtype="float32", always_2d=True, out=block[:want]))
        if got == 0:
            break
        np.mean(block[:got], axis=1, out=mono[done : done + got])
        done += got
    return mono[:done]


def _read_with_soundfile(
    sound: sf.SoundFile, name: str, sample_rate: int, *, max_seconds: float, min_seconds: float
) -> AudioClip:
    """An open file -> an :class:`AudioClip`: its header checked (:func:`_check_header`), then only
    the first ``max_seconds`` read, mixed to mono a block at a time (:func:`_read_mono`)."""
    if sound.frames <= 0:
        raise ValueError(f"'{name}' is empty: it has no samples.")
    rate = _check_header(name, sound.channels, sound.samplerate, sound.frames)
    span = min(sound.frames, max(1, round(max_seconds * rate)))
    try:
        mono = _read_mono(sound, span)
    except sf.SoundFileError:
        raise ValueError(f"Could not read '{name}': the file is damaged.") from None
    return prepare_audio(
        mono,
        rate,
        sample_rate,
        max_seconds=max_seconds,
        min_seconds=min_seconds,
        source_seconds=sound.frames / rate,
    )


class _Run(NamedTuple):
    """What :func:`_run_bounded` returns: the command's stdout, its exit status (None when it could
    not start) and why it was stopped ("" when it ended by itself, "time", "size" or "start")."""

    output: bytearray
    returncode: int | None
    stopped: str


def _run_bounded(command: list[str], max_bytes: int, timeout: float) -> _Run:
    """Run ``command`` with no input, reading its stdout as it comes (stderr is dropped); it is
    killed once it has run ``timeout`` seconds or written more than ``max_bytes`` (so at most
    ``max_bytes + PIPE_READ_BYTES`` are ever held)."""
    deadline = time.monotonic() + timeout
    output, stopped = bytearray(), ""
    pipes = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        process = subprocess.Popen(command, **pipes)
    except OSError:
        return _Run(output, None, "start")
    with process, selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                stopped = "time"
            elif selector.select(left):
                chunk = os.read(process.stdout.fileno(), PIPE_READ_BYTES)
                if not chunk:
                    break
                output += chunk
                if len(output) > max_bytes:
                    stopped = "size"
        if not stopped:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stopped = "time"
        if stopped:
            process.kill()
    return _Run(output, process.returncode, stopped)


def _ffmpeg_input(path: Path) -> list[str]:
    """ffmpeg's and ffprobe's input options and input for ``path``: local files only, read only by
    the demuxers of :data:`FFMPEG_FORMATS` (a name such as ``http:...`` stays a file name)."""
    whitelists = ["-protocol_whitelist", "file", "-format_whitelist", FFMPEG_FORMATS]
    return [*whitelists, "-i", f"file:{path.absolute()}"]


def _invalid_file(path: Path) -> ValueError:
    """A file whose extension soundfile claims but whose content it cannot read."""
    return ValueError(
        f"Could not read '{path.name}': it is not a valid {path.suffix.lstrip('.').upper()} file."
    )


def _no_decoder(path: Path) -> ValueError:
    """A format only ffmpeg reads, on a server without ffmpeg."""
    kind = f"'{path.suffix.lower()}'" if path.suffix else "extension-less"
    return ValueError(
        f"Could not read '{path.name}': this server cannot decode {kind} files; use {READABLE_FORMATS}."
    )


def _undecodable(name: str) -> ValueError:
    return ValueError(
        f"Could not read '{name}': it is not an audio file this server can decode. Use {READABLE_FORMATS}."
    )


def _positive(value) -> float | None:
    """ffprobe's number (a string, "N/A" or missing) as a float, None unless finite and above 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _probe(path: Path) -> float | None:
    """Check the header of a file for ffmpeg with ffprobe (:func:`_check_header`), decoding none
    of its audio; its length in seconds, None when ffprobe is missing or the header has none."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    entries = "stream=channels,sample_rate,duration:format=duration"
    command = [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", entries, "-of", "json"]
    run = _run_bounded([*command, *_ffmpeg_input(path)], FFPROBE_MAX_BYTES, FFPROBE_TIMEOUT_SECONDS)
    try:
        if run.stopped or run.returncode != 0:
            raise ValueError(run.stopped)
        header = json.loads(run.output)
        stream = header["streams"][0]
        channels, rate = int(stream["channels"]), int(stream["sample_rate"])
        seconds = _positive(stream.get("duration")) or _positive(header.get("format", {}).get("duration"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise _undecodable(path.name) from None
    frames = None if seconds is None or rate <= 0 else math.ceil(seconds * rate - 1e-6)
    _check_header(path.name, channels, rate, frames)
    return seconds


def _read_with_ffmpeg(path: Path, sample_rate: int, *, max_seconds: float, min_seconds: float) -> AudioClip:
    """A format soundfile cannot read -> an :class:`AudioClip`, decoded by ffmpeg to mono float32 at
    ``sample_rate``: its header checked first (:func:`_probe`), only the first ``max_seconds``
    decoded (up to just past :data:`MAX_UPLOAD_SECONDS` when the header has no length), within
    :data:`FFMPEG_TIMEOUT_SECONDS` and that many seconds' bytes (+ :data:`FFMPEG_SLACK_SECONDS`)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise _no_decoder(path)
    sample_rate = check_sample_rate(sample_rate, "The model's sample rate")
    source_seconds = _probe(path)
    seconds = MAX_UPLOAD_SECONDS + FFMPEG_SLACK_SECONDS
    if source_seconds is not None:
        seconds = min(seconds, max_seconds)
    output = ["-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    command = [ffmpeg, "-nostdin", "-v", "error", "-t", f"{seconds:.6f}", *_ffmpeg_input(path), *output]
    max_bytes = math.ceil((seconds + FFMPEG_SLACK_SECONDS) * sample_rate) * DECODED_SAMPLE_BYTES
    run = _run_bounded(command, max_bytes, FFMPEG_TIMEOUT_SECONDS)
    if run.stopped == "time":
        raise ValueError(
            f"Decoding '{path.name}' took more than {FFMPEG_TIMEOUT_SECONDS:g} s and was stopped. "
            f"Use {READABLE_FORMATS}."
        )
    if run.stopped == "size":
        raise ValueError(f"'{path.name}' decodes to more audio than its length: it was stopped.")
    if run.stopped or run.returncode != 0:
        raise _undecodable(path.name)
    samples = np.frombuffer(run.output, dtype="<f4", count=len(run.output) // DECODED_SAMPLE_BYTES)
    if source_seconds is None and len(samples) > MAX_UPLOAD_SECONDS * sample_rate:
        raise _too_long(MAX_UPLOAD_SECONDS, at_least=True)
    return prepare_audio(
        samples.astype(np.float32, copy=False),
        sample_rate,
        sample_rate,
        max_seconds=max_seconds,
        min_seconds=min_seconds,
        source_seconds=source_seconds,
    )


def check_audio_file(path: str | os.PathLike) -> None:
    """Refuse a file from its header alone, as :func:`read_audio` would, reading no sample: what a
    server checks before a run with the file joins the queue. ValueError with a readable message."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"'{path.name}' is missing or empty.")
    try:
        with sf.SoundFile(str(path)) as sound:
            _check_header(path.name, sound.channels, sound.samplerate, sound.frames)
            return
    except sf.SoundFileError:
        pass
    if path.suffix.lower().lstrip(".") in SOUNDFILE_EXTENSIONS:
        raise _invalid_file(path)
    if shutil.which("ffmpeg") is None:
        raise _no_decoder(path)
    _probe(path)


def read_audio(
    path: str | os.PathLike, sample_rate: int, *, max_seconds: float, min_seconds: float = 0.0
) -> AudioClip:
    """An audio file -> an :class:`AudioClip` (mono float32 at ``sample_rate``, at most ``max_seconds``).

    Every file is first refused or accepted from its header alone (:func:`_check_header`: channels,
    sample rate, length and decoded size). WAV, FLAC, OGG and MP3 (whatever their name: soundfile
    reads by content) are then read with soundfile, only the first ``max_seconds``, a block at a
    time mixed to mono: a read holds the mono span at the file's rate, one block of every channel
    (:data:`READ_BLOCK_FRAMES`) and the resampled clip. Other formats are decoded by ffmpeg when the
    server has it (:func:`_read_with_ffmpeg`), else refused. See :func:`prepare_audio` for
    ``min_seconds`` and the other refusals (ValueError; messages name the file, never its folder).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No audio file '{path.name}': it is missing or not a file.")
    if path.stat().st_size == 0:
        raise ValueError(f"'{path.name}' is empty.")
    try:
        sound = sf.SoundFile(str(path))  # opening reads the header, no sample
    except sf.SoundFileError:
        if path.suffix.lower().lstrip(".") in SOUNDFILE_EXTENSIONS:
            raise _invalid_file(path) from None
        return _read_with_ffmpeg(path, sample_rate, max_seconds=max_seconds, min_seconds=min_seconds)
    with sound:
        return _read_with_soundfile(
            sound, path.name, sample_rate, max_seconds=max_seconds, min_seconds=min_seconds
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
