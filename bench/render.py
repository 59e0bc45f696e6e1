"""Drawing time per step vs decoding time per step, for a 10 s run.

    python bench/render.py [--model embedded|FOLDER] [--duration 10]

Uses the embedded model when it is present, else a tiny random model exported to a temp folder
(whose steps are far cheaper than a real model's, so its ratio is a pessimistic bound). Decodes
once, then draws every step as the page does: the step image (canvas + confidences) and the
schedules plot with its cursor; it also times the PNG encoding Gradio does for those two images.
Target: drawing below 20% of decoding time per step.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magnet_demo import viz  # noqa: E402
from magnet_demo.checkpoints import LM_FILE  # noqa: E402
from magnet_demo.controls import PRECISIONS, DecodingConfig  # noqa: E402
from magnet_demo.engine import Engine  # noqa: E402
from magnet_demo.models import EMBEDDED_DIR, EMBEDDED_NAME, load_model  # noqa: E402
from magnet_demo.session import default_steps  # noqa: E402
from magnet_demo.tiny import write_tiny_checkpoint  # noqa: E402

TARGET_RATIO = 0.20
PROMPT = "an upbeat, happy pop track with piano, bass and drums"


def png_seconds(image: np.ndarray) -> float:
    started = time.perf_counter()
    Image.fromarray(image).save(io.BytesIO(), format="PNG")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model name or folder (default: embedded if present, else tiny)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of audio (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="as the app's default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        name = args.model
        if name is None:
            name = (
                EMBEDDED_NAME
                if (EMBEDDED_DIR / LM_FILE).is_file()
                else str(write_tiny_checkpoint(Path(tmp) / "tiny"))
            )
        model = load_model(name, precision=args.precision)
        config = DecodingConfig(decoding_steps=default_steps(model.num_codebooks), duration=args.duration)
        records = list(Engine(model).steps([PROMPT], config, seed=args.seed))

    decode = np.array([r.step_seconds for r in records])
    plot = viz.SchedulePlot(config.decoding_steps, config.anneal_temp)
    plot.render(records[:1])  # the first render draws the planned curves once per run
    draw, encode = [], []
    for i, record in enumerate(records):
        started = time.perf_counter()
        canvas = viz.step_image(record, frame_rate=model.frame_rate)
        schedule = plot.render(records[: i + 1])
        draw.append(time.perf_counter() - started)
        encode.append(png_seconds(canvas) + png_seconds(schedule))
    draw, encode = np.array(draw), np.array(encode)

    kind = "embedded" if name == EMBEDDED_NAME else ("tiny random" if args.model is None else name)
    T = records[0].tokens.shape[-1]
    print(
        f"model: {kind} ({model.num_codebooks} codebooks, {T} frames = {args.duration:g} s, "
        f"{len(records)} steps, {model.precision})"
    )
    print(
        f"decoding per step:            {decode.mean() * 1000:8.1f} ms (median {np.median(decode) * 1000:.1f})"
    )
    print(f"drawing per step (viz):       {draw.mean() * 1000:8.1f} ms (median {np.median(draw) * 1000:.1f})")
    print(f"PNG encoding per step:        {encode.mean() * 1000:8.1f} ms (done by Gradio, in its own thread)")
    ratio = draw.mean() / decode.mean()
    verdict = "OK" if ratio < TARGET_RATIO else "ABOVE TARGET"
    print(f"drawing / decoding:           {ratio:8.1%}  (target < {TARGET_RATIO:.0%}: {verdict})")
    print(f"(drawing + PNG) / decoding:   {(draw.mean() + encode.mean()) / decode.mean():8.1%}")


if __name__ == "__main__":
    main()
