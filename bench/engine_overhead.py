"""Engine overhead against audiocraft's own MAGNeT generation: same model, same settings.

Prints the ratio engine time / audiocraft time (interleaved runs, median of N) for a ~6M-parameter
MAGNeT generating 10 s (500 frames, 498 decoded with 'nonoverlap') at the default decoding steps.
audiocraft's CPU path cannot run at 500 frames by itself (its restricted-attention mask is built
for 504 and added unsliced), so the reference gets masks sized for 498 frames; everything else
is audiocraft's own loop and forward pass. Both sides decode the audio too (audiocraft's ``generate``
always does), so they do equal work.

    .venv/bin/python -m bench.engine_overhead [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from magnet_demo.controls import DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import attention_mask, load_model
from magnet_demo.tiny import write_tiny_checkpoint

DURATION = 10.0
PROMPTS = ["an upbeat funk groove with slap bass and drums"]
MODEL = dict(card=256, dim=256, num_heads=8, num_layers=5, segment_duration=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from audiocraft.models import MAGNeT

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_checkpoint(folder, seed=0, **MODEL)
        model = load_model(folder, device="cpu")
        reference = MAGNeT.get_pretrained(folder, device="cpu")
    params = sum(p.numel() for p in model.lm.parameters())
    engine = Engine(model)
    config = DecodingConfig(duration=DURATION)
    T = engine.frames(config)
    lm = reference.lm
    lm.attn_mask_per_stage = [attention_mask(lm, stage, T) for stage in range(lm.n_q)]
    reference.duration = DURATION
    reference.set_generation_params()

    def run_engine():
        return engine.decode(PROMPTS, config, seed=0, with_audio=True).tokens  # generate decodes audio too

    def run_audiocraft():
        torch.manual_seed(0)
        return reference.generate(PROMPTS, return_tokens=True)[1]

    assert torch.equal(run_engine(), run_audiocraft()), "engine and audiocraft disagree"
    times: dict[str, list[float]] = {"engine": [], "audiocraft": []}
    for _ in range(args.runs):
        for name, fn in (("engine", run_engine), ("audiocraft", run_audiocraft)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    engine_s, reference_s = (statistics.median(times[n]) for n in ("engine", "audiocraft"))
    print(
        f"model: MAGNeT {params / 1e6:.1f}M parameters, {DURATION:g} s = {T} frames, steps {config.decoding_steps}"
    )
    print(f"threads: {args.threads}, runs: {args.runs} (interleaved), same tokens: yes")
    print(f"engine     median {engine_s:.3f} s  {' '.join(f'{t:.3f}' for t in times['engine'])}")
    print(f"audiocraft median {reference_s:.3f} s  {' '.join(f'{t:.3f}' for t in times['audiocraft'])}")
    print(f"ratio engine/audiocraft: {engine_s / reference_s:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
