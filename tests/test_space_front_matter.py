"""The Space starts warm: README.md's front matter preloads exactly what its first run reads.

:func:`magnet_demo.preloads.space_preloads` names the Hub repos, and the files of each, that loading
the Space's model (:data:`magnet_demo.hosting.GPU_MODEL`, what ``--model auto`` opens on ZeroGPU)
and its proposed rescorer read; the front matter (parsed by huggingface_hub, as the Hub does) must
list the same. The slow checks write those repos as stand-ins in their real format
(:mod:`magnet_demo.hub_standins`) into a Hub cache that holds just the listed files: the model loads,
generates and rescores from it with every connection refused; without any one listed file the load
fails, naming that file's repo; files the real repos also hold but the loaders skip may be garbage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import SpaceHardware, metadata_load

from magnet_demo.hosting import GPU_MODEL

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _folder(repo: str) -> str:
    return f"models--{repo.replace('/', '--')}"


def _preload_entries(meta: dict) -> dict[str, tuple[str, ...]]:
    """``preload_from_hub``'s entries (``REPO FILE,FILE [COMMIT]``) as repo -> files; no files = all."""
    entries: dict[str, tuple[str, ...]] = {}
    for entry in meta.get("preload_from_hub") or []:
        repo, *rest = entry.split()
        assert repo not in entries, f"{repo} is preloaded twice"
        entries[repo] = tuple(rest[0].split(",")) if rest else ()
    return entries


@pytest.fixture(scope="module")
def meta() -> dict:
    return metadata_load(README)


@pytest.fixture(scope="module")
def preloads() -> list[tuple[str, tuple[str, ...]]]:
    from magnet_demo.preloads import space_preloads

    return space_preloads(GPU_MODEL)


def test_the_preloads_are_the_model_its_text_encoder_codec_and_rescorer(preloads):
    from magnet_demo.rescoring import rescorer_for

    repos = [repo for repo, _ in preloads]
    assert repos[0] == GPU_MODEL and rescorer_for(GPU_MODEL)[0] in repos
    assert {"t5-base", "facebook/encodec_32khz"} <= set(repos)
    assert all(files and len(set(files)) == len(files) for _, files in preloads)


def test_preload_from_hub_lists_every_repo_and_file_the_loaders_read_and_nothing_else(meta, preloads):
    listed = _preload_entries(meta)
    assert all(listed.values()), "an entry without files preloads a whole repo"
    assert {repo: set(files) for repo, files in listed.items()} == {
        repo: set(files) for repo, files in preloads
    }


def test_models_names_the_preloaded_repos(meta, preloads):
    assert sorted(meta["models"]) == sorted(repo for repo, _ in preloads)
    assert len(set(meta["models"])) == len(meta["models"])


def test_the_suggested_hardware_is_a_zerogpu_flavour(meta):
    flavour = SpaceHardware(meta["suggested_hardware"])  # ValueError for a name the Hub does not know
    assert flavour.name.startswith("ZERO")


def test_a_cache_of_just_the_listed_files_counts_as_cached(preloads, tmp_path, monkeypatch):
    """Else the loader would look for the Hub although everything it reads is there, and a Space
    without network would not open on its model (``checkpoint_available``)."""
    import huggingface_hub.constants

    from magnet_demo import models
    from magnet_demo.hub_standins import snapshot_folder

    for repo, files in preloads:
        folder = snapshot_folder(repo, tmp_path)
        for name in files:
            (folder / name).write_bytes(b"")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("AUDIOCRAFT_CACHE_DIR", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    pieces = models.known_pieces(GPU_MODEL)
    assert all(p.files for p in pieces)
    for piece in pieces:
        assert all(any(f in piece.files for f in group) for group in piece.markers), piece
        assert piece.cached(), piece
    assert models.checkpoint_available(GPU_MODEL)


# --------------------------------------------------------------------------------------------
# the loaders, on stand-ins in the real format


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_HOME": str(cache)}


def _python(args: list[str], cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], env=_env(cache), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def listed_only(tmp_path_factory, preloads) -> Path:
    """An HF_HOME holding the stand-ins of the listed repos, each with just its listed files."""
    from bench.hub_load import write_standins

    cache = tmp_path_factory.mktemp("hf")
    write_standins(cache)
    hub = cache / "hub"
    keep = {_folder(repo): set(files) for repo, files in preloads}
    for repo_folder in hub.iterdir():
        if repo_folder.name not in keep:
            shutil.rmtree(repo_folder)
            continue
        (snapshot,) = (repo_folder / "snapshots").iterdir()
        present = {p.name for p in snapshot.iterdir()}
        assert keep[repo_folder.name] <= present, f"the stand-in {repo_folder.name} lacks a file"
        for name in present - keep[repo_folder.name]:
            (snapshot / name).unlink()
    assert {p.name for p in hub.iterdir()} == set(keep)
    return cache


@pytest.mark.slow
def test_the_listed_files_load_generate_and_rescore_with_no_network(listed_only):
    out = _python(["-m", "bench.hub_load", "--cache", str(listed_only)], listed_only)
    assert "tokens [1, 4, 99], audio [1, 63360] at 32000 Hz" in out
    assert "6 of 10 steps rescored" in out
    assert "network connections attempted and refused: 0" in out
    assert "HF_HUB_OFFLINE unset" in out


EACH_FILE = """
import json, sys
from pathlib import Path
import bench.hub_load as bench
network = bench.NetworkRefused()
from magnet_demo.hosting import GPU_MODEL
from magnet_demo.models import ModelLoadError, load_model
from magnet_demo.preloads import space_preloads
from magnet_demo.rescoring import load_rescorer, rescorer_for

hub = Path(sys.argv[1]) / "hub"
rescorer = rescorer_for(GPU_MODEL)[0]


def snapshot(repo):
    (folder,) = (hub / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir()
    return folder


def load():
    try:
        load_model(GPU_MODEL, device="cpu")
        load_rescorer(rescorer, device="cpu")
        return "loaded"
    except ModelLoadError as error:
        return f"ModelLoadError: {error}"


for repo, files in space_preloads(GPU_MODEL):
    for name in files:
        path = snapshot(repo) / name
        aside = path.with_name(name + ".aside")
        path.rename(aside)
        try:
            print(json.dumps(["without", repo, name, load()]))
        finally:
            aside.rename(path)
# files the real repos hold beside the listed ones (t5-base: spiece.model, pytorch_model.bin;
# encodec_32khz: pytorch_model.bin), here unreadable: a loader that read one would fail
garbage = [("t5-base", "spiece.model"), ("t5-base", "pytorch_model.bin"), ("facebook/encodec_32khz", "pytorch_model.bin")]
for repo, name in garbage:
    (snapshot(repo) / name).write_bytes(b"not a file any loader should read")
print(json.dumps(["with garbage", "", "", load()]))
for repo, name in garbage:
    (snapshot(repo) / name).unlink()
"""


@pytest.mark.slow
def test_each_listed_file_is_read_and_the_unlisted_ones_are_not(listed_only, tmp_path, preloads):
    cache = tmp_path / "hf"
    shutil.copytree(listed_only, cache, symlinks=True)
    out = _python(["-c", EACH_FILE, str(cache)], cache)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    without = {(repo, name): outcome for kind, repo, name, outcome in results if kind == "without"}
    assert set(without) == {(repo, name) for repo, files in preloads for name in files}
    for (repo, name), outcome in without.items():
        assert outcome.startswith("ModelLoadError: Could not load '"), (repo, name, outcome)
        assert f"{repo} (" in outcome and f"into {cache / 'hub'}" in outcome, (repo, name, outcome)
    # a missing tokenizer is found before anything is read: the message names t5-base alone
    tokenizer = without[("t5-base", "tokenizer.json")]
    assert tokenizer.startswith(
        f"ModelLoadError: Could not load '{GPU_MODEL}': huggingface.co cannot be reached."
    )
    assert "t5-base (the T5 text encoder and its tokenizer)" in tokenizer
    assert "facebook/encodec_32khz (" not in tokenizer
    assert [outcome for kind, *_, outcome in results if kind == "with garbage"] == ["loaded"]


def test_a_t5_cache_without_its_weights_is_not_cached(tmp_path, monkeypatch):
    """Else a load goes offline and fails instead of downloading the missing weights."""
    import huggingface_hub.constants

    from magnet_demo.hub_standins import T5_REPO, write_t5
    from magnet_demo.models import t5_piece

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    folder = write_t5()
    piece = t5_piece(T5_REPO)
    assert piece.cached()
    (folder / "model.safetensors").unlink()
    assert not piece.cached()
