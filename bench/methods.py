"""MAGNeT vs Hybrid-MAGNeT (at inference) vs autoregressive decoding: time, model passes, accuracy.

Part 1, the embedded model. Held-out captions (the ``test`` split of the corpus the embedded model
was trained on, evenly spread as ``bench.eval_embedded`` picks them; without a rendered corpus the
captions and labels are composed from the corpus's own seeded generator, which needs no audio), one
clip per caption (batch 1, each caption seeded ``seed + i``, the same seed for every method), each
caption decoded by every method in turn, so that a busy machine slows them alike:

- MAGNeT at the model's default settings, with each unmasking order (confidence = audiocraft's,
  random, margin, entropy);
- Hybrid-MAGNeT at inference (:mod:`magnet_demo.hybrid`): the embedded rescorer (the MusicGen-style
  autoregressive partner) writes the first 1 s / 3 s, MAGNeT the rest; two released models paired,
  not the paper's jointly trained hybrid model;
- the autoregressive partner alone for the whole clip (:class:`~magnet_demo.autoregressive.AREngine`,
  MusicGen's sampling: top-k 250, CFG 3, as ``bench.eval_embedded``'s baseline).

Per method: median seconds to tokens and to audio (tokens + codec) per clip, model forward passes
per clip (calls of the transformer, both models for the hybrid) and token-rows (batch rows x
positions the passes process: MAGNeT re-reads the whole canvas at every step, the autoregressive
model one position per step from its KV cache), the attribute classifier's accuracy
(``assets/classifier.pt``) and, with ``--corpus`` (a rendered corpus: real training clips for the
reference), the Fréchet distance in the classifier's embedding space (``bench.frechet``) and the
real clips' floor. A handful of clips gives a rough accuracy (+/- 0.1 and more) and a Fréchet
distance dominated by the small sample: read them as a smoke check, not a ranking; the full
evaluation is ``bench.eval_embedded``'s 235 clips.

Part 2, the released architectures' size on this CPU: magnet-small's shapes (``magnet_lm_config()``:
4 x 2048 codes, dim 1024, 24 layers, 16 heads) as MAGNeT and as a MusicGen-style autoregressive
model (the same transformer, causal, delay pattern), random weights, a LUT text conditioner (no T5
download; the released models' T5 runs once per prompt for either method and is not counted).
A whole 10 s clip takes minutes here, so the default times a few steps of each and extrapolates
to a clip (``--fullsize-clip`` runs whole clips instead): MAGNeT's first ``--fullsize-steps`` steps of
its 50 (20 + 10 + 10 + 10; every step is one pass over the 498-frame canvas with CFG, batch 2, so
steps cost alike) x 50; the autoregressive model's 503 sequence steps (500 frames + 3 for the delay
pattern) x the mean of its per-step time near the start and near the end of the clip (the
KV cache grows with the position; the late window follows a prompt prefix whose one-pass prefill is
not counted). The paper reports MAGNeT about 7x faster than its autoregressive baseline at small
batch on a GPU; a CPU has no parallel headroom for MAGNeT's full-canvas passes.

    .venv/bin/python -m bench.methods            # ~6 minutes (5m45s on a shared 2-core machine)
    .venv/bin/python -m bench.methods --quick    # ~2.5 minutes: 3 captions, 2 orders, fewer timed steps
    .venv/bin/python -m bench.methods --clips 16 --corpus data/corpus --fullsize-clip   # more

``--threads`` defaults to 1: on a shared 2-core machine a second intra-op thread mostly waits for
the busy core (an autoregressive step of small matrices ran 10x slower with 2 threads than with 1
while another process ran). All methods run with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.eval_embedded import AR_CFG, AR_TOP_K, ASSETS, reference_set, spread_indices
from bench.frechet import distance_to
from magnet_demo.audio import decode_tokens
from magnet_demo.autoregressive import ARConfig, AREngine
from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.hybrid import HybridEngine
from magnet_demo.models import EMBEDDED_DIR, LoadedModel, build_compression_model, build_lm, load_model
from magnet_demo.rescoring import EMBEDDED_RESCORER_DIR, load_rescorer
from magnet_demo.spans import UNMASKING_ORDERS

#: the corpus the embedded model was trained on (``magnet_demo.train.corpus``'s defaults)
CORPUS_SEED = 0
CORPUS_CLIPS = 5000
HYBRID_PREFIXES = (1.0, 3.0)
FULLSIZE_PROMPT = "an upbeat pop song with drums and bass"
FULLSIZE_SECONDS = 10.0


# --------------------------------------------------------------------------------------------
# counting model passes


class PassCounter:
    """Counts forward calls of a transformer and the batch rows x positions they process."""

    def __init__(self, *transformers: torch.nn.Module):
        self.passes = 0
        self.token_rows = 0
        self.handles = [t.register_forward_hook(self._hook) for t in transformers]

    def _hook(self, module, inputs, output) -> None:
        x = inputs[0]  # [rows, positions, dim]
        self.passes += 1
        self.token_rows += int(x.shape[0] * x.shape[1])

    def reset(self) -> None:
        self.passes = self.token_rows = 0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# --------------------------------------------------------------------------------------------
# part 1: the embedded model


def composed_held_out(n: int) -> tuple[list[str], list[dict]]:
    """Captions and labels of ``n`` evenly spread held-out clips of the embedded model's corpus,
    composed from the corpus's seeded generator (the same metadata ``render_clip`` writes; no
    audio is rendered)."""
    from magnet_demo.train import corpus

    splits = [{"split": corpus.clip_split(CORPUS_SEED, i)} for i in range(CORPUS_CLIPS)]
    captions, labels = [], []
    for index in spread_indices(splits, "test", n):
        clip = corpus.compose_clip(CORPUS_SEED, index)
        attrs = {k: v for k, v in clip.attributes.items() if not k.startswith("_")}
        rng = np.random.default_rng([CORPUS_SEED, index, corpus.CAPTION_STREAM])
        captions.append(corpus.make_captions(attrs, rng)[0])
        labels.append(corpus.clip_labels(attrs))
    return captions, labels


@dataclass
class MethodRuns:
    """What one method did over the captions."""

    name: str
    to_tokens: list[float] = field(default_factory=list)
    to_audio: list[float] = field(default_factory=list)
    passes: list[int] = field(default_factory=list)
    token_rows: list[int] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    frechet: float | None = None


def embedded_methods(model: LoadedModel, ar: AREngine, orders: tuple[str, ...]) -> dict:
    """``name -> run(caption, seed) -> tokens [1, K, T]`` for every method of part 1."""
    engine, hybrid = Engine(model), HybridEngine(model, ar)
    config = model.default_config()
    ar_config = ARConfig(top_k=min(AR_TOP_K, int(ar.lm.card)), cfg_coef=AR_CFG)

    def magnet(order):
        def run(caption, seed):
            return engine.decode(
                [caption], config.replace(unmasking_order=order), seed=seed, with_audio=False
            ).tokens

        return run

    def hybrid_run(prefix):
        def run(caption, seed):
            result = hybrid.decode(
                [caption], config, prefix_seconds=prefix, seed=seed, ar_config=ar_config, with_audio=False
            )
            return result.tokens

        return run

    def autoregressive(caption, seed):
        return ar.decode([caption], ar_config.replace(duration=config.duration), seed=seed).tokens

    methods = {f"MAGNeT ({order})": magnet(order) for order in orders}
    methods.update({f"Hybrid {prefix:g} s": hybrid_run(prefix) for prefix in HYBRID_PREFIXES})
    methods["AR"] = autoregressive
    return methods


@dataclass(frozen=True)
class HeldOut:
    """The held-out clips a bench decodes: their captions and labels and, from a rendered corpus,
    its audio ``[N, samples]`` int16, metadata and the indices chosen (None when composed)."""

    captions: list[str]
    labels: list[dict]
    corpus_audio: np.ndarray | None = None
    meta: list[dict] | None = None
    chosen: list[int] | None = None

    @property
    def rendered(self) -> bool:
        return self.corpus_audio is not None

    def real_audio(self) -> np.ndarray:
        """The chosen real clips ``[n, samples]`` float32 in [-1, 1]."""
        return np.asarray(self.corpus_audio[self.chosen], dtype=np.float32) / 32768.0

    def reference(self, classifier):
        """The classifier's reference set of the corpus's clips, the chosen ones left out."""
        return reference_set(classifier, self.corpus_audio, self.meta, exclude=set(self.chosen))


def held_out(corpus: str | None, clips: int) -> HeldOut:
    """``clips`` held-out captions: evenly spread over a rendered corpus's test split (``corpus``),
    or composed from the corpus's own seeded generator (:func:`composed_held_out`)."""
    if not corpus:
        return HeldOut(*composed_held_out(clips))
    from magnet_demo.train.corpus import load_corpus

    corpus_audio, meta = load_corpus(corpus)
    chosen = spread_indices(meta, "test", clips)
    captions, labels = [meta[i]["caption"] for i in chosen], [meta[i]["labels"] for i in chosen]
    return HeldOut(captions, labels, corpus_audio, meta, chosen)


def run_embedded(args) -> tuple[list[MethodRuns], dict]:
    """Part 1: every method on every caption, interleaved; then the classifier's scores."""
    from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio

    model = load_model(args.model, device="cpu", precision="float32")
    rescorer = load_rescorer(args.rescorer)
    ar = AREngine.from_rescorer(rescorer)
    held = held_out(args.corpus, args.clips)
    captions, labels = held.captions, held.labels
    orders = UNMASKING_ORDERS if not args.quick else UNMASKING_ORDERS[:2]
    methods = embedded_methods(model, ar, orders)
    counter = PassCounter(model.lm.transformer, ar.lm.transformer)
    info = {
        "captions": captions,
        "magnet_params_m": sum(p.numel() for p in model.lm.parameters()) / 1e6,
        "ar_params_m": sum(p.numel() for p in ar.lm.parameters()) / 1e6,
    }
    methods[f"Hybrid {HYBRID_PREFIXES[0]:g} s"](captions[0], args.seed)  # warm-up: both engines, once
    runs = {name: MethodRuns(name) for name in methods}
    for i, caption in enumerate(captions):
        for name, run in methods.items():
            counter.reset()
            start = time.perf_counter()
            tokens = run(caption, args.seed + i)
            tokens_s = time.perf_counter() - start
            audio = decode_tokens(model.compression_model, tokens)
            audio_s = time.perf_counter() - start
            r = runs[name]
            r.to_tokens.append(tokens_s)
            r.to_audio.append(audio_s)
            r.passes.append(counter.passes)
            r.token_rows.append(counter.token_rows)
            r.audio.append(audio[0])
        print(f"caption {i + 1}/{len(captions)} done: {caption!r}", flush=True)
    counter.remove()

    classifier = load_classifier(args.classifier)
    reference = None
    if held.rendered:
        reference = held.reference(classifier)
        real = held.real_audio()
        info["real_frechet"] = distance_to(reference, classifier, real)
        info["real_accuracy"] = accuracy(predict(classifier, prepare_audio(real)), labels)
    for r in runs.values():
        clips = prepare_audio(np.stack(r.audio), model.sample_rate)
        r.accuracy = accuracy(predict(classifier, clips), labels)
        if reference is not None:
            r.frechet = distance_to(reference, classifier, clips)
    return list(runs.values()), info


def print_embedded(runs: list[MethodRuns], info: dict, args) -> None:
    n = len(info["captions"])
    print()
    print(
        f"Part 1. Embedded model (MAGNeT {info['magnet_params_m']:.1f}M, AR partner {info['ar_params_m']:.1f}M "
        f"parameters): {n} held-out captions, one 10 s clip each (batch 1), {args.threads} thread(s), "
        f"seeds {args.seed}..{args.seed + n - 1}; times are medians per clip"
    )
    labels = [k for k in runs[0].accuracy if k != "mean"]
    header = (
        f"{'method':22s} {'tokens s':>8s} {'audio s':>8s} {'passes':>7s} {'token-rows':>10s} "
        f"{'acc':>6s} " + " ".join(f"{k:>7s}" for k in labels) + f" {'Fréchet':>8s}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        frechet = "n/a" if r.frechet is None else f"{r.frechet:.2f}"
        print(
            f"{r.name:22s} {statistics.median(r.to_tokens):8.2f} {statistics.median(r.to_audio):8.2f} "
            f"{statistics.mean(r.passes):7.0f} {statistics.mean(r.token_rows):10.0f} {r.accuracy['mean']:6.3f} "
            + " ".join(f"{r.accuracy[k]:7.3f}" for k in labels)
            + f" {frechet:>8s}"
        )
    if "real_frechet" in info:
        real = info["real_accuracy"]
        print(
            f"{'real clips (floor)':22s} {'':8s} {'':8s} {'':7s} {'':10s} {real['mean']:6.3f} "
            + " ".join(f"{real[k]:7.3f}" for k in labels)
            + f" {info['real_frechet']:8.2f}"
        )
    else:
        print("Fréchet: n/a without --corpus (a rendered corpus supplies the real reference clips).")


# --------------------------------------------------------------------------------------------
# part 2: the released architectures' size, random weights


def fullsize_models(num_layers: int) -> tuple[LoadedModel, AREngine]:
    """A random MAGNeT of magnet-small's shapes and a random causal twin (MusicGen's delay pattern)."""
    from magnet_demo.checkpoints import magnet_lm_config
    from magnet_demo.tiny import tiny_encodec_config

    torch.manual_seed(0)
    lm = build_lm(magnet_lm_config(card=2048, num_layers=num_layers)).eval()
    codec = build_compression_model(tiny_encodec_config(card=2048))  # never run: tokens only
    model = LoadedModel("magnet-small shapes (random)", "folder", lm, codec, lm.cfg)
    ar_lm = build_lm(magnet_lm_config(card=2048, num_layers=num_layers, lm_model="transformer_lm")).eval()
    return model, AREngine(ar_lm, frame_rate=model.frame_rate)


def _magnet_steps(engine: Engine, n: int | None) -> tuple[list[float], int]:
    """Seconds of the first ``n`` steps (None: all) of a 10 s clip at the default settings, and the
    steps of a whole clip."""
    config = DecodingConfig(duration=FULLSIZE_SECONDS)
    seconds = []
    for record in engine.steps([FULLSIZE_PROMPT], config, seed=0):
        seconds.append(record.step_seconds)
        if n is not None and len(seconds) >= n:
            break
    return seconds, sum(config.decoding_steps)


def _ar_steps(ar: AREngine, n: int | None, prefix: int = 0) -> tuple[list[float], int]:
    """Seconds of ``n`` sequence steps (None: all) of a 10 s clip, after a ``prefix`` of given frames
    whose one-pass prefill (the first step) is not counted, and the steps of a whole clip."""
    config = ARConfig(duration=FULLSIZE_SECONDS, frames_per_record=1, top_k=AR_TOP_K, cfg_coef=AR_CFG)
    frames = ar.frames(config)
    prompt = None
    if prefix:
        prompt = torch.randint(0, int(ar.lm.card), (1, int(ar.lm.num_codebooks), prefix))
    seconds = []
    for record in ar.steps([FULLSIZE_PROMPT], config, seed=0, prompt_tokens=prompt):
        if prefix and record.index == 0:
            continue
        seconds.append(record.step_seconds)
        if n is not None and len(seconds) >= n:
            break
    delays = record.delays
    return seconds, frames + delays[-1] - delays[0]


def run_fullsize(args) -> dict:
    """Part 2: per-step times of each method at the released size, and a 10 s clip's time."""
    start = time.perf_counter()
    model, ar = fullsize_models(args.fullsize_layers)
    engine = Engine(model)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.lm.parameters()) / 1e6
    engine.decode(
        [FULLSIZE_PROMPT], DecodingConfig(duration=1.0, decoding_steps=(1, 1, 1, 1)), with_audio=False
    )
    ar.decode([FULLSIZE_PROMPT], ARConfig(duration=0.2, top_k=AR_TOP_K))  # warm-up
    whole = args.fullsize_clip
    m_steps = None if whole else args.fullsize_steps
    a_steps = None if whole else args.fullsize_ar_steps
    magnet_s, magnet_total = _magnet_steps(engine, m_steps)
    early, ar_total = _ar_steps(ar, a_steps)
    late = []
    if not whole:
        frames = ar.frames(ARConfig(duration=FULLSIZE_SECONDS))
        delays = ar.lm.pattern_provider.delays
        late, _ = _ar_steps(ar, a_steps, prefix=frames - a_steps - (delays[-1] - delays[0]) - 1)
    magnet_step = statistics.mean(magnet_s)
    ar_step = statistics.mean(early) if whole else (statistics.mean(early) + statistics.mean(late)) / 2
    out = {
        "params_m": params,
        "build_s": build_s,
        "whole_clip": whole,
        "magnet": {"steps": magnet_total, "timed": len(magnet_s), "step_s": magnet_step},
        "ar": {
            "steps": ar_total,
            "timed": len(early) + len(late),
            "step_s": ar_step,
            "early_step_s": statistics.mean(early[: a_steps or len(early)]),
            "late_step_s": statistics.mean(late) if late else statistics.mean(early[-(a_steps or 20) :]),
        },
    }
    out["magnet"]["clip_s"] = sum(magnet_s) if whole else magnet_step * magnet_total
    out["ar"]["clip_s"] = sum(early) if whole else ar_step * ar_total
    delays = ar.lm.pattern_provider.delays
    for prefix in HYBRID_PREFIXES:  # hybrid = the AR steps of the prefix + MAGNeT's 50 steps
        steps = int(prefix * model.frame_rate) + delays[-1] - delays[0]
        out[f"hybrid_{prefix:g}"] = {"ar_steps": steps, "clip_s": steps * ar_step + out["magnet"]["clip_s"]}
    return out


def print_fullsize(out: dict, args) -> None:
    how = "whole clips" if out["whole_clip"] else "extrapolated from the timed steps"
    print()
    print(
        f"Part 2. Released architecture size, random weights: MAGNeT and a MusicGen-style AR model of "
        f"magnet-small's shapes ({out['params_m']:.0f}M parameters each with the LUT conditioner), one 10 s clip "
        f"(batch 1, CFG: 2 rows), {args.threads} thread(s); {how}"
    )
    header = f"{'method':22s} {'steps':>6s} {'timed':>6s} {'s/step':>8s} {'10 s clip s':>12s}"
    print(header)
    print("-" * len(header))
    m, a = out["magnet"], out["ar"]
    print(
        f"{'MAGNeT (20,10,10,10)':22s} {m['steps']:6d} {m['timed']:6d} {m['step_s']:8.3f} {m['clip_s']:12.1f}"
    )
    print(
        f"{'AR (delay pattern)':22s} {a['steps']:6d} {a['timed']:6d} {a['step_s']:8.3f} {a['clip_s']:12.1f}"
    )
    for prefix in HYBRID_PREFIXES:
        hybrid = out[f"hybrid_{prefix:g}"]
        name, steps = f"Hybrid {prefix:g} s (sum)", f"{hybrid['ar_steps']}+{m['steps']}"
        print(f"{name:22s} {steps:>6s} {'':6s} {'':8s} {hybrid['clip_s']:12.1f}")
    print(
        f"AR per step: {a['early_step_s']:.3f} s near the start, {a['late_step_s']:.3f} s near the end (KV cache); "
        f"building both models took {out['build_s']:.0f} s (not counted)"
    )


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 captions, 2 orders, fewer timed steps")
    parser.add_argument("--clips", type=int, default=None, help="held-out captions (default 8; --quick 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=str(EMBEDDED_DIR))
    parser.add_argument("--rescorer", default=str(EMBEDDED_RESCORER_DIR), help="the AR partner")
    parser.add_argument("--classifier", default=str(ASSETS / "classifier.pt"))
    parser.add_argument("--corpus", default=None, help="a rendered corpus: Fréchet distances and real clips")
    parser.add_argument("--skip-embedded", action="store_true", help="part 2 only")
    parser.add_argument("--skip-fullsize", action="store_true", help="part 1 only")
    parser.add_argument(
        "--fullsize-steps", type=int, default=None, help="MAGNeT steps timed (default 3; --quick 2)"
    )
    parser.add_argument(
        "--fullsize-ar-steps",
        type=int,
        default=None,
        help="AR steps timed per window (default 20; --quick 10)",
    )
    parser.add_argument("--fullsize-clip", action="store_true", help="time whole 10 s clips (~7 min more)")
    parser.add_argument("--fullsize-layers", type=int, default=24, help=argparse.SUPPRESS)  # smoke runs
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.clips = args.clips or (3 if args.quick else 8)
    args.fullsize_steps = args.fullsize_steps or (2 if args.quick else 3)
    args.fullsize_ar_steps = args.fullsize_ar_steps or (10 if args.quick else 20)
    if args.corpus and not (Path(args.corpus) / "meta.jsonl").is_file():
        parser.error(f"no rendered corpus in {args.corpus} (see bench.eval_embedded.CORPUS_COMMAND)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    results: dict = {"threads": args.threads, "quick": args.quick}
    ratios = []
    if not args.skip_embedded:
        runs, info = run_embedded(args)
        print_embedded(runs, info, args)
        tokens = {r.name: statistics.median(r.to_tokens) for r in runs}
        base = tokens["MAGNeT (confidence)"]
        ratios.append(
            "embedded tokens time vs MAGNeT: "
            + ", ".join(
                f"{name} {seconds / base:.2f}x"
                for name, seconds in tokens.items()
                if name != "MAGNeT (confidence)"
            )
        )
        results["embedded"] = {
            "info": info,
            "methods": {
                r.name: {
                    "to_tokens_s": r.to_tokens,
                    "to_audio_s": r.to_audio,
                    "passes": r.passes,
                    "token_rows": r.token_rows,
                    "accuracy": r.accuracy,
                    "frechet": r.frechet,
                }
                for r in runs
            },
        }
    if not args.skip_fullsize:
        out = run_fullsize(args)
        print_fullsize(out, args)
        ratio = out["ar"]["clip_s"] / out["magnet"]["clip_s"]
        ratios.append(
            f"released size on this CPU: AR / MAGNeT time per 10 s clip = {ratio:.2f} "
            f"(MAGNeT {'faster' if ratio > 1 else 'slower'} by {max(ratio, 1 / ratio):.1f}x; the paper: MAGNeT ~7x faster on GPU)"
        )
        results["fullsize"] = out
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("key ratios: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
