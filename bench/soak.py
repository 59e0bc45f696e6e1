"""Soak the studio: many clients at once, bad input between their runs, and what it costs the server.

    python -m bench.soak --clients 20 --runs 5

Starts ``app.py`` on the embedded model (its own output folder and Gradio cache, ``--queue-size``
large enough for every client), measures one client's 10 s run alone (the server's peak resident
memory after it is the single-client baseline), then runs N clients at once, each making M runs
of 10 s with a bad request (a string seed, a million steps, a foreign model, a missing run) between
two runs. Prints failed jobs, median and maximum latency, the server's peak RSS against the
baseline, and the disk used by outputs and Gradio's cache before and after, against the budget
(``--keep-runs`` runs' files). The last line reads ``soak: N clients x M runs, F failed, ...``.

    python -m bench.soak --hostile          # a quarter of the clients attack (bench/attacks.py)

With ``--hostile`` a share of the clients send, instead of runs, the attacks of
:mod:`bench.attacks` (crafted audio files, floods of made-up sessions, the queue skipped, runs at
and over the caps, a second run while one decodes), and the server runs with
``--max-run-seconds`` (``--run-limit``). The last line then reads ``hostile soak: ... honest
failed, ... peak RSS ... = R x one honest client's, server up: yes``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.space_emulation import GENERATE, free_port

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20
#: requests a visitor may send by mistake or malice; each must be refused with a readable message
BAD_REQUESTS = [
    ("/generate", {"seed": "abc"}, "Seed must be a number"),
    ("/generate", {"decoding_steps": "1000000,1,1,1"}, "this server allows at most"),
    ("/generate", {"model": "someone/any-model"}, "This server does not offer that model"),
    ("/generate", {"model": "/etc"}, "This server does not offer that model"),
]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_mib(*folders: Path) -> float:
    return sum(p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file()) / MIB


def start_app(
    port: int,
    outputs: Path,
    cache: Path,
    queue_size: int,
    keep_runs: int,
    log: Path,
    extra: tuple = (),
    root: Path = ROOT,
) -> subprocess.Popen:
    """``app.py`` of the checkout ``root`` (this one by default) on the embedded model, once it serves."""
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "app.py", "--model", "embedded", "--port", str(port), "--output-dir", str(outputs),
        "--queue-size", str(queue_size), "--keep-runs", str(keep_runs), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).close()
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the app did not start:\n{log.read_text()[-3000:]}")


def one_run(client, seed: int, duration: float) -> float:
    started = time.perf_counter()
    outputs = client.predict(
        **{**GENERATE, "duration": duration, "decoding_steps": "20, 10, 10, 10", "seed": seed},
        api_name="/generate",
    )
    if "finished" not in str(outputs[0]):
        raise RuntimeError(f"run did not finish: {str(outputs[0])[:200]}")
    return time.perf_counter() - started


def bad_request(client, index: int) -> None:
    api_name, changes, expected = BAD_REQUESTS[index % len(BAD_REQUESTS)]
    try:
        client.predict(**{**GENERATE, **changes}, api_name=api_name)
    except Exception as error:  # the refusal
        if expected not in str(error):
            raise RuntimeError(f"unreadable refusal for {changes}: {error}") from None
        return
    raise RuntimeError(f"{changes} was accepted")


def _honest(client, number: int, runs: int, duration: float, latencies: list, failures: list, lock) -> None:
    for run in range(runs):
        try:
            latency = one_run(client, 1000 * number + run, duration)
            with lock:
                latencies.append(latency)
            bad_request(client, number + run)
        except Exception as error:
            with lock:
                failures.append(f"client {number} run {run}: {type(error).__name__}: {error}")


def _hostile(client, url: str, number: int, files: list, failures: list, lock) -> None:
    from bench.attacks import attack_round

    try:
        attack_round(client, url, files, number)
    except Exception as error:
        with lock:
            failures.append(f"hostile client {number}: {type(error).__name__}: {error}")


def soak(
    clients: int, runs: int, duration: float, keep_runs: int, hostile: int = 0, run_limit: float = 0
) -> dict:
    """``clients`` at once, ``hostile`` of them attacking (:mod:`bench.attacks`), the others making
    ``runs`` runs each; what it cost the server (see the module doc)."""
    from gradio_client import Client

    from bench.attacks import crafted_files

    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        outputs, cache = temp / "outputs", temp / "gradio"
        files = crafted_files(temp / "crafted") if hostile else []
        port = free_port()
        extra = ("--max-run-seconds", str(run_limit)) if run_limit else ()
        process = start_app(
            port,
            outputs,
            cache,
            queue_size=2 * clients,
            keep_runs=keep_runs,
            log=temp / "app.log",
            extra=extra,
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            single_s = one_run(Client(url, verbose=False, download_files=False), 0, duration)
            single_rss = peak_rss_mib(process.pid)
            before = (disk_mib(outputs), disk_mib(cache))
            latencies, failures, attacks_failed, lock = [], [], [], threading.Lock()

            def visitor(number: int) -> None:
                try:
                    client = Client(url, verbose=False, download_files=False)
                except Exception as error:
                    with lock:
                        failures.extend([f"client {number}: {error}"] * runs)
                    return
                if number < hostile:
                    _hostile(client, url, number, files, attacks_failed, lock)
                else:
                    _honest(client, number, runs, duration, latencies, failures, lock)

            started = time.perf_counter()
            threads = [threading.Thread(target=visitor, args=(n,)) for n in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            after = (disk_mib(outputs), disk_mib(cache))
            peak = peak_rss_mib(process.pid)
            alive = process.poll() is None
            if alive:  # and still serving
                one_run(Client(url, verbose=False, download_files=False), 99_999, duration)
            per_run = disk_mib(outputs) / max(1, len(list(outputs.rglob("*.wav"))))
        finally:
            process.terminate()
            process.wait(timeout=30)
    return dict(
        single_s=single_s, single_rss=single_rss, peak=peak, latencies=latencies, failures=failures,
        wall=wall, before=before, after=after, budget=keep_runs * per_run, attacks_failed=attacks_failed,
        alive=alive,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of audio per run (default 10)")
    parser.add_argument("--keep-runs", type=int, default=50, help="the app's --keep-runs (default 50)")
    parser.add_argument(
        "--hostile", type=float, nargs="?", const=0.25, default=0.0,
        help="share of the clients that attack instead of making runs (default 0; 0.25 when given alone)",
    )  # fmt: skip
    parser.add_argument(
        "--run-limit",
        type=float,
        default=120.0,
        help="the app's --max-run-seconds with --hostile (default 120)",
    )
    args = parser.parse_args(argv)
    hostile = max(1, round(args.clients * args.hostile)) if args.hostile > 0 else 0
    r = soak(
        args.clients, args.runs, args.duration, args.keep_runs, hostile, args.run_limit if hostile else 0
    )
    for failure in (r["failures"] + r["attacks_failed"])[:10]:
        print("failed:", failure)
    lat = r["latencies"] or [float("nan")]
    print(f"one client alone: {r['single_s']:.1f} s per run, server peak RSS {r['single_rss']:.0f} MiB")
    print(
        f"{args.clients} clients x {args.runs} runs in {r['wall']:.0f} s: latency median {statistics.median(lat):.1f} s, "
        f"max {max(lat):.1f} s (one decoding at a time: the queue's wait is most of it)"
    )
    print(
        f"disk: outputs {r['before'][0]:.1f} -> {r['after'][0]:.1f} MiB (budget {args.keep_runs} runs = "
        f"{r['budget']:.1f} MiB), Gradio's cache {r['before'][1]:.1f} -> {r['after'][1]:.1f} MiB"
    )
    print(
        f"soak: {args.clients} clients x {args.runs} runs, {len(r['failures'])} failed, median {statistics.median(lat):.1f} s, "
        f"max {max(lat):.1f} s, peak RSS {r['peak']:.0f} MiB = {r['peak'] / r['single_rss']:.2f}x one client's, "
        f"outputs {r['after'][0]:.1f} MiB of a {r['budget']:.1f} MiB budget"
    )
    if hostile:
        print(
            f"hostile soak: {hostile} attacking clients beside {args.clients - hostile} honest ones x "
            f"{args.runs} runs, {len(r['failures'])} honest failed, {len(r['attacks_failed'])} attacks "
            f"not refused, peak RSS {r['peak']:.0f} MiB = {r['peak'] / r['single_rss']:.2f}x one honest "
            f"client's, server up: {'yes' if r['alive'] else 'NO'}"
        )


if __name__ == "__main__":
    main()
