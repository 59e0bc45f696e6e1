"""One run's decoding on the server's worker: the records it adds, the server's time limit, the
memory budget it charges, and the files it leaves. No Gradio here.

A :class:`Decoding` is iterated for batches of new records (the decoding never waits for the
page: steps that arrive while the newest one is shown are recorded, and only the newest of each
batch need be drawn); then :meth:`Decoding.write_files` makes the trace and the animation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np

from magnet_demo.controls import METHOD_MAGNET, DecodingConfig, Limits
from magnet_demo.costs import CostModel
from magnet_demo.incidents import Refusal, visitor_message
from magnet_demo.lab import LabPlan
from magnet_demo.records import StepRecord
from magnet_demo.session import FINISHED, RUNNING, Run, Session, SessionStore
from magnet_demo.workers import AudioJob, DecodeJob, FinalAudio, batches_in_thread

log = logging.getLogger(__name__)


class _NeverStop:
    """The stop flag of a job nobody stops (a step's audio)."""

    def set(self) -> None:
        pass

    def is_set(self) -> bool:
        return False


def decode_audio(worker, model_name: str, codes: np.ndarray) -> np.ndarray:
    """Audio ``[B, samples]`` of codes ``[B, K', T]``, decoded by ``worker`` (ValueError if it cannot)."""
    items = list(worker.run(AudioJob(model_name, codes), None, _NeverStop()))
    if not items:
        raise ValueError("the worker returned no audio")
    return items[-1].audio


#: the probe that measures a model's speed: one step per codebook, one sample, this prompt
PROBE_PROMPT = "a short probe of this server's speed"


def probe_records(worker, model_name: str, num_codebooks: int, duration: float) -> list[StepRecord]:
    """The records of a probe decoding (one step per codebook of one ``duration`` s sample) on
    ``worker``: what a step of this model costs on this server."""
    config = DecodingConfig(decoding_steps=(1,) * num_codebooks, duration=duration)
    job = DecodeJob(model=model_name, prompts=(PROBE_PROMPT,), config=config, seed=0)
    return [item for item in worker.run(job, None, _NeverStop()) if isinstance(item, StepRecord)]


def job_of(run: Run, rescorer_offered: bool) -> DecodeJob:
    """What the worker needs to decode ``run`` (plain data)."""
    windowed = run.plan is not None and bool(run.plan.windows)
    return DecodeJob(
        model=run.model_name,
        prompts=run.prompts,
        config=run.config,
        seed=run.seed,
        resume_from=None if run.parent is None else run.parent.records[run.fork_index],
        rescorer=rescorer_offered,
        # a fork's record carries its given tokens; a clip's windows take theirs from the plan
        given_tokens=run.given_tokens if run.parent is None and not windowed else None,
        given_mask=run.given if run.parent is None and not windowed else None,
        planned_steps=run.total_steps,
        plan=run.plan if run.plan is not None and run.plan.windows else None,
        head_tokens=head_tokens(run),
    )


def head_tokens(run: Run) -> np.ndarray | None:
    """``[B, K, H]`` the tokens an extension continues (the head of its canvas), or None."""
    head = 0 if run.plan is None else run.plan.head_frames
    return None if not head else np.asarray(run.given_tokens[..., :head])


def plan_of(run: Run) -> LabPlan:
    """A run's plan: a lab run's or a long clip's, else MAGNeT's steps per codebook."""
    return run.plan or LabPlan(METHOD_MAGNET, tuple(run.config.decoding_steps), run.num_frames)


class Decoding:
    """Iterate for lists of new :class:`StepRecord` (already added to ``run``); the run is then
    finished, stopped (by a person or by the server's ``max_run_seconds``) or failed.

    ``readable``: exception types whose messages are for people (the handlers' ``gr.Error``);
    ``costs``: learns the server's speed from the run once it finished.
    A failure is raised as a :class:`Refusal` saying how many steps the run kept.
    """

    def __init__(
        self,
        session: Session,
        run: Run,
        worker,
        sessions: SessionStore,
        limits: Limits,
        rescorer_offered: bool,
        readable: tuple[type, ...] = (),
        costs: CostModel | None = None,
    ):
        self.session, self.run, self.worker = session, run, worker
        self.sessions, self.limits, self.rescorer_offered = sessions, limits, rescorer_offered
        self.readable, self.costs = readable, costs

    def __iter__(self) -> Iterator[list[StepRecord]]:
        run = self.run
        audio = None
        deadline = threading.Timer(self.limits.max_run_seconds, self._out_of_time)
        deadline.daemon = True
        deadline.start()
        try:
            job = job_of(run, self.rescorer_offered)
            for batch in batches_in_thread(
                lambda: self.worker.run(job, run.controls, run.cancel), run.cancel
            ):
                records = [item for item in batch if not isinstance(item, FinalAudio)]
                audio = next((item.audio for item in batch if isinstance(item, FinalAudio)), audio)
                run.add_records(records)
                if records:
                    self.sessions.memory.charge(run)
                    yield records
            run.finish(audio)
            if run.status == FINISHED and run.parent is None and self.costs is not None:
                own = run.records[run.first_new_index :]
                self.costs.learn(run.model_name, plan_of(run), run.config, len(run.prompts), own, run.number)
        except Exception as error:  # said to the visitor; the queue goes on serving others
            self._fail(error)
        except GeneratorExit:  # the visitor went away: the worker was told to stop
            run.fail("the page or client went away during the run")
            raise
        finally:
            deadline.cancel()
        self.sessions.memory.charge(run)

    def _out_of_time(self) -> None:
        """The wall-clock limit: stop the run before its next step, saying why."""
        if self.run.status == RUNNING:
            self.run.stop_reason = f"this server stops a run after {self.limits.max_run_seconds:g} s"
            self.run.cancel.set()

    def _fail(self, error: Exception) -> None:
        run = self.run
        context = f"run {run.number} of session {self.session.name}"
        message = visitor_message(error, log, context, readable=self.readable)
        run.fail(message)
        kept = len(run.records) - run.first_new_index
        raise Refusal(
            f"Run #{run.number} failed after {kept} of its steps: {message} Its steps so far stay "
            "in the history: scrub them or re-decode from one.",
            "Decoding failed",
        ) from None

    def write_files(self, sample: int) -> list[str]:
        """Write the trace and the animation of ``sample``; count the files in the server's budget.
        Returns what could not be written, for people (a missing extra must not hide the audio)."""
        run = self.run
        problems = []
        for writer in (run.write_trace, lambda: run.write_gif(sample)):
            try:
                writer()
            except Exception as error:
                context = f"a file of run {run.number} of session {self.session.name}"
                problems.append(visitor_message(error, log, context))
        self.sessions.budget.add(run)
        return problems
