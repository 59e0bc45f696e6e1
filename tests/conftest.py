"""Shared fixtures: tiny random MAGNeT checkpoints exported in audiocraft's format."""

from __future__ import annotations

import warnings

import huggingface_hub.constants
import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small tensors: on a busy 2-core machine a second
    thread only waits (10x slower). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hub_offline():
    """No Hugging Face Hub download for a module (its fixtures and tests): models come from folders."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A 12 s tiny MAGNeT (LUT conditioner, 64 codes, EnCodec 32 kHz at 50 Hz)."""
    from magnet_demo.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "magnet", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_folder):
    from magnet_demo.models import load_model

    return load_model(str(tiny_folder), device="cpu")


@pytest.fixture(scope="session")
def engine(tiny_model):
    from magnet_demo.engine import Engine

    return Engine(tiny_model)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A tiny MAGNeT (``magnet``) and its tiny autoregressive partner on the same tokens (``ar``)."""
    from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer

    root = tmp_path_factory.mktemp("pair")
    magnet = write_tiny_checkpoint(root / "magnet", seed=0)
    write_tiny_rescorer(root / "ar", magnet, seed=1)
    return {"magnet": magnet, "ar": root / "ar"}
