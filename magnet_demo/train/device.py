"""Where the trainers run, and at what precision: ``--device`` and ``--precision`` of every trainer.

Shared by the codec, MAGNeT and rescorer trainers and by ``train.all`` (which checks ``--device``
before its first step). The app's own precision rule is :func:`magnet_demo.models.resolve_precision`.
"""

from __future__ import annotations

import argparse

import torch

from magnet_demo.models import resolve_precision

#: the device types the trainers support
TRAINING_DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The training device of ``--device``: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises ValueError for a name torch does not know or a CUDA device this machine lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a device name (cpu, cuda, cuda:N or auto)") from error
    if device.type not in TRAINING_DEVICE_TYPES:
        raise ValueError(f"--device {name!r}: the trainers run on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: torch sees no CUDA device on this machine")
    return device


def device_name(name: str) -> str:
    """``--device`` as argparse reads it: the name itself, refused at parse time (before any work)
    with :func:`resolve_device`'s message when the trainers cannot use it."""
    try:
        resolve_device(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return name


def add_device_argument(parser: argparse.ArgumentParser, help: str = "") -> None:
    """Add ``--device`` (default ``auto``) to a trainer's command line, checked by :func:`device_name`."""
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        help=help or "cpu, cuda, cuda:N or auto (cuda when torch sees a GPU)",
    )


def training_precision(precision: str, device: torch.device) -> str:
    """``"float32"`` or ``"bfloat16"`` (autocast) for a trainer's ``--precision`` on ``device``.

    As :func:`magnet_demo.models.resolve_precision` (the app's rule: on a CPU, bfloat16 only where
    it is multiplied in hardware), except that ``auto`` on a GPU that supports bfloat16 trains in
    bfloat16 autocast, the usual choice there; the app itself keeps float32 on GPUs.
    """
    if precision == "auto" and device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return resolve_precision(precision, device.type)
