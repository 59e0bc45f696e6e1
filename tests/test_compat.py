"""The audiocraft import shim."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from magnet_demo import compat


def test_standins_only_for_missing_packages_and_they_fail_clearly():
    compat.import_audiocraft()
    assert "audiocraft" in sys.modules
    for name in compat.STANDINS:
        assert sys.modules[name].__spec__.loader is None  # ours, not an installed package
    if "xformers" in compat.STANDINS:
        import xformers.ops

        assert xformers.ops.unbind is torch.unbind
        with pytest.raises(compat.MissingDependencyError, match="xformers"):
            xformers.ops.memory_efficient_attention(None, None, None)
        assert not compat.has_real_xformers()
    if "torchaudio" in compat.STANDINS:
        import torchaudio

        with pytest.raises(compat.MissingDependencyError, match="torchaudio"):
            torchaudio.transforms.Loudness(16000)


def test_transformers_does_not_see_the_standins():
    compat.import_audiocraft()
    from transformers.utils import import_utils

    assert import_utils.is_torchaudio_available() == ("torchaudio" not in compat.STANDINS)


#: run in a fresh interpreter: makes ``av`` unimportable, then loads a tiny MAGNeT through audiocraft
_WITHOUT_AV = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            raise ModuleNotFoundError("hidden by the test", name=name)
        return None

sys.meta_path.insert(0, Hide())
from magnet_demo import compat
compat.import_audiocraft()
import av
from audiocraft.data import audio
from magnet_demo.models import load_model
from magnet_demo.tiny import write_tiny_checkpoint

assert "av" in compat.STANDINS and audio.av is av
try:
    av.open("clip.wav")
except compat.MissingDependencyError as error:
    print("raised:", error)
model = load_model(str(write_tiny_checkpoint(sys.argv[1])), device="cpu")
print("loaded", type(model.lm).__name__)
"""


def test_audiocraft_imports_and_a_model_loads_without_pyav(tmp_path):
    """PyAV is not installed: audiocraft.data.audio imports it, nothing we run uses it."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AV, str(tmp_path / "tiny")],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,  # the repository root, where magnet_demo is
    )
    assert result.returncode == 0, result.stderr
    assert (
        "raised: av.open (audiocraft's audio file reading and writing) needs the 'av' package"
        in result.stdout
    )
    assert "loaded MagnetLMModel" in result.stdout
