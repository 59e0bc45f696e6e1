"""Install audiocraft 1.3.0 without its stale pins, when it is missing.

audiocraft 1.3.0 declares torch 2.1, xformers, torchaudio < 2.1.2, av 11 and spaCy, none of which
can sit beside today's torch, and pip has no per-line ``--no-deps``; so ``requirements.txt`` holds
everything else and audiocraft itself is installed here, with ``--no-deps``, from
``requirements-audiocraft.txt``. Everyone goes through this one function: ``scripts/setup.sh``
(``make app`` / ``make test``, Docker) runs ``python -m magnet_demo.bootstrap``, and ``app.py`` calls
it before anything imports audiocraft, which is what makes a Gradio-SDK Space (whose build runs
only ``pip install -r requirements.txt``) work. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("magnet_demo.bootstrap")

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-audiocraft.txt"


def pinned_audiocraft(requirements: Path = REQUIREMENTS) -> str:
    """The ``audiocraft==X`` line of ``requirements-audiocraft.txt``."""
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("audiocraft"):
            return line
    raise RuntimeError(f"{requirements} names no audiocraft version")


def installed_version(package: str = "audiocraft") -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_audiocraft(requirements: Path = REQUIREMENTS) -> bool:
    """Install the pinned audiocraft with ``--no-deps`` unless that version is installed.

    Returns True when it installed something. Raises RuntimeError with pip's output on failure.
    """
    wanted = pinned_audiocraft(requirements)
    version = wanted.split("==", 1)[1] if "==" in wanted else None
    have = installed_version()
    if have is not None and (version is None or have == version):
        return False
    log.warning(
        "audiocraft %s is %s: installing %s with --no-deps (its declared dependencies are stale pins; "
        "requirements.txt holds what it really needs)",
        version or "",
        "missing" if have is None else f"at {have}",
        wanted,
    )
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", wanted]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing {wanted} failed:\n{done.stdout}\n{done.stderr}")
    importlib.invalidate_caches()
    log.warning("installed %s", wanted)
    return True


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="setup: %(message)s")
    if not ensure_audiocraft():
        print(f"setup: {pinned_audiocraft()} already installed")
