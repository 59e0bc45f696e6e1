"""Clips longer than the model's window: MAGNeT decoded window after window (issue #28).

A model decodes at most its training window (:attr:`~magnet_demo.models.LoadedModel.max_duration`).
Like MusicGen's ``extend_stride``, a longer clip is cut into windows of that length that overlap:
window 0 is a plain run; every later window is a continuation (``prompt_tokens``, audiocraft's
``prompt``) of the last ``overlap`` frames of the window before, which it keeps bit for bit and
decodes only the frames after them. The codec decodes the whole token sequence once, at the end.

- :class:`Window` and :func:`plan_windows` (frames) / :func:`plan_seconds` (seconds) are pure
  arithmetic: which frames of the long clip each window covers and takes from the one before.
- :class:`WindowedEngine` decodes a MAGNeT clip over a plan with the studio's loop
  (:func:`magnet_demo.clips.clip_steps`, which runs every method) and yields every step as a
  :class:`WindowRecord` (the window's own record plus its window); :meth:`WindowedEngine.decode`
  runs to the end and returns a :class:`WindowedResult` with the long tokens and their audio.
- :func:`assemble_tokens` puts the windows' final tokens together into ``[B, K, total_frames]``.

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
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from magnet_demo import spans
from magnet_demo.audio import decode_tokens
from magnet_demo.controls import METHOD_MAGNET, DecodingConfig, LiveControls
from magnet_demo.engine import Engine, check_prompts
from magnet_demo.records import StepRecord

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


def _check_seconds(name: str, value, low: float = 0.0, strict: bool = True) -> float:
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
    fr = _check_seconds("frame_rate", frame_rate)
    total_s = _check_seconds("total_seconds", total_seconds)
    window_s = _check_seconds("window_seconds", window_seconds)
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
        overlap_s = _check_seconds("overlap_seconds", overlap_seconds, strict=False)
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


@dataclass(frozen=True)
class WindowRecord:
    """One decoding step of a windowed clip: the window's own ``record`` (its canvas is the window's
    frames, ``window.start`` to ``window.stop`` of the clip; ``record.given`` marks the frames taken
    from the window before; ``record.elapsed`` counts from the clip's start) and where it stands in
    the clip.

    Attributes:
        window: the window being decoded.
        windows: how many windows the clip has.
        seed: the seed of this window's run (:func:`window_seed`).
        clip_step, clip_steps: this step counted over all windows (0-based), and their steps in all.
        total_frames: the clip's frames (the last window's ``stop``).
    """

    window: Window
    windows: int
    record: StepRecord
    seed: int
    clip_step: int
    clip_steps: int
    total_frames: int

    @property
    def status(self) -> str:
        """``"window 2/3"`` (1-based, for a status line)."""
        return f"window {self.window.index + 1}/{self.windows}"

    @property
    def is_window_end(self) -> bool:
        """True at the window's last step: ``record.tokens`` are the window's final tokens."""
        return self.record.is_last

    @property
    def is_last(self) -> bool:
        """True at the clip's last step."""
        return self.record.is_last and self.window.index == self.windows - 1


@dataclass(frozen=True)
class WindowedResult:
    """A windowed clip: ``tokens`` ``[B, K, frames]`` of its finished windows (all of them unless
    ``cancelled``), their ``audio`` ``[B, samples]`` (None when not asked for, or when no window
    finished), every step's record, and the plan."""

    tokens: torch.Tensor
    audio: np.ndarray | None
    sample_rate: int
    windows: tuple[Window, ...]
    records: tuple[WindowRecord, ...]
    config: DecodingConfig
    prompts: tuple[str, ...]
    seed: int
    cancelled: bool = False


class WindowedEngine:
    """Decodes clips longer than the model's window with an :class:`Engine` (see module doc)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.model = engine.model

    def unit(self, config: DecodingConfig) -> int:
        """Frames per unit of masking under ``config``: the model's span ('nonoverlap'), else 1."""
        span_len = int(self.engine.lm.span_len)
        return span_len if spans.uses_chunks(config.span_arrangement, span_len) else 1

    def plan(
        self,
        config: DecodingConfig,
        total_seconds: float,
        overlap_seconds: float | None = None,
        window_seconds: float | None = None,
    ) -> tuple[Window, ...]:
        """The windows of a ``total_seconds`` clip for this model and ``config``'s arrangement:
        :func:`plan_seconds` with windows of ``window_seconds`` (default and at most the model's
        ``max_duration``). ValueError for bad lengths."""
        max_duration = self.model.max_duration
        window_seconds = max_duration if window_seconds is None else window_seconds
        if _check_seconds("window_seconds", window_seconds) > max_duration + FRAME_SLACK:
            raise ValueError(
                f"window_seconds ({window_seconds:g} s) is longer than this model's window ({max_duration:g} s)."
            )
        return plan_seconds(
            total_seconds, window_seconds, self.model.frame_rate, overlap_seconds, self.unit(config)
        )

    def _windows(
        self,
        config: DecodingConfig,
        total_seconds: float | None,
        overlap_seconds: float | None,
        windows: Sequence[Window] | None,
    ) -> tuple[Window, ...]:
        """The checked plan of a run: ``windows``, or :meth:`plan` of ``total_seconds``."""
        if (total_seconds is None) == (windows is None):
            raise ValueError("Pass either total_seconds (and optionally overlap_seconds) or windows.")
        if windows is None:
            windows = self.plan(config, total_seconds, overlap_seconds)
        elif overlap_seconds is not None:
            raise ValueError(
                "overlap_seconds goes with total_seconds; a plan of windows has its own overlaps."
            )
        return check_windows(windows, self.unit(config))

    def steps(
        self,
        prompts: Sequence[str],
        config: DecodingConfig | None = None,
        *,
        total_seconds: float | None = None,
        overlap_seconds: float | None = None,
        windows: Sequence[Window] | None = None,
        seed: int = 0,
        controls: LiveControls | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[WindowRecord]:
        """Decode a long clip window after window, yielding one :class:`WindowRecord` per step.

        Args:
            prompts: B text descriptions (every window decodes all of them).
            config: decoding settings of every window (default: the model's); its ``duration`` is
                ignored: each window's is its own length.
            total_seconds, overlap_seconds: the clip's length and the windows' overlap (default:
                half a window), planned by :meth:`plan` with the model's window; or
            windows: a plan of your own (:func:`plan_windows`); pass it or ``total_seconds``.
            seed: window ``n`` is seeded with ``seed + n`` (:func:`window_seed`).
            controls: live controls, shared by all windows (default: the config's values).
            cancel: when set, decoding stops before the next step (and starts no more windows).
        Raises:
            ValueError: bad prompts, config or lengths, raised by this call before any step runs.
        """
        from magnet_demo.clips import window_config  # clips runs windows: it imports this module

        config = config or self.model.default_config()
        prompts = check_prompts(prompts)
        windows = self._windows(config, total_seconds, overlap_seconds, windows)
        for window in windows:  # bad settings raise here, before any step
            own = window_config(config, window, self.model)
            own.check_model(self.model.num_codebooks, self.model.max_duration, self.engine.lm.card)
        controls = controls or LiveControls.from_config(config)
        return self._iterate(prompts, windows, config, seed, controls, cancel)

    def _iterate(
        self,
        prompts: tuple[str, ...],
        windows: tuple[Window, ...],
        config: DecodingConfig,
        seed: int,
        controls: LiveControls | None,
        cancel: threading.Event | None,
    ) -> Iterator[WindowRecord]:
        """The studio's loop over windows (:func:`magnet_demo.clips.clip_steps`, a generator), each
        step given back as its window's own record; :meth:`steps` validates."""
        from magnet_demo.clips import clip_steps, local_record
        from magnet_demo.lab import windowed_plan

        K, span, rate = self.model.num_codebooks, int(self.engine.lm.span_len), self.model.frame_rate
        plan = windowed_plan(config.replace(method=METHOD_MAGNET), windows, K, rate, span)
        placed_steps = clip_steps(
            self.model, None, prompts, config.replace(method=METHOD_MAGNET), plan,
            seed=seed, controls=controls, cancel=cancel, rescorer=self.engine.rescorer,
        )  # fmt: skip
        for placed in placed_steps:
            position, record = local_record(placed, plan)
            window = windows[position]
            yield WindowRecord(
                window=window,
                windows=len(windows),
                record=record,
                seed=window_seed(seed, window.index),
                clip_step=placed.global_step,
                clip_steps=plan.total_steps,
                total_frames=windows[-1].stop,
            )

    def decode(
        self,
        prompts: Sequence[str],
        config: DecodingConfig | None = None,
        *,
        total_seconds: float | None = None,
        overlap_seconds: float | None = None,
        windows: Sequence[Window] | None = None,
        seed: int = 0,
        controls: LiveControls | None = None,
        cancel: threading.Event | None = None,
        on_step: Callable[[WindowRecord], None] | None = None,
        with_audio: bool = True,
    ) -> WindowedResult:
        """Run :meth:`steps` to the end (or until cancelled) and decode the whole clip's audio once.

        A cancelled clip keeps the windows that finished: its tokens end at the last of them (none:
        ``[B, K, 0]`` and no audio); the unfinished window's steps are among the records.
        """
        config = config or self.model.default_config()
        prompts = check_prompts(prompts)
        windows = self._windows(config, total_seconds, overlap_seconds, windows)
        records = []
        for item in self.steps(prompts, config, windows=windows, seed=seed, controls=controls, cancel=cancel):
            records.append(item)
            if on_step is not None:
                on_step(item)
        finished = [item.record.tokens for item in records if item.is_window_end]
        cancelled = not (records and records[-1].is_last)
        if finished:
            tokens = assemble_tokens(windows, finished)
        else:
            tokens = torch.empty((len(prompts), self.model.num_codebooks, 0), dtype=torch.long)
        audio = None
        if with_audio and tokens.shape[-1]:
            audio = decode_tokens(self.model.compression_model, tokens)
        return WindowedResult(
            tokens=tokens,
            audio=audio,
            sample_rate=self.model.sample_rate,
            windows=windows,
            records=tuple(records),
            config=config,
            prompts=prompts,
            seed=seed,
            cancelled=cancelled,
        )
