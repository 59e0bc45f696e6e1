"""The studio's layers: who imports whom, no Gradio below the handlers, and the service used with
plain values only (no Gradio, no page)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from magnet_demo.form import Settings
from magnet_demo.incidents import Refusal
from magnet_demo.studio.service import Studio
from magnet_demo.tiny import write_tiny_checkpoint

PACKAGE = Path(__file__).resolve().parent.parent / "magnet_demo"
#: a studio module may import the studio modules of lower layers (and of its own, service's)
LAYERS = {
    "catalog": 0,
    "decoding": 0,
    "inputs": 0,
    "service": 0,
    "followups": 0,  # forks and extensions: what a new run takes from its parent
    "screens": 1,
    "compare": 1.5,  # the compare view's screens use the run screens' players
    "handlers": 2,
    "page": 2,
    "tools": 2.5,  # whole runs for assistants, over the handlers
    "wiring": 3,
}
#: what page.py may import of the studio (it knows neither the handlers nor the service)
PAGE_IMPORTS = {"screens", "compare"}


def _imports(path: Path) -> set[str]:
    """The magnet_demo modules ``path`` imports (dotted names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("magnet_demo"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("magnet_demo")}
    return found


def _studio_imports(path: Path) -> set[str]:
    return {name.split(".")[2] for name in _imports(path) if name.startswith("magnet_demo.studio.")}


def test_the_studio_imports_only_downwards():
    assert {path.stem for path in (PACKAGE / "studio").glob("*.py")} - {"__init__"} == set(LAYERS)
    for name, layer in LAYERS.items():
        below = {other for other, level in LAYERS.items() if level < layer or (level == layer == 0)}
        assert _studio_imports(PACKAGE / "studio" / f"{name}.py") - {name} <= below, name
    assert _studio_imports(PACKAGE / "studio" / "page.py") <= PAGE_IMPORTS
    for path in PACKAGE.rglob("*.py"):
        if "studio" not in path.parts:
            assert not any(i.startswith("magnet_demo.studio") for i in _imports(path)), path


def test_nothing_below_the_handlers_imports_gradio():
    modules = [f"magnet_demo.studio.{name}" for name, layer in LAYERS.items() if layer < 2]
    code = f"import sys; import {', '.join(modules)}; print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> tuple[Studio, str]:
    model = str(write_tiny_checkpoint(tmp_path_factory.mktemp("layers") / "tiny"))
    return Studio(default_model=model, output_root=tmp_path_factory.mktemp("out")), model


def test_the_service_runs_a_decoding_with_plain_values(studio):
    service, model = studio
    settings = Settings("a calm piano", model=model, duration=2.0, decoding_steps="3, 2, 2, 2", seed=5)
    start = service.new_run("visitor", settings)
    assert start.run.status == "running" and service.admit("visitor", 0).startswith("Run #1 of this session")
    decoding = service.decoding(start)
    batches = list(decoding)
    assert sum(len(batch) for batch in batches) == 9 == len(start.run.records)
    assert [p.suffix for p in start.run.files] == [".wav"] and decoding.write_files(0) == []
    assert service.run_wav("visitor", 1, 1).endswith("run01.wav")
    assert (
        service.stop("visitor") == "Nothing is decoding."
        and service.stop("stranger") == "Nothing is decoding."
    )
    assert service.sessions.get("stranger") is None


def test_the_service_refuses_with_readable_titled_messages(studio):
    service, model = studio
    with pytest.raises(Refusal, match="The prompt is empty") as refused:
        service.new_run("refused", Settings("  ", model=model))
    assert refused.value.title == "Check the settings"
    with pytest.raises(Refusal, match="Nothing to fork yet"):
        service.fork_run("nobody", 1, 1, Settings("x", model=model))
    steered = service.steer("nobody", dict(max_cfg_coef=1, min_cfg_coef=5, cfg_schedule="linear", cfg_curve="",
                                           temperature=3, rescore_weight=0))  # fmt: skip
    assert steered.startswith("⚠️ CFG min (5) is above CFG max (1)")
