"""Best of N first codebooks: does MAGNeT's own judgement of stage 0 pick clips that follow the caption?

``bench.stage_diagnosis`` says stage 0 (the codebook that lays out rhythm, harmony and texture)
loses most of what the caption asks for. This draws ``--candidates`` stage-0 codebooks per caption
(the engine's default decoding, one seed each), scores each candidate with the embedded MAGNeT,
and finishes stages 1-3 from the chosen one (the engine's resume path, with the generator state of
candidate 0, so the rules differ only in the stage 0 they keep). Selection rules:

- ``first``: candidate 0, i.e. plain generation at ``--seed`` (the baseline, paired with the rest);
- ``pmi@R``: the caption's pointwise mutual information with the candidate, ``log p(x | caption)
  - log p(x | no caption)`` per masked token, averaged over ``--masks`` random 3-frame span masks of
  rate ``R`` (codebooks above 0 masked, as in training); at ``R = 1`` every token is masked and the
  score only sees which codes the candidate uses, below it also sees how they fit their context;
- ``likelihood@R``: ``log p(x | caption)`` alone on the same masks (self-consistency).

The attribute classifier scores each rule's clips on the same training captions as
``bench.sampling_sweep``.

    .venv/bin/python -m bench.stage0_rerank [--clips 200] [--candidates 3] [--rules pmi@1,pmi@0.7]
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from bench.eval_embedded import add_run_arguments, model_corpus_parser, model_label, spread_clips
from magnet_demo.engine import Engine
from magnet_demo.models import load_model, stage_logits
from magnet_demo.records import StepRecord
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio
from magnet_demo.train.train_magnet import condition_tensors, span_mask

#: seed offset between the candidates of one caption batch (above any batch offset of 200 clips)
CANDIDATE_SEED_STRIDE = 100_003
SCORE_SEED = 1234
RULE_KINDS = ("pmi", "likelihood")


def stage0_candidate(engine: Engine, captions: list[str], config, seed: int) -> StepRecord:
    """The record at the end of stage 0 of a default decoding run (the later stages are not run)."""
    for record in engine.steps(captions, config, seed=seed):
        if record.is_stage_end:
            return record
    raise RuntimeError("the run ended before stage 0 did")


@torch.no_grad()
def caption_scores(
    lm, codes: torch.Tensor, captions: list[str], rate: float, masks: int, seed: int = SCORE_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-likelihoods of stage-0 ``codes`` ``[B, T]`` under MAGNeT, on masked spans.

    Returns ``(log p(x | caption), log p(x | no caption))``, each ``[B]``: the mean over the masked
    tokens of ``masks`` random span masks of ``rate`` (the same masks for both, and for every
    candidate, since ``seed`` restarts them).
    """
    B, T = codes.shape
    K, mask_id = lm.num_codebooks, lm.special_token_id
    conditions = {"caption": condition_tensors(lm, captions), "null": condition_tensors(lm, [None] * B)}
    totals = {name: torch.zeros(B) for name in conditions}
    generator = torch.Generator().manual_seed(seed)
    for _ in range(masks):
        masked = span_mask(torch.full((B,), rate), T, lm.span_len, generator)  # [B, T]
        sequence = torch.full((B, K, T), mask_id, dtype=torch.long)
        sequence[:, 0] = torch.where(masked, mask_id, codes)
        for name, tensors in conditions.items():
            logits = stage_logits(lm, sequence, tensors, 0).float()  # [B, T, card]
            token_lp = torch.log_softmax(logits, -1).gather(-1, codes[..., None])[..., 0]  # [B, T]
            totals[name] += (token_lp * masked).sum(1) / masked.sum(1)
    return totals["caption"] / masks, totals["null"] / masks


def parse_rule(text: str) -> tuple[str, float]:
    """``"pmi@0.7"`` -> ``("pmi", 0.7)``; raises ValueError for an unknown kind or a rate outside (0, 1]."""
    kind, sep, rate = text.strip().partition("@")
    if not sep or kind not in RULE_KINDS:
        raise ValueError(f"rule {text!r} is not KIND@RATE with KIND one of {', '.join(RULE_KINDS)}")
    try:
        value = float(rate)
    except ValueError as error:
        raise ValueError(f"rule {text!r}: {rate!r} is not a mask rate") from error
    if not 0 < value <= 1:
        raise ValueError(f"rule {text!r}: the mask rate must be in (0, 1]")
    return kind, value


def stage0_codes(record: StepRecord) -> torch.Tensor:
    """Codebook 0 of a record's canvas, ``[B, T]`` long."""
    return torch.as_tensor(np.asarray(record.tokens, dtype=np.int64)[:, 0])


def mixed_record(candidates: list[StepRecord], choice: np.ndarray) -> StepRecord:
    """Candidate 0's record with row ``b``'s canvas taken from candidate ``choice[b]``."""
    tokens = np.stack([np.asarray(candidates[c].tokens)[b] for b, c in enumerate(choice)])
    return dataclasses.replace(candidates[0], tokens=tokens)


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument("--clips", type=int, default=200, help="training clips, evenly spread")
    parser.add_argument("--candidates", type=int, default=3, help="stage-0 draws per caption")
    parser.add_argument("--rules", default="pmi@1,pmi@0.7", help="comma-separated KIND@RATE selection rules")
    parser.add_argument("--masks", type=int, default=4, help="random masks per score")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        scored = [parse_rule(text) for text in args.rules.split(",")]
    except ValueError as error:
        parser.error(str(error))
    if args.candidates < 2:
        parser.error("--candidates must be at least 2")

    model = load_model(args.model, device="cpu")
    engine, lm = Engine(model), model.lm
    config = model.default_config()
    classifier = load_classifier(args.classifier)
    all_captions, labels = spread_clips(args.corpus, "train", args.clips)
    rules = ["first"] + [f"{kind}@{rate:g}" for kind, rate in scored]
    clips: dict[str, list[np.ndarray]] = {rule: [] for rule in rules}
    picks: dict[str, list[int]] = {rule: [] for rule in rules}
    print(
        f"{len(all_captions)} training captions, {args.candidates} candidates; model {args.model}", flush=True
    )

    for start in range(0, len(all_captions), args.batch):
        captions = all_captions[start : start + args.batch]
        seed = args.seed + start
        candidates = [
            stage0_candidate(engine, captions, config, seed + CANDIDATE_SEED_STRIDE * c)
            for c in range(args.candidates)
        ]
        scores = {}  # rule -> [candidates, B]
        for rate in sorted({rate for _, rate in scored}):
            pairs = [caption_scores(lm, stage0_codes(c), captions, rate, args.masks) for c in candidates]
            scores[f"pmi@{rate:g}"] = torch.stack([true - null for true, null in pairs])
            scores[f"likelihood@{rate:g}"] = torch.stack([true for true, _ in pairs])
        for rule in rules:
            choice = np.zeros(len(captions), int) if rule == "first" else scores[rule].argmax(0).numpy()
            result = engine.decode(captions, config, seed=seed, resume_from=mixed_record(candidates, choice))
            clips[rule].append(result.audio)
            picks[rule] += choice.tolist()
        print(f"{start + len(captions)}/{len(all_captions)} captions", flush=True)

    results = {
        "model": model_label(args.model),
        "clips": len(all_captions),
        "candidates": args.candidates,
        "masks": args.masks,
        "seed": args.seed,
        "accuracy": {},
        "changed_from_first": {},
    }
    for rule in rules:
        results["accuracy"][rule] = accuracy(
            predict(classifier, prepare_audio(np.concatenate(clips[rule]))), labels
        )
        results["changed_from_first"][rule] = float(np.mean(np.asarray(picks[rule]) != 0))
        print(
            f"{rule:16s} "
            + "  ".join(f"{k} {v:.3f}" for k, v in results["accuracy"][rule].items())
            + f"  (kept another candidate for {results['changed_from_first'][rule]:.0%})"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
