"""What a visitor sent, checked: every value of the page or the named API turned into a validated
:class:`~magnet_demo.controls.DecodingConfig`, or a ValueError whose message says what is wrong.

Every value may arrive as anything a client can send (a string for a number, NaN, a huge
integer, a list): nothing here trusts its type, nothing is clamped or truncated silently, and
the caps of :class:`~magnet_demo.controls.Limits` bound the work one request can ask for.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from magnet_demo.controls import (
    DEFAULT_DECODING_STEPS,
    DEFAULT_DURATION,
    DEFAULT_MAX_CFG,
    DEFAULT_MIN_CFG,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_PREFIX_SECONDS,
    DEFAULT_SPAN_ARRANGEMENT,
    DEFAULT_SPAN_SCORING,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_UNMASKING_ORDER,
    METHOD_MAGNET,
    METHODS,
    DecodingConfig,
    Limits,
)
from magnet_demo.engine import MAX_BATCH
from magnet_demo.lab import LabPlan, lab_plan
from magnet_demo.models import EMBEDDED_NAME, LoadedModel
from magnet_demo.records import StepRecord
from magnet_demo.schedules import CFG_CURVE, CFG_LINEAR, CFGSchedule
from magnet_demo.spans import MAX_REVISION_SHARE

#: largest seed offered by "random" and accepted
MAX_SEED = 2**31 - 1
#: codebook 1 gets more steps than the others by default (audiocraft: 20, 10, 10, 10)
FIRST_STAGE_STEPS = DEFAULT_DECODING_STEPS[0]
LATER_STAGE_STEPS = DEFAULT_DECODING_STEPS[1]
#: characters of a wrong value quoted back in a message
QUOTED_CHARS = 40


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 1] + "…"


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def number(value: object, what: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite float within [low, high]; ValueError naming ``what`` otherwise."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} must be a number, got {_quote(value)}.")
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number, got {_quote(value)}.") from None
    if not math.isfinite(result):
        raise ValueError(f"{what} must be a finite number, got {_quote(value)}.")
    if (low is not None and result < low) or (high is not None and result > high):
        bounds = f"between {_show(low)} and {_show(high)}" if low is not None and high is not None else ""
        bounds = bounds or (f"at least {_show(low)}" if low is not None else f"at most {_show(high)}")
        raise ValueError(f"{what} must be {bounds}, got {_quote(value)}.")
    return result


def whole(value: object, what: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within [low, high] (2.0 and "2" are fine, 2.7 is refused)."""
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip("+-").isdigit() and len(value) > 30:
            raise ValueError(f"{what} must be a whole number between {low} and {high}, got {_quote(value)}.")
    result = number(value, what, low, high)
    if result != int(result):
        raise ValueError(f"{what} must be a whole number, got {_quote(value)}.")
    return int(result)


def switch(value: object, what: str) -> bool:
    """``value`` as True or False (a checkbox's value); ValueError naming ``what`` otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {_quote(value)}.")
    return value


def text(value: object, what: str, max_chars: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {type(value).__name__}.")
    if len(value) > max_chars:
        raise ValueError(f"{what} is {len(value)} characters long; at most {max_chars} are accepted.")
    return value


def parse_numbers(value: object, what: str, kind: type = float, max_items: int | None = None) -> tuple:
    """``"20, 10 10"`` -> ``(20, 10, 10)``; ValueError naming ``what`` when a value is not a number."""
    items = text(value, what, max_chars=4000).replace(",", " ").split()
    if max_items is not None and len(items) > max_items:
        raise ValueError(f"{what}: {len(items)} values given; at most {max_items} are accepted.")
    check, noun = (whole, "whole number") if kind is int else (number, "number")
    values = []
    for item in items:
        try:
            values.append(check(item, what))
        except ValueError:
            raise ValueError(f"{what}: '{item[:QUOTED_CHARS]}' is not a {noun}.") from None
    return tuple(values)


def uploaded_file(value: object, roots: Sequence[str | Path]) -> tuple[Path, str] | None:
    """The file of an audio input's raw value (Gradio's ``FileData`` dict, or a path), and its name.

    Only files under ``roots`` (Gradio's upload folder) are accepted: a client cannot make the
    server read any other path. Returns None for no file.
    """
    if value in (None, ""):
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise ValueError("The audio input is not a file: upload a file or record one.")
    name = value.get("orig_name") if isinstance(value, dict) else None
    name = Path(name or path).name[:QUOTED_CHARS]
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise ValueError(f"'{name}' was not uploaded to this server: upload the file first.")
    if not resolved.is_file():
        raise ValueError(f"'{name}' is no longer on the server: upload it again.")
    return resolved, f"'{name}'"


def default_steps(num_codebooks: int) -> tuple[int, ...]:
    """audiocraft's default step counts, for any number of codebooks."""
    return (FIRST_STAGE_STEPS,) + (LATER_STAGE_STEPS,) * (num_codebooks - 1)


#: the "Fast: fewer steps" preset for slow machines: codebook 1's steps, then the others' (its
#: measured cost in quality: README, `python -m bench.fast_preset`)
FAST_FIRST_STAGE_STEPS, FAST_LATER_STAGE_STEPS = 10, 5


def fast_steps(num_codebooks: int) -> tuple[int, ...]:
    """The fast preset's step counts for ``num_codebooks`` codebooks."""
    return (FAST_FIRST_STAGE_STEPS,) + (FAST_LATER_STAGE_STEPS,) * (num_codebooks - 1)


def steps_text(steps: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in steps)


def check_cfg_range(max_cfg: float, min_cfg: float) -> None:
    if min_cfg > max_cfg:
        raise ValueError(
            f"CFG min ({min_cfg:g}) is above CFG max ({max_cfg:g}): guidance anneals from max (fully "
            "masked) down to min; set them equal for a constant coefficient."
        )


#: the settings a person may change while a run decodes: ``/steer``'s parameters, in order
LIVE_FIELDS = ("max_cfg_coef", "min_cfg_coef", "cfg_schedule", "cfg_curve", "temperature", "rescore_weight")


def live_values(values: Mapping[str, object], limits: Limits) -> dict:
    """The live controls (raw values of :data:`LIVE_FIELDS`) checked, for a new run and ``/steer``
    alike: keyword arguments of ``LiveControls.update`` and ``DecodingConfig``; ValueError otherwise."""
    schedule = text(values["cfg_schedule"], "CFG schedule", 40)
    max_cfg = number(values["max_cfg_coef"], "CFG max", 0, limits.max_cfg)
    min_cfg = number(values["min_cfg_coef"], "CFG min", 0, limits.max_cfg)
    if schedule == CFG_LINEAR:
        check_cfg_range(max_cfg, min_cfg)
    curve = ()
    if schedule == CFG_CURVE:
        curve = parse_numbers(values["cfg_curve"], "CFG curve", max_items=limits.cfg_points)
    CFGSchedule(schedule, max_cfg, min_cfg, curve)  # an unknown schedule, a curve too short
    return dict(
        max_cfg_coef=max_cfg,
        min_cfg_coef=min_cfg,
        cfg_schedule=schedule,
        cfg_curve=curve,
        temperature=number(values["temperature"], "Temperature", 0, limits.max_temperature),
        rescore_weight=number(values["rescore_weight"], "Rescoring weight", 0, 1),
    )


@dataclass(frozen=True)
class Settings:
    """What a person set in the page, before validation (see :meth:`config`): the one list of a
    run's settings. Its fields are the named API's parameters, in order, and the page's inputs are
    built from them (:func:`magnet_demo.studio.wiring.settings_inputs`): a new setting is a field
    here and a control in :mod:`magnet_demo.studio.page`."""

    prompt: str
    model: str = EMBEDDED_NAME
    duration: float = DEFAULT_DURATION
    decoding_steps: str = steps_text(DEFAULT_DECODING_STEPS)
    span_arrangement: str = DEFAULT_SPAN_ARRANGEMENT
    span_scoring: str = DEFAULT_SPAN_SCORING
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0
    max_cfg_coef: float = DEFAULT_MAX_CFG
    min_cfg_coef: float = DEFAULT_MIN_CFG
    cfg_schedule: str = CFG_LINEAR
    cfg_curve: str = ""
    rescore_weight: float = 0.0
    seed: int = 0
    random_seed: bool = False
    samples: int = 1
    anneal_temp: bool = True
    unmasking_order: str = DEFAULT_UNMASKING_ORDER
    revision_share: float = 0.0
    method: str = METHOD_MAGNET
    prefix_seconds: float = DEFAULT_PREFIX_SECONDS
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS

    def prompts(self, limits: Limits) -> tuple[str, ...]:
        """The prompt repeated once per sample; ValueError when empty, too long or too many samples."""
        prompt = text(self.prompt, "The prompt", limits.prompt_chars).strip()
        if not prompt:
            raise ValueError("The prompt is empty: describe the music or sound you want.")
        return (prompt,) * self.sample_count()

    def pick_seed(self) -> int:
        if self.random_seed is True:
            return secrets.randbelow(MAX_SEED)
        return whole(self.seed, "Seed", 0, MAX_SEED)

    def sampling(self, limits: Limits, card: int) -> dict:
        """The sampling and guidance fields, checked (shared by new runs and forks)."""
        return dict(
            **live_values({name: getattr(self, name) for name in LIVE_FIELDS}, limits),
            top_p=number(self.top_p, "Top-p", 0, 1),
            top_k=whole(self.top_k, "Top-k", 0, card),
            span_scoring=text(self.span_scoring, "Span scoring", 40),
            anneal_temp=switch(self.anneal_temp, "Temperature annealing"),
            unmasking_order=text(self.unmasking_order, "Unmasking order", 40),
            revision_share=number(self.revision_share, "Revision share", 0, MAX_REVISION_SHARE),
        )

    def steps(self, limits: Limits, num_codebooks: int) -> tuple[int, ...]:
        steps = parse_numbers(self.decoding_steps, "Decoding steps", int, max_items=num_codebooks + 8)
        if len(steps) != num_codebooks:
            raise ValueError(
                f"Decoding steps: give one step count per codebook; this model has {num_codebooks} "
                f"codebooks (e.g. '{steps_text(default_steps(num_codebooks))}'), got {len(steps)}."
            )
        limits.check_steps(steps)
        return steps

    def config(self, model: LoadedModel, limits: Limits) -> DecodingConfig:
        """The validated DecodingConfig for ``model``; ValueError with a readable message."""
        method = text(self.method, "Method", 40)
        if method not in METHODS:
            raise ValueError(f"Method must be one of {', '.join(METHODS)}, got {_quote(method)}.")
        duration, window = number(self.duration, "Duration", 0), model.max_duration
        if duration > limits.max_clip_seconds:
            raise ValueError(
                f"Duration: {duration:g} s is longer than this server decodes ({limits.max_clip_seconds:g} s; "
                f"clips longer than the model's {window:g} s window are decoded window after window)."
            )
        config = DecodingConfig(
            decoding_steps=self.steps(limits, model.num_codebooks),
            duration=min(duration, window),
            clip_seconds=duration if duration > window + 1e-9 else 0.0,
            overlap_seconds=number(self.overlap_seconds, "Overlap", 0, window),
            span_arrangement=text(self.span_arrangement, "Span arrangement", 40),
            method=method,
            prefix_seconds=number(self.prefix_seconds, "Hybrid prefix", 0),
            **self.sampling(limits, model.lm.card),
        )
        config.check_model(model.num_codebooks, model.max_duration, model.lm.card)
        limits.check_work(self.plan(config, model).segments, self.sample_count(), config.duration)
        return config

    @staticmethod
    def plan(config: DecodingConfig, model: LoadedModel) -> LabPlan:
        """What a run of ``config`` on ``model`` will do (its steps); ValueError for a bad prefix."""
        frames = model.frames(config)
        try:
            return lab_plan(config, model.num_codebooks, model.frame_rate, frames, int(model.lm.span_len))
        except ValueError as error:
            message = str(error).replace("prefix_seconds", "The Hybrid prefix")
            raise ValueError(message.replace("total_seconds", "The duration")) from None

    def sample_count(self) -> int:
        return whole(self.samples, "Number of samples", 1, MAX_BATCH)

    def fork_config(
        self, parent: DecodingConfig, record: StepRecord, limits: Limits, card: int, samples: int = 1
    ) -> tuple[DecodingConfig, list[str]]:
        """Settings for re-decoding after ``record`` of a run made with ``parent``.

        The canvas fixes the duration and span arrangement, and the stages already decoded fix
        their step counts; everything else comes from these settings. The work cap counts the
        parent's steps and its ``samples``. Returns the config and notes on what was kept.
        """
        notes = []
        steps = parent.decoding_steps
        wanted = self.steps(limits, len(steps))
        done = record.stage + 1
        if wanted[:done] != steps[:done]:
            notes.append(f"kept the decoding steps of codebooks 1-{done} ({steps_text(steps[:done])})")
        steps = steps[:done] + tuple(wanted[done:])
        limits.check_steps(steps)
        limits.check_work(steps, samples, parent.duration)
        seconds = parent.clip_seconds or parent.duration  # a long clip's, or its one window's
        if number(self.duration, "Duration", 0) != seconds:
            notes.append(f"kept the duration ({seconds:g} s)")
        if self.span_arrangement != parent.span_arrangement:
            notes.append(f"kept the span arrangement ({parent.span_arrangement})")
        return parent.replace(decoding_steps=steps, **self.sampling(limits, card)), notes
