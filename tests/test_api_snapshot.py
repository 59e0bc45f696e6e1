"""The named API stays what clients were promised: the same endpoints, parameter names, order,
defaults and components, and the same outputs, as ``gradio_client``'s ``view_api()`` reads them.

``tests/data/api_snapshot.json`` was taken from the studio before its code was reorganised into
``magnet_demo/studio/``; descriptions (docstrings) are left out, so they may be improved.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
from gradio_client import Client

from magnet_demo.studio.handlers import DemoApp
from magnet_demo.studio.wiring import launch_local

SNAPSHOT = Path(__file__).parent / "data" / "api_snapshot.json"
PARAMETER_KEYS = (
    "parameter_name",
    "component",
    "label",
    "parameter_default",
    "parameter_has_default",
    "type",
)
RETURN_KEYS = ("label", "component", "type")

pytestmark = pytest.mark.slow


def api_shape(info: dict) -> dict:
    """``view_api()``'s named endpoints without their descriptions."""
    return {
        name: {
            "parameters": [{key: p.get(key) for key in PARAMETER_KEYS} for p in endpoint["parameters"]],
            "returns": [{key: r.get(key) for key in RETURN_KEYS} for r in endpoint["returns"]],
        }
        for name, endpoint in sorted(info["named_endpoints"].items())
    }


def test_the_named_api_matches_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    demo, url = launch_local(DemoApp(output_root=tmp_path))
    try:
        info = Client(url, verbose=False, download_files=False).view_api(
            return_format="dict", print_info=False
        )
    finally:
        demo.close()
    expected = json.loads(SNAPSHOT.read_text())
    shape = json.loads(json.dumps(api_shape(info)))  # tuples as lists, as in the file
    assert list(shape) == list(expected)
    for name in expected:
        assert shape[name] == expected[name], name
