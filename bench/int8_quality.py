"""What ``--precision int8`` costs in quality: the embedded model in int8 vs float32, paired seeds.

Held-out captions of the embedded model's corpus (as ``bench.methods`` picks them: the ``test``
split, evenly spread; without a rendered corpus they are composed from the corpus's seeded
generator, which needs no audio), each generated at the model's default settings
(``LoadedModel.default_config``) in float32 and in int8 (:func:`magnet_demo.models.quantize_linears`)
with the same seeds: seed A and seed B, in batches of ``--batch`` (batch ``j`` gets seed
``seed + j * batch``, as ``bench.eval_embedded`` seeds its batches). A float32 clip and its int8
twin share caption, seed and batch, so they differ by the precision alone; the float32 clips of
seed A and seed B differ by the seed alone: the spread to read the precision's effect against.

Scored with the attribute classifier (``assets/classifier.pt``):

- accuracy per attribute and mean, per set (float32 A, float32 B, int8 A, int8 B);
- differences of the mean accuracy: int8 - float32 at the same seed (A, B) against
  float32 B - float32 A and int8 B - int8 A (the seed-to-seed spread);
- prediction agreement: the share of (clip, attribute) pairs whose predicted class is the same in
  two sets: float32 vs int8 at the same seed against float32 seed A vs float32 seed B;
- Fréchet distance (``bench.frechet``) between sets of generated clips, in the classifier's
  embedding space: float32 vs int8 at the same seed, and float32 A vs float32 B as the spread.
  Both sides are generated clips, so this is not ``bench.eval_embedded``'s Fréchet distance to
  real audio; the axes are the top ``--dims`` principal axes of the float32 clips' embeddings
  (fewer than the clips in a set, whose covariance would otherwise be singular). With ``--corpus``
  (a rendered corpus, not in git: ``bench.eval_embedded.CORPUS_COMMAND``) each set's distance to
  real training clips (``bench.eval_embedded.reference_set``) is added, with the real held-out
  clips as the floor.

Also the seconds per batch of each precision (batches alternate between the precisions).
Writes ``assets/int8_quality.json`` (``--out``).

    nice -n 5 .venv/bin/python -m bench.int8_quality                 # 24 captions x 2 seeds x 2 precisions
    nice -n 5 .venv/bin/python -m bench.int8_quality --clips 64      # tighter figures, ~3x longer

24 captions (96 clips of 10 s) keep the run near 20 minutes on a quiet 2-core machine (a batch of 8
clips takes ~100 s in either precision; on a machine shared with other jobs it took much longer).
With so few clips a mean accuracy moves by several hundredths from seed to seed: read the
precision's differences against the seed rows, not against zero.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.eval_embedded import ASSETS, _generate, reference_set, spread_indices
from bench.frechet import clip_embeddings, distance_to, fit_reference, frechet_distance, gaussian
from bench.methods import composed_held_out
from magnet_demo.engine import Engine
from magnet_demo.models import EMBEDDED_DIR, load_model, quantized_linears
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio

PRECISIONS = ("float32", "int8")
#: principal axes of the pairwise Fréchet distances: well under the clips of a set
DEFAULT_DIMS = 16


def set_name(precision: str, seed: str) -> str:
    return f"{precision} {seed}"


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Share of (clip, attribute) pairs whose predicted class is the same in ``a`` and ``b``."""
    return float(np.mean([np.mean(a[name] == b[name]) for name in a]))


def pairwise_frechet(embedded: dict[str, np.ndarray], pairs: list[tuple[str, str]], dims: int) -> dict:
    """Fréchet distance between sets of clip embeddings, in the ``dims`` top principal axes of the
    float32 clips of both seeds together (``bench.frechet.fit_reference``'s basis)."""
    pooled = np.concatenate([x for name, x in embedded.items() if name.startswith("float32")])
    basis = fit_reference(pooled, dims).basis
    return {
        f"{a} vs {b}": frechet_distance(gaussian(embedded[a] @ basis), gaussian(embedded[b] @ basis))
        for a, b in pairs
    }


def held_out(args) -> tuple[list[str], list[dict], tuple | None]:
    """Captions and labels of ``--clips`` held-out clips, and (audio, meta, indices) with a corpus."""
    if not args.corpus:
        captions, labels = composed_held_out(args.clips)
        return captions, labels, None
    from magnet_demo.train.corpus import load_corpus

    audio, meta = load_corpus(args.corpus)
    chosen = spread_indices(meta, "test", args.clips)
    return [meta[i]["caption"] for i in chosen], [meta[i]["labels"] for i in chosen], (audio, meta, chosen)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    captions, labels, corpus = held_out(args)
    models = {p: load_model(args.model, device="cpu", precision=p) for p in PRECISIONS}
    assert quantized_linears(models["int8"].lm) > 0 and quantized_linears(models["float32"].lm) == 0
    engines = {p: Engine(models[p]) for p in PRECISIONS}
    model = models["float32"]
    config = model.default_config()
    seeds = {"A": args.seed, "B": args.seed + args.seed_b_offset}
    audio: dict[str, list[np.ndarray]] = {set_name(p, s): [] for p in PRECISIONS for s in seeds}
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for p in PRECISIONS:  # warm-up
        engines[p].decode([captions[0]], config.replace(duration=1.0), seed=0, with_audio=False)
    for first in range(0, len(captions), args.batch):
        batch = captions[first : first + args.batch]
        for seed_name, seed in seeds.items():
            for p in PRECISIONS:
                t0 = time.perf_counter()
                # _generate seeds a batch starting at caption `first` with seed + first, as it would
                # over the whole list: the clips are those of one bench.eval_embedded-style run
                clips = _generate(engines[p], batch, config, args.batch, seed + first)
                seconds[p].append(time.perf_counter() - t0)
                audio[set_name(p, seed_name)].append(clips)
        print(f"captions {first + 1}-{first + len(batch)} of {len(captions)} done", flush=True)
    generated_s = time.perf_counter() - start

    classifier = load_classifier(args.classifier)
    clips = {name: prepare_audio(np.concatenate(parts), model.sample_rate) for name, parts in audio.items()}
    predictions = {name: predict(classifier, x) for name, x in clips.items()}
    scores = {name: accuracy(pred, labels) for name, pred in predictions.items()}
    embedded = {name: clip_embeddings(classifier, x) for name, x in clips.items()}

    def mean_diff(a: str, b: str) -> float:
        return scores[a]["mean"] - scores[b]["mean"]

    results: dict = {
        "model": "embedded" if Path(args.model).resolve() == EMBEDDED_DIR.resolve() else args.model,
        "clips": len(captions),
        "seeds": seeds,
        "batch": args.batch,
        "threads": args.threads,
        "duration_s": config.duration,
        "settings": model.settings,
        "caption_source": "corpus" if corpus else "composed (bench.methods.composed_held_out)",
        "int8_quantized_linears": quantized_linears(models["int8"].lm),
        "accuracy": scores,
        "mean_accuracy_differences": {
            "int8 - float32, seed A (precision)": mean_diff("int8 A", "float32 A"),
            "int8 - float32, seed B (precision)": mean_diff("int8 B", "float32 B"),
            "float32 B - float32 A (seed spread)": mean_diff("float32 B", "float32 A"),
            "int8 B - int8 A (seed spread)": mean_diff("int8 B", "int8 A"),
        },
        "prediction_agreement": {
            "float32 A vs int8 A (precision)": agreement(predictions["float32 A"], predictions["int8 A"]),
            "float32 B vs int8 B (precision)": agreement(predictions["float32 B"], predictions["int8 B"]),
            "float32 A vs float32 B (seed)": agreement(predictions["float32 A"], predictions["float32 B"]),
            "int8 A vs int8 B (seed)": agreement(predictions["int8 A"], predictions["int8 B"]),
        },
        "frechet_dims": args.dims,
        "frechet_between_generated": pairwise_frechet(
            embedded,
            [
                ("float32 A", "int8 A"),
                ("float32 B", "int8 B"),
                ("float32 A", "float32 B"),
                ("int8 A", "int8 B"),
                ("float32 A", "int8 B"),
            ],
            args.dims,
        ),
        "seconds_per_batch": {p: statistics.median(s) for p, s in seconds.items()},
        "seconds_per_batch_runs": seconds,
        "generation_s": generated_s,
    }
    if corpus:
        corpus_audio, meta, chosen = corpus
        reference = reference_set(classifier, corpus_audio, meta, exclude=set(chosen))
        real = np.asarray(corpus_audio[chosen], dtype=np.float32) / 32768.0
        results["frechet_to_real"] = {
            name: distance_to(reference, classifier, x) for name, x in clips.items()
        }
        results["frechet_to_real"]["real held-out clips (floor)"] = distance_to(reference, classifier, real)
    else:
        results["frechet_to_real"] = None
    results["wall_s"] = time.perf_counter() - start
    return results


def print_results(results: dict) -> None:
    print()
    print(
        f"{results['model']} model, {results['clips']} held-out captions ({results['caption_source']}), "
        f"{results['duration_s']:g} s clips, seeds A={results['seeds']['A']} B={results['seeds']['B']}, "
        f"batch {results['batch']}, {results['threads']} thread(s); int8 quantizes "
        f"{results['int8_quantized_linears']} linear layers"
    )
    names = [k for k in next(iter(results["accuracy"].values())) if k != "mean"]
    header = f"{'set':12s} {'mean acc':>8s} " + " ".join(f"{k:>7s}" for k in names)
    print(header)
    print("-" * len(header))
    for name, score in results["accuracy"].items():
        print(f"{name:12s} {score['mean']:8.3f} " + " ".join(f"{score[k]:7.3f}" for k in names))
    print("\nmean accuracy differences (precision at a fixed seed vs the seed-to-seed spread):")
    for name, value in results["mean_accuracy_differences"].items():
        print(f"  {name:40s} {value:+.3f}")
    print("prediction agreement, share of (clip, attribute) pairs with the same predicted class:")
    for name, value in results["prediction_agreement"].items():
        print(f"  {name:40s} {value:.3f}")
    print(
        f"Fréchet distance between generated sets (classifier embeddings, {results['frechet_dims']} "
        "principal axes of the float32 clips; NOT the distance to real audio):"
    )
    for name, value in results["frechet_between_generated"].items():
        print(f"  {name:40s} {value:.2f}")
    if results["frechet_to_real"] is None:
        print("Fréchet distance to real clips: n/a (no rendered corpus; pass --corpus data/corpus)")
    else:
        print("Fréchet distance to real training clips (bench.frechet):")
        for name, value in results["frechet_to_real"].items():
            print(f"  {name:40s} {value:.2f}")
    per_batch = results["seconds_per_batch"]
    print(
        "seconds per batch (median): "
        + ", ".join(f"{p} {s:.2f}" for p, s in per_batch.items())
        + f"; float32 / int8 = {per_batch['float32'] / per_batch['int8']:.2f}"
    )
    print(f"wall time {results['wall_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=24, help="held-out captions (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed A")
    parser.add_argument(
        "--seed-b-offset", type=int, default=1, help="seed B = seed + this (not a multiple of --batch)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dims", type=int, default=DEFAULT_DIMS, help="axes of the pairwise Fréchet")
    parser.add_argument("--model", default=str(EMBEDDED_DIR))
    parser.add_argument("--classifier", default=str(ASSETS / "classifier.pt"))
    parser.add_argument("--corpus", default=None, help="a rendered corpus: Fréchet distances to real clips")
    parser.add_argument("--out", type=Path, default=ASSETS / "int8_quality.json")
    args = parser.parse_args()
    if args.seed_b_offset % args.batch == 0:
        parser.error(
            "--seed-b-offset must not be a multiple of --batch (seed B's batches would reuse seed A's)"
        )
    if args.dims >= args.clips:
        parser.error(f"--dims ({args.dims}) must be smaller than --clips ({args.clips})")
    if args.corpus and not (Path(args.corpus) / "meta.jsonl").is_file():
        parser.error(f"no rendered corpus in {args.corpus} (see bench.eval_embedded.CORPUS_COMMAND)")
    results = run(args)
    print_results(results)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
