"""What bounds a public server: model sources, unpicklable files, kept models, runs and files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from magnet_demo.budgets import FileBudget
from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE
from magnet_demo.controls import DecodingConfig, Limits
from magnet_demo.form import Settings, number, parse_numbers, whole
from magnet_demo.model_cache import ModelCache
from magnet_demo.models import ModelLoadError, load_model
from magnet_demo.session import Session
from magnet_demo.sources import ModelSources


def test_sources_offer_the_released_names_and_folders_under_the_roots_only(tmp_path):
    root = tmp_path / "models"
    (root / "mine").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    sources = ModelSources(roots=(str(root),))
    assert sources.check(" embedded ") == "embedded"
    assert sources.check("facebook/magnet-small-10secs") == "facebook/magnet-small-10secs"
    assert sources.check("auto") == "auto"
    assert sources.check(str(root / "mine")) == str(root / "mine")
    assert sources.check(str(root / "not-yet")) == str(root / "not-yet")  # decided without looking
    for refused in (
        "someone/any-model",
        "/etc",
        f"{root}/../elsewhere",
        str(root),
        str(root / "escape"),
        "mine",
    ):
        with pytest.raises(ModelLoadError, match="This server does not offer that model"):
            sources.check(refused)
    with pytest.raises(ModelLoadError, match="must be text"):
        sources.check(["embedded"])
    anything = ModelSources(allow_any=True)
    assert anything.check("someone/any-model") == "someone/any-model" and anything.check("/etc") == "/etc"
    assert (
        ModelSources(extra=("/opt/operator-choice",)).check("/opt/operator-choice") == "/opt/operator-choice"
    )


class RunsCode:
    """An object whose unpickling would run code (what a hostile checkpoint holds)."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def test_a_checkpoint_that_needs_code_to_unpickle_is_refused(tiny_folder, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / COMPRESSION_FILE).write_bytes((Path(tiny_folder) / COMPRESSION_FILE).read_bytes())
    package = torch.load(Path(tiny_folder) / LM_FILE, weights_only=True)
    torch.save({**package, "payload": RunsCode()}, folder / LM_FILE)
    with pytest.raises(ModelLoadError, match="need code to unpickle"):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("damage", ["no xp.cfg", "other shapes"])
def test_a_readable_but_wrong_package_is_a_model_load_error(tiny_folder, tmp_path, damage):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / COMPRESSION_FILE).write_bytes((Path(tiny_folder) / COMPRESSION_FILE).read_bytes())
    package = torch.load(Path(tiny_folder) / LM_FILE, weights_only=True)
    if damage == "no xp.cfg":
        del package["xp.cfg"]
    else:
        package["best_state"] = {k: torch.zeros(3) for k in package["best_state"]}
    torch.save(package, folder / LM_FILE)
    with pytest.raises(ModelLoadError, match="is not a checkpoint this app can read"):
        load_model(str(folder), device="cpu")


def test_the_model_cache_keeps_the_most_recently_used(monkeypatch):
    loads = []

    def loader(name):
        loads.append(name)
        return f"model {name}"

    cache = ModelCache(loader, max_models=2)
    for name in ("a", "b", "a", "c", "a", "b"):
        cache.get(name)
    assert loads == ["a", "b", "c", "b"]  # 'b' was evicted by 'c' ('a' was used since)
    assert cache.names() == ["a", "b"]
    with pytest.raises(ValueError, match="at least 1"):
        ModelCache(loader, max_models=0)


def _run(session: Session, directory: Path):
    run = session.new_run(
        model_name="m", prompts=("p",), config=DecodingConfig(), seed=1, sample_rate=8000, frame_rate=50
    )
    path = directory / f"{run.name}-{session.key}.wav"
    path.write_bytes(b"RIFF")
    run.files.append(path)
    return run


def test_the_file_budget_deletes_the_oldest_runs_files_and_they_say_so(tmp_path):
    budget = FileBudget(keep_runs=3)
    sessions = [Session("a", tmp_path), Session("b", tmp_path)]
    runs = [_run(sessions[i % 2], tmp_path) for i in range(5)]
    evicted = [old for run in runs for old in budget.add(run)]
    assert evicted == runs[:2]
    assert all(r.files_deleted and r.files == [] for r in runs[:2])
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == sorted(r.files[0].name for r in runs[2:])
    assert runs[0].seed == 1 and runs[0].config == DecodingConfig()  # what makes it again stays


def test_a_session_keeps_its_last_runs_and_names_the_others(tmp_path):
    session = Session("s", tmp_path, max_runs=3)
    runs = [_run(session, tmp_path) for _ in range(5)]
    assert [r.number for r in session.runs] == [3, 4, 5]
    assert session.run(None) is runs[-1] and session.run("4") is runs[3]
    with pytest.raises(ValueError, match="Run #1 is no longer kept: this session keeps its last 3 runs"):
        session.run(1)
    with pytest.raises(ValueError, match=r"This session has no run #9 \(runs #3-#5\)"):
        session.run(9)
    with pytest.raises(ValueError, match="Run number must be a whole number"):
        session.run(2.5)


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "Seed must be a number, got 'abc'"),
        (float("nan"), "Seed must be a finite number"),
        ("-inf", "Seed must be a finite number"),
        (True, "Seed must be a number, got True"),
        ([1], "Seed must be a number, got [1]"),
        ("9" * 40, "Seed must be a whole number between 0 and 2147483647"),
        (2.5, "Seed must be a whole number, got 2.5"),
        (2**31, "Seed must be between 0 and 2147483647"),
    ],
)
def test_numbers_from_visitors(value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        whole(value, "Seed", 0, 2**31 - 1)


def test_numbers_that_are_fine_pass_unchanged():
    assert whole(" 7 ", "x", 0, 10) == 7 and whole(7.0, "x") == 7
    assert number("0.5", "x", 0, 1) == 0.5
    assert parse_numbers("20, 10 10", "Steps", int) == (20, 10, 10)
    with pytest.raises(ValueError, match="Steps: 'x' is not a whole number"):
        parse_numbers("20 x", "Steps", int)


def test_the_caps_of_a_run(tiny_model):
    limits = Limits(max_steps=50, prompt_chars=10, cfg_points=3)
    settings = Settings(prompt="drums", decoding_steps="20, 10, 10, 10")
    assert settings.config(tiny_model, limits).decoding_steps == (20, 10, 10, 10)
    with pytest.raises(ValueError, match="51 steps in all; this server allows at most 50"):
        Settings(prompt="drums", decoding_steps="20, 10, 10, 11").config(tiny_model, limits)
    with pytest.raises(ValueError, match="11 characters long; at most 10"):
        Settings(prompt="x" * 11).prompts(limits)
    with pytest.raises(ValueError, match="4 values given; at most 3"):
        Settings(prompt="x", cfg_schedule="curve", cfg_curve="4 3 2 1").config(tiny_model, limits)
    with pytest.raises(ValueError, match=r"CFG min \(5\) is above CFG max \(2\)"):
        Settings(prompt="x", max_cfg_coef=2, min_cfg_coef=5).config(tiny_model, limits)


def test_records_cross_pickling_unchanged(engine):
    record = next(iter(engine.steps(["a"], DecodingConfig(decoding_steps=(2, 1, 1, 1), duration=1.0))))
    copy = pickle.loads(pickle.dumps(record))
    assert np.array_equal(copy.tokens, record.tokens) and copy.controls == record.controls
