"""The one place that adapts audiocraft 1.3.0 to the packages this project runs on.

audiocraft 1.3.0 pins torch 2.1, torchaudio < 2.1.2, xformers < 0.0.23 and spacy, and imports all
of them at module level, although generation with MAGNeT on a CPU needs none of them:

- ``xformers``: imported by ``audiocraft.modules.transformer`` for ``ops.unbind`` (plain
  ``torch.unbind``) and, when a checkpoint sets ``memory_efficient``, for its attention kernel.
  There are no CPU wheels of xformers; when it is missing we register a small stand-in whose
  ``ops.unbind`` is ``torch.unbind`` and whose kernels raise. The attention that the engine
  really uses on CPU is made correct in :mod:`magnet_demo.models`, not here.
- ``torchaudio``: no CPU build exists for today's torch. audiocraft uses it for loudness
  normalisation of audio prompts and in the chroma conditioner; the stand-in raises a clear
  error if one of those paths is reached.
- ``spacy``: only the ``whitespace`` tokenizer of the LUT conditioner uses it, and it would download
  a pipeline at run time; the stand-in raises when used.
- ``av`` (PyAV, a 36 MB wheel with its own FFmpeg): imported by ``audiocraft.data.audio`` to read
  and write audio files, which magnet-demo does with soundfile; the stand-in raises when used.

Call :func:`import_audiocraft` (idempotent) before importing anything from audiocraft.
Real modules always win: a stand-in is registered only when the real package cannot be imported.

Reading checkpoints. audiocraft's ``loaders._get_state_dict`` (behind ``load_compression_model_ckpt``,
``load_lm_model_ckpt``, ``load_compression_model`` and so ``CompressionModel.get_pretrained`` of a
local path) calls ``torch.load`` without ``weights_only``, which then depends on torch's default and
on the ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` environment variable, and hands ``https://`` addresses
to ``torch.hub.load_state_dict_from_url``, whose default is ``weights_only=False``.
:func:`audiocraft_checkpoint_file` and :func:`pretrained_codec_file` name the file audiocraft would
read, and :func:`read_audiocraft_checkpoint` reads it with
:func:`magnet_demo.checkpoints.load_package` (tensors and plain values only); the loaders of
:mod:`magnet_demo.models` and :mod:`magnet_demo.rescoring` go through them, never through
audiocraft's ``torch.load``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

from magnet_demo.checkpoints import COMPRESSION_FILE, load_package

#: names of the stand-in modules registered by this process (for diagnostics and tests)
STANDINS: list[str] = []


class MissingDependencyError(RuntimeError):
    """Raised when a code path needs a package that this installation deliberately lacks."""


def _missing(package: str, what: str):
    def fail(*_args, **_kwargs):
        raise MissingDependencyError(
            f"{what} needs the '{package}' package, which magnet-demo does not install "
            f"(it has no CPU build for torch {torch.__version__.split('+')[0]})."
        )

    return fail


def _register(name: str, module: types.ModuleType) -> None:
    # a spec with no loader: importlib.util.find_spec() answers, importlib.metadata finds no
    # distribution, so libraries that probe for the package (transformers) treat it as absent
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = module
    STANDINS.append(name)


def _available(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _standin(name: str, package: str, purpose: str) -> types.ModuleType:
    """A module whose every missing attribute is a callable that raises MissingDependencyError."""
    module = types.ModuleType(name)
    module.__doc__ = f"magnet-demo stand-in: '{package}' is not installed ({purpose})."

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _missing(package, f"{name}.{attr} ({purpose})")

    module.__getattr__ = __getattr__
    return module


#: package -> (submodules imported by audiocraft, what audiocraft uses it for)
_STANDIN_PACKAGES = {
    "xformers": (["ops"], "memory-efficient attention on CUDA"),
    "torchaudio": (["transforms", "functional"], "prompt loudness, chroma, training losses"),
    "spacy": ([], "the LUT conditioner's 'whitespace' tokenizer"),
    "dora": ([], "training experiment management"),
    "av": ([], "audiocraft's audio file reading and writing"),
}


def _install_standin(package: str, submodules: list[str], purpose: str) -> None:
    root = _standin(package, package, purpose)
    _register(package, root)
    for sub in submodules:
        child = _standin(f"{package}.{sub}", package, purpose)
        setattr(root, sub, child)
        _register(f"{package}.{sub}", child)
    if package == "xformers":
        # the only xformers function audiocraft calls on every forward pass
        root.ops.unbind = torch.unbind


def import_audiocraft() -> types.ModuleType:
    """Import audiocraft with stand-ins for the packages it cannot have here; returns the module."""
    if "audiocraft" in sys.modules:
        return sys.modules["audiocraft"]
    if _available("transformers"):
        # transformers probes for optional packages when first imported and caches the answer:
        # let it see the real environment before the stand-ins exist
        importlib.import_module("transformers")
    for package, (submodules, purpose) in _STANDIN_PACKAGES.items():
        if not _available(package):
            _install_standin(package, submodules, purpose)
    return importlib.import_module("audiocraft")


def has_real_xformers() -> bool:
    """True when the real xformers package (not our stand-in) is importable."""
    return "xformers" not in STANDINS and _available("xformers")


# --------------------------------------------------------------------------------------------
# reading audiocraft's checkpoint files with weights_only

#: codecs that ``CompressionModel.get_pretrained`` builds from their name alone (before it looks for
#: a local path): DAC through the ``dac`` package, audiocraft's random debug codec
BUILTIN_CODECS = ("dac_44khz", "dac_24khz", "debug_compression_model")
#: what audiocraft's loaders would hand to ``torch.hub.load_state_dict_from_url``
URL_PREFIX = "https://"


def audiocraft_checkpoint_file(file_or_id: str | os.PathLike, filename: str) -> str:
    """The file audiocraft's ``loaders._get_state_dict(file_or_id, filename)`` would ``torch.load``.

    Same order as audiocraft: ``file_or_id`` itself when it is a file, ``filename`` inside it when
    it is a folder, else ``filename`` of the Hugging Face repo ``file_or_id``, downloaded where
    audiocraft downloads (``AUDIOCRAFT_CACHE_DIR``, or the Hub cache). An ``https://`` address, which
    audiocraft would load with ``weights_only=False``, is refused (ValueError) before any request.
    """
    import_audiocraft()
    from audiocraft.models import loaders

    location = os.fspath(file_or_id)
    if os.path.isfile(location):
        return location
    if os.path.isdir(location):
        return os.path.join(location, filename)
    if location.startswith(URL_PREFIX):
        raise ValueError(
            f"Checkpoints are read from local files and Hugging Face repos, not from addresses "
            f"('{location[:80]}')."
        )
    from huggingface_hub import hf_hub_download

    return hf_hub_download(
        repo_id=location,
        filename=filename,
        cache_dir=loaders.get_audiocraft_cache_dir(),
        library_name="audiocraft",
        library_version=importlib.import_module("audiocraft").__version__,
    )


def read_audiocraft_checkpoint(file_or_id: str | os.PathLike, filename: str) -> Any:
    """What ``loaders._get_state_dict(file_or_id, filename)`` returns, read with ``weights_only``.

    Raises ``pickle.UnpicklingError`` (unrun) for a file that needs code to unpickle, ValueError for
    an address; see :func:`audiocraft_checkpoint_file` for where the file is looked up.
    """
    return load_package(audiocraft_checkpoint_file(file_or_id, filename))


def pretrained_codec_file(name: object) -> str | None:
    """The exported package ``CompressionModel.get_pretrained(name)`` would ``torch.load``, or None.

    ``name`` is the ``pretrained`` entry of a compression package. audiocraft reads a package for a
    name that is an existing local path (``loaders.load_compression_model``: the file, or the
    folder's ``compression_state_dict.bin``); for the others it reads nothing with ``torch.load``:
    DAC and the debug codec (:data:`BUILTIN_CODECS`) are built by name, any other name is a Hugging
    Face EnCodec that transformers reads (safetensors, or ``torch.load`` with ``weights_only=True``).
    ValueError when ``name`` is not text.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"A compression package's 'pretrained' must name a codec, got {type(name).__name__}."
        )
    if name in BUILTIN_CODECS or not Path(name).exists():
        return None
    return audiocraft_checkpoint_file(name, COMPRESSION_FILE)
