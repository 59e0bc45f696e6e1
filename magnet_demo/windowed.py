"""MAGNeT clips longer than the model's window as a library call (:class:`WindowedEngine`).

:class:`WindowedEngine` plans a clip's windows (:mod:`magnet_demo.windows`), decodes them with the
studio's loop (:func:`magnet_demo.clips.clip_steps`) and yields every step as a :class:`WindowRecord`
(the window's own record plus its window); :meth:`WindowedEngine.decode` runs to the end and returns
a :class:`WindowedResult` with the long tokens and their audio, decoded once. Seeds and frames: see
:mod:`magnet_demo.windows`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from magnet_demo.audio import decode_tokens
from magnet_demo.clips import clip_steps, local_record, window_config
from magnet_demo.controls import METHOD_MAGNET, DecodingConfig, LiveControls
from magnet_demo.engine import Engine, check_prompts
from magnet_demo.lab import masking_unit, windowed_plan
from magnet_demo.records import StepRecord
from magnet_demo.windows import (
    FRAME_SLACK,
    Window,
    assemble_tokens,
    check_seconds,
    check_windows,
    plan_seconds,
    window_seed,
)


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
    """Decodes MAGNeT clips longer than the model's window with an :class:`Engine` (see module doc)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.model = engine.model

    def unit(self, config: DecodingConfig) -> int:
        """Frames per unit of masking under ``config``: the model's span ('nonoverlap'), else 1."""
        return masking_unit(config, int(self.engine.lm.span_len))

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
        if check_seconds("window_seconds", window_seconds) > max_duration + FRAME_SLACK:
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
