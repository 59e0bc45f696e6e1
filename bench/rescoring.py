"""What rescoring buys and costs: rescorer NLL, attribute accuracy and time at several weights.

For a fixed set of held-out captions (``split == "test"`` in the corpus metadata, in corpus
order) and fixed seeds, the model generates once per rescoring weight ``w`` (same seeds for every
``w``, so only rescoring differs) and we report:

- ``nll``: the rescorer's mean negative log-likelihood of the final tokens (nats per token). The
  rescorer is also the judge here, so a drop with ``w`` says that rescoring does what it is
  meant to, not that the music got better;
- ``acc``: the attribute classifier's accuracy on the decoded audio against the captions' labels
  (per attribute and mean), an independent judge;
- ``time``: engine seconds (decoding steps, not the codec) and their ratio to ``w = 0``.

Usage::

    python bench/rescoring.py                                   # embedded model + its rescorer
    python bench/rescoring.py --captions 8 --steps 10,5,5,5     # cheaper
    python bench/rescoring.py --tiny                            # tiny random models, no assets needed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magnet_demo.audio import decode_tokens  # noqa: E402
from magnet_demo.controls import PRECISIONS  # noqa: E402
from magnet_demo.engine import MAX_BATCH, Engine  # noqa: E402
from magnet_demo.models import EMBEDDED_NAME, load_model  # noqa: E402
from magnet_demo.rescoring import pair_rescorer, rescorer_for  # noqa: E402
from magnet_demo.tiny import (
    write_tiny_checkpoint,  # noqa: E402
    write_tiny_rescorer,  # noqa: E402
)

DEFAULT_WEIGHTS = (0.0, 0.3, 0.7)
DEFAULT_CAPTIONS = 24
DEFAULT_CORPUS = Path("data/corpus")
DEFAULT_CLASSIFIER = Path("assets/classifier.pt")
#: captions used by --tiny when no corpus is at hand
FALLBACK_CAPTIONS = (
    "slow piano in a minor key",
    "fast rock drums with bass",
    "calm strings",
    "bright synth pop",
)
HELD_OUT_SPLIT = "test"


def held_out_clips(corpus: Path, n: int) -> list[dict]:
    """The first ``n`` held-out clips' metadata (caption, labels), in corpus order."""
    meta_path = corpus / "meta.jsonl"
    if not meta_path.is_file():
        return []
    with open(meta_path) as f:
        clips = [json.loads(line) for line in f if line.strip()]
    return [clip for clip in clips if clip.get("split") == HELD_OUT_SPLIT][:n]


def run_all(engine, rescorer, prompts, config, weights, seed, batch):
    """Generate every prompt at every weight; per weight: tokens [N, K, T], NLL [N], engine seconds.

    Batches are the outer loop and weights the inner one, so that the load of a shared machine
    changes the time of every weight alike. Batch ``i`` uses seed ``seed + i`` at every weight.
    """
    out = {w: {"tokens": [], "nll": [], "seconds": 0.0} for w in weights}
    for index, start in enumerate(range(0, len(prompts), batch)):
        part = prompts[start : start + batch]
        for weight in weights:
            result = engine.decode(
                part, config.replace(rescore_weight=weight), seed=seed + index, with_audio=False
            )
            out[weight]["seconds"] += result.records[-1].elapsed
            out[weight]["tokens"].append(result.tokens)
            out[weight]["nll"].append(rescorer.mean_nll(result.tokens, part))
    return {w: (torch.cat(v["tokens"]), torch.cat(v["nll"]), v["seconds"]) for w, v in out.items()}


def tiny_setup(root: Path) -> tuple[str, str]:
    """A tiny random MAGNeT with a tiny rescorer beside it (for testing this script)."""
    magnet = write_tiny_checkpoint(root / "magnet", seed=0)
    write_tiny_rescorer(magnet / "rescorer", magnet, seed=1)
    return str(magnet), str(magnet / "rescorer")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=EMBEDDED_NAME)
    parser.add_argument("--rescorer", default=None, help="default: rescorer_for(model)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER, help="'none' to skip")
    parser.add_argument("--captions", type=int, default=DEFAULT_CAPTIONS)
    parser.add_argument("--weights", default=",".join(str(w) for w in DEFAULT_WEIGHTS))
    parser.add_argument("--steps", default="", help="decoding steps per codebook, e.g. 10,5,5,5")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: the model's)")
    parser.add_argument("--batch", type=int, default=MAX_BATCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny random models (tests this script)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="MAGNeT's weights (the rescorer follows them)",
    )
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    if weights[0] != 0.0:
        weights = [0.0, *weights]  # the baseline of the time ratio

    tmp = tempfile.TemporaryDirectory(prefix="bench-rescoring-")
    if args.tiny:
        args.model, args.rescorer = tiny_setup(Path(tmp.name))
    model = load_model(args.model, device="cpu", precision=args.precision)
    rescorer_name = args.rescorer
    if rescorer_name is None:
        rescorer_name, reason = rescorer_for(args.model)
        if rescorer_name is None:
            sys.exit(f"No rescorer for {args.model}: {reason}")
    rescorer = pair_rescorer(model, rescorer_name)
    clips = held_out_clips(args.corpus, args.captions)
    if clips:
        prompts = [clip["caption"] for clip in clips]
    elif args.tiny:
        prompts = list(FALLBACK_CAPTIONS)
    else:
        sys.exit(f"No held-out captions in {args.corpus}/meta.jsonl.")
    classifier = None
    if str(args.classifier) != "none" and args.classifier.is_file() and clips:
        from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio

        classifier = load_classifier(args.classifier)

    config = model.default_config().replace(duration=args.duration or model.max_duration)
    if args.steps:
        config = config.replace(decoding_steps=tuple(int(s) for s in args.steps.split(",")))
    engine = Engine(model, rescorer)
    print(
        f"model {args.model} ({sum(p.numel() for p in model.lm.parameters()) / 1e6:.1f}M), "
        f"rescorer {rescorer_name} ({sum(p.numel() for p in rescorer.lm.parameters()) / 1e6:.1f}M), "
        f"{len(prompts)} captions, steps {config.decoding_steps}, {config.duration:g} s, "
        f"torch threads {torch.get_num_threads()}, MAGNeT in {model.precision}"
    )

    # warm-up at full batch with one step per codebook (one-time costs: patterns, masks, caches)
    warm = config.replace(decoding_steps=(1,) * len(config.decoding_steps))
    for weight in (0.0, max(weights)):
        engine.decode(
            prompts[: args.batch], warm.replace(rescore_weight=weight), seed=args.seed, with_audio=False
        )
    runs = run_all(engine, rescorer, prompts, config, weights, args.seed, args.batch)
    results = []
    for weight in weights:
        tokens, nll, seconds = runs[weight]
        row = {"w": weight, "nll": float(nll.mean()), "nll_std": float(nll.std()), "seconds": seconds}
        if classifier is not None:
            audio = decode_tokens(model.compression_model, tokens)
            preds = predict(classifier, prepare_audio(audio, model.sample_rate))
            row["accuracy"] = accuracy(preds, [clip["labels"] for clip in clips])
        results.append(row)
    base = results[0]["seconds"]
    for row in results:
        row["time_ratio"] = row["seconds"] / base

    header = f"{'w':>5} {'NLL (nats/token)':>17} {'engine s':>9} {'x w=0':>6}"
    label_names = list(results[0].get("accuracy", {}))
    header += "".join(f" {name:>8}" for name in label_names)
    print(header)
    for row in results:
        line = f"{row['w']:>5.2f} {row['nll']:>9.3f} +/- {row['nll_std']:<4.2f} {row['seconds']:>9.1f} {row['time_ratio']:>6.2f}"
        line += "".join(f" {row['accuracy'][name]:>8.3f}" for name in label_names)
        print(line)
    if classifier is None:
        print("(no attribute classifier or no corpus labels: accuracy not measured)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "rescorer": rescorer_name,
                    "precision": model.precision,
                    "results": results,
                },
                indent=2,
            )
        )
    tmp.cleanup()
    return {"results": results}


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
