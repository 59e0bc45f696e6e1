"""The page's status lines: pure functions of a run and its records (no Gradio, no state)."""

from __future__ import annotations

from magnet_demo.records import StepRecord
from magnet_demo.session import RELEASED_NOTE, Run


def step_status(run: Run, record: StepRecord) -> str:
    """The status line while ``run`` decodes: where ``record``'s step is and what it used."""
    K = record.tokens.shape[1]
    return (
        f"**Run #{run.number}** · codebook {record.stage + 1}/{K}, step {record.step + 1}/{record.steps_in_stage} "
        f"(step {record.global_step + 1} of {record.total_steps}) · {record.num_masked}/{record.num_units} units "
        f"masked · CFG {record.cfg_coef:.2f} · temperature {record.temperature:.2f} · {record.elapsed:.1f} s"
    )


def run_status(run: Run, keep_runs: int) -> str:
    """The status line of an ended run; says so when the server's budget (``keep_runs`` runs'
    files) deleted its files, and how to make it again."""
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
        "finished": f"finished: {steps} steps in {elapsed:.1f} s{per_step}",
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
