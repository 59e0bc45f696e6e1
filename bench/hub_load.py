"""Load a released checkpoint by name on a machine without network, from a complete cache, and time it.

    python -m bench.hub_load

Writes tiny stand-ins of ``facebook/magnet-small-10secs``, ``t5-base``, ``facebook/encodec_32khz``
and ``facebook/musicgen-small`` in their real format into a temporary Hugging Face cache
(:mod:`magnet_demo.hub_standins`), then, in a fresh process whose ``HF_HUB_OFFLINE`` is unset and
whose every network connection is refused, loads the MAGNeT by name, generates 2 s, rescores with
the MusicGen and prints the times. The last line gives the load time (target: under 5 s; without
the loader's offline handling, transformers retries optional files for 46-163 s).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 2.0


class NetworkRefused:
    """Refuses every connection and name look-up that is not local; counts the attempts."""

    LOCAL = ("127.", "::1", "localhost", "0.0.0.0")

    def __init__(self):
        self.attempts: list[str] = []
        self._getaddrinfo, self._connect = socket.getaddrinfo, socket.socket.connect
        guard = self

        def getaddrinfo(host, *args, **kwargs):
            guard._check(host)
            return guard._getaddrinfo(host, *args, **kwargs)

        def connect(sock, address):
            guard._check(address[0] if isinstance(address, tuple) else address)
            return guard._connect(sock, address)

        socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect

    def _check(self, host) -> None:
        host = host.decode() if isinstance(host, bytes) else str(host)
        if not host.startswith(self.LOCAL):
            self.attempts.append(host)
            raise OSError(f"network disabled by bench.hub_load ({host})")


def write_standins(cache: Path) -> None:
    env = {**os.environ, "HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "magnet_demo.hub_standins"], env=env, cwd=ROOT, check=True, capture_output=True
    )


def measure() -> None:
    """In this process (HF_HOME already set): load, generate, rescore, print."""
    network = NetworkRefused()
    from magnet_demo.engine import Engine
    from magnet_demo.hub_standins import MAGNET_REPO, MUSICGEN_REPO
    from magnet_demo.models import load_model
    from magnet_demo.rescoring import pair_rescorer

    started = time.perf_counter()
    model = load_model(MAGNET_REPO, device="cpu", precision="float32")
    load_s = time.perf_counter() - started
    config = model.default_config().replace(duration=SECONDS, decoding_steps=(4, 2, 2, 2), rescore_weight=0.5)
    started = time.perf_counter()
    rescorer = pair_rescorer(model, MUSICGEN_REPO)
    rescorer_s = time.perf_counter() - started
    result = Engine(model, rescorer).decode(["calm piano"], config, seed=0)
    rescored = sum(r.rescorer_confidence is not None for r in result.records)
    print(f"tokens {list(result.tokens.shape)}, audio {list(result.audio.shape)} at {model.sample_rate} Hz")
    print(
        f"rescorer {MUSICGEN_REPO} loaded in {rescorer_s:.2f} s; {rescored} of {len(result.records)} steps rescored"
    )
    print(f"network connections attempted and refused: {len(network.attempts)}")
    print(
        f"hub_load: {MAGNET_REPO} loaded by name in {load_s:.2f} s from a complete cache, no network, "
        f"HF_HUB_OFFLINE {'set' if os.environ.get('HF_HUB_OFFLINE') else 'unset'}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", help="an HF_HOME that already holds the stand-ins (default: write them to a temp one)"
    )
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the inner process
    args = parser.parse_args(argv)
    if args.measure:
        measure()
        return
    with tempfile.TemporaryDirectory() as temp:
        cache = Path(args.cache or temp)
        if args.cache is None:
            write_standins(cache)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        }
        env["HF_HOME"] = str(cache)
        subprocess.run([sys.executable, "-m", "bench.hub_load", "--measure"], env=env, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
