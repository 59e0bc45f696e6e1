"""Where a decoding runs: in the server's process, in a worker process, or on a ZeroGPU GPU.

A decoding crosses the boundary as plain data. The server hands a worker a :class:`DecodeJob`
(model name, prompts, config, seed, the record to resume from) with the run's
:class:`~magnet_demo.channel.SharedControls` and :class:`~magnet_demo.channel.StopFlag`; the
worker yields one :class:`~magnet_demo.records.StepRecord` per step and then the run's
:class:`FinalAudio`. Only :func:`run_job` (the engine and the codec) runs on the worker's side:
drawing, audio files and traces stay with the server.

Every worker has one method, ``run(job, controls, stop) -> Iterator[StepRecord | FinalAudio]``:

- :class:`InProcessWorker`: the server's own process (local use, CPU Spaces); the server reads every
  worker from a thread (:func:`batches_in_thread`), so the decoding never waits for drawing.
- :class:`ProcessWorker`: a long-lived ``multiprocessing`` process ('spawn' or 'fork') with its
  own :class:`~magnet_demo.model_cache.ModelCache`; one that dies mid-run ends that run with a
  readable message and is started again for the next one.
- :class:`ZeroGPUWorker`: :func:`run_job` wrapped in ``spaces.GPU`` with a duration computed from
  the job (:func:`gpu_seconds`); ZeroGPU forks the server's process for each call, so models the
  server loaded (:func:`process_models`) are there already, and pickles every item back.

Errors cross as :class:`Failure` items (ZeroGPU would otherwise replace a message by the
exception's class name): a ValueError comes back as a ValueError with its message.
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from magnet_demo.audio import decode_tokens, preview_codes
from magnet_demo.controls import METHOD_MAGNET, DecodingConfig, LiveControls
from magnet_demo.incidents import ReadableFault
from magnet_demo.model_cache import ModelCache
from magnet_demo.records import StepRecord

if TYPE_CHECKING:  # the lab imports the engines: a worker loads them only when a job needs them
    from magnet_demo.lab import LabPlan

log = logging.getLogger(__name__)

#: how often a waiting reader checks that the worker process is still alive (seconds)
POLL_S = 0.25
#: how long a worker may take to notice a Stop once its reader went away, before it is killed
ABANDON_GRACE_S = 30.0
#: ZeroGPU duration estimate: a fixed part (moving the model, encoding the prompt, the codec)...
GPU_BASE_SECONDS = 15.0
#: ... plus this much per decoding step of one 10 s sample on the GPU (magnet-medium on a slice,
#: with a wide margin; a step of magnet-small takes a few tens of milliseconds)
GPU_SECONDS_PER_STEP = 0.25
#: the longest duration asked of ZeroGPU (longer requests queue behind everyone else)
GPU_MAX_SECONDS = 300
#: audio decoding of one step (the scrubber's preview) on ZeroGPU
GPU_AUDIO_SECONDS = 20


@dataclass(frozen=True)
class DecodeJob:
    """A decoding to run, as picklable data.

    Attributes:
        model: the model's name (as :class:`ModelCache` knows it).
        prompts: B text descriptions.
        config: the run's settings.
        seed: the sampler's seed (a resumed run takes the record's generator state instead).
        resume_from: the record to continue after (a fork), or None for a fresh run.
        rescorer: True when the run may rescore (its model offers a rescorer): the worker loads it
            when the rescoring weight first rises above 0, at the start or live.
        given_tokens, given_mask: ``[B or 1, K, T]`` codes and bool mask of tokens that are given
            (an audio prompt to continue, or the audio around a region to re-decode), or None;
            see :meth:`magnet_demo.engine.Engine.steps` and :mod:`magnet_demo.audio_in`.
        planned_steps: the run's steps in all, as the server planned them (an autoregressive phase's
            records and every window of a long clip included); 0: the config's decoding steps.
        plan: a clip decoded window after window (a :class:`~magnet_demo.lab.LabPlan` with
            ``windows``: a long clip or an extension), or None.
        head_tokens: ``[B, K, plan.head_frames]`` the run an extension continues, or None.
    """

    model: str
    prompts: tuple[str, ...]
    config: DecodingConfig
    seed: int
    resume_from: StepRecord | None = None
    rescorer: bool = False
    given_tokens: np.ndarray | None = None
    given_mask: np.ndarray | None = None
    planned_steps: int = 0
    plan: LabPlan | None = None
    head_tokens: np.ndarray | None = None


@dataclass(frozen=True)
class AudioJob:
    """Decode codes ``[B, K', T]`` (a prefix of the codebooks) to audio with a model's codec."""

    model: str
    codes: np.ndarray


@dataclass(frozen=True)
class FinalAudio:
    """A run's audio ``[B, samples]`` float32: the finished tokens, or a stopped run's preview."""

    audio: np.ndarray


@dataclass(frozen=True)
class Failure:
    """An error raised on the worker's side; ``readable``: a ValueError whose message is for people."""

    message: str
    readable: bool

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        if isinstance(error, ValueError):
            return cls(str(error), True)
        return cls(f"{type(error).__name__}: {error}", False)

    def exception(self) -> Exception:
        return ValueError(self.message) if self.readable else RuntimeError(self.message)


class WorkerDied(ReadableFault):
    """The worker process ended during a run."""


class _LazyRescorer:
    """The model's rescorer, loaded the first time the engine asks for it."""

    def __init__(self, load: Callable[[], object]):
        self._load = load
        self._rescorer = None

    def token_probs(self, tokens, prompts):
        if self._rescorer is None:
            self._rescorer = self._load()
        return self._rescorer.token_probs(tokens, prompts)


def run_job(job: DecodeJob | AudioJob, controls: LiveControls, stop, models: ModelCache) -> Iterator:
    """The worker's side of a job: StepRecords then FinalAudio (a DecodeJob), or FinalAudio alone."""
    from magnet_demo.engine import Engine

    model = models.get(job.model)
    if isinstance(job, AudioJob):
        yield FinalAudio(decode_tokens(model.compression_model, job.codes))
        return
    rescorer = _LazyRescorer(lambda: models.rescorer(job.model, model)) if job.rescorer else None
    last = job.resume_from
    if job.plan is not None and job.plan.windows:
        steps = _clip_steps(job, controls, stop, models, model, rescorer)
    elif job.config.method == METHOD_MAGNET:
        steps = Engine(model, rescorer).steps(
            job.prompts,
            job.config,
            seed=job.seed,
            controls=controls,
            given_tokens=job.given_tokens,
            given_mask=job.given_mask,
            resume_from=job.resume_from,
            cancel=stop,
        )
    else:
        steps = _lab_steps(job, controls, stop, models, model, rescorer)
    for record in steps:
        last = record
        yield record
    if last is not None:
        codes = last.tokens if last.is_last else preview_codes(last)
        yield FinalAudio(decode_tokens(model.compression_model, np.asarray(codes, dtype=np.int64)))


def _partner(job: DecodeJob, models: ModelCache, model):
    """The model's autoregressive partner (a ValueError when it has none)."""
    partner = models.rescorer(job.model, model)
    if partner is None:
        raise ValueError(
            f"The {job.config.method} method needs the model's autoregressive partner: none is offered."
        )
    return partner


def _clip_steps(job: DecodeJob, controls, stop, models: ModelCache, model, rescorer) -> Iterator:
    """The records of a clip decoded window after window (:mod:`magnet_demo.clips`)."""
    from magnet_demo.clips import clip_steps

    partner = None if job.config.method == METHOD_MAGNET else _partner(job, models, model)
    return clip_steps(
        model,
        partner,
        job.prompts,
        job.config,
        job.plan,
        seed=job.seed,
        head_tokens=job.head_tokens,
        controls=controls,
        cancel=stop,
        rescorer=rescorer,
        resume_from=job.resume_from,
    )


def _lab_steps(job: DecodeJob, controls, stop, models: ModelCache, model, rescorer) -> Iterator:
    """The records of an autoregressive or Hybrid job (:mod:`magnet_demo.lab`)."""
    from magnet_demo.lab import lab_steps

    partner = _partner(job, models, model)
    return lab_steps(
        model,
        partner,
        job.prompts,
        job.config,
        seed=job.seed,
        controls=controls,
        cancel=stop,
        rescorer=rescorer,
        resume_from=job.resume_from,
    )


def guarded(items: Iterator) -> Iterator:
    """``items``, with an error turned into a final :class:`Failure` item (for crossing processes)."""
    try:
        yield from items
    except Exception as error:
        log.exception("a decoding job failed")
        yield Failure.of(error)


def raise_failures(items: Iterator) -> Iterator:
    """``items``, raising the exception of a :class:`Failure` item."""
    for item in items:
        if isinstance(item, Failure):
            raise item.exception()
        yield item


# ---------------------------------------------------------------------------------------------
# in the server's process


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def batches_in_thread(items: Callable[[], Iterator], stop) -> Iterator[list]:
    """Iterate ``items()`` in a thread; yield, as lists, everything that arrived since the last list.

    The thread never waits for the reader: a reader slower than the decoding gets several items
    at once (it may draw only the newest, skipping frames) and the decoding goes on at its own
    speed; every item arrives, in order, the last one last. Errors of ``items()`` are raised here.
    If the reader stops iterating (the page went away), ``stop`` is set so the decoding ends.
    """
    channel: queue.Queue = queue.Queue()

    def work():
        try:
            for item in items():
                channel.put(item)
        except BaseException as error:  # handed to the reader's thread
            channel.put(_Raised(error))
        channel.put(_DONE)

    # the caller's context variables go along: on ZeroGPU, spaces.GPU reads Gradio's request (whose
    # quota a run spends) from them
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), name="magnet-decode", daemon=True).start()
    finished = False
    try:
        while not finished:
            batch = [channel.get()]
            while True:
                try:
                    batch.append(channel.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _DONE:
                batch.pop()
                finished = True
            failed = next((n for n, item in enumerate(batch) if isinstance(item, _Raised)), None)
            if failed is not None:
                finished = True
                if failed:
                    yield batch[:failed]  # what came before the error is kept
                raise batch[failed].error
            if batch:
                yield batch
    finally:
        if not finished:
            stop.set()


class InProcessWorker:
    """Runs jobs in the caller's thread (the server runs them in :func:`batches_in_thread`), with
    this process's models."""

    description = "in the server's process"

    def __init__(self, models: ModelCache):
        self.models = models

    def run(self, job, controls, stop) -> Iterator:
        return run_job(job, controls, stop, self.models)


# ---------------------------------------------------------------------------------------------
# ZeroGPU

_process_models: ModelCache | None = None


def process_models(models: ModelCache | None = None) -> ModelCache:
    """This process's model cache (set it once with ``models``); a forked GPU worker inherits it."""
    global _process_models
    if models is not None:
        _process_models = models
    if _process_models is None:
        _process_models = ModelCache()
    return _process_models


def gpu_seconds(job: DecodeJob | AudioJob, controls=None, stop=None) -> int:
    """The ZeroGPU duration to ask for ``job`` (same arguments as the wrapped function)."""
    if isinstance(job, AudioJob):
        return GPU_AUDIO_SECONDS
    config = job.config
    done = 0 if job.resume_from is None else job.resume_from.global_step + 1
    planned = job.planned_steps or sum(config.decoding_steps)
    steps = max(planned - done, 0)
    work = steps * len(job.prompts) * (config.duration / 10.0)
    return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + GPU_SECONDS_PER_STEP * work))


def _gpu_job(job, controls, stop):
    """The function ZeroGPU runs on the GPU (in its forked process)."""
    yield from guarded(run_job(job, controls, stop, process_models()))


class ZeroGPUWorker:
    """Runs jobs through ``gpu`` (``spaces.GPU``), each with a duration from :func:`gpu_seconds`."""

    description = "on ZeroGPU (spaces.GPU, a forked process per run)"
    #: no probe decoding to measure the speed: it would spend a visitor's GPU quota (runs teach it)
    probes = False

    def __init__(self, gpu: Callable, models: ModelCache):
        process_models(models)
        self._run_on_gpu = gpu(duration=gpu_seconds)(_gpu_job)

    def run(self, job, controls, stop) -> Iterator:
        models = process_models()
        needs_partner = job.config.rescore_weight > 0 or job.config.method != METHOD_MAGNET
        if isinstance(job, DecodeJob) and job.rescorer and needs_partner:
            # loaded here, the server's process, so that the forked GPU process finds it (a load
            # inside would be lost with that process at the end of the run)
            models.rescorer(job.model, models.get(job.model))
        return raise_failures(self._run_on_gpu(job, controls, stop))


# ---------------------------------------------------------------------------------------------
# a worker process


@dataclass(frozen=True)
class _End:
    job_id: int


def _serve(jobs, results, loader: Callable, max_models: int, forked: bool) -> None:
    """A worker process's loop: run each job from ``jobs``, put its items on ``results``.

    A forked worker computes on one CPU thread: the OpenMP pool it inherits from a parent that
    already used it deadlocks at its first parallel region (a GPU does the work on ZeroGPU).
    """
    if forked:
        import torch

        torch.set_num_threads(1)
    models = ModelCache(loader, max_models=max_models)
    while True:
        message = jobs.get()
        if message is None:
            return
        job_id, job, controls, stop = message
        for item in guarded(run_job(job, controls, stop, models)):
            results.put((job_id, item))
        results.put((job_id, _End(job_id)))


class ProcessWorker:
    """Runs jobs, one at a time, in a long-lived worker process (``start_method`` 'spawn' or 'fork').

    The process loads models with ``loader`` into its own cache (they stay loaded between runs).
    """

    def __init__(self, loader: Callable | None = None, start_method: str = "spawn", max_models: int = 2):
        from magnet_demo.models import load_model

        self.loader = loader or load_model
        self.max_models = max_models
        self.start_method = start_method
        self.context = multiprocessing.get_context(start_method)
        self.description = f"in a worker process ({start_method})"
        self._process = None
        self._job_id = 0
        self._lock = threading.Lock()

    def _start(self) -> None:
        self._jobs = self.context.Queue()
        self._results = self.context.Queue()
        self._process = self.context.Process(
            target=_serve,
            args=(self._jobs, self._results, self.loader, self.max_models, self.start_method == "fork"),
            name="magnet-worker",
            daemon=True,
        )
        self._process.start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def run(self, job, controls, stop) -> Iterator:
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            self._job_id += 1
            job_id = self._job_id
            self._jobs.put((job_id, job, controls, stop))
            try:
                for item in self._items(job_id):
                    if isinstance(item, Failure):
                        raise item.exception()  # the worker ends the job and goes on
                    yield item
            except GeneratorExit:  # the reader went away: stop the job, wait for its end
                stop.set()
                self._drain(job_id)
                raise

    def _items(self, job_id: int, patience: float | None = None) -> Iterator:
        """The items of job ``job_id`` up to its end; WorkerDied if the process ends first."""
        waited = 0.0
        steps = 0
        while True:
            try:
                got_id, item = self._results.get(timeout=POLL_S)
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    self._process = None
                    raise WorkerDied(
                        f"The decoding worker stopped unexpectedly (exit code {code}) after {steps} steps of "
                        "this run. The steps it sent are kept; the next run starts a new worker."
                    ) from None
                waited += POLL_S
                if patience is not None and waited > patience:
                    raise TimeoutError(f"the worker did not end job {job_id} in {patience:.0f} s") from None
                continue
            waited = 0.0
            if got_id != job_id:
                continue  # left over from an abandoned job
            if isinstance(item, _End):
                return
            steps += isinstance(item, StepRecord)
            yield item

    def _drain(self, job_id: int) -> None:
        try:
            for _ in self._items(job_id, patience=ABANDON_GRACE_S):
                pass
        except (WorkerDied, TimeoutError):
            self.close()

    def close(self) -> None:
        """End the worker process (a new one starts with the next job)."""
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            self._jobs.put(None)
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
