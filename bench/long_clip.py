"""A clip longer than the model's window: its time against single runs of one window, side by side.

The embedded model (a 10 s window, 50 Hz, spans of 3: 498 frames a window) decodes, in each round:

- a 30 s clip window after window with the studio's default overlap (5 s: each window continues the
  last 249 frames of the one before, so a 30 s clip is 6 windows);
- a 29.88 s clip of 3 windows that do not overlap (the most a clip of three 10 s windows can be);
- three single 10 s runs (what a person without windows would stitch together, with no context
  between them).

Every run uses the default steps (20, 10, 10, 10), decodes its audio (the long clips once, at the
end) and is timed from its first step to its audio. The rounds interleave the three, so a busy
machine slows them alike; the table shows medians and the ratio to the three single runs. One torch
thread by default (``--threads``): two threads on a shared 2-core machine are many times slower.

    .venv/bin/python -m bench.long_clip            # 3 rounds, about 4 minutes on an idle 2-core machine
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from magnet_demo.audio import decode_tokens
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model
from magnet_demo.windowed import WindowedEngine

PROMPT = "a calm piano melody with soft strings"


def three_singles(engine: Engine, config: DecodingConfig, seed: int) -> float:
    start = time.perf_counter()
    for n in range(3):
        engine.decode([PROMPT], config, seed=seed + n)
    return time.perf_counter() - start


def long_clip(
    windowed: WindowedEngine, config: DecodingConfig, seconds: float, overlap: float, seed: int
) -> float:
    start = time.perf_counter()
    result = windowed.decode([PROMPT], config, total_seconds=seconds, overlap_seconds=overlap, seed=seed)
    assert result.audio is not None  # noqa: S101  (decoded once, at the end)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("embedded")
    engine = Engine(model)
    windowed = WindowedEngine(engine)
    config = model.default_config()
    plans = {
        "30 s, overlap 5 s": (30.0, 5.0),
        "29.88 s, no overlap": (29.88, 0.0),
    }
    for name, (seconds, overlap) in plans.items():
        print(f"{name}: {len(windowed.plan(config, seconds, overlap))} windows")
    decode_tokens(model.compression_model, torch.zeros(1, 4, 50, dtype=torch.long))  # warm the codec
    times: dict[str, list[float]] = {"three single 10 s runs": [], **{name: [] for name in plans}}
    for _ in range(args.rounds):
        times["three single 10 s runs"].append(three_singles(engine, config, args.seed))
        for name, (seconds, overlap) in plans.items():
            times[name].append(long_clip(windowed, config, seconds, overlap, args.seed))
    base = statistics.median(times["three single 10 s runs"])
    print(f"\n{'run':28s} {'median s':>9s} {'vs three singles':>17s}   all rounds")
    for name, values in times.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:28s} {median:9.2f} {median / base:16.2f}x   {rounds}")
    print(f"\n{torch.get_num_threads()} threads; float32; default steps {config.decoding_steps}")


if __name__ == "__main__":
    main()
