"""Train the embedded model's rescorer: a small autoregressive MusicGen-style LM on the same tokens.

It serves twice: as the external model that re-ranks MAGNeT's spans (DESIGN.md section 2; one
teacher-forced forward scores every sampled token) and as the autoregressive baseline of the speed
comparison. Architecture: audiocraft ``LMModel`` with the delay pattern (codebook k shifted by k
frames), causal self-attention, cross-attention to the same word-level conditioner as MAGNeT.

Commands::

    python -m magnet_demo.train.train_rescorer --minutes 25 --threads 1     # -> assets/embedded/rescorer
    python -m magnet_demo.train.train_rescorer --minutes 25 --resume
    python -m magnet_demo.train.train_rescorer --quick --tokens T --corpus C --out DIR

Loss: next-token cross-entropy over the valid positions of the delay pattern
(``LMModel.compute_predictions``), all codebooks at once, ``--cond-dropout`` null conditions.
Held-out loss per codebook with the true, null and swapped caption is logged at every export.
The export folder holds ``state_dict.bin`` and a copy of the codec, so it loads on its own.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from magnet_demo.conditioning import build_vocab
from magnet_demo.train.train_magnet import (
    DEFAULT_SIZE,
    DEFAULT_TEXT,
    EVAL_CONDITIONS,
    QUICK_SIZE,
    QUICK_TEXT,
    TokenData,
    add_training_args,
    condition_tensors,
    export,
    format_eval,
    lm_config,
    log,
    model_size,
    pick_captions,
    prepare_model,
    setup,
    training_loop,
)

#: AR model size: that of the MAGNeT model, so that the speed comparison compares like with like
RESCORER_SIZE = dict(DEFAULT_SIZE)
AR_MODEL = "transformer_lm"
#: audiocraft's sinusoids: an AR model copies the previous frame from its own input position, so it
#: needs no relative positions (the shipped rescorer was trained so)
AR_POSITIONAL = "sin"
#: the pooled text vector added to every frame, beside cross-attention (which, alone, the first
#: rescorer learned to switch off once it could copy the previous frame)
AR_GLOBAL = True


def ar_loss(lm, codes: torch.Tensor, conditions: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy of the delay-pattern LM.

    Args:
        codes: ``[B, K, T]`` tokens; conditions: condition tensors of the batch.
    Returns:
        mean loss over valid positions, and per codebook the summed cross-entropy ``[K]`` and the
        number of valid positions ``[K]``.
    """
    codes = codes.to(next(lm.parameters()).device)
    out = lm.compute_predictions(codes, [], conditions)
    valid = out.mask.bool()  # [B, K, T]
    logits = out.logits.float()
    ce = F.cross_entropy(
        logits.masked_fill(~valid[..., None], 0).permute(0, 3, 1, 2), codes, reduction="none"
    )  # [B, K, T]
    ce = ce * valid
    per_k, count_k = ce.sum((0, 2)), valid.sum((0, 2))
    return per_k.sum() / count_k.sum().clamp(min=1), per_k.detach(), count_k


@torch.no_grad()
def evaluate_ar(lm, data: TokenData, n_clips: int, batch: int) -> dict[str, float]:
    """Held-out cross-entropy per codebook with the true, null and swapped caption."""
    was_training = lm.training
    lm.eval()
    clips = data.test[:n_clips]
    swapped = np.roll(clips, len(clips) // 2) if len(clips) > 1 else clips
    out = {}
    for variant in EVAL_CONDITIONS:
        sums, counts = 0.0, 0
        for start in range(0, len(clips), batch):
            idx = clips[start : start + batch]
            texts = {
                "true": [data.captions[i][0] for i in idx],
                "null": [None] * len(idx),
                "swapped": [data.captions[i][0] for i in swapped[start : start + batch]],
            }[variant]
            _, per_k, count_k = ar_loss(lm, data.codes(idx), condition_tensors(lm, texts))
            sums, counts = sums + per_k, counts + count_k
        for k in range(lm.num_codebooks):
            out[f"{variant}/stage{k}"] = round(float(sums[k] / max(int(counts[k]), 1)), 4)
    lm.train(was_training)
    return out


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) the rescorer for the budget; export and return the last held-out metrics."""
    data = setup(args, "train_rescorer")

    def make_cfg() -> dict:
        vocab = build_vocab(data.train_captions())
        size = model_size(args, RESCORER_SIZE, QUICK_SIZE)
        text = QUICK_TEXT if args.quick else DEFAULT_TEXT
        return lm_config(
            vocab, size, text, AR_POSITIONAL, AR_GLOBAL, lm_model=AR_MODEL, cfg_dropout=args.cond_dropout
        )

    lm, cfg, state = prepare_model(args, make_cfg)

    def step_loss(lm, rng, generator):
        index = rng.choice(data.train, args.batch)
        conditions = condition_tensors(lm, pick_captions(data, index, rng, args.cond_dropout))
        loss, per_k, count_k = ar_loss(lm, data.codes(index), conditions)
        terms = {f"k{k}": float(per_k[k] / max(int(count_k[k]), 1)) for k in range(len(per_k))}
        return loss, {"loss": float(loss.detach()), **terms}

    def evaluate_fn(lm):
        metrics = evaluate_ar(lm, data, args.eval_clips, args.batch)
        log.info(
            "held-out cross-entropy per codebook (uniform = %.2f):\n%s",
            math.log(lm.card),
            format_eval(metrics, lm.num_codebooks),
        )
        return metrics

    return training_loop(
        args, lm, cfg, state, step_loss, evaluate_fn, lambda lm, cfg: export(lm, cfg, args.out, args.codec)
    )


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(p, run_dir="runs/rescorer", out="assets/embedded/rescorer", minutes=25, batch=8)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    return train(args)


if __name__ == "__main__":
    main()
