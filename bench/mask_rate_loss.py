"""Held-out cross-entropy of MAGNeT models at fixed mask rates, with the true and the null caption.

The trainer's evaluation averages over the whole cosine schedule, where low mask rates (infilling
from neighbours) dominate; generation lays out the music in its first steps, at mask rates near 1,
where only the caption can help. This prints, per model, mask rate and stage (``--stages``: the
first N, default stage 0 only), the cross-entropy with the true caption, with none, and their gap
(what the caption is worth there), on the same held-out clips and masks for every model.
``--split train`` scores training clips instead (evenly spread): the gap between the two splits
is how much a model has memorised its corpus.

    .venv/bin/python -m bench.mask_rate_loss --models assets/embedded,runs/magnet_cont/export
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from bench.eval_embedded import evenly_spread, model_label
from magnet_demo.models import load_lm
from magnet_demo.train.train_magnet import evaluate, load_data

DEFAULT_RATES = "1.0,0.9,0.7,0.5,0.2"
SPLITS = ("test", "train")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", required=True, help="comma-separated exported model folders")
    parser.add_argument("--rates", default=DEFAULT_RATES, help="comma-separated mask rates in (0, 1]")
    parser.add_argument("--tokens", default="data/tokens.npy")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--clips", type=int, default=64, help="clips of the split")
    parser.add_argument("--split", choices=SPLITS, default="test", help="held-out or training clips")
    parser.add_argument("--stages", type=int, default=1, help="codebook stages to score (from 0)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if not all(0 < r <= 1 for r in rates):
        parser.error(f"mask rates must be in (0, 1], got {args.rates}")
    torch.set_num_threads(args.threads)
    data = load_data(args.tokens, args.corpus)
    if args.split == "train":  # evaluate() scores data.test: point it at training clips
        data = dataclasses.replace(data, test=np.asarray(evenly_spread(data.train, args.clips)))
    results = {"split": args.split, "clips": len(data.test[: args.clips]), "models": {}}
    for folder in args.models.split(","):
        lm = load_lm(folder)
        rows = {}
        for rate in rates:
            metrics = evaluate(lm, data, args.clips, args.batch, rate=rate, n_stages=args.stages)
            for stage in range(args.stages):
                true, null = metrics[f"true/stage{stage}"], metrics[f"null/stage{stage}"]
                rows[f"stage{stage}@{rate}"] = {"true": true, "null": null, "gap": round(null - true, 4)}
                print(
                    f"{folder:40s} stage {stage} rate {rate:.2f}: true {true:.3f}  null {null:.3f}  gap {null - true:+.3f}"
                )
        results["models"][model_label(folder)] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
