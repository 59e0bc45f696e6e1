"""Launch the MAGNeT step-by-step demo: parse the arguments, build the page, serve it.

    python app.py                      # the embedded model on this machine (or a GPU model, see --model)
    python app.py --model facebook/magnet-small-10secs --device cuda

On a Hugging Face Space the variables it sets are honoured (``GRADIO_SERVER_NAME``,
``GRADIO_SERVER_PORT``); on a ZeroGPU Space decodings run in ``spaces.GPU`` (see
:mod:`magnet_demo.hosting` and :mod:`magnet_demo.workers`). audiocraft is installed on first start
when missing (:mod:`magnet_demo.bootstrap`), since a Space's build only reads requirements.txt.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from magnet_demo.controls import (  # noqa: E402  (light: no torch model code)
    DEFAULT_KEEP_RUNS,
    DEFAULT_KEEP_RUNS_PER_SESSION,
    DEFAULT_MAX_CLIP_SECONDS,
    DEFAULT_MAX_MODELS,
    DEFAULT_MAX_RUN_SECONDS,
    DEFAULT_MAX_STEPS,
    DEFAULT_MAX_WORK,
    DEFAULT_MEMORY_MB,
    PRECISIONS,
)
from magnet_demo.hosting import DEVICES, WORKERS  # noqa: E402  (light)

DEFAULT_QUEUE_SIZE = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Watch MAGNeT decode music, step by step (Gradio app).")
    _add_serving(parser)
    _add_models(parser)
    _add_limits(parser)
    args = parser.parse_args(argv)
    for flag in POSITIVE_FLAGS:
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be more than 0")
    if args.allow_any_model and (public := _public_exposure(args)):
        parser.error(
            f"--allow-any-model lets visitors make the server load any file: refused with {public}; "
            "name the folders they may load with --model-root"
        )
    return args


def _public_exposure(args: argparse.Namespace) -> str | None:
    """What makes this server reachable from elsewhere ('--share', 'a Space', '--host X'), or None."""
    from magnet_demo.hosting import loopback, on_spaces

    host = args.host or os.environ.get("GRADIO_SERVER_NAME")
    if args.share:
        return "--share"
    if on_spaces():
        return "a Space"
    return None if host is None or loopback(host) else f"--host {host}"


def _add_serving(parser: argparse.ArgumentParser) -> None:
    """Where the page is served and how many visitors it takes at once."""
    add = parser.add_argument
    add(
        "--host",
        default=None,
        help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1; 0.0.0.0 for all)",
    )
    add("--port", type=int, default=None, help="port to listen on (default: $GRADIO_SERVER_PORT, else 7860)")
    add(
        "--worker", default="auto", choices=WORKERS,
        help="where decodings run: 'thread' (this process), 'spawn' or 'fork' (a worker process); "
        "default auto: ZeroGPU's GPU function on a ZeroGPU Space, else 'thread'",
    )  # fmt: skip
    add(
        "--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
        help=f"most requests waiting for a decoding slot; more are refused with a message (default {DEFAULT_QUEUE_SIZE})",
    )  # fmt: skip
    add("--concurrency", type=int, default=1, help="decodings run at the same time (default 1)")
    add(
        "--output-dir",
        default=None,
        help="where runs' WAV, trace and GIF files go (default: a private temp folder)",
    )
    add("--share", action="store_true", help="also open a public *.gradio.live link (off by default)")
    add(
        "--mcp",
        action="store_true",
        help="also serve the tools (generate_music, continue_music, redecode_region) to assistants as an "
        "MCP server at /gradio_api/mcp/ (or set GRADIO_MCP_SERVER=True)",
    )


def _add_models(parser: argparse.ArgumentParser) -> None:
    """Which models the page opens with and offers, and how they run."""
    add = parser.add_argument
    add(
        "--model", default="auto",
        help="model selected when the page opens: 'auto' (facebook/magnet-small-10secs on a GPU with the "
        "Hub at hand, else 'embedded'), 'embedded', a facebook/magnet-* name, or a checkpoint folder",
    )  # fmt: skip
    add(
        "--device", default="auto", choices=DEVICES,
        help="where models run (default auto: CUDA when torch sees a GPU, else the CPU)",
    )  # fmt: skip
    add(
        "--model-root", action="append", default=[], metavar="DIR",
        help="a folder whose checkpoint folders visitors may load (repeatable; default: none)",
    )  # fmt: skip
    add(
        "--allow-any-model", action="store_true",
        help="let visitors load any Hub repo or folder (a trusted single-user machine only)",
    )  # fmt: skip
    add(
        "--precision", default="auto", choices=PRECISIONS,
        help="language-model weights (default auto: bfloat16 on CPUs with AMX or AVX-512 BF16, else float32; "
        "int8: dynamic int8 linear layers, CPU only)",
    )  # fmt: skip


#: flags whose value must be above 0
POSITIVE_FLAGS = (
    "max_steps", "keep_runs", "keep_runs_per_session", "max_models", "queue_size", "concurrency",
    "max_work", "max_run_seconds", "memory_mb", "max_clip_seconds",
)  # fmt: skip


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """The caps a public server puts on each run, each visitor and itself (README's limits table)."""
    limits = [
        ("--max-steps", int, DEFAULT_MAX_STEPS, "most decoding steps in one run, all codebooks together"),
        ("--max-work", float, DEFAULT_MAX_WORK, "most work in one run: steps x samples x seconds of audio"),
        ("--max-run-seconds", float, DEFAULT_MAX_RUN_SECONDS, "seconds a run decodes before it is stopped"),
        ("--max-clip-seconds", float, DEFAULT_MAX_CLIP_SECONDS, "longest clip, decoded window after window"),
        ("--keep-runs", int, DEFAULT_KEEP_RUNS, "runs whose files the server keeps, all visitors together"),
        ("--keep-runs-per-session", int, DEFAULT_KEEP_RUNS_PER_SESSION, "runs whose files one visitor keeps"),
        ("--memory-mb", float, DEFAULT_MEMORY_MB, "MiB all runs keep in memory (steps, previews, audio)"),
        ("--max-models", int, DEFAULT_MAX_MODELS, "models kept loaded, least recently used evicted"),
    ]
    for flag, kind, default, text in limits:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument(
        "--hub-models-on-cpu",
        action="store_true",
        help="offer the released facebook/magnet-* models on a server without a GPU (minutes per clip)",
    )


def make_worker(kind: str, models, loader, gpu):
    """The decoding worker for ``--worker`` (see :mod:`magnet_demo.workers`)."""
    from magnet_demo import workers

    if kind == "auto":
        kind = "zerogpu" if gpu is not None else "thread"
    if kind == "zerogpu":
        return workers.ZeroGPUWorker(gpu, models)
    if kind == "thread":
        return workers.InProcessWorker(models)
    return workers.ProcessWorker(loader, start_method=kind, max_models=models.max_models)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from magnet_demo import hosting
    from magnet_demo.bootstrap import ensure_audiocraft

    host, port = hosting.server_address(args.host, args.port)
    hosting.limit_malloc_arenas()  # many request threads, one process: keep freed memory reusable
    gpu = hosting.gpu_decorator()  # before torch sees CUDA, as ZeroGPU requires
    ensure_audiocraft()
    from magnet_demo.audio_in import MAX_UPLOAD_MB
    from magnet_demo.studio.wiring import build_ui

    app, output_dir = make_app(args, gpu)
    demo = build_ui(app, concurrency_limit=args.concurrency)
    # api_open=False: every run goes through the queue (its size, its slots, the per-visitor check)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency, api_open=False)
    demo.launch(
        server_name=host,
        server_port=port,
        share=args.share,
        allowed_paths=[str(output_dir)],
        show_error=False,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        mcp_server=True if args.mcp else None,  # None: Gradio reads GRADIO_MCP_SERVER
    )


def make_app(args: argparse.Namespace, gpu):
    """The studio's handlers for these flags, and the folder its runs write to."""
    from magnet_demo import hosting
    from magnet_demo.controls import Limits
    from magnet_demo.model_cache import ModelCache
    from magnet_demo.models import checkpoint_available, load_model
    from magnet_demo.session import DEFAULT_OUTPUT_ROOT, private_root
    from magnet_demo.sources import ModelSources
    from magnet_demo.studio.handlers import DemoApp

    log = logging.getLogger("app")
    device = hosting.resolve_device(args.device)
    choice = hosting.choose_model(args.model, device, checkpoint_available)
    log.info("model %s on %s: %s", choice.name, device, choice.reason)
    try:
        output_dir = args.output_dir or private_root(DEFAULT_OUTPUT_ROOT)
    except ValueError as error:
        raise SystemExit(f"app.py: {error}") from None
    if args.allow_any_model:
        log.warning(
            "--allow-any-model: visitors may load any Hub repo or folder; use it on a trusted machine only"
        )
    loader = functools.partial(load_model, device=device, precision=args.precision)
    models = ModelCache(loader, max_models=args.max_models)
    app = DemoApp(
        default_model=choice.name,
        output_root=output_dir,
        models=models,
        worker=make_worker(args.worker, models, loader, gpu),
        model_note=f"Opened with **{choice.name}** on {device}: {choice.reason}.",
        limits=Limits(
            max_steps=args.max_steps,
            max_work=args.max_work,
            max_run_seconds=args.max_run_seconds,
            max_clip_seconds=args.max_clip_seconds,
        ),
        sources=ModelSources(
            roots=tuple(os.path.abspath(root) for root in args.model_root),
            allow_any=args.allow_any_model,
            extra=(choice.name,),
            hub_offered=device == "cuda" or args.hub_models_on_cpu,
        ),
        keep_runs=args.keep_runs,
        keep_runs_per_session=args.keep_runs_per_session,
        memory_mb=args.memory_mb,
    )
    return app, output_dir


if __name__ == "__main__":
    main()
