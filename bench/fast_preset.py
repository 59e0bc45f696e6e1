"""What does a "fewer steps" preset cost in quality, and what does it save in time?

The embedded model decodes held-out captions (``bench.methods.composed_held_out``: the ``test``
split of its training corpus, evenly spread, as ``bench.eval_embedded`` picks them; no rendered
corpus needed) as 10 s clips at its default settings (``LoadedModel.default_config``: audiocraft's
20, 10, 10, 10 = 50 steps) and at each candidate preset, which changes ``decoding_steps`` only.
Every caption is decoded with every preset in turn, one clip at a time (batch 1, as the studio
makes one clip) and with the same generator seed for every preset (paired), the presets' order
rotating from one caption to the next, so that a busy machine slows them alike. Per preset:

- total steps; seconds per clip, text to waveform (median over all its clips) and the ratio of
  that median to the default's;
- the attribute classifier's accuracy (``assets/classifier.pt``, as ``bench.eval_embedded``) per
  seed, their mean and their spread (largest minus smallest); the default's spread is the noise
  floor of a comparison between seeds;
- the paired change against the default: per clip, the fraction of the four attributes it gets
  right, minus the default's on the same caption and seed; mean and standard error over all
  caption x seed pairs;
- with ``--corpus`` (a rendered corpus supplies the real reference clips) the Fréchet distance in
  the classifier's embedding space (``bench.frechet``), pooled over the seeds, and the real clips'
  floor. Without one it is not computed. With a few dozen clips it is biased by the small sample
  (the distance is measured in 64 principal axes): read it as a smoke check.

The recommendation is the candidate with the fewest steps whose loss is ruled out beyond the noise
(a non-inferiority test): its paired change minus two standard errors (about a 95% lower bound)
is no worse than minus the default's seed-to-seed spread. A candidate that merely failed to show
a significant loss does not qualify.

    .venv/bin/python -m bench.fast_preset          # 12 to 21 minutes on a shared 2-core machine
    .venv/bin/python -m bench.fast_preset --clips 4 --seeds 0 --out /tmp/fast.json   # smoke run

Writes ``assets/fast_preset.json`` (``--out``). ``--threads`` defaults to 1, as in ``bench.methods``:
on a shared 2-core machine a second intra-op thread mostly waits for the busy core (a 15-step clip
took 0.8 s with one thread and 9 to 23 s with two while other work ran). The time ratios, not the
seconds, are what carries over to another machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.eval_embedded import ASSETS, model_label, rendered_corpus
from bench.frechet import distance_to
from bench.methods import held_out
from bench.sampling_sweep import mean_accuracy, parse_seeds
from magnet_demo.controls import PRECISIONS
from magnet_demo.engine import Engine
from magnet_demo.models import EMBEDDED_DIR, load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio

#: the candidate presets: codebook 0 first, never fewer steps than an upper codebook (as audiocraft's)
CANDIDATES = "10,5,5,5;6,3,3,3"
#: caption ``i`` decodes with generator seed ``seed * SEED_STRIDE + i`` (held-out captions: 235)
SEED_STRIDE = 1000


def parse_presets(text: str) -> list[tuple[int, ...]]:
    """``"10,5,5,5;6,3,3,3"`` -> ``[(10, 5, 5, 5), (6, 3, 3, 3)]``.

    Raises ValueError on anything but positive integers, on a preset whose codebook 0 has fewer
    steps than another codebook, and on a repeated preset.
    """
    presets = []
    for item in text.split(";"):
        try:
            steps = tuple(int(n) for n in item.split(","))
        except ValueError as error:
            raise ValueError(f"preset {item.strip()!r} is not comma-separated integers") from error
        if min(steps) < 1:
            raise ValueError(f"preset {item.strip()!r}: every codebook needs at least 1 step")
        if steps[0] < max(steps):
            raise ValueError(
                f"preset {item.strip()!r}: codebook 0 needs at least as many steps as the others"
            )
        if steps in presets:
            raise ValueError(f"preset {item.strip()!r} is given twice")
        presets.append(steps)
    return presets


def preset_name(steps: tuple[int, ...]) -> str:
    """``(10, 5, 5, 5)`` -> ``"10,5,5,5"`` (the JSON keys)."""
    return ",".join(str(n) for n in steps)


def decode_interleaved(
    engine: Engine, captions: list[str], seeds: list[int], configs: list
) -> tuple[list[dict[int, list[np.ndarray]]], list[list[float]]]:
    """Every caption and seed decoded (batch 1) with every config, the configs' order rotating by
    one from each caption-seed pair to the next. Returns, per config, the clips per seed (in caption
    order) and the seconds of each decode (text to waveform). Caption ``i`` with seed ``s`` uses
    generator seed ``s * SEED_STRIDE + i`` for every config."""
    audio = [{seed: [] for seed in seeds} for _ in configs]
    seconds: list[list[float]] = [[] for _ in configs]
    pair = 0
    for i, caption in enumerate(captions):
        for seed in seeds:
            for k in range(len(configs)):
                j = (pair + k) % len(configs)
                start = time.perf_counter()
                result = engine.decode([caption], configs[j], seed=seed * SEED_STRIDE + i)
                seconds[j].append(time.perf_counter() - start)
                audio[j][seed].append(result.audio[0])
            pair += 1
    return audio, seconds


def clip_scores(preds: dict[str, np.ndarray], labels: list[dict]) -> np.ndarray:
    """Per clip, the fraction of its attributes the classifier got right, ``[N]``."""
    correct = [np.asarray(preds[name]) == np.array([clip[name] for clip in labels]) for name in preds]
    return np.mean(correct, axis=0)


def paired_change(base: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of ``other - base``, per-clip scores of the same captions and seeds."""
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.ndim != 1 or base.shape != other.shape or len(base) < 2:
        raise ValueError(f"need paired scores of one length >= 2, got shapes {base.shape} and {other.shape}")
    diff = other - base
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def recommend(rows: list[dict], noise_floor: float) -> dict | None:
    """The candidate (``rows``: dicts with ``steps``, ``change`` and ``change_se``) with the fewest
    total steps whose change minus two standard errors is at least ``-noise_floor``; None when no
    candidate's loss is ruled out beyond the noise."""
    within = [r for r in rows if r["change"] - 2 * r["change_se"] >= -noise_floor]
    return min(within, key=lambda r: sum(r["steps"]), default=None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", default=CANDIDATES, help="';'-separated step counts per codebook")
    parser.add_argument("--clips", type=int, default=80, help="held-out captions, evenly spread (of 235)")
    parser.add_argument(
        "--seeds", default="0,1", help="comma-separated sampling seeds (2 or more for a spread)"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (see the notes above)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="as the app's default")
    parser.add_argument("--model", default=str(EMBEDDED_DIR))
    parser.add_argument("--classifier", default=str(ASSETS / "classifier.pt"))
    parser.add_argument(
        "--corpus", default=None, type=rendered_corpus, help="a rendered corpus: Fréchet distances (optional)"
    )
    parser.add_argument("--out", type=Path, default=ASSETS / "fast_preset.json")
    args = parser.parse_args()
    try:
        candidates, seeds = parse_presets(args.candidates), parse_seeds(args.seeds)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()

    model = load_model(args.model, device="cpu", precision=args.precision)
    engine = Engine(model)
    default = model.default_config()
    presets = [default.decoding_steps] + [c for c in candidates if c != default.decoding_steps]
    configs = [default.replace(decoding_steps=steps) for steps in presets]
    held = held_out(args.corpus, args.clips)
    captions, labels = held.captions, held.labels
    print(
        f"{len(captions)} held-out captions (an evenly spread subset of the 235) x seeds {seeds}; "
        f"{default.duration:g} s clips, batch 1; model {model_label(args.model)} ({model.precision}), "
        f"{args.threads} thread(s); presets {', '.join(preset_name(p) for p in presets)} (first: default)",
        flush=True,
    )
    engine.decode([captions[0]], configs[-1], seed=0)  # warm-up at full length, not timed

    audio, seconds = decode_interleaved(engine, captions, seeds, configs)
    classifier = load_classifier(args.classifier)
    reference = None
    if held.rendered:
        reference = held.reference(classifier)
        real_frechet = distance_to(reference, classifier, held.real_audio())
    rows = []
    for steps, clips_per_seed, times in zip(presets, audio, seconds, strict=True):
        per_seed, scores, pooled = {}, [], []
        for seed in seeds:
            clips = prepare_audio(np.stack(clips_per_seed[seed]), model.sample_rate)
            preds = predict(classifier, clips)
            per_seed[seed] = accuracy(preds, labels)
            scores.append(clip_scores(preds, labels))
            pooled.append(clips)
        means = [per_seed[s]["mean"] for s in seeds]
        row = {
            "steps": list(steps),
            "total_steps": sum(steps),
            "seconds_per_clip": statistics.median(times),
            "seconds": times,
            "accuracy": mean_accuracy(list(per_seed.values())),
            "accuracy_per_seed": {str(s): per_seed[s] for s in seeds},
            "seed_spread": max(means) - min(means),
            "clip_scores": np.concatenate(scores),
        }
        if reference is not None:
            row["frechet"] = distance_to(reference, classifier, np.concatenate(pooled))
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds_per_clip"] / base["seconds_per_clip"]
        row["change"], row["change_se"] = (
            paired_change(base["clip_scores"], row["clip_scores"]) if row is not base else (0.0, 0.0)
        )
    noise = base["seed_spread"]
    pick = recommend(rows[1:], noise)

    print()
    header = (
        f"{'preset':12s} {'steps':>5s} {'s/clip':>7s} {'x time':>6s} "
        + " ".join(f"{'acc s' + str(s):>7s}" for s in seeds)
        + f" {'acc':>6s} {'spread':>6s} {'change':>15s}"
        + (f" {'Fréchet':>8s}" if reference is not None else "")
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        name = preset_name(tuple(row["steps"])) + (" *" if row is pick else "")
        change = "(default)" if row is base else f"{row['change']:+.3f} ± {row['change_se']:.3f}"
        print(
            f"{name:12s} {row['total_steps']:5d} {row['seconds_per_clip']:7.2f} {row['time_ratio']:6.2f} "
            + " ".join(f"{row['accuracy_per_seed'][str(s)]['mean']:7.3f}" for s in seeds)
            + f" {row['accuracy']['mean']:6.3f} {row['seed_spread']:6.3f} {change:>15s}"
            + (f" {row['frechet']:8.2f}" if reference is not None else "")
        )
    print(
        f"s/clip: median seconds per 10 s clip, text to waveform ({len(captions) * len(seeds)} clips each); "
        f"x time: over the default's. acc: classifier accuracy (mean of 4 attributes) per seed and mean; "
        f"spread: between seeds (the default's, {noise:.3f}, is the noise floor); change: paired, per clip, "
        f"vs the default (mean ± standard error)."
    )
    if reference is not None:
        print(
            f"Fréchet: pooled over seeds, {len(captions) * len(seeds)} clips (small-sample biased); "
            f"real clips' floor {real_frechet:.2f}"
        )
    else:
        frechet_note = "not computed: no rendered corpus (--corpus) for the real reference clips"
        print(f"Fréchet: {frechet_note} (bench.eval_embedded.CORPUS_COMMAND builds one).")
    if pick is None:
        print("recommended: none; no candidate's loss is ruled out beyond the noise floor")
    else:
        print(
            f"recommended: {preset_name(tuple(pick['steps']))} ({pick['total_steps']} steps): "
            f"{pick['time_ratio']:.2f}x the default's time, accuracy {pick['change']:+.3f} ± "
            f"{pick['change_se']:.3f} (lower bound {pick['change'] - 2 * pick['change_se']:+.3f}, "
            f"noise floor {noise:.3f})"
        )
    elapsed = time.perf_counter() - wall
    print(f"wall time {elapsed:.0f} s")

    payload = {
        "model": model_label(args.model),
        "precision": model.precision,
        "threads": args.threads,
        "duration_s": default.duration,
        "batch": 1,
        "captions": captions,
        "clips": len(captions),
        "held_out_total": 235,
        "seeds": seeds,
        "clip_seed": f"seed * {SEED_STRIDE} + caption index (the same for every preset)",
        "default": preset_name(presets[0]),
        "noise_floor": noise,
        "presets": {
            preset_name(tuple(row["steps"])): {**row, "clip_scores": row["clip_scores"].tolist()}
            for row in rows
        },
        "recommended": None if pick is None else preset_name(tuple(pick["steps"])),
        "frechet": None if reference is None else {"real_floor": real_frechet},
        "wall_s": elapsed,
    }
    if reference is None:
        payload["frechet_note"] = frechet_note
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
