"""What the page shows of a run, as plain data: pure functions of runs and records.

A screen is a dict from an output's name (:data:`MAIN_OUTPUTS`) to its new value; a :class:`Props`
value sets properties of that output (its label, its maximum, its choices) instead of, or beside,
its value. The handlers turn a screen into Gradio's updates. No Gradio here.
"""

from __future__ import annotations

import numpy as np

from magnet_demo import viz
from magnet_demo.controls import METHOD_HYBRID
from magnet_demo.lab import phase_seconds
from magnet_demo.records import StepRecord
from magnet_demo.session import RELEASED_NOTE, RUNNING, Run, Session

TITLE = "MAGNeT, step by step"
INTRO = """
# MAGNeT, step by step
[MAGNeT](https://arxiv.org/abs/2401.04577) writes all the audio tokens of a clip at once, then
re-masks the least confident spans and predicts them again, a few steps per codebook, coarse to
fine. Type a prompt and **Generate**: every step shows which spans were unmasked, per codebook.
Change the CFG, temperature or rescoring weight while it runs (they apply from the next step),
scrub back to any step to hear it, and **re-decode from that step** with other settings.
"""
#: the outputs of every run endpoint (/generate, /continue, /inpaint, /fork, /show_run), in order
MAIN_OUTPUTS = (
    "status",
    "canvas",
    "step_info",
    "audio",
    "compare",
    "spectrogram",
    "downloads",
    "runs",
    "scrub",
    "seed",
)
#: 16-bit PCM full scale, for audio handed to the page as numbers
PCM_SCALE = 32767


class Props(dict):
    """New properties of one output (``value``, ``label``, ``maximum``, ``choices``, ``samples``)."""


def pcm(audio: np.ndarray) -> np.ndarray:
    """Float audio ``[samples]`` -> int16, peak-normalised (what a player takes without conversion)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    scaled = audio / peak if peak > 0 else audio
    return (np.clip(scaled, -1.0, 1.0) * PCM_SCALE).astype(np.int16)


def audio_of(run: Run | None, sample: int, prefix: str) -> Props:
    """A player's value and label: the run's audio from memory, or from its WAV file once its
    steps were released; "no earlier run" without audio."""
    wavs = [] if run is None or run.audio is not None else run.wav_files()
    if wavs:
        return Props(value=str(wavs[min(sample, len(wavs) - 1)]), label=f"{prefix}run #{run.number}")
    if run is None or run.audio is None:
        return Props(value=None, label=prefix + "no earlier run")
    index = min(sample, len(run.audio) - 1)
    return Props(value=(run.sample_rate, pcm(run.audio[index])), label=f"{prefix}run #{run.number}")


def spectrogram(run: Run, sample: int) -> np.ndarray | None:
    """The picture of a run's audio ``[H, W, 3]`` uint8 (None without audio)."""
    if run.audio is None:
        return None
    index = min(sample, len(run.audio) - 1)
    return viz.spectrogram_image(run.audio[index], run.sample_rate, f"Run #{run.number}, sample {index + 1}")


# ---------------------------------------------------------------------------------------------
# status lines


def step_status(run: Run, record: StepRecord) -> str:
    """The status line while ``run`` decodes: where ``record``'s step is and what it used."""
    K = record.tokens.shape[1]
    if record.is_autoregressive:
        written = (record.tokens.shape[2] - int(record.mask_after[0].sum())) / run.frame_rate
        return (
            f"**Run #{run.number}** · {_phase(run, record)}record {record.step + 1}/{record.steps_in_stage} "
            f"(step {record.global_step + 1} of {record.total_steps}) · {written:.2f} s written · "
            f"CFG {record.cfg_coef:.2f} · temperature {record.temperature:.2f} · {record.elapsed:.1f} s"
        )
    return (
        f"**Run #{run.number}** · {_phase(run, record)}codebook {record.stage + 1}/{K}, step {record.step + 1}/{record.steps_in_stage} "
        f"(step {record.global_step + 1} of {record.total_steps}) · {record.num_masked}/{record.num_units} units "
        f"masked · CFG {record.cfg_coef:.2f} · temperature {record.temperature:.2f} · {record.elapsed:.1f} s"
    )


def _phase(run: Run, record: StepRecord) -> str:
    """Which phase of a Hybrid run, or which window of a long clip, ``record`` belongs to."""
    if record.window is not None:
        return f"window {record.window[0] + 1}/{record.window[1]} · "
    if run.method != METHOD_HYBRID:
        return "autoregressive · " if record.is_autoregressive else ""
    if record.is_autoregressive:
        return f"Hybrid, autoregressive prefix ({run.config.prefix_seconds:g} s) · "
    return "Hybrid, MAGNeT phase · "


def phase_times(run: Run) -> str:
    """How long each phase of a Hybrid run took ("" for other runs)."""
    if run.method != METHOD_HYBRID or not run.records:
        return ""
    ar_seconds, magnet_seconds = phase_seconds(run.records)
    return f" · autoregressive prefix {ar_seconds:.1f} s, MAGNeT {magnet_seconds:.1f} s"


def clip_note(run: Run) -> str:
    """How long a clip of several windows (or an extension) is, and what it extends ("" else)."""
    if run.plan is None or not run.plan.windows:
        return ""
    count = len(run.plan.windows)
    seconds = run.plan.frames / run.frame_rate
    origin = f", {run.source}" if run.source else ""
    return f" · {seconds:.2f} s, {count} new window{'s' if count > 1 else ''}{origin}"


def run_status(run: Run, keep_runs: int) -> str:
    """The status line of an ended run; says so when the server released its steps or deleted its
    files (``keep_runs``: the server's file budget), and how to make it again."""
    if run.steps_released:
        gone = f"; its files were deleted too (this server keeps the files of its last {keep_runs} runs)"
        return (
            f"**Run #{run.number}** {run.status}: {RELEASED_NOTE}{gone if run.files_deleted else ''} · "
            f"seed {run.seed}: the same model, settings and seed (Step details) make it again"
        )
    steps = len(run.records) - run.first_new_index
    elapsed = run.records[-1].elapsed if steps > 0 else 0.0
    per_step = f" ({elapsed / steps:.2f} s per step)" if steps else ""
    text = {
        "finished": f"finished: {steps} steps in {elapsed:.1f} s{per_step}{phase_times(run)}{clip_note(run)}",
        "stopped": f"{run.message}; listen to what it had, or re-decode from any of its steps",
        "failed": f"failed: {run.message}",
    }.get(run.status, run.status)
    deleted = ""
    if run.files_deleted:
        deleted = (
            f" · its files were deleted (this server keeps the files of its last {keep_runs} runs); its "
            "audio stays on this page, and the same model, settings and seed (Step details) make it again"
        )
    return f"**Run #{run.number}** {text} · seed {run.seed}{deleted}"


def step_text(run: Run, index: int) -> str:
    """What step ``index`` (0-based) of ``run`` shows: which codebooks are done, whose step it is."""
    record = run.records[index]
    if record.is_autoregressive:
        written = (record.tokens.shape[2] - int(record.mask_after[0].sum())) / run.frame_rate
        return (
            f"Run #{run.number}, step {index + 1} of {len(run.records)} decoded: the autoregressive "
            f"model has written {written:.2f} s of every codebook (the diagonal is its delay pattern)"
        )
    origin = "" if index >= run.first_new_index else f" (inherited from run #{run.parent.number})"
    done = "" if record.stage == 0 else f"codebooks 1-{record.stage} finished, "
    return (
        f"Run #{run.number}, step {index + 1} of {len(run.records)} decoded{origin}: {done}"
        f"codebook {record.stage + 1} with this step's proposals"
    )


# ---------------------------------------------------------------------------------------------
# a run's screens


def run_start(session: Session, run: Run, previous: Run | None, sample: int, notes: list[str]) -> dict:
    """The page when ``run`` starts: its number and notes, the A/B audio, its first canvas."""
    origin = "" if run.parent is None else f" (from run #{run.parent.number}, step {run.fork_index + 1})"
    origin += f", {run.source}" if run.source else ""
    return {
        "status": f"**Run #{run.number}**{origin}: starting… " + "; ".join(notes),
        "scrub": Props(maximum=run.total_steps, value=run.total_steps),
        "runs": Props(choices=session.choices(), value=run.number),
        "audio": Props(value=None, label=f"This run: run #{run.number} (decoding…)"),
        "spectrogram": None,
        "seed": run.seed,
        "compare": audio_of(previous, sample, "A/B: "),
        "step_info": run.summary(),
        "canvas": run.feed(sample).text,  # a fork starts from its parent's step
    }


def run_step(run: Run, record: StepRecord, sample: int) -> dict:
    """The page after a batch of steps: the newest one's status, the grown feed, its details."""
    return {
        "status": step_status(run, record),
        "canvas": run.feed(sample).text,
        "step_info": run.record_summary(),
    }


def run_audio(session: Session, run: Run, sample: int, keep_runs: int) -> dict:
    """The page once the audio is out (the spectrogram, trace and animation follow)."""
    return {
        "status": run_status(run, keep_runs)
        + " · its trace and animation are being written (the page shows them; `/show_run` lists them)",
        "audio": audio_of(run, sample, "This run: "),
        "runs": Props(choices=session.choices(), value=run.number),
        "scrub": Props(value=len(run.records)),
        "step_info": run.summary(),
        "canvas": run.feed(sample).text,
        "downloads": session.files(),  # its WAV already
    }


def run_files(session: Session, run: Run, sample: int, keep_runs: int, problems: list[str]) -> dict:
    """The page once the run's files are written (``problems``: files that could not be)."""
    return {
        "status": run_status(run, keep_runs) + (" · " + "; ".join(problems) if problems else ""),
        "downloads": session.files(),
        "step_info": run.summary(),
        "canvas": run.feed(sample).text,
    }


def run_shown(session: Session, run: Run, previous: Run | None, sample: int, keep_runs: int) -> dict:
    """A run of the history back on screen with its audio."""
    status = run_status(run, keep_runs) if run.status != RUNNING else f"**Run #{run.number}** is decoding…"
    return {
        "status": status,
        "canvas": run.feed(sample).text,
        "step_info": run.summary(),
        "audio": audio_of(run, sample, "This run: "),
        "compare": audio_of(previous, sample, "A/B: "),
        "spectrogram": spectrogram(run, sample),
        "downloads": session.files(),
        "scrub": Props(maximum=run.total_steps, value=len(run.records)),
    }
