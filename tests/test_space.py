"""A Hugging Face Gradio-SDK Space, emulated (bench.space_emulation): a clean virtual environment with
exactly what a Space's build installs, ``python app.py`` started with the variables Spaces set, and
one generation through ``gradio_client``. Also the GPU check's code, run on the CPU at small sizes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import space_emulation

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_a_gradio_sdk_space_builds_starts_and_generates(tmp_path):
    venv, log = tmp_path / "space-venv", tmp_path / "app.log"
    space_emulation.build(venv)
    port = space_emulation.free_port()
    process, _ = space_emulation.start(venv, port, log)
    try:
        outputs, _ = space_emulation.generate(port)
    finally:
        process.terminate()
        process.wait(timeout=30)
    summaries = [v for o in outputs for v in o if isinstance(v, dict)]
    steps = [s["global_step"] for s in summaries if "global_step" in s]
    assert steps == sorted(set(steps)) and steps[-1] == 9  # in order, the last of 4 + 2 + 2 + 2 last
    run = [s for s in summaries if "status" in s and "prompts" in s][-1]
    assert run["status"] == "finished" and run["model"] == "embedded"
    text = log.read_text()
    assert "installing audiocraft==1.3.0 with --no-deps" in text  # the Space's build did not have it
    assert "model embedded on cpu: no GPU here" in text
    assert " ERROR " not in text  # no handler failed (asyncio may print an ignored loop warning at exit)


def test_the_front_matter_is_a_gradio_space_on_a_zerogpu_python():
    meta = space_emulation.front_matter()
    assert (meta["sdk"], meta["app_file"], meta["python_version"]) == ("gradio", "app.py", "3.12")
    pinned = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("gradio")
    ]
    assert pinned == [f"gradio[mcp]=={meta['sdk_version']}"]  # the Space's SDK, with the MCP extra


def test_the_code_compiles_on_the_spaces_python():
    """The Space runs Python 3.12 (ZeroGPU's list: 3.10.13, 3.12.12); torch for it cannot be
    installed here, so this proves the syntax; bench.gpu_check runs the rest on a GPU machine."""
    candidates = [
        shutil.which("python3.12"),
        *map(str, Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")),
    ]
    working = [
        c for c in candidates if c and subprocess.run([c, "--version"], capture_output=True).returncode == 0
    ]
    if not working:
        pytest.skip("no python3.12 on this machine")
    python = working[0]
    files = [str(p) for p in ROOT.glob("*.py")] + [
        str(p) for d in ("magnet_demo", "bench") for p in (ROOT / d).rglob("*.py")
    ]
    check = "import sys\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')"  # no .pyc left behind
    done = subprocess.run([python, "-c", check, *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_gpu_check_runs_its_code_on_the_cpu():
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parity on cpu: 1.000 of the tokens equal audiocraft's" in done.stdout
    assert "magnet-small size, bfloat16: median step codebook 1" in done.stdout
    assert "gpu_check: /generate on cpu streamed " in done.stdout
    assert "step updates, the last at step 10 of 10" in done.stdout
