"""A full-size MAGNeT on CPU: load time, generation time, peak memory, restricted-attention check.

The language model has magnet-small's architecture (``magnet_lm_config()`` defaults: 4 x 2048
codes, dim 1024, 16 heads, 24 layers, 419.6M parameters, ``memory_efficient`` like the released
checkpoint, so the loader's CPU fallback to the einsum attention path runs) with random weights
and a LUT text conditioner (no T5 download). The codec is the tiny random 32 kHz / 50 Hz EnCodec of
:mod:`magnet_demo.tiny` with 2048 codes. Both are exported in audiocraft's format to a temp folder
by a child process, so the measured process's peak memory counts only loading and generating.

Then, in this process:

1. ``load_model(folder)`` (timed), one 10 s generation with the default settings through the
   :class:`~magnet_demo.engine.Engine` (timed, steps and codec decoding apart), peak RSS.
2. Restricted context at T = 500 for stage 1 (codebooks > 0 attend to +/- 5 frames):
   a. the first layer's self-attention output during :func:`magnet_demo.models.stage_logits`
      equals a reference attention computed here from the layer's weights and an explicit mask;
   b. the logits of ``stage_logits`` equal audiocraft's own ``LMModel.forward(stage=1)`` run with
      the stage mask rebuilt by audiocraft's ``restricted_context_attn_mask`` for 500 frames
      (its built-in mask is sized for 504 frames and does not fit a 500-frame input);
   c. unrestricted attention gives clearly different outputs (so a and b mean something).

With ``--precisions`` (e.g. ``float32,int8,bfloat16``) it measures instead, side by side in one
run, the seconds per decoding step of each precision (:func:`magnet_demo.models.load_model`'s
``precision``) on the same exported model: every model is loaded (timed), warmed up with one
short decode, then the timed runs' steps alternate between the precisions (step 1 of each, step 2
of each, ...) so that a busy machine slows them alike. It prints the median seconds per step, the
speed-up over float32, the weights' size, and how far each precision's logits of one pass (a
fixed half-decoded canvas, codebook 1) are from float32's (relative max error, share of frames
whose most likely code agrees). bfloat16 is skipped, saying so, on a CPU without
:func:`magnet_demo.models.native_bfloat16_matmul`. The weights are random, so the logits
comparison measures the rounding of 24 layers, not the music's quality (``bench/int8_quality.py``
measures that on the embedded model).

Usage::

    nice -n 5 python bench/fullsize_cpu.py            # full run (~minutes on 2 cores)
    python bench/fullsize_cpu.py --check-only          # skip the generation
    python bench/fullsize_cpu.py --steps 2,1,1,1 --duration 2   # quick smoke run
    nice -n 5 python bench/fullsize_cpu.py --precisions float32,int8,bfloat16 --steps 2,1,1,1 --duration 10
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE, MODEL_SCALES, magnet_lm_config, save_package  # noqa: E402
from magnet_demo.controls import DecodingConfig  # noqa: E402
from magnet_demo.engine import Engine  # noqa: E402
from magnet_demo.models import (  # noqa: E402
    build_compression_model,
    build_lm,
    load_model,
    native_bfloat16_matmul,
    resolve_precision,
    stage_logits,
)
from magnet_demo.tiny import TINY_SAMPLE_RATE, tiny_encodec_config  # noqa: E402

CARD = 2048
CHECK_FRAMES = 500
CHECK_STAGE = 1
PROMPT = "an upbeat pop song with drums and bass"
#: relative tolerance of the float32 comparisons (different summation orders)
RTOL = 1e-4
KIB = 1024


def export(folder: Path, seed: int, num_layers: int) -> None:
    """Write the random full-size MAGNeT and its codec to ``folder`` (run in a child process)."""
    torch.manual_seed(seed)
    lm_cfg = magnet_lm_config(card=CARD, num_layers=num_layers)
    lm_cfg["sample_rate"] = TINY_SAMPLE_RATE
    comp_cfg = tiny_encodec_config(card=CARD)
    save_package(build_compression_model(comp_cfg).state_dict(), comp_cfg, folder / COMPRESSION_FILE)
    lm = build_lm(lm_cfg)
    save_package(lm.state_dict(), lm_cfg, folder / LM_FILE)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def check_inputs(lm) -> tuple[torch.Tensor, dict]:
    """A fixed canvas of ``CHECK_FRAMES`` frames (codebook 0 decoded, half of codebook 1 proposed,
    the rest masked) and the conditions of ``PROMPT``: the input of the checks."""
    from audiocraft.modules.conditioners import ConditioningAttributes  # after magnet_demo's compat shim

    T, K = CHECK_FRAMES, lm.num_codebooks
    generator = torch.Generator().manual_seed(0)
    tokens = torch.full((1, K, T), lm.special_token_id, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, lm.card, (1, T), generator=generator)  # stage 0 decoded
    proposals = torch.randint(0, lm.card, (1, T), generator=generator)
    tokens[:, CHECK_STAGE] = torch.where(torch.rand(1, T, generator=generator) < 0.5, proposals, lm.card)
    names = list(lm.condition_provider.text_conditions)
    attributes = [ConditioningAttributes(text={n: PROMPT for n in names})]
    conditions = lm.condition_provider(lm.condition_provider.tokenize(attributes))
    return tokens, conditions


@torch.no_grad()
def check_restricted_context(model) -> dict[str, float]:
    """Checks a-c of the module doc at T = 500 frames; returns the relative errors."""
    lm = model.lm
    T = CHECK_FRAMES
    tokens, conditions = check_inputs(lm)

    attn = lm.transformer.layers[0].self_attn
    captured = {}

    def hook(module, inputs, output):
        captured["x"], captured["out"] = inputs[0], output[0]

    handle = attn.register_forward_hook(hook)
    logits = stage_logits(lm, tokens, conditions, CHECK_STAGE)  # [1, T, card]
    handle.remove()

    # a. reference attention of the first layer, from its weights and an explicit +/- 5 mask
    x = captured["x"]  # [1, T, dim], after the layer's first norm
    heads, dim = attn.num_heads, attn.embed_dim
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).split(dim, dim=-1)
    q, k, v = (t.reshape(1, T, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
    pos = torch.arange(T)
    allowed = (pos[:, None] - pos[None, :]).abs() <= lm.subcodes_context
    weights = (q @ k.transpose(-1, -2)) / (dim // heads) ** 0.5
    restricted = torch.softmax(weights.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    unrestricted = torch.softmax(weights, dim=-1) @ v

    def project(h):
        return attn.out_proj(h.transpose(1, 2).reshape(1, T, dim))

    reference, full_attention = project(restricted), project(unrestricted)

    # b. audiocraft's own forward with a correctly sized stage mask
    saved = lm.attn_mask_per_stage[CHECK_STAGE]
    lm.attn_mask_per_stage[CHECK_STAGE] = lm.restricted_context_attn_mask(T, x.device, x.dtype)
    try:
        audiocraft_logits = lm.forward(tokens, [], conditions, stage=CHECK_STAGE)[:, CHECK_STAGE]
    finally:
        lm.attn_mask_per_stage[CHECK_STAGE] = saved

    return {
        "first_layer_vs_reference": _relative_error(captured["out"], reference),
        "first_layer_vs_unrestricted": _relative_error(captured["out"], full_attention),
        "logits_vs_audiocraft_forward": _relative_error(logits, audiocraft_logits),
    }


# --------------------------------------------------------------------------------------------
# --precisions: seconds per step of each precision, side by side


def weights_mib(lm: torch.nn.Module) -> float:
    """Bytes of ``lm``'s weights in MiB: its parameters, and the int8 weights and float biases of
    dynamically quantized linear layers (which are not parameters)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    total = sum(p.numel() * p.element_size() for p in lm.parameters())
    for module in lm.modules():
        if isinstance(module, DynamicQuantizedLinear):
            weight, bias = module._weight_bias()
            total += weight.numel() * weight.element_size()
            total += 0 if bias is None else bias.numel() * bias.element_size()
    return total / KIB / KIB


def compared_precisions(text: str) -> tuple[list[str], list[str]]:
    """The precisions of ``--precisions`` to time (resolved for the CPU, in order, once each) and
    notes on those skipped (bfloat16 without hardware bfloat16 matrix products)."""
    chosen, notes = [], []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        precision = resolve_precision(name, "cpu")
        if precision == "bfloat16" and not native_bfloat16_matmul():
            notes.append(
                "bfloat16 skipped: this CPU has neither AMX tiles nor AVX-512 BF16 (it would be emulated)"
            )
        elif precision not in chosen:
            chosen.append(precision)
    if "float32" not in chosen:
        chosen.insert(0, "float32")  # the reference of the ratios
    return chosen, notes


def cpu_flags() -> list[str]:
    """The CPU's matrix-product extensions that bear on int8 and bfloat16 (from /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@torch.no_grad()
def compare_precisions(folder: Path, args) -> dict:
    """Load ``folder`` at every precision of ``--precisions``, then time their steps alternately."""
    precisions, notes = compared_precisions(args.precisions)
    models, results = {}, {}
    for precision in precisions:
        gc.collect()
        t0 = time.perf_counter()
        models[precision] = load_model(str(folder), device="cpu", precision=precision)
        results[precision] = {
            "load_s": time.perf_counter() - t0,
            "weights_mib": weights_mib(models[precision].lm),
            "peak_rss_mib": peak_rss_mib(),
        }
    config = DecodingConfig(duration=args.duration)
    if args.steps:
        config = config.replace(decoding_steps=tuple(int(s) for s in args.steps.split(",")))
    warm_up = DecodingConfig(duration=1.0, decoding_steps=(1, 1, 1, 1))
    engines = {p: Engine(models[p]) for p in precisions}
    for engine in engines.values():
        engine.decode([PROMPT], warm_up, seed=args.seed, with_audio=False)
    runs = {p: engines[p].steps([PROMPT], config, seed=args.seed) for p in precisions}
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    frames = None
    for _ in range(sum(config.decoding_steps)):
        for precision in precisions:
            record = next(runs[precision])
            seconds[precision].append(record.step_seconds)
            frames = record.tokens.shape[-1]
    reference = stage_logits(models["float32"].lm, *check_inputs(models["float32"].lm), CHECK_STAGE)
    for precision in precisions:  # the same tokens; conditions from each model's own conditioner
        lm = models[precision].lm
        logits = stage_logits(lm, *check_inputs(lm), CHECK_STAGE).float()
        results[precision].update(
            step_s=seconds[precision],
            median_step_s=statistics.median(seconds[precision]),
            logits_rel_error=_relative_error(logits, reference),
            top1_agreement=float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
        )
    base = results["float32"]["median_step_s"]
    for precision in precisions:
        results[precision]["speedup_over_float32"] = base / results[precision]["median_step_s"]
    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "threads": torch.get_num_threads(),
        "params_m": sum(p.numel() for p in models["float32"].lm.parameters()) / 1e6,
        "num_layers": args.num_layers,
        "duration": args.duration,
        "frames": frames,
        "decoding_steps": list(config.decoding_steps),
        "notes": notes,
        "precisions": results,
    }


def print_comparison(out: dict) -> None:
    print(
        f"{out['cpu']}; flags: {' '.join(out['cpu_flags']) or 'none of note'}; torch {out['torch']} "
        f"(quantized engine {out['quantized_engine']}), {out['threads']} thread(s)"
    )
    print(
        f"magnet-small shapes, {out['num_layers']} layers, {out['params_m']:.1f}M parameters (float32), random weights; "
        f"{out['duration']:g} s = {out['frames']} frames, steps {','.join(map(str, out['decoding_steps']))} "
        "(each a pass over the whole canvas, CFG batch 2), alternated between precisions"
    )
    for note in out["notes"]:
        print(note)
    header = (
        f"{'precision':10s} {'load s':>7s} {'weights MiB':>11s} {'s/step (median)':>15s} {'min':>6s} {'max':>6s} "
        f"{'vs float32':>10s} {'logits rel err':>14s} {'top-1 agree':>11s}"
    )
    print(header)
    print("-" * len(header))
    for precision, r in out["precisions"].items():
        print(
            f"{precision:10s} {r['load_s']:7.1f} {r['weights_mib']:11.0f} {r['median_step_s']:15.2f} "
            f"{min(r['step_s']):6.2f} {max(r['step_s']):6.2f} {r['speedup_over_float32']:9.2f}x "
            f"{r['logits_rel_error']:14.2e} {r['top1_agreement']:11.3f}"
        )
    print(f"peak RSS with every model loaded: {peak_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)  # child process mode
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--steps", type=str, default="", help="decoding steps, e.g. 20,10,10,10")
    parser.add_argument("--check-only", action="store_true", help="skip the generation")
    parser.add_argument(
        "--precisions",
        default="",
        help="instead: seconds per step of these precisions side by side, e.g. float32,int8,bfloat16",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="with --precisions: also write the figures here"
    )
    parser.add_argument(
        "--num-layers", type=int, default=MODEL_SCALES["small"]["num_layers"], help="for smoke runs"
    )
    args = parser.parse_args()
    if args.export is not None:
        export(args.export, args.seed, args.num_layers)
        return

    with tempfile.TemporaryDirectory(prefix="magnet-fullsize-") as tmp:
        folder = Path(tmp) / "magnet-small-random"
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--export",
                str(folder),
                "--seed",
                str(args.seed),
                "--num-layers",
                str(args.num_layers),
            ],
            check=True,
        )
        print(f"export (child process): {time.perf_counter() - t0:.1f} s")
        if args.precisions:
            out = compare_precisions(folder, args)
            print_comparison(out)
            if args.json:
                args.json.write_text(json.dumps(out, indent=2))
                print(f"wrote {args.json}")
            return

        rss_before = peak_rss_mib()
        t0 = time.perf_counter()
        model = load_model(str(folder), device="cpu")
        load_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in model.lm.parameters())
        attn = model.lm.transformer.layers[0].self_attn
        print(f"torch threads: {torch.get_num_threads()}")
        print(
            f"LM parameters: {n_params / 1e6:.1f}M; attention after loading: memory_efficient={attn.memory_efficient}"
        )
        print(
            f"load_model: {load_s:.1f} s; peak RSS {peak_rss_mib():.0f} MiB (before loading {rss_before:.0f} MiB)"
        )

        if not args.check_only:
            config = DecodingConfig(duration=args.duration)
            if args.steps:
                config = config.replace(decoding_steps=tuple(int(s) for s in args.steps.split(",")))
            engine = Engine(model)
            t0 = time.perf_counter()
            result = engine.decode([PROMPT], config, seed=args.seed)
            total_s = time.perf_counter() - t0
            steps_s = result.records[-1].elapsed
            per_stage = {}
            for record in result.records:
                per_stage[record.stage] = per_stage.get(record.stage, 0.0) + record.step_seconds
            print(
                f"generate {args.duration:g} s ({result.tokens.shape[-1]} frames, {len(result.records)} steps): "
                f"{total_s:.1f} s total, {steps_s:.1f} s in steps ({steps_s / len(result.records):.2f} s/step), "
                f"real-time factor {total_s / args.duration:.2f}"
            )
            print("seconds per stage: " + ", ".join(f"{k}: {v:.1f}" for k, v in per_stage.items()))
            print(f"peak RSS after generation: {peak_rss_mib():.0f} MiB")

        t0 = time.perf_counter()
        errors = check_restricted_context(model)
        print(
            f"restricted-context check at T={CHECK_FRAMES}, stage {CHECK_STAGE} ({time.perf_counter() - t0:.1f} s):"
        )
        for name, value in errors.items():
            print(f"  relative max error, {name}: {value:.2e}")
        ok = (
            errors["first_layer_vs_reference"] < RTOL
            and errors["logits_vs_audiocraft_forward"] < RTOL
            and errors["first_layer_vs_unrestricted"] > 100 * RTOL
        )
        print("restricted context: " + ("OK" if ok else "MISMATCH"))
        print(f"peak RSS at the end: {peak_rss_mib():.0f} MiB")
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
