"""Peak memory and time of ``load_model``: as shipped vs reading checkpoints as audiocraft does.

A random MAGNeT with magnet-small's architecture (``bench.fullsize_cpu``'s export: ~420M parameters,
a 1.7 GB ``state_dict.bin``) is exported once by a child process; then fresh child processes load
it, the three ways alternating, ``--runs`` times each:

- ``shipped``: ``load_model`` as it is: the package's tensors stay memory-mapped in the file's
  pages (which the kernel can drop) and the model is built without random initialisation, so the
  model holds the only in-memory copy of the weights;
- ``eager``: the same, but the package read into memory (``load_package(mmap=False)``): while the
  weights are copied, the package and the model each hold a copy;
- ``audiocraft``: read into memory and built with random initialisation, then overwritten: how
  audiocraft's own loaders (and this loader before) do it.

Each child samples its anonymous resident memory (``RssAnon`` of ``/proc/self/status``, the memory
that cannot be given back without swap) every ``SAMPLE_S`` seconds while loading, and reports its
peak, its peak RSS (anonymous and file pages) and the load time. Linux only.

    .venv/bin/python -m bench.load_memory [--num-layers 24] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SAMPLE_S = 0.005
KIB = 1024
MODES = ("shipped", "eager", "audiocraft")


def rss_anon_mib() -> float:
    """Anonymous resident memory of this process now, MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / KIB
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def measure(folder: str, mode: str, threads: int) -> dict:
    """Load ``folder`` in this process with ``mode`` and return the memory and time figures."""
    import torch

    from magnet_demo import checkpoints, models

    torch.set_num_threads(threads)
    if mode in ("eager", "audiocraft"):
        read = checkpoints.load_package

        def load_package(path, mmap=True):
            return read(path, mmap=False)

        models.load_package = load_package
    if mode == "audiocraft":

        def build_lm_for(state, cfg, device="cpu"):
            lm = models.build_lm(cfg, device)
            lm.load_state_dict(state)
            return lm

        models.build_lm_for = build_lm_for
    before = rss_anon_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon_mib())
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    model = models.load_model(folder, device="cpu")
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    params = sum(p.numel() for p in model.lm.parameters())
    return {
        "mode": mode,
        "load_s": round(seconds, 2),
        "anon_before_mib": round(before),
        "peak_anon_mib": round(max(peak[0], rss_anon_mib())),
        "anon_after_mib": round(rss_anon_mib()),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB),
        "lm_params_m": round(params / 1e6, 1),
    }


def _child(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "bench.load_memory", *args], check=True, capture_output=True)
    return out.stdout.decode().strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-layers", type=int, default=24, help="magnet-small has 24")
    parser.add_argument("--runs", type=int, default=1, help="loads per mode, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each loading process")
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.threads)))
        return

    with tempfile.TemporaryDirectory(prefix="magnet-load-memory-") as tmp:
        folder = Path(tmp) / "magnet-small-random"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.fullsize_cpu",
                "--export",
                str(folder),
                "--num-layers",
                str(args.num_layers),
            ],
            check=True,
        )
        size = (folder / "state_dict.bin").stat().st_size / KIB**3
        print(
            f"exported a random magnet-small-architecture MAGNeT ({args.num_layers} layers), {size:.2f} GiB"
        )
        rows: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                row = json.loads(_child("--measure", str(folder), mode, "--threads", str(args.threads)))
                rows[mode].append(row)
                print(json.dumps(row))
    medians = {
        mode: {
            key: statistics.median(r[key] for r in rs) for key in ("load_s", "peak_anon_mib", "peak_rss_mib")
        }
        for mode, rs in rows.items()
    }
    added = {mode: medians[mode]["peak_anon_mib"] - rows[mode][0]["anon_before_mib"] for mode in MODES}
    print(f"LM parameters: {rows['shipped'][0]['lm_params_m']}M")
    for mode in MODES:
        m = medians[mode]
        print(
            f"{mode:10s}: peak anonymous memory {m['peak_anon_mib']:.0f} MiB (+{added[mode]:.0f} MiB for loading), "
            f"peak RSS {m['peak_rss_mib']:.0f} MiB, load {m['load_s']:.1f} s (medians of {args.runs})"
        )
    for mode in MODES[1:]:
        print(
            f"{mode} / shipped: memory added by loading {added[mode] / added['shipped']:.2f}x, "
            f"load time {medians[mode]['load_s'] / medians['shipped']['load_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
