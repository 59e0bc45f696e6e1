"""What a hostile visitor sends a studio (``python -m bench.soak --hostile``): crafted audio files,
floods of made-up sessions, the queue skipped, runs at every cap, a second run while one decodes.

Each attack returns the server's answers; :func:`attack_round` runs one of each in turn and raises
when one was served instead of refused, or refused without a readable message.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.space_emulation import GENERATE

#: what a readable refusal is not
UNREADABLE = ("Traceback", "upstream Gradio app has raised an exception", "Error(", "KeyError", "/tmp/")
#: made-up session hashes one flood sends (more than the 64 sessions a server keeps)
FLOOD_CALLS = 70
#: a run at the server's caps: 400 steps of one 10 s sample (work 4000)
MAXIMAL_RUN = {"duration": 10.0, "decoding_steps": "250, 50, 50, 50"}


def wav_header_file(path: Path, channels: int, rate: int, frames: int) -> Path:
    """A 16-bit PCM WAV of silence with any channel count (libsndfile writes at most 1024)."""
    data = frames * channels * 2
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
    )
    path.write_bytes(header + b"data" + struct.pack("<I", data) + bytes(data))
    return path


def _silence(path: Path, channels: int, rate: int, seconds: int, fmt: str, subtype: str) -> Path:
    """Seconds of silence written a tenth of a second at a time (the whole would be gigabytes)."""
    block = np.zeros((rate // 10, channels), np.float32)
    with sf.SoundFile(path, "w", rate, channels, subtype, format=fmt) as out:
        for _ in range(10 * seconds):
            out.write(block)
    return path


def crafted_files(folder: Path) -> list[Path]:
    """The issue's three files: small on disk, huge once decoded with every channel."""
    folder.mkdir(parents=True, exist_ok=True)
    ogg = _silence(folder / "many-channels.ogg", 255, 192_000, 10, "OGG", "VORBIS")
    flac = _silence(folder / "high-rate.flac", 8, 384_000, 5, "FLAC", "PCM_16")
    renamed = wav_header_file(folder / "renamed.m4a", channels=2000, rate=8_000, frames=4_000)  # 16 MB
    return [ogg, flac, renamed]


def _refused(call) -> str:
    """The message of a refused call; RuntimeError when it was served or its message is unreadable."""
    try:
        call()
    except Exception as error:
        message = str(error)
        if any(bad in message for bad in UNREADABLE):
            raise RuntimeError(f"unreadable refusal: {message[:300]}") from None
        return message
    raise RuntimeError("a hostile request was served")


def send_files(client, files: list[Path]) -> list[str]:
    """Each crafted file to /inpaint: each must be refused (after its wait in the queue: the file
    is read when its turn comes)."""
    from gradio_client import handle_file

    answers = []
    for path in files:
        request = {**GENERATE, "audio": handle_file(str(path)), "region_start": 0.0, "region_end": 1.0}
        answers.append(_refused(lambda request=request: client.predict(**request, api_name="/inpaint")))
    return answers


def flood_stops(url: str, tag: str) -> set[str]:
    """:data:`FLOOD_CALLS` calls to /stop, each with a made-up session hash."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:
        replies = {
            http.post("/gradio_api/run/stop", json={"data": [], "session_hash": f"{tag}-{i}"}).json()["data"][
                0
            ]
            for i in range(FLOOD_CALLS)
        }
    if replies != {"Nothing is decoding."}:
        raise RuntimeError(f"a made-up session had something to stop: {replies}")
    return replies


def skip_the_queue(url: str) -> int:
    """A run posted straight to /gradio_api/run/generate: it must not decode."""
    import httpx

    reply = httpx.post(f"{url}gradio_api/run/generate", json={"data": list(GENERATE.values())}, timeout=30)
    if reply.status_code == 200:
        raise RuntimeError("a run skipped the queue")
    return reply.status_code


def maximal_runs(client, seed: int) -> str:
    """A run over the work cap (refused), one at the caps, and a second one from the same session
    while that one waits or decodes (refused). Returns the status of the run at the caps."""
    over = {**GENERATE, "samples": 8, "decoding_steps": "100, 100, 100, 100"}
    _refused(lambda: client.predict(**over, api_name="/generate"))
    job = client.submit(**{**GENERATE, **MAXIMAL_RUN, "seed": seed}, api_name="/generate")
    time.sleep(1.0)  # joined the queue
    _refused(lambda: client.predict(**GENERATE, api_name="/generate"))
    return str(job.result(timeout=900)[0])


def attack_round(client, url: str, files: list[Path], number: int) -> None:
    """One of every attack, in turn."""
    send_files(client, files)
    flood_stops(url, f"flood{number}")
    skip_the_queue(url)
    maximal_runs(client, seed=number)
