"""Runs made from another run of a session: forks (re-decode from a step) and extensions (continue
a finished run by more seconds). What each may start from, and what the new run takes from its
parent, as :meth:`~magnet_demo.session.Session.new_run`'s arguments. No Gradio here.

Refusals are :class:`~magnet_demo.incidents.Refusal` whose messages are for people.
"""

from __future__ import annotations

import numpy as np

from magnet_demo.controls import Limits
from magnet_demo.form import Settings, number
from magnet_demo.incidents import Refusal
from magnet_demo.lab import extension_plan, fork_plan
from magnet_demo.session import FINISHED, RELEASED_NOTE, RUNNING, Run

#: float slack when a clip's seconds are compared with the server's longest clip
_SECONDS_SLACK = 1e-9


def check_parent(parent: Run | None, limits: Limits) -> None:
    """A Refusal when ``parent`` cannot be re-decoded from a step (released, empty, decoding, or a
    fork too deep for ``limits``)."""
    if parent is not None and parent.steps_released:
        raise Refusal(f"Run #{parent.number}: {RELEASED_NOTE}. Make it again to re-decode from its steps.")
    if parent is None or not parent.records:
        raise Refusal("Nothing to fork yet: generate a run first, then pick a step.")
    if parent.status == RUNNING:
        raise Refusal(f"Run #{parent.number} is still decoding: stop it or wait for it to finish.")
    if parent.fork_depth >= limits.fork_depth:
        raise Refusal(
            f"Run #{parent.number} is already a fork {parent.fork_depth} levels deep; this server "
            f"allows {limits.fork_depth}. Re-decode from one of its ancestors instead.",
            "Check the settings",
        )


def check_extendable(parent: Run | None) -> None:
    """A Refusal when ``parent`` cannot be extended: none, released, or not finished (its last step
    must hold the whole clip)."""
    if parent is None:
        raise Refusal("Nothing to extend yet: generate a run first.")
    if parent.steps_released:
        raise Refusal(f"Run #{parent.number}: {RELEASED_NOTE}. Make it again to extend it.")
    if parent.status == RUNNING:
        raise Refusal(f"Run #{parent.number} is still decoding: wait for it to finish, then extend it.")
    if parent.status != FINISHED:
        raise Refusal(
            f"Run #{parent.number} is {parent.status}: only a finished run holds a whole clip to "
            "continue. Extend a finished run, or re-decode this one from a step.",
            "Check the settings",
        )


def _inherited(parent: Run) -> dict:
    """What every run made from ``parent`` takes from it: model, prompts, seed, rates."""
    return dict(
        model_name=parent.model_name,
        prompts=parent.prompts,
        seed=parent.seed,
        sample_rate=parent.sample_rate,
        frame_rate=parent.frame_rate,
    )


def fork_of(parent: Run, index: int, settings: Settings, limits: Limits, loaded) -> dict:
    """The new run of a fork after ``parent.records[index]`` with ``settings`` (its config, plan and
    notes; the rest is the parent's); a Refusal for settings that do not fit."""
    record = parent.records[index]
    samples = len(parent.prompts)
    try:
        config, notes = settings.fork_config(parent.config, record, limits, loaded.lm.card, samples=samples)
        plan = None if parent.plan is None else fork_plan(parent.plan, parent.config, config, record, loaded)
        if plan is not None:
            limits.check_work(plan.segments, samples, config.duration)
    except ValueError as error:
        raise Refusal(str(error), "Check the settings") from None
    return dict(
        **_inherited(parent),
        config=config,
        num_frames=parent.num_frames,
        plan=plan,
        source=parent.source,
        given=parent.given,
        given_tokens=parent.given_tokens,
        parent=parent,
        fork_index=index,
        notes=tuple(notes),
        limits=limits,
    )


def _extension_config(parent: Run, added: float, head_frames: int, limits: Limits, loaded):
    """The config and plan of ``parent`` extended by ``added`` seconds after its ``head_frames``."""
    rate = loaded.frame_rate
    total = head_frames / rate + added
    if total > limits.max_clip_seconds + _SECONDS_SLACK:
        raise ValueError(
            f"Extend by: run #{parent.number} is {head_frames / rate:g} s and this server decodes clips "
            f"of at most {limits.max_clip_seconds:g} s: add at most "
            f"{limits.max_clip_seconds - head_frames / rate:.2f} s."
        )
    config = parent.config.replace(duration=loaded.max_duration, clip_seconds=total)
    windows = parent.plan.windows if parent.plan is not None else ()
    before = windows[-1].index + 1 if windows else 1  # the seeds go on counting
    K, span = loaded.num_codebooks, int(loaded.lm.span_len)
    plan = extension_plan(config, head_frames, added, before, K, rate, span)
    limits.check_work(plan.segments, len(parent.prompts), config.duration)
    return config, plan


def extension_of(parent: Run, seconds: object, limits: Limits, loaded) -> dict:
    """The new run that continues ``parent`` (finished) by ``seconds``: its config and plan, and
    the parent's tokens ``[B, K, H]`` as given tokens at the start of its canvas; a Refusal for
    seconds that do not fit."""
    head = np.asarray(parent.records[-1].tokens, dtype=np.int16)
    try:
        added = number(seconds, "Extend by", 0, limits.max_clip_seconds)
        config, plan = _extension_config(parent, added, head.shape[-1], limits, loaded)
    except ValueError as error:
        raise Refusal(str(error), "Check the settings") from None
    given = np.zeros(head.shape[:2] + (plan.frames,), dtype=bool)
    given[..., : head.shape[-1]] = True
    tokens = np.zeros(given.shape, dtype=np.int16)
    tokens[..., : head.shape[-1]] = head
    return dict(
        **_inherited(parent),
        config=config,
        num_frames=plan.frames,
        plan=plan,
        source=f"extends #{parent.number} by {added:g} s",
        given=given,
        given_tokens=tokens,
        limits=limits,
    )
