"""Every checkpoint file a server can be made to read is read with ``weights_only=True``.

A hostile package holds an object whose unpickling would create a marker file. The MAGNeT LM, its
compression package, a ``pretrained`` codec path named by that package, and every file of an
autoregressive rescorer are refused with a readable ModelLoadError (a ValueError), and the marker
never appears.

The tests run with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which some deployments set to read old
checkpoints: it turns every ``torch.load`` that does not pass ``weights_only`` itself (audiocraft's
loaders) into a full unpickling, so only loads that ask for ``weights_only=True`` stay safe.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE
from magnet_demo.models import MAX_PRETRAINED_CHAIN, ModelLoadError, load_model
from magnet_demo.rescoring import LMRescorer, tokenizer_of

REFUSED = "Refused the checkpoint of .*need code to unpickle"


class WritesMarker:
    """Unpickled, it opens (creates) the file at ``path``: code run by the mere reading."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class NotAllowed:
    """A class of no tensor library: torch's weights_only reader does not know it."""

    def __init__(self, path: Path):
        self.path = str(path)


PAYLOADS = {"runs code": WritesMarker, "unknown class": NotAllowed}


@pytest.fixture(autouse=True)
def full_unpickling_by_default(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a checkpoint file ran code while it was read"


@pytest.fixture(scope="module")
def tiny_rescorer(tmp_path_factory, tiny_folder):
    from magnet_demo.tiny import write_tiny_rescorer

    return write_tiny_rescorer(tmp_path_factory.mktemp("safe-loads") / "rescorer", tiny_folder)


def _hostile_copy(source: Path, target: Path, marker: Path, payload=WritesMarker) -> Path:
    """``source`` (a package) saved at ``target`` with an object that needs code to unpickle."""
    package = torch.load(source, weights_only=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**package, "payload": payload(marker)}, target)
    return target


def _folder(tmp_path: Path, source: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in (LM_FILE, COMPRESSION_FILE):
        shutil.copyfile(source / file, folder / file)
    return folder


@pytest.mark.parametrize("file", [LM_FILE, COMPRESSION_FILE])
def test_a_hostile_magnet_package_is_refused(tmp_path, tiny_folder, marker, file):
    folder = _folder(tmp_path, tiny_folder)
    _hostile_copy(tiny_folder / file, folder / file, marker)
    with pytest.raises(ModelLoadError, match=REFUSED):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
@pytest.mark.parametrize("named", ["file", "folder"])
def test_a_hostile_pretrained_codec_is_refused(tmp_path, tiny_folder, marker, named, payload):
    """The compression package only names its codec (``{'pretrained': path}``, as the released
    checkpoints name facebook/encodec_32khz); audiocraft would torch.load that path itself."""
    codec = tmp_path / "codec"
    _hostile_copy(tiny_folder / COMPRESSION_FILE, codec / COMPRESSION_FILE, marker, payload)
    folder = _folder(tmp_path, tiny_folder)
    pretrained = codec / COMPRESSION_FILE if named == "file" else codec
    torch.save({"pretrained": str(pretrained)}, folder / COMPRESSION_FILE)
    with pytest.raises(ModelLoadError, match=REFUSED):
        load_model(str(folder), device="cpu")
    # the tokenizer of the model (what the rescorer menu reads first) refuses it too
    with pytest.raises(ValueError, match=REFUSED):
        tokenizer_of(str(folder))


def test_a_pretrained_codec_path_still_loads(tmp_path, tiny_folder, tiny_model, marker):
    folder = _folder(tmp_path, tiny_folder)
    torch.save({"pretrained": str(tiny_folder)}, folder / COMPRESSION_FILE)
    model = load_model(str(folder), device="cpu")
    mine, theirs = model.compression_model.state_dict(), tiny_model.compression_model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert tokenizer_of(str(folder)).codec == str(tiny_folder)


def test_a_package_naming_itself_as_its_codec_ends(tmp_path, tiny_folder, marker):
    folder = _folder(tmp_path, tiny_folder)
    torch.save({"pretrained": str(folder)}, folder / COMPRESSION_FILE)
    with pytest.raises(ModelLoadError, match=f"{MAX_PRETRAINED_CHAIN} packages deep"):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("file", [LM_FILE, COMPRESSION_FILE, "pretrained"])
def test_a_hostile_rescorer_is_refused(tmp_path, tiny_rescorer, marker, file):
    folder = _folder(tmp_path, tiny_rescorer, "rescorer")
    if file == "pretrained":
        codec = _hostile_copy(tiny_rescorer / COMPRESSION_FILE, tmp_path / "codec.bin", marker)
        torch.save({"pretrained": str(codec)}, folder / COMPRESSION_FILE)
    else:
        _hostile_copy(tiny_rescorer / file, folder / file, marker)
    with pytest.raises(ValueError, match=REFUSED):
        LMRescorer.load(str(folder))


def test_the_tiny_rescorer_itself_loads(tiny_rescorer, marker):
    assert LMRescorer.load(str(tiny_rescorer)).tokenizer == tokenizer_of(str(tiny_rescorer))


def test_an_address_is_never_fetched(monkeypatch, tmp_path, marker):
    """audiocraft hands ``https://`` names to ``torch.hub.load_state_dict_from_url``, which reads
    with ``weights_only=False``: such a name is refused before any request."""

    def fetch_and_unpickle(url, *args, **kwargs):
        marker.touch()  # what a hostile file served there would do
        return {}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fetch_and_unpickle)
    with pytest.raises(ValueError, match="not from addresses"):
        tokenizer_of("https://example.invalid/codec")
