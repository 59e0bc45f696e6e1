"""Does the autoregressive model of the same size follow its captions better than MAGNeT?

Generates clips from the captions of ``bench.sampling_sweep`` (evenly spread training clips; or
the held-out ones with ``--split test``) with the embedded rescorer, a MusicGen-style
autoregressive ``LMModel`` of MAGNeT's size on the same tokens and conditioner, sampling as
MusicGen does (top-k 250, CFG 3), and scores them with the attribute classifier. Put beside the
MAGNeT's score on the same captions, it tells whether the model's size and training limit what the
generated clips get right, or MAGNeT's parallel decoding does.

    .venv/bin/python -m bench.ar_accuracy [--clips 200] [--seeds 0,1] [--json runs/ar.json]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.eval_embedded import (
    AR_CFG,
    AR_TOP_K,
    add_run_arguments,
    autoregressive_audio,
    model_corpus_parser,
    model_label,
    spread_clips,
)
from bench.sampling_sweep import mean_accuracy, parse_seeds
from magnet_demo.models import load_lm, load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio


def generate_autoregressive(lm, model, captions: list[str], batch: int, seed: int) -> np.ndarray:
    """Float32 clips ``[N, samples]``, ``batch`` captions at a time, each batch seeded ``seed + start``
    (as ``bench.eval_embedded`` seeds the engine), so a run is reproducible."""
    parts = [
        autoregressive_audio(lm, model, captions[start : start + batch], seed + start)
        for start in range(0, len(captions), batch)
    ]
    return np.concatenate(parts)


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument("--rescorer", default=None, help="the autoregressive model (default MODEL/rescorer)")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--clips", type=int, default=200, help="clips of the split, evenly spread")
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds; scores are averaged")
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    rescorer = args.rescorer or str(Path(args.model) / "rescorer")

    model = load_model(args.model, device="cpu", precision="float32")  # its codec decodes the tokens
    lm = load_lm(rescorer)
    classifier = load_classifier(args.classifier)
    captions, labels = spread_clips(args.corpus, args.split, args.clips)
    print(f"{len(captions)} {args.split} captions; autoregressive model {rescorer}", flush=True)

    per_seed = {}
    for seed in seeds:
        clips = prepare_audio(generate_autoregressive(lm, model, captions, args.batch, seed))
        per_seed[seed] = accuracy(predict(classifier, clips), labels)
        print(f"seed {seed}: " + "  ".join(f"{k} {v:.3f}" for k, v in per_seed[seed].items()), flush=True)
    result = mean_accuracy(list(per_seed.values()))
    print("mean:   " + "  ".join(f"{k} {v:.3f}" for k, v in result.items()))
    if args.json:
        payload = {
            "model": model_label(rescorer),
            "split": args.split,
            "clips": len(captions),
            "seeds": seeds,
            "sampling": {"top_k": AR_TOP_K, "cfg_coef": AR_CFG},
            "accuracy": result,
            "per_seed": {str(k): v for k, v in per_seed.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
