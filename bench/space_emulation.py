"""A Hugging Face Gradio-SDK Space, emulated on this machine: build, start, generate.

    python -m bench.space_emulation

1. Build: a clean virtual environment and exactly what a Gradio-SDK Space's build installs:
   ``pip install -r requirements.txt``, then the platform's own ``gradio[oauth]==<sdk_version>``
   and ``spaces`` (read from README.md's front matter).
2. Start: ``python app.py`` from the repository with the variables Spaces set (``SYSTEM=spaces``,
   ``GRADIO_SERVER_NAME=0.0.0.0``, ``GRADIO_SERVER_PORT``, ``SPACE_ID``) and no flag; audiocraft is
   installed by the app itself on this first start.
3. Generate 2 s on the embedded model through ``gradio_client``.

Prints the install time, the time from start to the first served page, and the generation time.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import fields
from pathlib import Path

from magnet_demo.form import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGE_TIMEOUT_S = 300.0
#: a short run: what differs from the settings' defaults (magnet_demo.form.Settings)
SHORT_RUN = {
    "prompt": "drums, fast tempo, major key",
    "duration": 2.0,
    "decoding_steps": "4, 2, 2, 2",
    "seed": 1,
}
#: every input of /generate before its audio inputs, in the API's order
GENERATE = {**{f.name: SHORT_RUN.get(f.name, f.default) for f in fields(Settings)}, "sample_shown": 1}


def front_matter(readme: Path = ROOT / "README.md") -> dict[str, str]:
    """The simple ``key: value`` lines of README.md's YAML front matter."""
    text = readme.read_text()
    block = text.split("---", 2)[1] if text.startswith("---") else ""
    pairs = (re.match(r"^([a-z_]+):\s*(.*)$", line) for line in block.splitlines())
    return {m[1]: m[2].strip().strip('"') for m in pairs if m and m[2].strip()}


def build(venv: Path) -> float:
    """Make ``venv`` as a Space's build would; returns the seconds it took."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.txt")], check=True)
    sdk = front_matter()["sdk_version"]
    subprocess.run([*pip, f"gradio[oauth]=={sdk}", "spaces"], check=True)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(venv: Path, port: int, log: Path, extra_env: dict | None = None) -> tuple[subprocess.Popen, float]:
    """Start ``app.py`` as a Space does; returns the process and the seconds to its first page."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(
        SYSTEM="spaces",
        SPACE_ID="magnet-demo/emulated",
        GRADIO_SERVER_NAME="0.0.0.0",
        GRADIO_SERVER_PORT=str(port),
        **(extra_env or {}),
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(venv / "bin" / "python"), "app.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - started < PAGE_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200 and b"gradio" in response.read().lower():
                    return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"no page at {url} after {PAGE_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def generate(port: int) -> tuple[list, float]:
    """One /generate through gradio_client; returns its outputs and the seconds it took."""
    from gradio_client import Client

    started = time.perf_counter()
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    outputs = list(client.submit(**GENERATE, api_name="/generate"))
    return outputs, time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        venv, log = Path(temp) / "space-venv", Path(temp) / "app.log"
        install_s = build(venv)
        print(f"space build (pip install -r requirements.txt, gradio, spaces): {install_s:.0f} s")
        port = free_port()
        process, page_s = start(venv, port, log)
        try:
            print(f"python app.py to the first served page: {page_s:.1f} s")
            outputs, generate_s = generate(port)
            print(f"/generate, 2 s on the embedded model: {generate_s:.1f} s, {len(outputs)} updates")
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(
            f"space emulation: built in {install_s:.0f} s, first page {page_s:.1f} s, generated in {generate_s:.1f} s"
        )


if __name__ == "__main__":
    main()
