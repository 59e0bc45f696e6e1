"""Hostile uploads: files built to cost the server memory or time are refused from their header,
before any sample is decoded, and an accepted file is read a block at a time, mixed to mono as it
goes. Peak memory is the rise of the resident set of a forked child (``peak_memory``), which sees
libsndfile's and the codecs' C buffers as well as numpy's arrays."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from peak_memory import measure

from magnet_demo import audio_in

RATE = 32000  # the tiny model's codec
MB = 1_000_000
#: the most a refusal from the header may cost: opening the file (libvorbis sets up its 255
#: channels' buffers, about 3 MB) and the pages of the code it runs; decoding 0.5 s of the 255
#: channels at 192 kHz would take 98 MB
HEADER_BOUND = 20 * MB
#: seconds of the 255-channel Vorbis file: encoding 255 channels at 192 kHz runs at about a fifth of
#: real time here, so 10 s (the file of the report, +1.9 GB on a full read) would take 35 s to build;
#: 0.5 s already costs 98 MB decoded
VORBIS_SECONDS = 0.5
#: the 2000-channel WAV: 0.5 s at 8 kHz (16 MB of 16-bit PCM)
WIDE_WAV_CHANNELS, WIDE_WAV_RATE, WIDE_WAV_FRAMES = 2000, 8000, 4000
#: an accepted file at the edge: 8 channels at 48 kHz, 30 s, read for a 10 s run
EDGE_CHANNELS, EDGE_RATE, EDGE_SECONDS, RUN_SECONDS = 8, 48000, 30.0, 10.0
FAST_REFUSAL_SECONDS = 1.0

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe"
)


def _noise(frames: int, channels: int, scale: float, seed: int = 0) -> np.ndarray:
    """``[frames, channels]`` float32 Gaussian noise of standard deviation ``scale``."""
    return (scale * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def _wav_header(channels: int, rate: int, frames: int) -> bytes:
    """A 16-bit PCM WAV header written by hand: libsndfile writes at most 1024 channels."""
    block = 2 * channels
    data = frames * block
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", data))
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The crafted files, built once: a 255-channel 192 kHz Ogg Vorbis of near-silence, an
    8-channel 384 kHz FLAC and a 2000-channel WAV renamed ``.m4a``."""
    folder = tmp_path_factory.mktemp("hostile")
    block = _noise(19200, 255, 1e-4)  # 0.1 s
    with sf.SoundFile(folder / "wide.ogg", "w", 192000, 255, format="OGG", subtype="VORBIS") as vorbis:
        for _ in range(round(VORBIS_SECONDS / 0.1)):
            vorbis.write(block)
    sf.write(folder / "fast.flac", _noise(384000, 8, 0.1), 384000)
    with open(folder / "many.m4a", "wb") as wav:
        wav.write(_wav_header(WIDE_WAV_CHANNELS, WIDE_WAV_RATE, WIDE_WAV_FRAMES))
        wav.write(bytes(2 * WIDE_WAV_CHANNELS * WIDE_WAV_FRAMES))
    return folder


def _read(path, sample_rate=RATE, max_seconds=RUN_SECONDS):
    """read_audio, returning only the clip's shape (what the measuring child sends back)."""
    return lambda: audio_in.read_audio(path, sample_rate, max_seconds=max_seconds).audio.shape


def test_a_255_channel_vorbis_is_refused_from_its_header(hostile):
    path = hostile / "wide.ogg"
    info = sf.info(str(path))
    assert (info.channels, info.samplerate, info.frames) == (255, 192000, round(VORBIS_SECONDS * 192000))
    peak = measure(_read(path))
    assert peak.rise < HEADER_BOUND, f"{peak.rise / MB:.1f} MB"
    assert peak.error == "'wide.ogg' has 255 channels; at most 8 are accepted."


def test_an_8_channel_384_khz_flac_is_refused_from_its_header(hostile):
    peak = measure(_read(hostile / "fast.flac"))
    assert peak.error == (
        "The sample rate of 'fast.flac' (384000 Hz) cannot be resampled: it must be a whole number "
        f"of Hz from 1000 to {audio_in.MAX_SAMPLE_RATE}."
    )
    assert audio_in.MAX_SAMPLE_RATE == 192_000
    assert peak.rise < HEADER_BOUND, f"{peak.rise / MB:.1f} MB"


@pytest.mark.parametrize("decoder", [pytest.param("ffmpeg", marks=needs_ffmpeg), "none"])
def test_a_2000_channel_wav_named_m4a_is_refused_quickly(hostile, monkeypatch, decoder):
    """libsndfile opens at most 1024 channels, so the file goes to ffmpeg's path: ffprobe refuses
    it (its decoders take at most 64 channels), or, without ffmpeg, the server says it cannot."""
    if decoder == "none":
        monkeypatch.setattr(shutil, "which", lambda name: None)
        message = (
            "Could not read 'many.m4a': this server cannot decode '.m4a' files; use WAV, FLAC, OGG or MP3."
        )
    else:
        message = "Could not read 'many.m4a': it is not an audio file this server can decode. Use WAV, FLAC, OGG or MP3."
    peak = measure(_read(hostile / "many.m4a"))
    assert peak.seconds < FAST_REFUSAL_SECONDS and peak.rise < HEADER_BOUND, (peak.seconds, peak.rise / MB)
    assert peak.error == message


def test_a_wav_named_m4a_is_read_by_its_content(tmp_path, monkeypatch):
    """Up to libsndfile's 1024 channels a WAV is a WAV whatever its name: soundfile's header is
    checked and ffmpeg is never asked."""
    monkeypatch.setattr(shutil, "which", lambda name: pytest.fail("ffmpeg was asked"))
    (tmp_path / "wide.m4a").write_bytes(_wav_header(1000, 8000, 100) + bytes(2 * 1000 * 100))
    with pytest.raises(ValueError) as refusal:
        audio_in.read_audio(tmp_path / "wide.m4a", RATE, max_seconds=1)
    assert str(refusal.value) == "'wide.m4a' has 1000 channels; at most 8 are accepted."


@pytest.fixture(scope="module")
def edge_file(tmp_path_factory):
    """An 8-channel 48 kHz 16-bit WAV of 30 s (46 MB decoded: within MAX_DECODED_BYTES)."""
    path = tmp_path_factory.mktemp("edge") / "edge.wav"
    pcm = np.random.default_rng(1).integers(-20000, 20000, (round(EDGE_SECONDS * EDGE_RATE), EDGE_CHANNELS))
    sf.write(path, pcm.astype(np.int16), EDGE_RATE, subtype="PCM_16")
    return path


def test_an_accepted_edge_file_is_read_in_blocks_within_a_small_multiple_of_its_mono_span(edge_file):
    span = round(RUN_SECONDS * EDGE_RATE)
    mono_bytes = span * 4
    block_bytes = audio_in.READ_BLOCK_FRAMES * EDGE_CHANNELS * 4
    # 11.7 MB: the read holds the mono span and a block (4.2 MB measured alone, 8.1 MB once on a busy
    # machine); reading every channel of the span, as before, needs 15.4 MB at the least (19.9 measured)
    bound = 5 * mono_bytes + block_bytes
    peak = measure(_read(edge_file), warm_up=True)  # its data only, not the code it runs
    assert peak.error is None and peak.value == (round(RUN_SECONDS * RATE),)
    assert peak.rise < bound, f"{peak.rise / MB:.1f} MB"

    clip = audio_in.read_audio(edge_file, EDGE_RATE, max_seconds=RUN_SECONDS)
    reference, _ = sf.read(edge_file, frames=span, dtype="float32", always_2d=True)
    assert clip.audio.dtype == np.float32 and np.array_equal(clip.audio, reference.mean(axis=1))
    assert (clip.source_seconds, clip.note) == (EDGE_SECONDS, "Used the first 10 s of the 30 s audio.")


def test_the_decoded_size_budget(edge_file, monkeypatch):
    assert 60 * 8 * 192_000 * 4 > audio_in.MAX_DECODED_BYTES >= 60 * 2 * 48_000 * 4
    monkeypatch.setattr(audio_in, "MAX_DECODED_BYTES", 40_000_000)
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("the file was decoded"))
    with pytest.raises(ValueError) as refusal:
        audio_in.read_audio(edge_file, RATE, max_seconds=RUN_SECONDS)
    assert str(refusal.value) == (
        "'edge.wav' is too big once decoded: 46 MB (30 s, 8 channels at 48000 Hz); at most 40 MB is "
        "accepted. Use fewer channels, a lower sample rate or a shorter clip."
    )


# ---------------------------------------------------------------------------------------------
# formats soundfile cannot read: one bounded path through ffmpeg


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def m4a(tmp_path_factory):
    """A 1.5 s stereo AAC in MP4 (a 330 Hz sine, amplitude 1/8) built with ffmpeg."""
    path = tmp_path_factory.mktemp("ffmpeg") / "tone.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:duration=1.5:sample_rate=44100", "-ac", "2", str(path))
    return path


@needs_ffmpeg
@pytest.mark.parametrize("probe", ["ffprobe", "no ffprobe"])
def test_other_formats_are_decoded_by_ffmpeg(m4a, monkeypatch, probe):
    if probe == "no ffprobe":  # no header: decoded up to just past the cap, its length measured
        which = shutil.which
        monkeypatch.setattr(shutil, "which", lambda name: None if name == "ffprobe" else which(name))
    clip = audio_in.read_audio(m4a, RATE, max_seconds=1.0)
    assert clip.audio.shape == (RATE,) and clip.audio.dtype == np.float32
    assert clip.source_seconds == pytest.approx(1.5, abs=0.05) and clip.note.startswith("Used the first 1 s")
    rms = float(np.sqrt(np.mean(clip.audio[RATE // 10 :] ** 2)))
    assert rms == pytest.approx(0.125 / np.sqrt(2), rel=0.05)


def _mka(folder, name, samples, rate):
    """A Matroska file of 16-bit PCM (a container soundfile does not read)."""
    sf.write(folder / "source.wav", samples, rate, subtype="PCM_16")
    _ffmpeg("-i", str(folder / "source.wav"), "-c:a", "pcm_s16le", str(folder / name))
    return folder / name


@needs_ffmpeg
@pytest.mark.parametrize(
    "name, channels, rate, frames, message",
    [
        ("wide.mka", 16, 8000, 800, "'wide.mka' has 16 channels; at most 8 are accepted."),
        ("fast.mka", 1, 384000, 3840, r"The sample rate of 'fast.mka' \(384000 Hz\) cannot be resampled"),
        ("long.mka", 1, 1000, 61000, "The audio is 61.0 s long; the longest upload is 60 s"),
    ],
)
def test_ffprobe_refuses_from_the_header(tmp_path, monkeypatch, name, channels, rate, frames, message):
    path = _mka(tmp_path, name, np.zeros((frames, channels), np.int16), rate)
    ran = []
    run = audio_in._run_bounded
    monkeypatch.setattr(
        audio_in, "_run_bounded", lambda command, *a: ran.append(command[0]) or run(command, *a)
    )
    with pytest.raises(ValueError, match=message):
        audio_in.read_audio(path, RATE, max_seconds=10)
    assert ran == [shutil.which("ffprobe")]  # ffmpeg never ran


@needs_ffmpeg
@pytest.mark.parametrize(
    "listing",
    ["ffconcat version 1.0\nfile source.wav\n", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\nsource.aac\n"],
    ids=["concat", "hls"],
)
def test_lists_that_open_other_files_are_refused(tmp_path, listing):
    """A concat list or HLS playlist named ``.m4a`` would make ffmpeg read other files; only the
    demuxers of FFMPEG_FORMATS may open an upload."""
    sf.write(tmp_path / "source.wav", _noise(8000, 1, 0.1), 8000)
    _ffmpeg("-i", str(tmp_path / "source.wav"), str(tmp_path / "source.aac"))
    (tmp_path / "list.m4a").write_text(listing)
    with pytest.raises(ValueError, match="Could not read 'list.m4a': it is not an audio file this server"):
        audio_in.read_audio(tmp_path / "list.m4a", RATE, max_seconds=1)


def test_without_ffmpeg_other_formats_are_refused_readably(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    (tmp_path / "song.m4a").write_bytes(b"\0\0\0\x20ftypM4A " + bytes(4000))
    (tmp_path / "song").write_bytes(bytes(4000))
    with pytest.raises(ValueError) as refusal:
        audio_in.read_audio(tmp_path / "song.m4a", RATE, max_seconds=1)
    assert str(refusal.value) == (
        "Could not read 'song.m4a': this server cannot decode '.m4a' files; use WAV, FLAC, OGG or MP3."
    )
    with pytest.raises(ValueError, match="this server cannot decode extension-less files"):
        audio_in.read_audio(tmp_path / "song", RATE, max_seconds=1)


def test_a_decoder_is_killed_past_its_output_or_time_limit():
    flood = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(bytes(10**8))"]
    run = audio_in._run_bounded(flood, 100_000, 30.0)
    assert run.stopped == "size" and len(run.output) <= 100_000 + audio_in.PIPE_READ_BYTES
    start = time.monotonic()
    run = audio_in._run_bounded([sys.executable, "-c", "import time; time.sleep(60)"], 1000, 0.5)
    assert run.stopped == "time" and time.monotonic() - start < 10
    done = audio_in._run_bounded([sys.executable, "-c", "print('ok')"], 1000, 30.0)
    assert (done.stopped, done.returncode, bytes(done.output).strip()) == ("", 0, b"ok")
    assert audio_in._run_bounded(["/nonexistent/decoder"], 1000, 1.0).stopped == "start"
