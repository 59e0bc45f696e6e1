"""How long a run holds the decoding slot against its time to the final audio, and runs per minute
with clients waiting: the code of a commit ("before", default d717677) against this checkout ("after").

    .venv/bin/python -m bench.slot [--before d717677] [--after REV] [--clients 4] [--runs 2] [--rounds 4]

Makes a git worktree of ``--before`` (and of ``--after`` when given) in a temporary folder, removed
at the end, and starts ``app.py`` of each checkout once, both the same way
(:func:`bench.soak.start_app`: the embedded model, ``--concurrency 1``, its own output folder and
Gradio cache, a file budget no run of the bench fills; this checkout's virtual environment), each
warmed up by one run alone. Then ``--rounds`` rounds, before then after in odd rounds and after
then before in even ones (the machine's noise weighs on both): in each, on one server then the
other, ``--clients`` ``gradio_client`` clients at once each make ``--runs`` runs of ``/generate``
back to back (``--duration`` s, steps ``--steps``, a seed per run, the same requests on both
servers, less any setting newer than a server's code): while one run decodes, the others wait.

Measured for each run of the clients, from the messages of its own job, each timed when
``gradio_client`` handles it (it reads them every 50 ms: each time is 0-50 ms late, start and end alike):

- start: ``process_starts`` (``Status.PROCESSING``): the run left the queue and holds the slot;
- audio: the first output whose audio player carries the run's audio (the final audio);
- end: ``process_completed`` (``Status.FINISHED``): the event is over and its slot free;
- slot = end - start, to audio = audio - start, their ratio (1.00: the slot is freed with the audio);
- hand(off): the next run's start (whichever client's) - this run's end: how soon the freed slot
  was taken, which shows that the event's end is when the slot is free;
- runs per minute: the round's runs / (its last end - its first start) x 60 (the slot never
  waits for work: until the last runs, three clients are waiting);
- files: the server's traces (.npz) and animations (.gif) on disk against its runs so far, and
  how long after the round's last end they all were. A ``gradio_client`` call does not trigger the
  page's follow-up event: in the after code the files are written by the background writer all
  the same (while the next run decodes, on the same CPUs).

Prints one row per round and code (with the machine's load average: other work on the machine
slows both), then the medians over all runs (runs per minute: the median of the rounds), the
slot/audio ratios, and after/before in runs per minute round by round, each pair measured back to
back, and their median.
Target (issue 29): after the change, the slot within 5% of the time to the audio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak import ROOT, start_app
from bench.space_emulation import GENERATE, free_port

BEFORE = "d717677"
STEPS = "20, 10, 10, 10"
RATIO_TARGET = 1.05
RUN_TIMEOUT_S = 600.0
FILES_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Timing:
    """One run seen by its client: wall-clock seconds of its start, final audio and end."""

    start: float
    audio: float
    end: float

    @property
    def slot(self) -> float:
        return self.end - self.start

    @property
    def to_audio(self) -> float:
        return self.audio - self.start


def has_audio(value: object) -> bool:
    """Whether the audio player's output carries audio (an update with a value, or a path)."""
    if isinstance(value, dict):
        return bool(value.get("value") if value.get("__type__") == "update" else value.get("path"))
    return isinstance(value, str) and bool(value)


def timing_of(updates: list, audio_at: int) -> Timing:
    """A run's :class:`Timing` from its job's updates in order (``gradio_client``'s
    ``OutputUpdate`` and ``StatusUpdate``: an output comes just before the status of its message,
    whose ``time`` is when it was handled; the job's result follows its end, a dict, and is not
    read); ``audio_at``: the audio player's place in the outputs."""
    from gradio_client.utils import Status

    start = audio = end = None
    output = None
    for update in updates:
        if update.type == "output":
            output = update.outputs
            continue
        moment = update.time.timestamp()
        if update.code == Status.PROCESSING and start is None:
            start = moment
        elif update.code == Status.FINISHED:
            end = moment
        if isinstance(output, (list, tuple)) and audio is None and has_audio(output[audio_at]):
            audio = moment
        output = None
    if start is None or audio is None or end is None:
        missing = [
            name for name, value in (("start", start), ("audio", audio), ("end", end)) if value is None
        ]
        raise RuntimeError(f"the run's job had no {' or '.join(missing)}")
    return Timing(start, audio, end)


def figures(timings: list[Timing]) -> dict:
    """One server's runs together: medians of slot, time to audio, their ratio and the handoff;
    the largest ratio; runs per minute from the first start to the last end."""
    ordered = sorted(timings, key=lambda t: t.start)
    handoffs = [later.start - earlier.end for earlier, later in zip(ordered, ordered[1:], strict=False)]
    ratios = [t.slot / t.to_audio for t in ordered]
    span = max(t.end for t in ordered) - ordered[0].start
    return {
        "runs": len(ordered),
        "slot": statistics.median(t.slot for t in ordered),
        "to_audio": statistics.median(t.to_audio for t in ordered),
        "ratio": statistics.median(ratios),
        "worst": max(ratios),
        "handoff": statistics.median(handoffs) if handoffs else float("nan"),
        "per_minute": 60 * len(ordered) / span,
    }


def timed_run(client, settings: dict, audio_at: int) -> Timing:
    job = client.submit(**settings, api_name="/generate")
    outputs = job.result(timeout=RUN_TIMEOUT_S)
    if "finished" not in str(outputs[0]):
        raise RuntimeError(f"run did not finish: {str(outputs[0])[:200]}")
    updates, queue = [], job.communicator.updates
    while True:
        try:
            updates.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            break
    return timing_of(updates, audio_at)


def crowd(url: str, clients: int, runs: int, settings: dict, audio_at: int) -> tuple[list, list]:
    """``clients`` clients at once, each making ``runs`` runs back to back: (timings, failures)."""
    from gradio_client import Client

    timings, failures, lock = [], [], threading.Lock()
    ready = threading.Barrier(clients, timeout=CONNECT_TIMEOUT_S)

    def client_runs(number: int) -> None:
        client = None
        try:
            client = Client(url, verbose=False, download_files=False)
        except Exception as error:
            with lock:
                failures.append(f"client {number} did not connect: {type(error).__name__}: {error}")
        ready.wait()  # every client connected before the first run
        for run in range(runs if client else 0):
            try:
                timing = timed_run(client, {**settings, "seed": 1000 * (number + 1) + run}, audio_at)
                with lock:
                    timings.append(timing)
            except Exception as error:
                with lock:
                    failures.append(f"client {number} run {run}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=client_runs, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings, failures


def files_on_disk(outputs: Path, runs: int, since: float) -> tuple[int, int, float]:
    """(traces, animations) under ``outputs`` once ``runs`` of each are there or after
    ``FILES_TIMEOUT_S``, and the seconds from ``since`` (wall clock) until then."""
    deadline = time.monotonic() + FILES_TIMEOUT_S
    while True:
        traces, gifs = len(list(outputs.rglob("*-trace.npz"))), len(list(outputs.rglob("*.gif")))
        if traces >= runs and gifs >= runs or time.monotonic() > deadline:
            return traces, gifs, time.time() - since
        time.sleep(0.2)


@dataclass
class Server:
    """A running ``app.py`` of one checkout, and how many runs it made so far."""

    name: str
    process: subprocess.Popen
    url: str
    outputs: Path
    log: Path
    audio_at: int
    settings: dict = field(default_factory=dict)
    made: int = 0


def serve(name: str, root: Path, folder: Path, clients: int, runs: int, rounds: int) -> Server:
    """``app.py`` of the checkout ``root``, with room in its file budget for every run of the bench."""
    folder.mkdir(parents=True)
    audio_at = audio_position(root)
    port = free_port()
    process = start_app(
        port,
        folder / "outputs",
        folder / "gradio",
        queue_size=2 * clients + 2,
        keep_runs=1 + rounds * clients * runs + 10,
        log=folder / "app.log",
        extra=("--concurrency", "1", "--keep-runs-per-session", str(runs + 10)),
        root=root,
    )
    url = f"http://127.0.0.1:{port}/"
    return Server(name, process, url, folder / "outputs", folder / "app.log", audio_at)


def accepted(client, settings: dict) -> tuple[dict, list[str]]:
    """``settings`` less what the server's ``/generate`` does not take (a setting newer than its
    code; the server's own default stands for one older than this checkout's), and what was left out."""
    api = client.view_api(print_info=False, return_format="dict")
    names = {p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]}
    return {k: v for k, v in settings.items() if k in names}, sorted(set(settings) - names)


def phase(server: Server, clients: int, runs: int) -> dict:
    """``clients`` clients' runs on ``server``, then its files (all its runs' so far) on disk."""
    timings, failures = crowd(server.url, clients, runs, server.settings, server.audio_at)
    server.made += len(timings)
    last_end = max((t.end for t in timings), default=time.time())
    traces, gifs, lag = files_on_disk(server.outputs, server.made, last_end)
    return {
        "timings": timings,
        "failures": failures,
        "made": server.made,
        "traces": traces,
        "gifs": gifs,
        "lag": lag,
        "alive": server.process.poll() is None,
        "load": os.getloadavg()[0],
    }


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def audio_position(root: Path) -> int:
    """The audio player's place in the run endpoint's outputs in the checkout ``root`` (read from
    its code, as its ``app.py`` imports it: refused if that would be another checkout's)."""
    probe = "import magnet_demo\nfrom magnet_demo.studio.page import MainView\n"
    probe += "print(magnet_demo.__file__)\nprint(MainView.position('audio'))"
    found, position = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, check=True, capture_output=True, text=True
    ).stdout.split()[-2:]
    if not Path(found).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"app.py in {root} would import {found}")
    return int(position)


def row(name: str, round_: object, r: dict, f: dict) -> str:
    files = f"{r['traces']}/{r['made']} npz, {r['gifs']}/{r['made']} gif, +{r['lag']:.1f} s"
    return (
        f"{name:7s} {round_!s:>5s} {f['runs']:5d} {f['slot']:7.2f} {f['to_audio']:10.2f} "
        f"{f['ratio']:7.3f} {f['worst']:7.3f} {1000 * f['handoff']:8.0f} {f['per_minute']:8.2f} "
        f"{r['load']:5.1f}  {files}"
    )


def order(round_: int) -> tuple[str, str]:
    """Before then after in odd rounds, after then before in even ones (a drift in the machine's
    speed weighs on both alike)."""
    return ("before", "after") if round_ % 2 else ("after", "before")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before", default=BEFORE, help=f"the commit measured as 'before' (default {BEFORE})"
    )
    parser.add_argument(
        "--after", default=None, help="the commit measured as 'after' (default: this checkout as it is)"
    )
    parser.add_argument("--clients", type=int, default=4, help="clients at once (default 4)")
    parser.add_argument("--runs", type=int, default=2, help="runs per client per round (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of before and after (default 4)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of audio per run (default 2)")
    parser.add_argument("--steps", default=STEPS, help=f"decoding steps per codebook (default '{STEPS}')")
    args = parser.parse_args(argv)

    from gradio_client import Client

    settings = {**GENERATE, "duration": args.duration, "decoding_steps": args.steps}
    revs = {"before": args.before, "after": args.after}
    names = {key: git("rev-parse", "--short", rev).strip() for key, rev in revs.items() if rev}
    if args.after is None:
        dirty = git("status", "--porcelain", "--", "magnet_demo", "app.py").strip()
        names["after"] = git("rev-parse", "--short", "HEAD").strip() + (
            " + uncommitted changes" if dirty else ""
        )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    where = {key: "a git worktree" if rev else "this checkout as it is" for key, rev in revs.items()}
    print(f"before: {names['before']} ({where['before']}); after: {names['after']} ({where['after']})")
    print(
        f"embedded model, {args.duration:g} s, steps {args.steps}, --concurrency 1; per round and code "
        f"{args.clients} clients x {args.runs} runs; {args.rounds} rounds, before/after then "
        f"after/before; {len(os.sched_getaffinity(0))} CPUs, {cpu}"
    )
    print(
        "slot: process_starts -> process_completed of the run's /generate job (the slot is free at its end); "
        "to audio: process_starts -> the output carrying the final audio; ratio: slot / to audio per run "
        "(median, worst); hand: the next run's start - this run's end (median); runs/min: runs / "
        "(last end - first start); load: the machine's 1-minute load average at the round's end; files: "
        "traces and animations on disk / the server's runs so far, seconds after the last end; times as "
        "gradio_client handles the messages (every 50 ms)",
        flush=True,
    )
    header = (
        f"{'code':7s} {'round':>5s} {'runs':>5s} {'slot s':>7s} {'to audio s':>10s} {'ratio':>7s} "
        f"{'worst':>7s} {'hand ms':>8s} {'runs/min':>8s} {'load':>5s}  files"
    )
    results: dict[str, list[dict]] = {"before": [], "after": []}
    problems, servers = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-slot-") as temp:
        temp = Path(temp)
        roots = {key: temp / key if rev else ROOT for key, rev in revs.items()}
        worktrees = [roots[key] for key, rev in revs.items() if rev]
        try:
            for key, rev in revs.items():
                if rev:
                    git("worktree", "add", "--detach", str(roots[key]), rev)
            for key, root in roots.items():  # both served from the start: one start each
                servers[key] = serve(key, root, temp / f"{key}-server", args.clients, args.runs, args.rounds)
                server = servers[key]
                client = Client(server.url, verbose=False, download_files=False)
                server.settings, left_out = accepted(client, settings)
                if left_out:
                    print(f"{key}: /generate does not take {', '.join(left_out)}: left out")
                timed_run(client, {**server.settings, "seed": 0}, server.audio_at)  # first-call costs
                server.made += 1
            print(header, flush=True)
            for round_ in range(1, args.rounds + 1):
                for key in order(round_):
                    r = phase(servers[key], args.clients, args.runs)
                    results[key].append(r)
                    problems += [f"{key} round {round_}: {failure}" for failure in r["failures"]]
                    if r["traces"] < r["made"] or r["gifs"] < r["made"] or not r["alive"]:
                        problems.append(
                            f"{key} round {round_}: {r['traces']} traces and {r['gifs']} animations for "
                            f"{r['made']} runs, server {'up' if r['alive'] else 'DOWN'}; its log's end:\n"
                            + servers[key].log.read_text()[-2000:]
                        )
                    if r["timings"]:
                        print(row(key, round_, r, figures(r["timings"])), flush=True)
        finally:
            for server in servers.values():
                server.process.terminate()
                server.process.wait(timeout=30)
            for worktree in worktrees:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False
                )

    for problem in problems:
        print("problem:", problem)
    if not all(r["timings"] for runs in results.values() for r in runs):
        return 1
    pooled = {}
    for key, runs in results.items():
        pooled[key] = f = figures([t for r in runs for t in r["timings"]])
        f["per_minute"] = statistics.median(figures(r["timings"])["per_minute"] for r in runs)
        last = runs[-1]
        merged = {**last, "lag": max(r["lag"] for r in runs), "load": max(r["load"] for r in runs)}
        print(row(key, "all", merged, f))
    before, after = pooled["before"], pooled["after"]
    paired = [
        figures(a["timings"])["per_minute"] / figures(b["timings"])["per_minute"]
        for a, b in zip(results["after"], results["before"], strict=True)
    ]
    print(
        f"slot per run (median of all runs): before {before['slot']:.2f} s = {before['ratio']:.3f}x its time "
        f"to audio, after {after['slot']:.2f} s = {after['ratio']:.3f}x (target <= {RATIO_TARGET}: "
        f"{'met' if after['ratio'] <= RATIO_TARGET else 'NOT met'}); time to audio {before['to_audio']:.2f} "
        f"-> {after['to_audio']:.2f} s"
    )
    print(
        f"runs per minute with {args.clients} clients (median of the rounds): before "
        f"{before['per_minute']:.2f}, after {after['per_minute']:.2f}; after/before in each round (measured "
        f"back to back): {', '.join(f'{ratio:.2f}x' for ratio in paired)}, median "
        f"{statistics.median(paired):.2f}x"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
