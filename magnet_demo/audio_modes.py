"""The studio's three modes: generate from nothing, continue a clip, re-decode a region of one.

An :class:`AudioRequest` is what a visitor asked for (the mode, the audio, the seconds to keep or
the region), checked; :meth:`AudioRequest.given` turns it into the given tokens of a run with
:mod:`magnet_demo.audio_in`. No Gradio here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from magnet_demo import audio_in
from magnet_demo.controls import DecodingConfig
from magnet_demo.form import number
from magnet_demo.models import LoadedModel

GENERATE, CONTINUE, REGION = "generate", "continue", "re-decode region"
MODES = (GENERATE, CONTINUE, REGION)
#: the defaults of the page's controls
DEFAULT_KEEP_SECONDS = 3.0
DEFAULT_REGION = (4.0, 6.0)


@dataclass(frozen=True)
class Given:
    """The given tokens of a run.

    Attributes:
        tokens: ``[1, K, T]`` int64 codes of the input audio (0 where nothing is given).
        mask: ``[1, K, T]`` bool, True where a token is given (never masked).
        notes: sentences for people (cropping, snapping, plain generation).
        source: one line saying what the run does with which audio.
    """

    tokens: np.ndarray
    mask: np.ndarray
    notes: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class AudioRequest:
    """A continuation or region request. ``audio`` is a file path, or ``(samples, sample_rate)``
    with ``samples`` ``[n]`` or ``[n, channels]`` (an earlier run's audio); ``name`` says which
    audio it is, for people."""

    mode: str
    audio: str | os.PathLike | tuple[np.ndarray, int]
    name: str
    keep_seconds: float = DEFAULT_KEEP_SECONDS
    region: tuple[float, float] = DEFAULT_REGION

    @classmethod
    def checked(cls, mode: object, audio, name: str, keep: object, start: object, end: object):
        """A request from the page's raw values (ValueError with a readable message), or None for
        mode 'generate'."""
        if mode in (None, "", GENERATE):
            return None
        if mode not in MODES:
            raise ValueError(f"Unknown mode '{mode}': choose one of {', '.join(MODES)}.")
        if audio is None:
            raise ValueError(f"Mode '{mode}' needs audio: upload a file, record one, or use a run's audio.")
        limit = audio_in.MAX_UPLOAD_SECONDS
        if mode == CONTINUE:
            return cls(mode, audio, name, keep_seconds=number(keep, "Seconds to keep", 0, limit))
        region = (number(start, "Region start", 0, limit), number(end, "Region end", 0, limit))
        return cls(mode, audio, name, region=region)

    def given(self, model: LoadedModel, config: DecodingConfig) -> Given:
        """Read and encode the audio with ``model``'s codec; the given tokens of a run of ``config``.

        A continuation encodes only the kept seconds (as audiocraft's ``generate_continuation``:
        the codec looks ahead, so codes near the cut would otherwise depend on what follows).
        """
        T, rate = model.frames(config), model.frame_rate
        seconds = min(self.keep_seconds, config.duration) if self.mode == CONTINUE else config.duration
        if isinstance(self.audio, tuple):
            samples, source_rate = self.audio
            codes, note = audio_in.audio_codes(model, samples, duration=seconds, source_rate=source_rate)
        else:
            codes, note = audio_in.audio_codes(model, self.audio, duration=seconds)
        notes = [note] if note and self.mode != CONTINUE else []
        if self.mode == CONTINUE:
            tokens, mask = audio_in.continuation_given(codes, self.keep_seconds, T, rate)
            source = f"continues the first {self.keep_seconds:g} s of {self.name}"
        else:
            region = audio_in.region_given(codes, *self.region, T, rate, int(model.lm.span_len))
            tokens, mask = region.tokens, region.mask
            notes += [region.note] if region.note else []
            source = f"re-decodes {region.start_s:g}-{region.end_s:g} s of {self.name}"
        return Given(
            tokens=tokens.numpy().astype(np.int64),
            mask=mask.numpy().astype(bool),
            notes=tuple(notes),
            source=source,
        )
