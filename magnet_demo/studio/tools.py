"""The studio's tools for assistants: whole runs with plain answers (an audio file, the seed, the
run's summary), served as MCP tools by Gradio (``app.py --mcp``) and as named API endpoints.

A tool runs through the same service as the page: the same checks, limits (work, time, memory,
files) and decoding slot; a refusal is a ``gr.Error`` whose message says what to change. Its
docstring's first paragraph is the tool's description and its ``Args:`` the parameters'.
Every other named endpoint is marked :func:`not_a_tool` (the page's own streams and controls).

Gradio's MCP server sends every assistant's calls through one client, hence one Gradio session:
a tool therefore never uses the caller's session. Each new clip opens a session of its own, named
by an unguessable token; the answer's ``clip`` id (token and run number) is what
``extend_music`` takes, so an assistant reaches its own clips and nobody else's, and two
assistants never wait on each other's "one run per visitor".
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import gradio as gr

from magnet_demo.audio_modes import CONTINUE, REGION
from magnet_demo.controls import DEFAULT_EXTEND_SECONDS, DEFAULT_PREFIX_SECONDS, METHOD_MAGNET
from magnet_demo.form import MAX_SEED, Settings, number, whole
from magnet_demo.incidents import Refusal
from magnet_demo.models import SETTINGS_FIELDS
from magnet_demo.studio.handlers import DemoApp, audio_request, readable

#: the names of the tool endpoints (the API's and the MCP tools')
TOOLS = ("generate_music", "continue_music", "redecode_region", "extend_music")
#: a tool's seed below 0: a random one (the answer says which)
RANDOM_SEED = -1
#: Gradio's MCP server lists a named endpoint as a tool unless its function says otherwise
MCP_TYPE = "_mcp_type"
#: random bytes of a clip's token (hex in its id): 96 bits, not guessable
CLIP_TOKEN_BYTES = 12
#: a clip id: the token of its session, "-", the run's number in it
CLIP_ID = re.compile(rf"([0-9a-f]{{{2 * CLIP_TOKEN_BYTES}}})-([1-9][0-9]{{0,5}})")
#: tool sessions' keys begin so (a caller may name its Gradio session so, but knows no token)
TOOL_KEY_PREFIX = "tool:"


def clip_id(token: str, run_number: int) -> str:
    """The id an answer gives for run ``run_number`` of the tool session ``token``."""
    return f"{token}-{run_number}"


def parse_clip(clip: object) -> tuple[str, int]:
    """(session key, run number) of a clip id; a Refusal for anything else."""
    found = CLIP_ID.fullmatch(str(clip).strip()) if isinstance(clip, str) else None
    if found is None:
        shown = str(clip)[:40]
        raise Refusal(
            f"clip must be the 'clip' of an earlier answer of these tools (like 'a1b2…-1'), not {shown!r}.",
            "Check the clip",
        )
    return TOOL_KEY_PREFIX + found.group(1), int(found.group(2))


def not_a_tool(handler: Callable) -> Callable:
    """Mark ``handler`` (a function or a bound method) as no MCP tool; returns it."""
    setattr(getattr(handler, "__func__", handler), MCP_TYPE, "internal")
    return handler


class Tools:
    """Whole runs for assistants over ``app``'s studio (see the module docstring)."""

    def __init__(self, app: DemoApp):
        self.app = app
        self.studio = app.studio

    def _settings(self, prompt: object, duration: object, seed: object, model: object, **more) -> Settings:
        """The model's recommended settings with the tool's values (checked when the run starts)."""
        name = self.studio.catalog.default_model if model in (None, "") else model
        offer = self.studio.catalog.offer(name, None)
        recommended = {key: getattr(offer.defaults, key) for key in SETTINGS_FIELDS}
        seed = whole(seed, "seed", -1, MAX_SEED)
        return Settings(
            **recommended,
            prompt=prompt,
            model=name,
            duration=offer.duration if duration in (None, "") else duration,
            decoding_steps=offer.steps,
            seed=max(seed, 0),
            random_seed=seed < 0,
            **more,
        )

    def _run(self, settings: Settings, audio=None) -> tuple[str | None, int, dict]:
        """A new clip: a run in a session of its own (see the module docstring)."""
        key = TOOL_KEY_PREFIX + secrets.token_hex(CLIP_TOKEN_BYTES)
        return self._finish(key, self.studio.new_run(key, settings, audio))

    def _finish(self, key: str, start) -> tuple[str | None, int, dict]:
        """Decode a started run of tool session ``key`` to its end: (WAV file, seed, summary with
        the run's ``clip`` id)."""
        decoding = self.studio.decoding(start, readable=(gr.Error,))
        for _ in decoding:
            pass
        run = start.run
        self.studio.write_files_later(decoding, 0)
        wavs = run.wav_files()
        summary = {"clip": clip_id(key.removeprefix(TOOL_KEY_PREFIX), run.number), **run.summary()}
        return (str(wavs[0]) if wavs else None), run.seed, summary

    @readable
    def generate_music(
        self,
        prompt: str,
        duration: float | None = None,
        seed: int = RANDOM_SEED,
        method: str = METHOD_MAGNET,
        model: str = "",
    ) -> tuple[str | None, int, dict]:
        """Generate music (or sound, with a sound model) from a text description with MAGNeT, a masked
        non-autoregressive model that decodes all frames in parallel, codebook by codebook.

        Args:
            prompt: what to hear, in English: genre, instruments, mood, tempo (at most 500 characters).
            duration: seconds of audio (empty for the model's default); longer than the model's window (10 s for the default model) is decoded window after window, up to the server's longest clip (60 s by default).
            seed: the sampler's seed (0 to 2147483647; the same seed and settings give the same audio); -1 for a random one.
            method: 'magnet' (parallel masked decoding), 'hybrid' (the model's autoregressive partner writes the first second, MAGNeT the rest) or 'autoregressive' (the partner writes it all).
            model: the model to use, as the studio lists them; empty for the server's default.
        Returns:
            The WAV file, the seed used, and the run's summary (status, settings, steps done).
        """
        settings = self._settings(
            prompt, duration, seed, model, method=method, prefix_seconds=DEFAULT_PREFIX_SECONDS
        )
        return self._run(settings)

    @readable
    def continue_music(
        self,
        audio: object,
        keep_seconds: float,
        prompt: str,
        duration: float | None = None,
        seed: int = RANDOM_SEED,
        model: str = "",
    ) -> tuple[str | None, int, dict]:
        """Continue a clip: keep its first seconds and let MAGNeT write the rest of the duration.

        Args:
            audio: the clip to continue (an audio file: WAV, FLAC, MP3, OGG; at most 60 s).
            keep_seconds: how many seconds of the clip's start to keep.
            prompt: what the continuation should sound like, in English (at most 500 characters).
            duration: seconds of the whole result, kept part included, at most the model's window; empty for the model's default.
            seed: the sampler's seed (0 to 2147483647); -1 for a random one.
            model: the model to use; empty for the server's default.
        Returns:
            The WAV file, the seed used, and the run's summary.
        """
        settings = self._settings(prompt, duration, seed, model)
        return self._run(settings, audio_request(CONTINUE, audio, keep_seconds))

    @readable
    def redecode_region(
        self,
        audio: object,
        region_start: float,
        region_end: float,
        prompt: str,
        seed: int = RANDOM_SEED,
        model: str = "",
    ) -> tuple[str | None, int, dict]:
        """Re-write a region of a clip: keep the audio outside [region_start, region_end) seconds and
        let MAGNeT write the inside, hearing the kept audio on both sides.

        Args:
            audio: the clip (an audio file: WAV, FLAC, MP3, OGG; at most 60 s; cropped to the model's window).
            region_start: where the region starts, in seconds.
            region_end: where it ends, in seconds (after region_start).
            prompt: what the region should sound like, in English (at most 500 characters).
            seed: the sampler's seed (0 to 2147483647); -1 for a random one.
            model: the model to use; empty for the server's default.
        Returns:
            The WAV file, the seed used, and the run's summary.
        """
        start, end = number(region_start, "region_start"), number(region_end, "region_end")
        settings = self._settings(prompt, None, seed, model)
        return self._run(settings, audio_request(REGION, audio, start=start, end=end))

    @readable
    def extend_music(self, clip: str, seconds: float = DEFAULT_EXTEND_SECONDS):
        """Make a clip longer: continue a clip these tools made by more seconds, window after window,
        with its prompt, seed and settings (the first new window hears the clip's last seconds).

        Args:
            clip: the clip to extend: the 'clip' id of an earlier answer of these tools (generate, continue, re-decode or extend).
            seconds: how many seconds to add; the whole clip may be at most the server's longest clip (60 s by default).
        Returns:
            The WAV file of the whole longer clip, the seed, and the new clip's summary (its own 'clip' id extends it further).
        """
        key, number = parse_clip(clip)
        session = self.studio.sessions.get(key)
        if session is None or number not in (run.number for run in session.runs):
            raise Refusal(
                f"No clip {str(clip).strip()!r} on this server: it was never made here, or the server has "
                "let it go since. Make it again (the same prompt, seed and duration give the same clip).",
                "Check the clip",
            )
        return self._finish(key, self.studio.extend_run(key, number, seconds))
