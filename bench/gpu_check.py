"""The GPU check: parity with audiocraft on CUDA, a magnet-small-size decoding timed per step, and one
run streamed through the API. No test needs a GPU; run this where one is at hand::

    scripts/gpu_check.sh                       # = python -m bench.gpu_check --device cuda
    python -m bench.gpu_check --device cpu --quick   # the same code on a CPU, small sizes (a test runs it)

1. Parity: a tiny random MAGNeT (12 s, so audiocraft's own generation runs unpatched) decoded by
   audiocraft's ``MAGNeT.generate`` and by the engine with the same seed on ``--device``; prints
   the share of equal tokens (1.000 on the CPU; on a GPU, kernels may round differently).
2. Size: magnet-small's architecture (dim 1024, 24 layers, 4 x 2048 codes, random weights) decoding
   10 s with the default steps in float32 and bfloat16; prints the median step time per codebook.
3. API: ``app.py --device DEVICE`` serving the tiny model; one ``/generate`` through
   ``gradio_client``, counting the streamed step updates.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PARITY_STEPS = (3, 2, 2, 2)
PROMPTS = ["slow piano", "fast drums"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def parity(folder: Path, device: str) -> float:
    """Share of tokens where the engine equals audiocraft's generate (same seed) on ``device``."""
    from audiocraft.models import MAGNeT

    from magnet_demo.controls import DecodingConfig
    from magnet_demo.engine import Engine
    from magnet_demo.models import load_model

    reference = MAGNeT.get_pretrained(str(folder), device=device)
    reference.duration = 12
    reference.set_generation_params(decoding_steps=list(PARITY_STEPS))
    torch.manual_seed(0)
    _, expected = reference.generate(PROMPTS, return_tokens=True)
    engine = Engine(load_model(str(folder), device=device, precision="float32"))
    config = DecodingConfig(decoding_steps=PARITY_STEPS, duration=12)
    tokens = engine.decode(PROMPTS, config, seed=0, with_audio=False).tokens
    return float((tokens.to(expected.device) == expected).float().mean())


def step_times(folder: Path, device: str, precision: str, duration: float) -> dict[int, float]:
    """Median seconds per step of each codebook, decoding ``duration`` s with the default steps."""
    from magnet_demo.engine import Engine
    from magnet_demo.models import load_model

    model = load_model(str(folder), device=device, precision=precision)
    config = model.default_config().replace(duration=duration)
    times: dict[int, list[float]] = {}
    last = time.perf_counter()
    for record in Engine(model).steps(["an upbeat pop track"], config, seed=0):
        _sync(device)
        now = time.perf_counter()
        times.setdefault(record.stage, []).append(now - last)
        last = now
    return {stage: statistics.median(values) for stage, values in times.items()}


def streamed_run(folder: Path, device: str) -> str:
    """Serve ``folder`` with app.py on ``device``: the step updates of one /generate (a page slower
    than the decoding skips steps; the last one is the final step)."""
    from gradio_client import Client

    from bench.space_emulation import GENERATE, free_port

    port = free_port()
    command = [sys.executable, "app.py", "--device", device, "--model", str(folder), "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = None
            for _ in range(240):
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
                    break
                except Exception:
                    time.sleep(0.5)
            if client is None:
                log.seek(0)
                raise RuntimeError(f"app.py did not start:\n{log.read().decode()[-3000:]}")
            outputs = list(client.submit(**{**GENERATE, "model": str(folder)}, api_name="/generate"))
        finally:
            process.terminate()
            process.wait(timeout=30)
    steps = [v for o in outputs for v in o if isinstance(v, dict) and "global_step" in v]
    return f"{len(steps)} step updates, the last at step {steps[-1]['global_step'] + 1} of {steps[-1]['total_steps']}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--quick", action="store_true", help="2 layers and 2 s instead of magnet-small and 10 s"
    )
    args = parser.parse_args(argv)
    from bench.fullsize_cpu import export
    from magnet_demo.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as temp:
        tiny = write_tiny_checkpoint(Path(temp) / "tiny", seed=0)
        print(f"parity on {args.device}: {parity(tiny, args.device):.3f} of the tokens equal audiocraft's")
        sized = Path(temp) / "small"
        sized.mkdir()
        export(sized, seed=0, num_layers=2 if args.quick else 24)
        for precision in ("float32", "bfloat16"):
            medians = step_times(sized, args.device, precision, 2.0 if args.quick else 10.0)
            shown = ", ".join(f"codebook {k + 1} {v * 1000:.1f} ms" for k, v in sorted(medians.items()))
            print(f"magnet-small size, {precision}: median step {shown}")
        print(f"gpu_check: /generate on {args.device} streamed {streamed_run(tiny, args.device)}")


if __name__ == "__main__":
    main()
