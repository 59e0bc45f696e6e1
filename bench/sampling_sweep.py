"""Which sampling settings make the embedded model follow its captions best?

Generates clips from *training* captions (the held-out clips of ``bench.eval_embedded`` stay
untouched, so a setting chosen here does not flatter that evaluation) at each setting, and scores
them with the attribute classifier, as the evaluation does. Each setting is a comma-separated list of
``DecodingConfig`` fields; ``default`` is audiocraft's MAGNeT defaults.

    .venv/bin/python -m bench.sampling_sweep [--clips 40] \\
        [--settings "default;temperature=2.0;temperature=3.5,top_p=0.8,max_cfg_coef=20"]

With 40 clips a mean accuracy moves by about +/- 0.05 between seeds: only larger gaps mean much.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.eval_embedded import _generate, evenly_spread, model_corpus_parser, model_label
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio
from magnet_demo.train.corpus import load_corpus

#: audiocraft's defaults, two lower temperatures and two CFG strengths (the sweep of
#: ``assets/sampling_sweep.json``)
DEFAULT_SETTINGS = "default;temperature=2.0;temperature=1.0;max_cfg_coef=5;max_cfg_coef=20"


def parse_setting(text: str) -> dict[str, float | int]:
    """``"temperature=2.5,top_k=50"`` -> ``{"temperature": 2.5, "top_k": 50}``; ``"default"`` -> {}."""
    text = text.strip()
    if text in ("", "default"):
        return {}
    fields = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"setting {item!r} is not KEY=VALUE")
        fields[key.strip()] = json.loads(value)  # 50 -> int, 2.5 -> float
    return fields


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument("--clips", type=int, default=40, help="training clips, evenly spread")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="';'-separated settings")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [(text.strip(), parse_setting(text)) for text in args.settings.split(";")]
    configs = [(text, DecodingConfig().replace(**fields)) for text, fields in settings]  # validated first

    model = load_model(args.model, device="cpu", precision=args.precision)
    engine = Engine(model)
    classifier = load_classifier(args.classifier)
    _audio, meta = load_corpus(args.corpus)
    train = [i for i, m in enumerate(meta) if m["split"] == "train"]
    chosen = evenly_spread(train, args.clips)
    captions = [meta[i]["caption"] for i in chosen]
    labels = [meta[i]["labels"] for i in chosen]
    print(f"{len(chosen)} training captions; model {args.model} ({model.precision})")

    results = {}
    for text, config in configs:
        clips = prepare_audio(_generate(engine, captions, config, args.batch, args.seed))
        results[text] = accuracy(predict(classifier, clips), labels)
        print(f"{text:45s} " + "  ".join(f"{k} {v:.3f}" for k, v in results[text].items()), flush=True)
    if args.json:
        payload = {"model": model_label(args.model), "clips": len(chosen), "accuracy": results}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
