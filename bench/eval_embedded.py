"""Evaluation of the embedded model: does it make the music its caption asks for, and how fast?

An attribute classifier trained on real corpus audio (``assets/classifier.pt``) labels
(a) held-out real clips, (b) their codec reconstructions, (c) clips generated from their captions
by the embedded MAGNeT at its default settings (``LoadedModel.default_config``: audiocraft's, with
the model's recommended sampling settings), (d) the same with CFG off (coefficient 1). Also: the
multi-resolution log-mel L1 of the reconstructions, each set's Fréchet distance to real training
clips in the classifier's embedding space (``bench.frechet``), the engine's time for 10 s (median
of 5), and the MAGNeT vs autoregressive (the embedded rescorer, MusicGen-style) generation time
for 10 s, each in float32 and bfloat16 weights, timed side by side in this one run. Generated
clips use the app's default precision (``auto``). Writes the figures to
``assets/eval_embedded.json`` and the spectrogram picture to ``assets/spectrograms.png``
(``--out``, ``--figure`` to write elsewhere, e.g. when scoring a candidate model before shipping
it).

    .venv/bin/python -m bench.eval_embedded [--clips N] [--batch 8] [--model FOLDER]

``--reconstructions-only`` scores (a) and (b) and the log-mel L1 only (about a minute): the check of
a codec candidate, e.g. a longer decoder-only training, before the full evaluation. It writes its
figures only where ``--out`` says. ``--refine-phase N`` decodes with N fast Griffin-Lim iterations
on the codec's phase (``SpectralCodec.phase_refinement``; the shipped setting is 0).

With 48 clips the mean accuracies moved by up to 0.05 between seeds and checkpoints; all 235
held-out clips (the default) make the comparisons (CFG on vs off, model vs model) trustworthy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.frechet import REFERENCE_CLIPS, Reference, clip_embeddings, distance_to, fit_reference
from magnet_demo.audio import decode_tokens
from magnet_demo.controls import PRECISIONS, DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import EMBEDDED_DIR, load_lm, load_model
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio
from magnet_demo.train.corpus import load_corpus
from magnet_demo.train.train_codec import logmel_l1

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SPEED_PROMPT = "an upbeat funk groove with slap bass and drums"
SPEED_RUNS = 5
SPEED_PRECISIONS = ("float32", "bfloat16")
AR_TOP_K = 250  # MusicGen's default sampling
AR_CFG = 3.0


def _generate(
    engine: Engine, captions: list[str], config: DecodingConfig, batch: int, seed: int
) -> np.ndarray:
    out = []
    for start in range(0, len(captions), batch):
        result = engine.decode(captions[start : start + batch], config, seed=seed + start)
        out.append(result.audio)
    return np.concatenate(out)


@torch.no_grad()
def encode_clips(codec, clips: np.ndarray, batch: int = 8) -> torch.Tensor:
    """Codes ``[N, K, T]`` of float32 clips ``[N, samples]``, encoded ``batch`` at a time."""
    parts = [
        codec.encode(torch.from_numpy(clips[s : s + batch])[:, None])[0] for s in range(0, len(clips), batch)
    ]
    return torch.cat(parts)


def _spectrogram_figure(
    rows: list[tuple[str, np.ndarray]], caption: str, path: Path, sample_rate: int
) -> None:
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.2 * len(rows)), sharex=True)
    for ax, (title, audio) in zip(axes, rows, strict=True):
        mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=1024, hop_length=320, n_mels=80)
        ax.imshow(librosa.power_to_db(mel, ref=np.max), origin="lower", aspect="auto", cmap="magma", vmin=-80)
        ax.set_ylabel("mel band")
        ax.set_title(title, fontsize=10)
    axes[-1].set_xlabel("frame (50 per second)")
    fig.suptitle(f'"{caption}"', fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _time_magnet(engine: Engine) -> float:
    """Seconds for 10 s from the engine at the model's default settings, text to waveform."""
    start = time.perf_counter()
    engine.decode([SPEED_PROMPT], engine.model.default_config(), seed=0)
    return time.perf_counter() - start


@torch.no_grad()
def autoregressive_audio(lm, model, captions: list[str], seed: int) -> np.ndarray:
    """Float32 clips ``[B, samples]`` of ``model``'s full length from the autoregressive LM, sampling
    as MusicGen does (top-k ``AR_TOP_K``, CFG ``AR_CFG``) from the global generator seeded ``seed``;
    ``model``'s codec decodes the tokens."""
    from audiocraft.modules.conditioners import ConditioningAttributes

    frames = int(model.max_duration * model.frame_rate)
    names = list(lm.condition_provider.text_conditions)
    attributes = [ConditioningAttributes(text={n: text for n in names}) for text in captions]
    torch.manual_seed(seed)
    tokens = lm.generate(
        None, attributes, max_gen_len=frames, use_sampling=True, top_k=AR_TOP_K, cfg_coef=AR_CFG
    )
    return decode_tokens(model.compression_model, tokens)


def _time_autoregressive(lm, model) -> float:
    """Seconds for 10 s from the autoregressive LM (MusicGen's sampling), text to waveform."""
    start = time.perf_counter()
    autoregressive_audio(lm, model, [SPEED_PROMPT], seed=0)
    return time.perf_counter() - start


def _speed(model_dir: str, model, rescorer_dir: Path) -> dict:
    """MAGNeT and the autoregressive baseline, each in float32 and bfloat16, runs interleaved
    (``SPEED_RUNS`` rounds, medians). The headline ratio takes each method at its faster precision:
    on this CPU the step-by-step autoregressive loop is fastest in float32, MAGNeT's full passes in
    bfloat16."""
    engines = {  # the evaluated model is reused in its own precision
        p: Engine(model if model.precision == p else load_model(model_dir, device="cpu", precision=p))
        for p in SPEED_PRECISIONS
    }
    baselines = {}
    if (rescorer_dir / "state_dict.bin").is_file():
        baselines = {p: load_lm(str(rescorer_dir)).to(getattr(torch, p)) for p in SPEED_PRECISIONS}
    for engine in engines.values():  # warm-up
        engine.decode([SPEED_PROMPT], DecodingConfig(duration=1.0), seed=0)
    runs: dict[str, list[float]] = {}
    for _ in range(SPEED_RUNS):
        for precision in SPEED_PRECISIONS:
            runs.setdefault(f"magnet/{precision}", []).append(_time_magnet(engines[precision]))
            if baselines:
                seconds = _time_autoregressive(baselines[precision], model)
                runs.setdefault(f"autoregressive/{precision}", []).append(seconds)
    medians = {name: statistics.median(times) for name, times in runs.items()}
    out: dict = {"runs": runs, "median_s": medians}
    magnet_best = min(SPEED_PRECISIONS, key=lambda p: medians[f"magnet/{p}"])
    out["magnet_10s_seconds"] = medians[f"magnet/{magnet_best}"]
    out["magnet_precision"] = magnet_best
    if baselines:
        ar_best = min(SPEED_PRECISIONS, key=lambda p: medians[f"autoregressive/{p}"])
        out["autoregressive_10s_seconds"] = medians[f"autoregressive/{ar_best}"]
        out["autoregressive_precision"] = ar_best
        out["autoregressive_over_magnet"] = out["autoregressive_10s_seconds"] / out["magnet_10s_seconds"]
        out["same_precision_ratio"] = {
            p: medians[f"autoregressive/{p}"] / medians[f"magnet/{p}"] for p in SPEED_PRECISIONS
        }
    return out


def _print_accuracy(results: dict) -> None:
    """The classifier's accuracies and the reconstruction figures of ``results``."""
    print("classifier accuracy (per attribute and mean):")
    for name, scores in results["accuracy"].items():
        print(f"  {name:18s} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"reconstruction / real accuracy: {results['recon_over_real']:.3f} (target >= 0.90)")
    print(f"reconstruction log-mel L1:      {results['recon_logmel_l1']:.3f}")
    print(
        f"Fréchet distance to {REFERENCE_CLIPS} real training clips (bench.frechet): "
        + ", ".join(f"{name} {value:.2f}" for name, value in results["frechet"].items())
    )


def model_label(folder: str) -> str:
    """``folder`` as the JSON figures name it: relative to the repository when inside it."""
    path = Path(folder).resolve()
    root = ASSETS.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else folder


def evenly_spread(indices, n: int) -> list:
    """``n`` of ``indices``, evenly spread from the first to the last (the bench scripts' choice)."""
    return [indices[int(j)] for j in np.linspace(0, len(indices) - 1, n)]


def spread_indices(meta: list[dict], split: str, n: int) -> list[int]:
    """Corpus indices of ``n`` clips of ``split`` (``train`` or ``test``), evenly spread."""
    indices = [i for i, m in enumerate(meta) if m["split"] == split]
    return evenly_spread(indices, min(n, len(indices)))


def spread_clips(corpus: str, split: str, n: int) -> tuple[list[str], list[dict]]:
    """Captions and attribute labels of the clips of :func:`spread_indices`."""
    _audio, meta = load_corpus(corpus)
    chosen = spread_indices(meta, split, n)
    return [meta[i]["caption"] for i in chosen], [meta[i]["labels"] for i in chosen]


def reference_set(
    classifier, audio: np.ndarray, meta: list[dict], exclude: set[int] = frozenset(), n: int = REFERENCE_CLIPS
) -> Reference:
    """The Fréchet reference (``bench.frechet``): ``n`` evenly spread training clips of a loaded
    corpus (``load_corpus``: clips ``[N, samples]`` and their metadata), none of the indices in
    ``exclude`` (the clips being scored)."""
    candidates = [i for i, m in enumerate(meta) if m["split"] == "train" and i not in exclude]
    return fit_reference(
        clip_embeddings(classifier, audio[evenly_spread(candidates, min(n, len(candidates)))])
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every generating bench script shares: ``--batch``, ``--threads``, ``--json``."""
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


#: renders the corpus the embedded model was trained on (the same seeded 5,000 clips as train.all)
CORPUS_COMMAND = ".venv/bin/python -m magnet_demo.train.corpus --out data/corpus  # about 3 minutes"


def rendered_corpus(path: str) -> str:
    """``--corpus``: a folder holding a rendered corpus, or a message saying how to build one."""
    if not (Path(path) / "meta.jsonl").is_file():
        raise argparse.ArgumentTypeError(
            f"no rendered corpus in {path} (it is not in git); build it first with: {CORPUS_COMMAND}"
        )
    return path


def model_corpus_parser(description: str) -> argparse.ArgumentParser:
    """A command line with the model folder, the corpus and the attribute classifier to score with."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(EMBEDDED_DIR))
    parser.add_argument(
        "--corpus",
        default="data/corpus",
        type=rendered_corpus,
        help="the rendered corpus (default data/corpus; see CORPUS_COMMAND to build it)",
    )
    parser.add_argument("--classifier", default=str(ASSETS / "classifier.pt"))
    return parser


def main() -> None:
    parser = model_corpus_parser(__doc__)
    parser.add_argument(
        "--clips", type=int, default=None, help="held-out clips to evaluate (default: all 235, ~13 min)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="of the generated clips (as the app's default)",
    )
    parser.add_argument("--out", default=None, help="default assets/eval_embedded.json (full evaluation)")
    parser.add_argument(
        "--reconstructions-only",
        action="store_true",
        help="score the real clips and their reconstructions only (no generation, timing or figure)",
    )
    parser.add_argument("--figure", default=str(ASSETS / "spectrograms.png"))
    parser.add_argument(
        "--rescorer",
        default=None,
        help="autoregressive baseline (default MODEL/rescorer, else the shipped one)",
    )
    parser.add_argument(
        "--refine-phase",
        type=int,
        default=0,
        metavar="N",
        help="fast Griffin-Lim iterations on the codec's output phase (an embedded-style codec only)",
    )
    args = parser.parse_args()
    if args.refine_phase < 0:
        parser.error(f"--refine-phase must be 0 or more, got {args.refine_phase}")
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu", precision=args.precision)
    if args.refine_phase:
        if not hasattr(model.compression_model, "phase_refinement"):
            parser.error("--refine-phase needs a spectral codec (the embedded model's)")
        model.compression_model.phase_refinement = args.refine_phase
    engine = Engine(model)
    classifier = load_classifier(args.classifier)
    audio, meta = load_corpus(args.corpus)
    test = [i for i, m in enumerate(meta) if m["split"] == "test"][: args.clips]
    labels = [meta[i]["labels"] for i in test]
    captions = [meta[i]["caption"] for i in test]
    length = audio.shape[1]
    real = prepare_audio(np.asarray(audio[test], dtype=np.float32) / 32768.0)
    print(f"{len(test)} held-out clips; model {args.model}; classifier {args.classifier}")

    codec = model.compression_model
    codes = encode_clips(codec, real)
    recon_raw = decode_tokens(codec, codes)[:, :length]
    recon = prepare_audio(recon_raw)
    scored = [("real", real), ("reconstructed", recon)]
    if not args.reconstructions_only:
        default = model.default_config()  # audiocraft's defaults with the model's recommended settings
        generated = prepare_audio(_generate(engine, captions, default, args.batch, args.seed))
        cfg_off = default.replace(max_cfg_coef=1.0, min_cfg_coef=1.0)
        no_cfg = prepare_audio(_generate(engine, captions, cfg_off, args.batch, args.seed))
        scored += [("generated", generated), ("generated_cfg_off", no_cfg)]

    results: dict = {"clips": len(test), "phase_refinement": args.refine_phase, "accuracy": {}}
    for name, clips in scored:
        results["accuracy"][name] = accuracy(predict(classifier, clips), labels)
    reference = reference_set(classifier, audio, meta)
    results["frechet"] = {name: distance_to(reference, classifier, clips) for name, clips in scored}
    # the codec's own metric, on its raw output (as train_codec's evaluation computes it)
    originals = np.asarray(audio[test], dtype=np.float32) / 32768.0
    results["recon_logmel_l1"] = float(
        np.mean([logmel_l1(r, x) for r, x in zip(originals, recon_raw, strict=True)])
    )
    real_mean = results["accuracy"]["real"]["mean"]
    results["recon_over_real"] = results["accuracy"]["reconstructed"]["mean"] / real_mean
    if args.reconstructions_only:
        _print_accuracy(results)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
            print(f"wrote {args.out}")
        return
    results["generated_over_real"] = results["accuracy"]["generated"]["mean"] / real_mean
    results["cfg_off_over_real"] = results["accuracy"]["generated_cfg_off"]["mean"] / real_mean

    results["precision"] = model.precision
    results["settings"] = model.settings
    rescorer = Path(args.rescorer or Path(args.model) / "rescorer")
    if args.rescorer is None and not rescorer.is_dir():
        rescorer = EMBEDDED_DIR / "rescorer"
    results["speed"] = _speed(args.model, model, rescorer)
    for key in ("magnet_10s_seconds", "autoregressive_10s_seconds", "autoregressive_over_magnet"):
        if key in results["speed"]:
            results[key] = results["speed"][key]
    results["threads"] = args.threads

    _spectrogram_figure(
        [
            ("real (held out)", real[0]),
            ("codec reconstruction", recon[0]),
            ("generated from the caption", generated[0]),
        ],
        captions[0],
        Path(args.figure),
        model.sample_rate,
    )
    out = args.out or str(ASSETS / "eval_embedded.json")
    Path(out).write_text(json.dumps(results, indent=2))
    _print_accuracy(results)
    print(f"generated / real accuracy:      {results['generated_over_real']:.3f} (target >= 0.75)")
    print(f"CFG off / real accuracy:        {results['cfg_off_over_real']:.3f} (CFG on should beat it)")
    speed = results["speed"]
    for name, seconds in speed["median_s"].items():
        print(f"{name + ' 10 s':30s}  {seconds:.2f} s (median of {SPEED_RUNS})")
    print(
        f"MAGNeT 10 s ({speed['magnet_precision']}):        {results['magnet_10s_seconds']:.2f} s (target < 5 s)"
    )
    if "autoregressive_10s_seconds" in results:
        print(
            f"autoregressive 10 s ({speed['autoregressive_precision']}): "
            f"{results['autoregressive_10s_seconds']:.2f} s "
            f"(AR / MAGNeT = {results['autoregressive_over_magnet']:.2f}, target >= 5; same precision: "
            + ", ".join(f"{p} {r:.2f}" for p, r in speed["same_precision_ratio"].items())
            + ")"
        )
    print(f"wrote {out} and {args.figure}")


if __name__ == "__main__":
    main()
