"""Decodings behind the worker boundary: in this process and in 'spawn' / 'fork' worker processes.

Live steering and Stop cross through the run's channel files; records and audio come back pickled
and equal an in-process run of the same job.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from magnet_demo.channel import SharedControls, StopFlag
from magnet_demo.controls import ControlValues, DecodingConfig
from magnet_demo.lab import extension_plan
from magnet_demo.model_cache import ModelCache
from magnet_demo.models import load_model
from magnet_demo.records import StepRecord
from magnet_demo.schedules import CFGSchedule
from magnet_demo.workers import (
    AudioJob,
    DecodeJob,
    FinalAudio,
    InProcessWorker,
    ProcessWorker,
    WorkerDied,
    gpu_seconds,
)

CONFIG = DecodingConfig(decoding_steps=(4, 2, 2, 2), duration=1.0)
STEERED = dict(max_cfg_coef=25.0, min_cfg_coef=2.0, temperature=0.5)
GATE_TIMEOUT_S = 60.0


class GatedStop(StopFlag):
    """A real stop flag whose check before step ``gate`` (0-based) waits until the test opens the
    gate: the test's change is then made after record ``gate - 1`` and before step ``gate`` starts."""

    def __init__(self, folder, gate: int):
        super().__init__(folder)
        self.gate = gate
        self.opened = Path(folder) / "gate-open"
        self.checks = 0

    def __getstate__(self):
        return {**super().__getstate__(), "gate": self.gate, "opened": str(self.opened)}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.gate, self.opened, self.checks = state["gate"], Path(state["opened"]), 0

    def is_set(self) -> bool:
        if self.checks == self.gate:
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while not self.opened.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        self.checks += 1
        return super().is_set()


@pytest.fixture(scope="module")
def loader():
    return functools.partial(load_model, device="cpu")


@pytest.fixture(scope="module", params=["spawn", "fork"])
def process_worker(request, loader):
    worker = ProcessWorker(loader, start_method=request.param)
    yield worker
    worker.close()


def _job(folder, **changes) -> DecodeJob:
    return DecodeJob(model=str(folder), prompts=("a", "b"), config=CONFIG.replace(**changes), seed=3)


def _split(items) -> tuple[list[StepRecord], list[FinalAudio]]:
    items = list(items)
    return [i for i in items if isinstance(i, StepRecord)], [i for i in items if isinstance(i, FinalAudio)]


def test_channel_crosses_pickling(tmp_path):
    controls = SharedControls(tmp_path, CONFIG.controls())
    stop = StopFlag(tmp_path)
    remote_controls, remote_stop = pickle.loads(pickle.dumps((controls, stop)))
    assert remote_controls.snapshot() == CONFIG.controls()
    controls.update(**STEERED)
    assert remote_controls.snapshot() == ControlValues(CFGSchedule("linear", 25.0, 2.0), 0.5, 0.0)
    assert not remote_stop.is_set()
    stop.set()
    assert remote_stop.is_set()


def test_a_worker_process_gives_the_in_process_records(tiny_folder, process_worker, tmp_path):
    job = _job(tiny_folder)
    here = ModelCache(functools.partial(load_model, device="cpu"))
    expected, expected_audio = _split(
        InProcessWorker(here).run(
            job, SharedControls(tmp_path / "a", CONFIG.controls()), StopFlag(tmp_path / "a")
        )
    )
    records, audio = _split(
        process_worker.run(job, SharedControls(tmp_path / "b", CONFIG.controls()), StopFlag(tmp_path / "b"))
    )
    assert len(records) == len(expected) == sum(CONFIG.decoding_steps)
    assert all(np.array_equal(r.tokens, e.tokens) for r, e in zip(records, expected, strict=True))
    assert len(audio) == 1  # thread counts may differ: sums in another order
    np.testing.assert_allclose(audio[0].audio, expected_audio[0].audio, atol=1e-5)
    (step_audio,) = process_worker.run(
        AudioJob(str(tiny_folder), records[2].tokens[:, :1]), None, StopFlag(tmp_path)
    )
    assert step_audio.audio.shape == audio[0].audio.shape


def test_an_extension_job_crosses_to_the_worker_process(tiny_folder, process_worker, tmp_path):
    here = ModelCache(functools.partial(load_model, device="cpu"))
    model = here.get(str(tiny_folder))
    first, _ = _split(InProcessWorker(here).run(_job(tiny_folder), None, StopFlag(tmp_path / "first")))
    head = np.asarray(first[-1].tokens)  # [2, 4, 48]: a finished run of 1 s
    config = CONFIG.replace(duration=model.max_duration, clip_seconds=1.96, overlap_seconds=0.5)
    K, span = model.num_codebooks, int(model.lm.span_len)
    plan = extension_plan(config, head.shape[-1], 1.0, 1, K, model.frame_rate, span)
    job = DecodeJob(str(tiny_folder), ("a", "b"), config, 3, plan=plan, head_tokens=head, planned_steps=10)
    expected, _ = _split(InProcessWorker(here).run(job, None, StopFlag(tmp_path / "a")))
    records, audio = _split(process_worker.run(job, None, StopFlag(tmp_path / "b")))
    assert [(w.start, w.stop, w.given) for w in plan.windows] == [(24, 96, 24)] and len(records) == 10
    assert all(np.array_equal(r.tokens, e.tokens) for r, e in zip(records, expected, strict=True))
    assert np.array_equal(records[-1].tokens[..., :48], head) and audio[0].audio.shape == (2, 96 * 640)


@pytest.mark.parametrize("k", [0, 3])
def test_steering_during_step_k_shows_in_record_k_plus_1(tiny_folder, process_worker, tmp_path, k):
    controls = SharedControls(tmp_path, CONFIG.controls())
    stop = GatedStop(tmp_path, gate=k + 1)
    records = []
    for item in process_worker.run(_job(tiny_folder), controls, stop):
        if isinstance(item, StepRecord):
            records.append(item)
            if item.global_step == k:
                controls.update(**STEERED)
                stop.opened.touch()
    assert all(r.controls == CONFIG.controls() for r in records[: k + 1])
    steered = controls.snapshot()
    assert all(r.controls == steered for r in records[k + 1 :])
    step = records[k + 1]
    annealed = 0.5 * (step.steps_in_stage - 1 - step.step) / step.steps_in_stage
    assert step.temperature == pytest.approx(annealed) != 0


def test_stop_ends_the_run_within_one_step(tiny_folder, process_worker, tmp_path):
    # the worker decodes faster than records reach this process: the gate holds step 2 until
    # Stop is pressed after record 1, so the check is exact, not a race
    stop = GatedStop(tmp_path, gate=2)
    records, audio = [], []
    for item in process_worker.run(_job(tiny_folder), SharedControls(tmp_path, CONFIG.controls()), stop):
        if isinstance(item, StepRecord):
            records.append(item)
            if item.global_step == 1:
                stop.set()
                stop.opened.touch()
        else:
            audio.append(item)
    assert len(records) == 2  # steps 0 and 1: the run stopped before step 2
    assert len(audio) == 1  # a stopped run still returns its last step's audio


def test_a_failure_comes_back_readable_and_the_worker_goes_on(tiny_folder, process_worker, tmp_path):
    bad = DecodeJob(model=str(tiny_folder), prompts=("a",), config=CONFIG.replace(duration=60.0), seed=0)
    with pytest.raises(ValueError, match="longer than this model supports"):
        list(process_worker.run(bad, SharedControls(tmp_path, CONFIG.controls()), StopFlag(tmp_path)))
    records, _ = _split(
        process_worker.run(_job(tiny_folder), SharedControls(tmp_path, CONFIG.controls()), StopFlag(tmp_path))
    )
    assert len(records) == sum(CONFIG.decoding_steps)


def test_a_worker_that_dies_mid_run_is_reported_and_replaced(tiny_folder, process_worker, tmp_path):
    records = []
    with pytest.raises(WorkerDied, match="stopped unexpectedly"):
        for item in process_worker.run(
            _job(tiny_folder), SharedControls(tmp_path, CONFIG.controls()), StopFlag(tmp_path)
        ):
            records.append(item)
            if len(records) == 2:
                os.kill(process_worker.pid, signal.SIGKILL)
    assert len(records) >= 2
    again, _ = _split(
        process_worker.run(_job(tiny_folder), SharedControls(tmp_path, CONFIG.controls()), StopFlag(tmp_path))
    )
    assert len(again) == sum(CONFIG.decoding_steps)


def test_gpu_seconds_grow_with_the_work_and_stay_bounded():
    short = DecodeJob("m", ("a",), DecodingConfig(decoding_steps=(2, 1, 1, 1), duration=2.0), 0)
    default = DecodeJob("m", ("a",), DecodingConfig(), 0)
    batch = DecodeJob("m", ("a",) * 8, DecodingConfig(decoding_steps=(200, 100, 100, 100)), 0)
    assert gpu_seconds(short) < gpu_seconds(default) < gpu_seconds(batch) == 300
    assert gpu_seconds(default) == 15 + int(0.25 * 50)
    # the steps the server planned: a 30 s clip of 10 s windows overlapping 5 s is 6 windows of 50
    # steps (498-frame windows add 249 frames each: bench.long_clip); a Hybrid run 1 s of AR records
    long = DecodeJob(
        "m", ("a",), DecodingConfig(clip_seconds=30.0, overlap_seconds=5.0), 0, planned_steps=300
    )
    assert gpu_seconds(long) == 15 + int(0.25 * 50 * 6)
    hybrid = DecodeJob("m", ("a",), DecodingConfig(method="hybrid"), 0, planned_steps=6 + 50)
    assert gpu_seconds(hybrid) == 15 + int(0.25 * (6 + 50))


def fake_spaces_gpu(duration):
    """Like ``spaces.GPU`` on ZeroGPU: asks ``duration(*args)``, runs the generator function in a
    forked process and pickles every item back."""
    import multiprocessing

    def wrap(function):
        def run(*args):
            assert isinstance(duration(*args), int)
            context = multiprocessing.get_context("fork")
            items = context.Queue()

            payload = pickle.dumps(args)

            def child():
                import torch

                torch.set_num_threads(1)  # see workers._serve
                for item in function(*pickle.loads(payload)):
                    items.put(pickle.dumps(item))
                items.put(None)

            process = context.Process(target=child, daemon=True)
            process.start()
            while (item := items.get(timeout=120)) is not None:
                yield pickle.loads(item)
            process.join()

        return run

    return wrap


def test_zerogpu_worker_runs_the_job_in_a_forked_gpu_function(tiny_folder, tmp_path):
    from magnet_demo.workers import ZeroGPUWorker

    models = ModelCache(functools.partial(load_model, device="cpu"))
    models.get(str(tiny_folder))  # loaded by the server's process, inherited by the fork
    worker = ZeroGPUWorker(fake_spaces_gpu, models)
    controls = SharedControls(tmp_path, CONFIG.controls())
    stop = GatedStop(tmp_path, gate=2)
    records = []
    for item in worker.run(_job(tiny_folder), controls, stop):
        if isinstance(item, StepRecord):
            records.append(item)
            if item.global_step == 1:
                controls.update(**STEERED)
                stop.opened.touch()
    assert len(records) == sum(CONFIG.decoding_steps)
    assert records[1].controls == CONFIG.controls() and records[2].controls == controls.snapshot()
    bad = DecodeJob(model=str(tiny_folder), prompts=("a",), config=CONFIG.replace(duration=60.0), seed=0)
    with pytest.raises(ValueError, match="longer than this model supports"):  # the message crosses too
        list(worker.run(bad, controls, StopFlag(tmp_path / "bad")))


def test_the_decoding_thread_sees_the_callers_context(tmp_path):
    import contextvars

    from magnet_demo.workers import batches_in_thread

    request = contextvars.ContextVar("request", default=None)
    request.set("visitor 7")  # what Gradio sets and spaces.GPU reads to charge a visitor's quota
    assert list(batches_in_thread(lambda: iter([request.get()]), StopFlag(tmp_path))) == [["visitor 7"]]


def test_a_slow_reader_never_holds_the_decoding_up_and_sees_every_step(tmp_path):
    from magnet_demo.workers import batches_in_thread

    produced = []

    def steps():
        for n in range(20):
            produced.append(n)
            yield n

    batches = []
    for batch in batches_in_thread(steps, StopFlag(tmp_path)):
        if not batches:
            time.sleep(0.3)  # drawing the first step: the decoding goes on meanwhile
        batches.append(batch)
    assert sum(batches, []) == list(range(20))  # every step, in order, the last one last
    assert len(batches) <= 2 and produced == list(range(20))


def test_steps_before_an_error_are_kept(tmp_path):
    from magnet_demo.workers import batches_in_thread

    def steps():
        yield from (1, 2)
        raise WorkerDied("gone")

    received = []
    with pytest.raises(WorkerDied, match="gone"):
        for batch in batches_in_thread(steps, StopFlag(tmp_path)):
            received.extend(batch)
    assert received == [1, 2]
