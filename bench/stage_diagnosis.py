"""Where does the embedded MAGNeT lose its caption? Generation with the lower codebooks given.

For each held-out clip, the embedded MAGNeT decodes from its caption at the default settings; at the
end of stage ``n - 1`` the run is forked (the engine's resume path), codebooks ``0 .. n-1`` are
replaced by the clip's true codes (its encoding by the codec) and the stages from ``n`` on are
decoded again by MAGNeT. ``given 0`` is plain generation, ``given 4`` the codec reconstruction.
The attribute classifier of ``bench.eval_embedded`` scores every variant, so the drop between two
rows is what MAGNeT's stages in between lose (e.g. ``given 1`` far above ``given 0``: stage 0, the
one that lays out the music, is the weak one).

    .venv/bin/python -m bench.stage_diagnosis [--clips 96] [--json F]
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from bench.eval_embedded import add_run_arguments, encode_clips, model_corpus_parser, model_label
from magnet_demo.audio import decode_tokens
from magnet_demo.engine import Engine
from magnet_demo.models import load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio
from magnet_demo.train.corpus import load_corpus


def _given(engine: Engine, captions, true_codes: torch.Tensor, config, seed: int) -> dict[int, np.ndarray]:
    """Audio ``[B, samples]`` per number of given codebooks (0 .. K), for one batch of captions.

    ``true_codes``: ``[B, K, T]`` codes of the real clips, already cut to the decoded length.
    """
    model = engine.model
    K = model.num_codebooks
    records = list(engine.steps(captions, config, seed=seed))
    final = torch.as_tensor(np.array(records[-1].tokens), dtype=torch.long)
    out = {0: decode_tokens(model.compression_model, final)}
    for n in range(1, K):
        stage_end = next(r for r in records if r.stage == n - 1 and r.is_stage_end)
        tokens = np.array(stage_end.tokens)
        tokens[:, :n] = true_codes[:, :n].numpy()
        fork = dataclasses.replace(stage_end, tokens=tokens)
        result = engine.decode(captions, config, seed=seed, resume_from=fork)
        out[n] = result.audio
    out[K] = decode_tokens(model.compression_model, true_codes)
    return out


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument("--clips", type=int, default=96, help="held-out clips (the first N)")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu")
    engine = Engine(model)
    config = model.default_config()
    classifier = load_classifier(args.classifier)
    audio, meta = load_corpus(args.corpus)
    test = [i for i, m in enumerate(meta) if m["split"] == "test"][: args.clips]
    real = prepare_audio(np.asarray(audio[test], dtype=np.float32) / 32768.0)
    T = engine.frames(config)
    codes = encode_clips(model.compression_model, real)[..., :T]

    variants: dict[int, list[np.ndarray]] = {}
    for start in range(0, len(test), args.batch):
        captions = [meta[i]["caption"] for i in test[start : start + args.batch]]
        batch = _given(engine, captions, codes[start : start + args.batch], config, args.seed + start)
        for n, clips in batch.items():
            variants.setdefault(n, []).append(clips)
        print(f"{start + len(captions)}/{len(test)} clips", flush=True)

    labels = [meta[i]["labels"] for i in test]
    results = {"clips": len(test), "model": model_label(args.model), "accuracy": {}}
    results["accuracy"]["real"] = accuracy(predict(classifier, real), labels)
    for n in sorted(variants):
        clips = prepare_audio(np.concatenate(variants[n]))
        results["accuracy"][f"given {n}"] = accuracy(predict(classifier, clips), labels)
    for name, scores in results["accuracy"].items():
        print(f"{name:10s} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
