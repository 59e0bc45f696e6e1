"""Launch the MAGNeT step-by-step demo: parse the arguments, build the page, serve it.

    python app.py --model embedded --port 7860

On a Hugging Face ZeroGPU Space (the ``spaces`` package importable), the handlers that run models
are wrapped in ``spaces.GPU``; elsewhere that wrapper is a no-op.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from magnet_demo.controls import PRECISIONS  # noqa: E402  (light: no torch model code)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_QUEUE_SIZE = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Watch MAGNeT decode music, step by step (Gradio app).")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--model",
        default="embedded",
        help="model selected when the page opens: 'embedded', a facebook/magnet-* name, or a checkpoint folder",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        help=f"most requests waiting for a decoding slot; more are refused with a message (default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="decodings run at the same time (default 1)"
    )
    parser.add_argument(
        "--output-dir", default=None, help="where runs' WAV, trace and GIF files go (default: a temp folder)"
    )
    parser.add_argument(
        "--share", action="store_true", help="also open a public *.gradio.live link (off by default)"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="language-model weights (default auto: bfloat16 on CPUs with AMX or AVX-512 BF16, else float32)",
    )
    return parser.parse_args(argv)


def gpu_decorator():
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces, else None (no wrapping)."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces.GPU


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from magnet_demo.models import load_model
    from magnet_demo.session import DEFAULT_OUTPUT_ROOT, ModelCache
    from magnet_demo.ui import DemoApp, build_ui

    output_dir = args.output_dir or DEFAULT_OUTPUT_ROOT
    models = ModelCache(functools.partial(load_model, precision=args.precision))
    app = DemoApp(default_model=args.model, output_root=output_dir, models=models, gpu=gpu_decorator())
    demo = build_ui(app, concurrency_limit=args.concurrency)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(output_dir)],
        show_error=False,
    )


if __name__ == "__main__":
    main()
