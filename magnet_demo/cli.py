"""Command-line generation: text in, WAV files and a decoding trace out, one line per step.

.venv/bin/python -m magnet_demo.cli "a slow sad piano ballad" --duration 5 --out outputs/

Audio in (one of the two):
  --continue FILE --keep SECONDS   keep the file's first SECONDS, generate the rest
  --inpaint FILE --region START END   keep the file, re-decode START-END seconds (snapped to spans)

The decoding lab: --order (confidence, random, margin, entropy), --revision SHARE, and
--method autoregressive | hybrid (--prefix-seconds S): the model's AR partner (its rescorer)
writes the whole clip, or its first S seconds and MAGNeT the rest (WAVs only, no trace yet).

A --duration longer than the model's window is decoded window after window by any method, each
window continuing the last --overlap seconds of the one before (WAVs and a trace).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from magnet_demo.controls import (
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_PREFIX_SECONDS,
    METHOD_HYBRID,
    METHOD_MAGNET,
    METHODS,
    PRECISIONS,
    DecodingConfig,
)
from magnet_demo.spans import UNMASKING_ORDERS


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"decoding steps must be integers separated by commas, got '{text}'"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    defaults = DecodingConfig()
    p = argparse.ArgumentParser(prog="python -m magnet_demo.cli", description=__doc__.splitlines()[0])
    p.add_argument("prompts", nargs="+", help="one text description per sample")
    p.add_argument(
        "--model", default="embedded", help="'embedded', a checkpoint folder, or facebook/magnet-*"
    )
    _add_length_flags(p)
    p.add_argument(
        "--steps", type=_steps, default=defaults.decoding_steps, help="steps per codebook, e.g. 20,10,10,10"
    )
    # sampling settings: None = the model's recommended value (LoadedModel.default_config)
    model_default = "default: the model's recommended value, else {}"
    p.add_argument("--temperature", type=float, help=model_default.format(defaults.temperature))
    p.add_argument("--top-p", type=float, help=model_default.format(defaults.top_p))
    p.add_argument("--top-k", type=int, help=model_default.format(defaults.top_k))
    p.add_argument("--max-cfg", type=float, help=model_default.format(defaults.max_cfg_coef))
    p.add_argument("--min-cfg", type=float, help=model_default.format(defaults.min_cfg_coef))
    p.add_argument("--span-arrangement", default=defaults.span_arrangement, choices=["nonoverlap", "stride1"])
    p.add_argument(
        "--span-scoring", choices=["max", "prod"], help=model_default.format(defaults.span_scoring)
    )
    _add_lab_flags(p, defaults)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=Path("outputs"), help="folder for sample_<i>.wav and trace.npz"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="language-model weights (auto: bfloat16 on CPUs with AMX or AVX-512 BF16, else float32)",
    )
    audio = p.add_mutually_exclusive_group()
    audio.add_argument(
        "--continue",
        dest="continue_file",
        type=Path,
        metavar="FILE",
        help="audio (WAV, FLAC, OGG, MP3) to continue: its first --keep seconds are kept",
    )
    audio.add_argument(
        "--inpaint",
        type=Path,
        metavar="FILE",
        help="audio whose --region is re-decoded; the rest is kept",
    )
    p.add_argument("--keep", type=float, metavar="SECONDS", help="with --continue: seconds of audio to keep")
    p.add_argument(
        "--region",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="with --inpaint: the seconds to re-decode (widened to whole spans)",
    )
    return p


def _add_length_flags(p: argparse.ArgumentParser) -> None:
    """The clip's length, and the overlap of its windows when it is longer than the model's window."""
    p.add_argument(
        "--duration", type=float, default=None,
        help="seconds (default: the model's window); longer: decoded window after window",
    )  # fmt: skip
    p.add_argument(
        "--overlap", type=float, default=DEFAULT_OVERLAP_SECONDS, metavar="SECONDS",
        help=f"a long clip's windows continue this much of the one before (default {DEFAULT_OVERLAP_SECONDS:g})",
    )  # fmt: skip


def _add_lab_flags(p: argparse.ArgumentParser, defaults: DecodingConfig) -> None:
    """The decoding lab: the unmasking order, revision, and other methods than MAGNeT's."""
    p.add_argument(
        "--order", default=defaults.unmasking_order, choices=UNMASKING_ORDERS,
        help="which spans a step re-masks first (default: confidence, MAGNeT's)",
    )  # fmt: skip
    p.add_argument(
        "--revision", type=float, default=defaults.revision_share, metavar="SHARE",
        help="share of the spans fixed earlier in a codebook predicted again at each step (0-0.5; default 0)",
    )  # fmt: skip
    p.add_argument(
        "--method", default=METHOD_MAGNET, choices=METHODS,
        help="magnet (default); autoregressive: the model's AR partner (its rescorer) writes the clip frame "
        "by frame; hybrid: the AR partner writes --prefix-seconds, MAGNeT the rest",
    )  # fmt: skip
    p.add_argument(
        "--prefix-seconds", type=float, default=DEFAULT_PREFIX_SECONDS,
        help=f"with --method hybrid: the seconds the AR partner writes (default {DEFAULT_PREFIX_SECONDS:g})",
    )  # fmt: skip


def _check_audio_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--keep goes with --continue, --region with --inpaint (argparse's error and exit 2 otherwise)."""
    if args.continue_file is not None and args.keep is None:
        parser.error("--continue FILE needs --keep SECONDS (how much of its start to keep)")
    if args.inpaint is not None and args.region is None:
        parser.error("--inpaint FILE needs --region START END (the seconds to re-decode)")
    if args.keep is not None and args.continue_file is None:
        parser.error("--keep goes with --continue FILE")
    if args.region is not None and args.inpaint is None:
        parser.error("--region goes with --inpaint FILE")


def _given(args: argparse.Namespace, model, config, frames: int) -> tuple[dict, dict]:
    """The engine's given tokens of --continue / --inpaint (empty without), and trace metadata."""
    from magnet_demo import audio_in

    if args.continue_file is not None:
        if not args.keep > 0:
            raise ValueError(f"--keep must be more than 0 seconds, got {args.keep:g}.")
        # encode only the kept audio: the prompt of audiocraft's generate_continuation
        codes, note = audio_in.audio_codes(model, args.continue_file, duration=args.keep)
        tokens, mask = audio_in.continuation_given(codes, args.keep, frames, model.frame_rate)
        meta = {"continue": str(args.continue_file), "keep": args.keep}
    elif args.inpaint is not None:
        codes, note = audio_in.audio_codes(model, args.inpaint, duration=config.duration)
        start, end = args.region
        region = audio_in.region_given(codes, start, end, frames, model.frame_rate, model.lm.span_len)
        tokens, mask, note = region.tokens, region.mask, " ".join(n for n in (note, region.note) if n)
        meta = {"inpaint": str(args.inpaint), "region": [region.start_s, region.end_s]}
    else:
        return {}, {}
    if note:
        print(f"note: {note}")
    return {"given_tokens": tokens, "given_mask": mask}, meta


def _config(args: argparse.Namespace, model) -> DecodingConfig:
    """The run's DecodingConfig: the model's recommended settings, then the flags given."""
    sampling = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_cfg_coef": args.max_cfg,
        "min_cfg_coef": args.min_cfg,
        "span_scoring": args.span_scoring,
    }
    duration, window = args.duration or model.max_duration, model.max_duration
    return model.default_config().replace(
        decoding_steps=args.steps,
        duration=min(duration, window),
        clip_seconds=duration if duration > window else 0.0,
        overlap_seconds=args.overlap,
        method=args.method,
        prefix_seconds=args.prefix_seconds,
        span_arrangement=args.span_arrangement,
        unmasking_order=args.order,
        revision_share=args.revision,
        **{key: value for key, value in sampling.items() if value is not None},
    )


def _partner(args: argparse.Namespace):
    """(name, loaded partner) of the model's autoregressive partner; ValueError when it has none."""
    from magnet_demo.rescoring import load_rescorer, rescorer_for

    name, why = rescorer_for(args.model)
    if name is None:
        raise ValueError(f"--method {args.method} needs the model's autoregressive partner: {why}")
    return name, load_rescorer(name)


def _long_run(args: argparse.Namespace, model, config: DecodingConfig, report) -> tuple[np.ndarray, list]:
    """Audio ``[B, samples]`` and records of a clip longer than the model's window, decoded window
    after window by ``args.method`` (:mod:`magnet_demo.clips`); ``report`` sees every record."""
    from magnet_demo.audio import decode_tokens
    from magnet_demo.clips import clip_steps
    from magnet_demo.lab import lab_plan

    K, span = model.num_codebooks, int(model.lm.span_len)
    plan = lab_plan(config, K, model.frame_rate, model.frames(config), span)
    partner = None if args.method == METHOD_MAGNET else _partner(args)[1]
    records = []
    for record in clip_steps(model, partner, tuple(args.prompts), config, plan, seed=args.seed):
        report(record)
        records.append(record)
    return decode_tokens(model.compression_model, np.asarray(records[-1].tokens, dtype=np.int64)), records


def _partner_run(args: argparse.Namespace, model, config: DecodingConfig) -> tuple[np.ndarray, str]:
    """Audio ``[B, samples]`` of an autoregressive or hybrid run, and a line on how it went."""
    from magnet_demo.audio import decode_tokens
    from magnet_demo.autoregressive import AREngine
    from magnet_demo.hybrid import HybridEngine
    from magnet_demo.lab import ar_config as lab_ar_config

    name, partner = _partner(args)
    # MusicGen's sampling (top-k 250), within the partner's codebook
    ar_config = lab_ar_config(config.duration, partner.lm.card)  # the studio's: MusicGen's sampling
    if args.method == METHOD_HYBRID:
        result = HybridEngine(model, partner).decode(
            args.prompts, config, prefix_seconds=args.prefix_seconds, seed=args.seed, ar_config=ar_config
        )
        return (
            result.audio,
            f"{name} wrote {result.ar_seconds:.2f} s of compute, MAGNeT {result.magnet_seconds:.2f} s",
        )
    result = AREngine.from_rescorer(partner).decode(args.prompts, ar_config, seed=args.seed)
    frames = model.frames(config)
    return decode_tokens(
        model.compression_model, result.tokens[..., :frames]
    ), f"{name}: {len(result.records)} records"


def _report(r) -> None:
    """One line per step."""
    window = "" if r.window is None else f"window {r.window[0] + 1}/{r.window[1]}  "
    print(
        f"step {r.global_step + 1:3d}/{r.total_steps}  {window}codebook {r.stage}  step {r.step + 1}/{r.steps_in_stage}  "
        f"masked {r.num_masked:4d}/{r.num_units}  cfg {r.cfg_coef:5.2f}  temp {r.temperature:4.2f}  "
        f"{r.elapsed:6.2f} s",
        flush=True,
    )


def _write_wavs(folder: Path, audio: np.ndarray, sample_rate: int) -> None:
    from magnet_demo.audio import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for i, wav in enumerate(audio):
        print(f"wrote {write_wav(folder / f'sample_{i}.wav', wav, sample_rate)}")


def _long_clip(args: argparse.Namespace, model, config: DecodingConfig) -> None:
    """Decode, write and trace a clip longer than the model's window (see :func:`_long_run`)."""
    import dataclasses

    from magnet_demo.trace import save_trace

    if args.continue_file or args.inpaint:
        raise ValueError(
            f"--continue and --inpaint work within one window ({config.duration:g} s): ask for at most "
            "that --duration."
        )
    start = time.perf_counter()
    audio, records = _long_run(args, model, config, _report)
    _write_wavs(args.out, audio, model.sample_rate)
    meta = {"model": model.name, "prompts": list(args.prompts), "seed": args.seed}
    meta.update(config=dataclasses.asdict(config), sample_rate=model.sample_rate)
    print(f"wrote {save_trace(records, args.out / 'trace.npz', meta=meta, json_sidecar=True)}")
    windows = records[-1].window[1]
    print(
        f"{config.clip_seconds:g} s in {windows} windows x {len(args.prompts)} in {time.perf_counter() - start:.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_audio_args(parser, args)
    if args.method != METHOD_MAGNET and (args.continue_file or args.inpaint):
        parser.error(f"--method {args.method} generates from text only: drop --continue / --inpaint")
    from magnet_demo.engine import Engine
    from magnet_demo.models import load_model
    from magnet_demo.trace import save_trace

    try:
        model = load_model(args.model, precision=args.precision)
        config = _config(args, model)
        if config.clip_seconds > config.duration:
            _long_clip(args, model, config)
            return 0
        if args.method != METHOD_MAGNET:
            start = time.perf_counter()
            audio, how = _partner_run(args, model, config)
            _write_wavs(args.out, audio, model.sample_rate)
            print(f"{args.method}: {how}; {time.perf_counter() - start:.2f} s (no trace for this method yet)")
            return 0
        engine = Engine(model)
        given, audio_meta = _given(args, model, config, engine.frames(config))
        start = time.perf_counter()
        result = engine.decode(args.prompts, config, seed=args.seed, on_step=_report, **given)
    except ValueError as error:  # bad settings, unknown or unreachable model, unusable audio
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_wavs(args.out, result.audio, result.sample_rate)
    meta = {"model": model.name, **audio_meta}
    print(f"wrote {save_trace(result, args.out / 'trace.npz', meta=meta, json_sidecar=True)}")
    print(
        f"{config.duration:g} s x {len(args.prompts)} in {time.perf_counter() - start:.2f} s on {model.device}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
