"""Which sampling settings make the embedded model follow its captions best?

Generates clips from *training* captions (the held-out clips of ``bench.eval_embedded`` stay
untouched, so a setting chosen here does not flatter that evaluation) at each setting, and scores
them with the attribute classifier, as the evaluation does. Each setting is a comma-separated list of
``DecodingConfig`` fields; ``default`` is audiocraft's MAGNeT defaults.

    .venv/bin/python -m bench.sampling_sweep [--clips 40] [--seeds 0,1] \\
        [--settings "default;temperature=2.0;decoding_steps=[60,10,10,10],top_p=0.8"]

With 40 clips a mean accuracy moves by about +/- 0.05 between seeds, with 200 by about +/- 0.03:
only larger gaps mean much. ``--seeds 0,1,2`` generates every caption once per seed and averages.
"""

from __future__ import annotations

import json

import torch

from bench.eval_embedded import _generate, add_run_arguments, model_corpus_parser, model_label, spread_clips
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio

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


def mean_accuracy(runs: list[dict[str, float]]) -> dict[str, float]:
    """The per-attribute mean of several :func:`accuracy` dicts (one per seed)."""
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument("--clips", type=int, default=40, help="training clips, evenly spread")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="';'-separated settings")
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds; scores are averaged")
    parser.add_argument("--precision", default="auto")
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    settings = [(text.strip(), parse_setting(text)) for text in args.settings.split(";")]
    configs = [(text, DecodingConfig().replace(**fields)) for text, fields in settings]  # validated first

    model = load_model(args.model, device="cpu", precision=args.precision)
    engine = Engine(model)
    classifier = load_classifier(args.classifier)
    captions, labels = spread_clips(args.corpus, "train", args.clips)
    print(f"{len(captions)} training captions; model {args.model} ({model.precision})")

    results, per_seed = {}, {}
    for text, config in configs:
        per_seed[text] = {}
        for seed in seeds:
            clips = prepare_audio(_generate(engine, captions, config, args.batch, seed))
            per_seed[text][seed] = accuracy(predict(classifier, clips), labels)
            print(f"{text:45s} seed {seed}: {_format(per_seed[text][seed])}", flush=True)
        results[text] = mean_accuracy(list(per_seed[text].values()))
        if len(seeds) > 1:
            print(f"{text:45s} mean:   {_format(results[text])}", flush=True)
    if args.json:
        payload = {
            "model": model_label(args.model),
            "clips": len(captions),
            "seeds": seeds,
            "accuracy": results,
        }
        if len(seeds) > 1:
            payload["per_seed"] = {
                text: {str(k): v for k, v in runs.items()} for text, runs in per_seed.items()
            }
        args.json.write_text(json.dumps(payload, indent=2))


def _format(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in scores.items())


if __name__ == "__main__":
    main()
