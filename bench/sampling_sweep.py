"""Which sampling settings make the embedded model follow its captions best?

Generates clips from *training* captions (the held-out clips of ``bench.eval_embedded`` stay
untouched, so a setting chosen here does not flatter that evaluation) at each setting, and scores
them with the attribute classifier, as the evaluation does. Each setting is a comma-separated list of
``DecodingConfig`` fields; ``default`` is audiocraft's MAGNeT defaults.

    .venv/bin/python -m bench.sampling_sweep [--clips 40] [--seeds 0,1] \\
        [--settings "default;temperature=2.0;decoding_steps=[60,10,10,10],top_p=0.8"]

With 40 clips a mean accuracy moves by about +/- 0.05 between seeds, with 200 by about +/- 0.03:
only larger gaps mean much. ``--seeds 0,1,2`` generates every caption once per seed and averages.

``--time RUNS`` also times 10 s of one prompt at each setting (median of RUNS interleaved rounds).

``--from-stage N`` compares settings of the upper codebooks *paired*: codebooks 0 .. N-1 are
decoded once per caption and seed with the first setting (put ``default`` first), and every
setting continues from that same canvas and generator state (the engine's resume path) from
codebook N on, so the gaps between settings are free of the lower codebooks' seed noise; the
first setting reproduces plain generation.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from bench.eval_embedded import (
    SPEED_PROMPT,
    _generate,
    add_run_arguments,
    model_corpus_parser,
    model_label,
    reference_set,
    spread_indices,
)
from bench.frechet import distance_to
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio
from magnet_demo.train.corpus import load_corpus

#: audiocraft's defaults, two lower temperatures and two CFG strengths (the sweep of
#: ``assets/sampling_sweep.json``)
DEFAULT_SETTINGS = "default;temperature=2.0;temperature=1.0;max_cfg_coef=5;max_cfg_coef=20"


def _split_items(text: str) -> list[str]:
    """``text`` split at the commas that are not inside ``[...]``."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def parse_setting(text: str) -> dict[str, float | int | list]:
    """``"temperature=2.5,top_k=50"`` -> ``{"temperature": 2.5, "top_k": 50}``; ``"default"`` -> {}.

    Values are JSON, so lists work too: ``"decoding_steps=[60,10,10,10]"``.
    """
    text = text.strip()
    if text in ("", "default"):
        return {}
    fields = {}
    for item in _split_items(text):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"setting {item!r} is not KEY=VALUE")
        try:
            fields[key.strip()] = json.loads(value)  # 50 -> int, 2.5 -> float, [1,2] -> list
        except json.JSONDecodeError as error:
            raise ValueError(f"setting {item!r}: {value.strip()!r} is not a JSON value") from error
    return fields


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; raises ValueError on anything but distinct integers."""
    try:
        seeds = [int(item) for item in text.split(",")]
    except ValueError as error:
        raise ValueError(f"--seeds wants comma-separated integers, got {text!r}") from error
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a seed: {text!r}")
    return seeds


def _shared_record(engine: Engine, prompts: list[str], config: DecodingConfig, from_stage: int, seed: int):
    """The record that ends codebook ``from_stage - 1`` of a run of ``config``."""
    return next(
        r for r in engine.steps(prompts, config, seed=seed) if r.stage == from_stage - 1 and r.is_stage_end
    )


def generate_from_stage(
    engine: Engine,
    captions: list[str],
    configs: list[DecodingConfig],
    from_stage: int,
    batch: int,
    seed: int,
) -> list[np.ndarray]:
    """Audio ``[N, samples]`` per config; codebooks below ``from_stage`` shared by all configs.

    The shared codebooks are decoded with ``configs[0]``'s settings; every config then resumes
    from the record that ends codebook ``from_stage - 1`` (same canvas, same generator state).
    Raises ValueError when a config's step counts below ``from_stage`` differ from the first's.
    """
    first = configs[0]
    if not 1 <= from_stage < len(first.decoding_steps):
        raise ValueError(f"--from-stage must be in 1..{len(first.decoding_steps) - 1}, got {from_stage}")
    for config in configs[1:]:
        if config.decoding_steps[:from_stage] != first.decoding_steps[:from_stage]:
            raise ValueError(
                f"decoding_steps {list(config.decoding_steps)} change the shared codebooks below "
                f"{from_stage} (first setting: {list(first.decoding_steps)})"
            )
    out = [[] for _ in configs]
    for start in range(0, len(captions), batch):
        prompts, batch_seed = captions[start : start + batch], seed + start
        shared = _shared_record(engine, prompts, first, from_stage, batch_seed)
        for parts, config in zip(out, configs, strict=True):
            parts.append(engine.decode(prompts, config, seed=batch_seed, resume_from=shared).audio)
    return [np.concatenate(parts) for parts in out]


def time_settings(
    engine: Engine, configs: list[DecodingConfig], runs: int, from_stage: int = 0
) -> list[float]:
    """Median seconds per config for 10 s of one prompt (``SPEED_PROMPT``), text to waveform;
    ``runs`` rounds with the configs interleaved, after one warm-up round. With ``from_stage``,
    each run decodes the codebooks below it with ``configs[0]`` and the rest with its own config,
    as :func:`generate_from_stage` does."""
    times: list[list[float]] = [[] for _ in configs]
    for round_ in range(runs + 1):
        for seconds, config in zip(times, configs, strict=True):
            start = time.perf_counter()
            if from_stage:
                shared = _shared_record(engine, [SPEED_PROMPT], configs[0], from_stage, 0)
                engine.decode([SPEED_PROMPT], config, seed=0, resume_from=shared)
            else:
                engine.decode([SPEED_PROMPT], config, seed=0)
            if round_:  # round 0 warms up
                seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def mean_accuracy(runs: list[dict[str, float]]) -> dict[str, float]:
    """The per-attribute mean of several :func:`accuracy` dicts (one per seed)."""
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument("--clips", type=int, default=40, help="training clips, evenly spread")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="';'-separated settings")
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds; scores are averaged")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--from-stage", type=int, default=0, help="share codebooks below this one between settings (paired)"
    )
    parser.add_argument(
        "--time", type=int, default=0, metavar="RUNS", help="also time 10 s per setting (median of RUNS)"
    )
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    settings = [(text.strip(), parse_setting(text)) for text in args.settings.split(";")]
    configs = [(text, DecodingConfig().replace(**fields)) for text, fields in settings]  # validated first

    model = load_model(args.model, device="cpu", precision=args.precision)
    engine = Engine(model)
    classifier = load_classifier(args.classifier)
    corpus_audio, meta = load_corpus(args.corpus)
    chosen = spread_indices(meta, "train", args.clips)
    captions, labels = [meta[i]["caption"] for i in chosen], [meta[i]["labels"] for i in chosen]
    print(f"{len(captions)} training captions; model {args.model} ({model.precision})")
    reference = reference_set(classifier, corpus_audio, meta, exclude=set(chosen))
    real_frechet = distance_to(reference, classifier, corpus_audio[chosen])
    print(f"Fréchet distance of the captions' real clips (the floor): {real_frechet:.2f}")

    per_seed = {text: {} for text, _ in configs}
    frechet = {text: {} for text, _ in configs}
    for seed in seeds:
        if args.from_stage:
            audios = generate_from_stage(
                engine, captions, [c for _, c in configs], args.from_stage, args.batch, seed
            )
        else:
            audios = (_generate(engine, captions, config, args.batch, seed) for _, config in configs)
        for (text, _), audio in zip(configs, audios, strict=True):
            clips = prepare_audio(audio)
            per_seed[text][seed] = accuracy(predict(classifier, clips), labels)
            frechet[text][seed] = distance_to(reference, classifier, clips)
            print(
                f"{text:45s} seed {seed}: {_format(per_seed[text][seed])}  Fréchet {frechet[text][seed]:.2f}",
                flush=True,
            )
    seconds = {}
    if args.time:
        medians = time_settings(engine, [c for _, c in configs], args.time, args.from_stage)
        seconds = {text: median for (text, _), median in zip(configs, medians, strict=True)}
        for text, median in seconds.items():
            print(f"{text:45s} 10 s in {median:.2f} s (median of {args.time})", flush=True)
    results = {text: mean_accuracy(list(runs.values())) for text, runs in per_seed.items()}
    mean_frechet = {text: float(np.mean(list(runs.values()))) for text, runs in frechet.items()}
    if len(seeds) > 1:
        for text, scores in results.items():
            print(f"{text:45s} mean:   {_format(scores)}  Fréchet {mean_frechet[text]:.2f}", flush=True)
    if args.json:
        payload = {
            "model": model_label(args.model),
            "clips": len(captions),
            "seeds": seeds,
            "from_stage": args.from_stage,
            "accuracy": results,
            "frechet_real": real_frechet,
            "frechet": mean_frechet,
        }
        if seconds:
            payload["seconds_10s"] = seconds
        if len(seeds) > 1:
            payload["per_seed"] = {
                text: {str(k): v for k, v in runs.items()} for text, runs in per_seed.items()
            }
            payload["per_seed_frechet"] = {
                text: {str(k): v for k, v in runs.items()} for text, runs in frechet.items()
            }
        args.json.write_text(json.dumps(payload, indent=2))


def _format(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in scores.items())


if __name__ == "__main__":
    main()
