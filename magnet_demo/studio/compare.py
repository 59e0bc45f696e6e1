"""The compare view's screens: a session's runs in a table, and two runs side by side (their last
canvases, their audio, their timings). Plain values, keyed by :data:`COMPARE_OUTPUTS`; no Gradio.
"""

from __future__ import annotations

import numpy as np

from magnet_demo import viz
from magnet_demo.controls import METHOD_AR, METHOD_HYBRID, METHOD_MAGNET
from magnet_demo.lab import AR_CFG_COEF, AR_TEMPERATURE, METHOD_LABELS, phase_seconds
from magnet_demo.records import StepRecord
from magnet_demo.session import Run, Session
from magnet_demo.studio.screens import Props, audio_of

#: the compare view's outputs, in order (``page.CompareView``'s fields)
COMPARE_OUTPUTS = ("table", "run_a", "run_b", "canvas_a", "canvas_b", "audio_a", "audio_b", "timing")
#: the table's columns
COLUMNS = ("run", "method", "order", "settings", "seconds", "steps", "model passes", "seed", "status")


def record_passes(record: StepRecord) -> int:
    """Forward passes of the language models one record took: a MAGNeT step is one (the prompts
    and null prompts in one batch), plus one of the rescorer when it rescored; an autoregressive
    record one per sequence step (the most frames it wrote in one codebook)."""
    if record.written is not None:
        return int(np.asarray(record.written)[0].sum(axis=-1).max())
    return 1 + (record.rescorer_confidence is not None)


def settings_text(run: Run) -> str:
    """The settings that tell runs apart, in a few words."""
    config = run.config
    steps = "-".join(str(n) for n in config.decoding_steps)
    magnet = f"steps {steps}, CFG {config.max_cfg_coef:g}→{config.min_cfg_coef:g}, temperature {config.temperature:g}"
    if config.revision_share > 0:
        magnet += f", revision {config.revision_share:g}"
    ar = f"top-k 250, temperature {AR_TEMPERATURE:g}, CFG {AR_CFG_COEF:g}"
    if config.method == METHOD_AR:
        return ar
    if config.method == METHOD_HYBRID:
        return f"{config.prefix_seconds:g} s AR prefix ({ar}), then {magnet}"
    return magnet


def run_row(run: Run) -> list:
    """One row of the table (:data:`COLUMNS`)."""
    records = run.records[run.first_new_index :]
    seconds = round(records[-1].elapsed, 2) if records else None
    order = run.config.unmasking_order if run.method != METHOD_AR else "left to right"
    return [
        run.number,
        METHOD_LABELS[run.method],
        order,
        settings_text(run),
        seconds,
        run.steps_shown(),
        sum(record_passes(r) for r in records) if records else None,
        run.seed,
        run.status,
    ]


def table(session: Session) -> dict:
    """Every run the session keeps, newest last."""
    return {"headers": list(COLUMNS), "data": [run_row(run) for run in session.runs]}


def timing(run: Run) -> str:
    records = run.records[run.first_new_index :]
    if not records:
        return f"run #{run.number}: {run.status}, no steps kept"
    passes = sum(record_passes(r) for r in records)
    line = (
        f"run #{run.number} ({METHOD_LABELS[run.method]}): {records[-1].elapsed:.2f} s of decoding, "
        f"{len(records)} steps, {passes} model passes"
    )
    if run.method == METHOD_HYBRID:
        ar_seconds, magnet_seconds = phase_seconds(records)
        line += f" (autoregressive prefix {ar_seconds:.2f} s, MAGNeT {magnet_seconds:.2f} s)"
    return line


def _canvas(run: Run, sample: int) -> np.ndarray | None:
    if not run.records:
        return None
    sample = min(sample, len(run.prompts) - 1)
    title = f"Run #{run.number} · {METHOD_LABELS[run.method]} · " + viz.step_title(run.records[-1], sample)
    return viz.step_image(run.records[-1], sample, frame_rate=run.frame_rate, title=title)


def pair(session: Session, run_a: Run, run_b: Run, sample: int) -> dict:
    """Two runs side by side: their last canvases stacked, their audio, their timings."""
    lines = [f"**A:** {timing(run_a)}", f"**B:** {timing(run_b)}"]
    a, b = run_a.records[run_a.first_new_index :], run_b.records[run_b.first_new_index :]
    if a and b and a[-1].elapsed > 0:
        lines.append(f"B took {b[-1].elapsed / a[-1].elapsed:.2f}x the time of A.")
    choices = session.choices()
    return {
        "table": table(session),
        "run_a": Props(choices=choices, value=run_a.number),
        "run_b": Props(choices=choices, value=run_b.number),
        "canvas_a": _canvas(run_a, sample),
        "canvas_b": _canvas(run_b, sample),
        "audio_a": audio_of(run_a, sample, "A: "),
        "audio_b": audio_of(run_b, sample, "B: "),
        "timing": "\n\n".join(lines),
    }


def latest_pair(session: Session) -> tuple[Run, Run] | None:
    """What to compare when nothing is picked: the latest MAGNeT run against the latest run of
    another method, else the two latest runs (None with fewer than two runs)."""
    runs = session.runs
    if len(runs) < 2:
        return None
    magnet = [r for r in runs if r.method == METHOD_MAGNET]
    others = [r for r in runs if r.method != METHOD_MAGNET]
    if magnet and others:
        return magnet[-1], others[-1]
    return runs[-2], runs[-1]
