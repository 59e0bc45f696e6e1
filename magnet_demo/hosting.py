"""Where the app runs and what it picks there: the device, the model ('auto') and the worker.

Hugging Face Spaces start ``python app.py`` with ``SYSTEM=spaces``, ``GRADIO_SERVER_NAME=0.0.0.0``
and ``GRADIO_SERVER_PORT``; ZeroGPU Spaces also set ``SPACES_ZERO_GPU``, and there the ``spaces``
package must be imported before anything touches CUDA (it then reports a GPU in the main process
and runs ``spaces.GPU`` functions on a real one, in a forked process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: what ``--model auto`` takes with a GPU and the Hub (or its files cached)
GPU_MODEL = "facebook/magnet-small-10secs"
DEVICES = ("auto", "cpu", "cuda")
#: where decodings run (``--worker``); 'auto' = ZeroGPU's GPU function on ZeroGPU, else 'thread'
WORKERS = ("auto", "thread", "spawn", "fork")
TRUE_VALUES = ("1", "t", "true", "yes")
#: glibc malloc arenas for the server. By default glibc makes up to 8 per core, one per thread that
#: allocates at once; Gradio runs every request in a thread pool, so memory freed after a run stays
#: spread over many arenas and the server's resident memory grows with the number of clients.
MALLOC_ARENAS = 2
#: mallopt's parameter number for the arena cap (glibc's malloc.h)
M_ARENA_MAX = -8


def on_spaces(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("SYSTEM") == "spaces" or bool(env.get("SPACE_ID"))


def on_zero_gpu(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("SPACES_ZERO_GPU", "").lower() in TRUE_VALUES


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.x, ::1, localhost)."""
    return host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")


def server_address(host: str | None, port: int | None, env: dict | None = None) -> tuple[str, int]:
    """Flags first, then Gradio's variables (what Spaces set), then localhost:7860."""
    env = os.environ if env is None else env
    host = host or env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    if port is None:
        text = env.get("GRADIO_SERVER_PORT") or str(DEFAULT_PORT)
        try:
            port = int(text)
        except ValueError:
            raise ValueError(f"GRADIO_SERVER_PORT must be a port number, got {text!r}") from None
    return host, port


def gpu_decorator() -> Callable | None:
    """``spaces.GPU`` on a ZeroGPU Space (importing ``spaces`` first, as it requires), else None."""
    if not on_zero_gpu():
        return None
    import spaces

    return spaces.GPU


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' for one of :data:`DEVICES`; ValueError for CUDA on a machine without it."""
    import torch

    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this machine has no CUDA GPU that torch can use")
    return device


@dataclass(frozen=True)
class ModelChoice:
    """The model a page opens with, and the reason shown under the model menu."""

    name: str
    reason: str


def choose_model(requested: str, device: str, hub_available: Callable[[str], bool]) -> ModelChoice:
    """Resolve ``--model auto``: :data:`GPU_MODEL` with a GPU and its files at hand, else 'embedded'.

    ``hub_available(name)`` says whether the checkpoint is cached or the Hub can be reached.
    """
    from magnet_demo.models import EMBEDDED_NAME

    if requested != "auto":
        return ModelChoice(requested, "chosen by the operator (--model)")
    if device != "cuda":
        return ModelChoice(
            EMBEDDED_NAME,
            f"no GPU here: the released MAGNeT models take many minutes per clip on a CPU, so the page "
            f"opens on the small embedded model ({GPU_MODEL} is in the menu)",
        )
    if not hub_available(GPU_MODEL):
        return ModelChoice(
            EMBEDDED_NAME,
            f"a GPU is here but the Hugging Face Hub cannot be reached and {GPU_MODEL} is not cached",
        )
    return ModelChoice(GPU_MODEL, f"a GPU is here ({device}) and {GPU_MODEL} can be loaded")


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``); False where libc is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
