"""The audiocraft import shim."""

from __future__ import annotations

import sys

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
