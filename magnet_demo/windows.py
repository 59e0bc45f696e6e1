"""Clips longer than the model's window: the arithmetic of their windows (issue #28).

A model decodes at most its training window (:attr:`~magnet_demo.models.LoadedModel.max_duration`).
Like MusicGen's ``extend_stride``, a longer clip is cut into windows of that length that overlap:
window 0 is a plain run; every later window is a continuation (``prompt_tokens``, audiocraft's
``prompt``) of the last ``overlap`` frames of the window before, which it keeps bit for bit and
decodes only the frames after them. The codec decodes the whole token sequence once, at the end.

- :class:`Window` and :func:`plan_windows` (frames) / :func:`plan_seconds` (seconds) are pure
  arithmetic: which frames of the long clip each window covers and takes from the one before.
- :func:`assemble_tokens` puts the windows' final tokens together into ``[B, K, total_frames]``.

The decoding itself is :func:`magnet_demo.clips.clip_steps` (every method, the studio's loop) and,
for MAGNeT clips as a library call, :class:`magnet_demo.windowed.WindowedEngine`.

Frames and spans: with the 'nonoverlap' arrangement the engine cuts a run's frames to a multiple of
``span_len`` (its unit of masking), so every window's length and overlap are whole units: then every
window, the last (shorter) one too, decodes exactly the frames planned, and a window's given prefix
is whole chunks (no chunk partly given). With 'stride1' (or a span of 1) the unit is one frame.

Seeds: window ``n`` of a run with seed ``s`` is seeded with ``s + n`` (:func:`window_seed`), so

- window 0 is the plain run of that seed, bit for bit (a one-window clip is an ordinary run);
- each window is reproducible on its own: ``Engine.steps(prompts, config, seed=s + n,
  prompt_tokens=<the previous window's last overlap frames>)`` repeats window ``n``, whatever the
  earlier windows' step counts or settings were (carrying one generator across windows would tie it
  to all of them);
- windows do not share a random stream: with one seed for all, windows without overlap (or with
  the same context) would draw the same numbers and could repeat each other.

The cost: window ``n`` of seed ``s`` draws the stream of window 0 of seed ``s + n``. They decode
different contexts (one continues a clip, the other starts from nothing), so their tokens differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from magnet_demo import spans

#: the default overlap, as a share of the window (MusicGen's 30 s clips overlap 12 of 30 s windows;
#: half gives each new window as much context as it decodes)
DEFAULT_OVERLAP_SHARE = 0.5
#: float slack when seconds are turned into frames (0.29 s * 100 Hz is 28.999...)
FRAME_SLACK = 1e-9


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number of frames, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be at least {low} frame{'s' if low != 1 else ''}, got {value}.")
    return int(value)


def check_seconds(name: str, value, low: float = 0.0, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}.")
    if value < low or (strict and value == low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g} s, got {value:g} s.")
    return float(value)


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of the long clip that one window decodes.

    Its first ``given`` frames are the last ``given`` frames of the window before (kept as they
    are: the run continues them); the frames ``[new_start, stop)`` are decoded fresh. Window 0 has
    none given. ``index`` counts from 0.
    """

    index: int
    start: int
    stop: int
    given: int

    def __post_init__(self):
        _check_int("Window.index", self.index, 0)
        _check_int("Window.start", self.start, 0)
        _check_int("Window.given", self.given, 0)
        _check_int("Window.stop", self.stop, 1)
        if self.stop <= self.start + self.given:
            raise ValueError(
                f"Window {self.index} [{self.start}, {self.stop}) with {self.given} given frames has "
                f"no new frame: its stop must be after start + given."
            )

    @property
    def frames(self) -> int:
        """Frames the window's run decodes (its canvas ``T``), given ones included."""
        return self.stop - self.start

    @property
    def new_start(self) -> int:
        """The first frame of the clip this window decodes fresh."""
        return self.start + self.given

    @property
    def new_frames(self) -> int:
        return self.stop - self.new_start


def plan_windows(
    total_frames: int,
    window_frames: int,
    overlap_frames: int,
    span_len: int = 1,
    *,
    head_frames: int = 0,
    first_index: int = 0,
) -> tuple[Window, ...]:
    """The windows of a clip of ``total_frames`` frames, each at most ``window_frames`` long.

    Window 0 covers ``[0, window_frames)``; window ``n > 0`` starts ``overlap_frames`` before the
    end of window ``n - 1`` and takes those frames from it, so each window adds ``window_frames -
    overlap_frames`` new frames; the last window ends at ``total_frames`` and may be shorter (a clip
    no longer than a window is one window of ``total_frames``).

    ``span_len`` is the unit of masking, in frames: the model's span for the 'nonoverlap'
    arrangement, 1 for 'stride1'. All three lengths must be whole units, ``0 <= overlap_frames <
    window_frames``, and ``total_frames`` at least one unit. ValueError otherwise.

    An extension (``head_frames`` > 0: the clip's first ``head_frames`` frames exist already, made
    by an earlier run) plans only the frames after the head: its first window takes the head's last
    ``overlap_frames`` (fewer when the head is shorter, cut to whole units) and the frames added,
    ``total_frames - head_frames``, must be whole units; the head itself may be any length.
    Windows are numbered from ``first_index`` (an extension goes on counting the windows before it).
    """
    unit = _check_int("span_len", span_len, 1)
    total = _check_int("total_frames", total_frames, unit)
    window = _check_int("window_frames", window_frames, unit)
    overlap = _check_int("overlap_frames", overlap_frames, 0)
    if overlap >= window:
        raise ValueError(
            f"The overlap ({overlap} frames) must be shorter than the window ({window} frames): "
            f"every window must add new frames."
        )
    head = _check_int("head_frames", head_frames, 0)
    first = _check_int("first_index", first_index, 0)
    if total - head < unit:
        raise ValueError(
            f"total_frames ({total}) must add at least one span ({unit} frames) to the head ({head})."
        )
    added = "total_frames" if not head else "total_frames - head_frames"
    lengths = ((added, total - head), ("window_frames", window), ("overlap_frames", overlap))
    for name, value in lengths:
        if value % unit:
            raise ValueError(
                f"{name} ({value}) must be a multiple of the span ({unit} frames): with the 'nonoverlap' "
                f"arrangement the model decodes whole spans, so windows and overlaps are whole spans."
            )
    given = min(overlap, head - head % unit)
    windows = [Window(first, head - given, min(head - given + window, total), given)]
    while windows[-1].stop < total:
        start = windows[-1].stop - overlap
        windows.append(Window(first + len(windows), start, min(start + window, total), overlap))
    return tuple(windows)


def frames_of(seconds: float, frame_rate: float, span_len: int = 1) -> int:
    """The frames the engine decodes for ``seconds`` (:meth:`LoadedModel.frames`' rule: the frames
    of that many seconds, cut to whole units of ``span_len``)."""
    return spans.decoded_length(int(seconds * frame_rate), spans.NONOVERLAP, span_len)


def plan_seconds(
    total_seconds: float,
    window_seconds: float,
    frame_rate: float,
    overlap_seconds: float | None = None,
    span_len: int = 1,
) -> tuple[Window, ...]:
    """:func:`plan_windows` from seconds: a clip of ``total_seconds`` in windows of ``window_seconds``
    (the model's ``max_duration``) at ``frame_rate`` frames per second.

    Lengths become frames as the engine counts them (:func:`frames_of`, whole spans). The overlap
    (default: :data:`DEFAULT_OVERLAP_SHARE` of the window) is rounded down to whole spans.
    ValueError for a non-positive length or rate, or an overlap not shorter than the window.
    """
    fr = check_seconds("frame_rate", frame_rate)
    total_s = check_seconds("total_seconds", total_seconds)
    window_s = check_seconds("window_seconds", window_seconds)
    unit = _check_int("span_len", span_len, 1)
    window = frames_of(window_s, fr, unit)
    if window < unit:
        raise ValueError(
            f"window_seconds ({window_s:g} s) is shorter than one span ({unit} frames at {fr:g} Hz)."
        )
    total = frames_of(total_s, fr, unit)
    if total < unit:
        raise ValueError(
            f"total_seconds ({total_s:g} s) is shorter than one span ({unit} frames at {fr:g} Hz)."
        )
    if overlap_seconds is None:
        overlap = unit * (int(window * DEFAULT_OVERLAP_SHARE) // unit)
    else:
        overlap_s = check_seconds("overlap_seconds", overlap_seconds, strict=False)
        if overlap_s >= window_s:
            raise ValueError(
                f"The overlap ({overlap_s:g} s) must be shorter than the window ({window_s:g} s): "
                f"every window must add new audio."
            )
        overlap = unit * int(overlap_s * fr / unit + FRAME_SLACK)
        if overlap >= window:
            raise ValueError(
                f"The overlap ({overlap_s:g} s = {overlap} frames) leaves nothing new in a window of "
                f"{window} frames ({window_s:g} s cut to whole spans): choose a shorter overlap."
            )
    return plan_windows(total, window, overlap, unit)


def check_windows(windows: Sequence[Window], span_len: int = 1, head_frames: int = 0) -> tuple[Window, ...]:
    """``windows`` as a tuple once they are checked to chain: consecutive indices; the first starts
    at frame 0 with nothing given (or, after a head of ``head_frames``, ``given`` frames before the
    head's end, within it); each later one starts ``given`` frames before the previous one's end,
    within it; lengths and overlaps are whole units of ``span_len``. ValueError otherwise."""
    windows = tuple(windows)
    if not windows:
        raise ValueError("No windows: plan at least one (plan_windows or plan_seconds).")
    first = getattr(windows[0], "index", 0)
    for i, window in enumerate(windows):
        if not isinstance(window, Window) or window.index != first + i:
            raise ValueError(f"Window {i} must be a Window with index {first + i}, got {window!r}.")
        if window.frames % span_len or window.given % span_len:
            raise ValueError(f"Window {i} ({window}) is not made of whole spans of {span_len} frames.")
        if i == 0:
            if not head_frames and (window.start or window.given):
                raise ValueError(f"Window 0 must start at frame 0 with nothing given, got {window}.")
            if window.start != head_frames - window.given or window.given > head_frames:
                raise ValueError(
                    f"The first window must start its given frames before frame {head_frames} (the "
                    f"head's end), within the head, got {window}."
                )
            continue
        before = windows[i - 1]
        if window.start != before.stop - window.given or window.given > before.frames:
            raise ValueError(
                f"Window {i} ({window}) does not continue window {i - 1} ({before}): it must start "
                f"its given frames before that window's end."
            )
    return windows


def window_seed(seed: int, index: int) -> int:
    """The seed of window ``index`` of a run seeded with ``seed``: ``seed + index`` (module doc)."""
    return int(seed) + int(index)


def assemble_tokens(
    windows: Sequence[Window], window_tokens: Sequence[torch.Tensor | np.ndarray]
) -> torch.Tensor:
    """The long clip's tokens ``[B, K, stop]`` (long) from the final tokens ``[B, K, frames]`` of
    the first ``len(window_tokens)`` of ``windows`` (all of them for a finished run; ``stop`` is the
    last of those windows' end).

    Each window adds its new frames; its given frames must equal what the windows before put there
    (they do for the engine's runs: given tokens are never masked). ValueError otherwise.
    """
    windows = check_windows(windows)
    if not window_tokens or len(window_tokens) > len(windows):
        raise ValueError(f"Give the final tokens of 1 to {len(windows)} windows, got {len(window_tokens)}.")
    parts = [torch.as_tensor(np.array(t, dtype=np.int64)) for t in window_tokens]  # a writable copy
    B, K = parts[0].shape[:2]
    clip = torch.empty((B, K, windows[len(parts) - 1].stop), dtype=torch.long)
    for window, tokens in zip(windows, parts, strict=False):
        if tokens.shape != (B, K, window.frames):
            raise ValueError(
                f"Window {window.index}'s tokens must have shape {[B, K, window.frames]}, got {list(tokens.shape)}."
            )
        if not torch.equal(tokens[..., : window.given], clip[..., window.start : window.new_start]):
            raise ValueError(
                f"Window {window.index}'s given frames differ from window {window.index - 1}'s tokens there."
            )
        clip[..., window.new_start : window.stop] = tokens[..., window.given :]
    return clip
