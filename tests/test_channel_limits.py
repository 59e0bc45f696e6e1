"""The channel reader trusts nothing in the run's folder: forged, oversized, mistyped or broken
controls files are ignored (the last good values stay), the server's limits travel with the
controls into another process, and no symbolic link is followed to read the controls or the Stop
flag."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import stat

import pytest

from magnet_demo.channel import (
    CONTROLS_FILE,
    MAX_CONTROLS_BYTES,
    STOP_FILE,
    SharedControls,
    StopFlag,
    controls_to_json,
)
from magnet_demo.controls import ControlValues, Limits
from magnet_demo.schedules import CFGSchedule

START = ControlValues(CFGSchedule("linear", 10.0, 1.0), 3.0, 0.0)
GOOD = dict(max_cfg_coef=12.0, min_cfg_coef=2.0, temperature=1.5, rescore_weight=0.25)
AFTER_GOOD = ControlValues(CFGSchedule("linear", 12.0, 2.0), 1.5, 0.25)


def _valid(**changes) -> dict:
    data = json.loads(controls_to_json(AFTER_GOOD))
    for key, value in changes.items():
        if key.startswith("cfg."):
            data["cfg"][key[4:]] = value
        else:
            data[key] = value
    return data


#: what another local user might write into controls.json
FORGED = {
    "cfg 1e9": json.dumps(_valid(**{"cfg.max_coef": 1e9})),
    "min cfg above the limit": json.dumps(_valid(**{"cfg.min_coef": 51.0})),
    "1 MB file": json.dumps(_valid(temperature=2.0)) + " " * 1_000_000,
    "string temperature": json.dumps(_valid(temperature="2.0")),
    "temperature above the limit": json.dumps(_valid(temperature=21.0)),
    "boolean temperature": json.dumps(_valid(temperature=True)),
    "NaN temperature": json.dumps(_valid(temperature=float("nan"))),
    "huge integer temperature": json.dumps(_valid(temperature=10**1000)),
    "rescore weight 2": json.dumps(_valid(rescore_weight=2.0)),
    "1000-point curve": json.dumps(_valid(**{"cfg.kind": "curve", "cfg.points": [5.0] * 1000})),
    "curve point above the limit": json.dumps(_valid(**{"cfg.kind": "curve", "cfg.points": [5.0, 1e6]})),
    "points not a list": json.dumps(_valid(**{"cfg.points": "5, 6"})),
    "extra key": json.dumps({**_valid(temperature=2.0), "eval": "os.system('x')"}),
    "missing key": json.dumps({k: v for k, v in _valid().items() if k != "temperature"}),
    "not an object": json.dumps([1, 2, 3]),
    "deeply nested": "[" * (MAX_CONTROLS_BYTES - 1),
    "broken JSON": '{"cfg": {"kind": "linear", "max_coef": 4',
    "not UTF-8": b"\xff\xfe\x00garbage",
}


def _forge(path, content: str | bytes) -> None:
    """Write ``content`` over the controls file as an attacker would (not atomically, any size)."""
    with open(path, "wb") as out:
        out.write(content.encode() if isinstance(content, str) else content)


@pytest.fixture
def channel(tmp_path):
    """(owner, reader): the controls of a run and their copy in 'another process' (unpickled)."""
    owner = SharedControls(tmp_path / "channel", START)
    reader = pickle.loads(pickle.dumps(owner))
    owner.update(**GOOD)
    assert reader.snapshot() == AFTER_GOOD  # a valid update is read
    return owner, reader


@pytest.mark.parametrize("content", FORGED.values(), ids=FORGED.keys())
def test_a_forged_controls_file_is_ignored_and_the_last_good_values_kept(channel, content, caplog):
    owner, reader = channel
    _forge(owner.path, content)
    with caplog.at_level(logging.WARNING, logger="magnet_demo.channel"):
        assert reader.snapshot() == AFTER_GOOD
        assert reader.snapshot() == AFTER_GOOD
    warnings = [r for r in caplog.records if r.name == "magnet_demo.channel"]
    assert len(warnings) == 1 and "ignoring the live controls" in warnings[0].getMessage()
    # the owner keeps its own values, and its next valid update reaches the reader again
    assert owner.snapshot() == AFTER_GOOD
    owner.update(temperature=0.5)
    assert reader.snapshot() == ControlValues(CFGSchedule("linear", 12.0, 2.0), 0.5, 0.25)


def test_a_valid_file_at_the_limits_is_read(channel):
    owner, reader = channel
    limits = Limits()
    curve = [limits.max_cfg] * limits.cfg_points
    _forge(owner.path, json.dumps(_valid(**{"cfg.kind": "curve", "cfg.points": curve}, temperature=20)))
    values = reader.snapshot()
    assert values.cfg.points == tuple(curve) and values.temperature == limits.max_temperature


def test_a_reader_in_a_forked_process_ignores_a_forged_file(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    owner = SharedControls(tmp_path / "channel", START)  # inherited by the fork, not pickled
    owner.update(**GOOD)
    _forge(owner.path, FORGED["cfg 1e9"])
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_report_snapshot, args=(owner, answers))
    child.start()
    try:
        assert answers.get(timeout=60) == AFTER_GOOD
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0


def _report_snapshot(controls: SharedControls, answers) -> None:
    answers.put(controls.snapshot())


def test_the_limits_travel_with_the_controls(tmp_path):
    strict = Limits(max_cfg=5.0, max_temperature=2.0, cfg_points=4)
    owner = SharedControls(tmp_path / "channel", ControlValues(CFGSchedule("linear", 4.0, 1.0), 1.0), strict)
    reader = pickle.loads(pickle.dumps(owner))
    assert reader.limits == strict
    with pytest.raises(ValueError, match="cfg.max_coef"):
        owner.update(max_cfg_coef=6.0)  # a value the readers would ignore is refused at once
    assert owner.snapshot().cfg.max_coef == 4.0
    # within the server's default limits, but not within this server's
    _forge(owner.path, json.dumps(_valid(**{"cfg.max_coef": 6.0, "cfg.min_coef": 1.0}, temperature=1.0)))
    assert reader.snapshot().cfg.max_coef == 4.0
    owner.update(max_cfg_coef=5.0, temperature=2.0)
    assert reader.snapshot() == ControlValues(CFGSchedule("linear", 5.0, 1.0), 2.0)


def test_the_default_limits_are_the_servers(tmp_path):
    controls = SharedControls(tmp_path / "channel", START)
    assert controls.limits == Limits()
    assert pickle.loads(pickle.dumps(controls)).limits == Limits()


def test_the_channel_folder_is_private(tmp_path):
    SharedControls(tmp_path / "run" / "channel", START)
    assert stat.S_IMODE(os.stat(tmp_path / "run" / "channel").st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    StopFlag(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700


def test_a_symlink_in_place_of_the_channel_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "channel"
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        SharedControls(link, START)
    with pytest.raises(ValueError, match="symbolic link"):
        StopFlag(link)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_a_channel_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "channel"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    with pytest.raises(ValueError, match="another user"):
        StopFlag(folder)


def test_readers_follow_no_symlink_planted_after_the_channel_was_made(tmp_path):
    folder = tmp_path / "channel"
    owner, stop = SharedControls(folder, START), StopFlag(folder)
    owner.update(**GOOD)
    reader, remote_stop = pickle.loads(pickle.dumps((owner, stop)))
    assert reader.snapshot() == AFTER_GOOD
    # a forged folder, holding forged controls and a stop file, swapped in under the channel's name
    forged = tmp_path / "forged"
    forged.mkdir()
    _forge(forged / CONTROLS_FILE, FORGED["cfg 1e9"].replace("1000000000.0", "40.0"))
    (forged / STOP_FILE).touch()
    os.rename(folder, tmp_path / "moved")
    folder.symlink_to(forged, target_is_directory=True)
    assert reader.snapshot() == AFTER_GOOD
    assert not remote_stop.is_set()
    # the folder back, its controls file now a link to the forged one
    folder.unlink()
    os.rename(tmp_path / "moved", folder)
    os.remove(folder / CONTROLS_FILE)
    (folder / CONTROLS_FILE).symlink_to(forged / CONTROLS_FILE)
    assert reader.snapshot() == AFTER_GOOD
    assert not remote_stop.is_set()
    stop.set()
    assert remote_stop.is_set()


def test_a_pipe_in_place_of_the_controls_file_does_not_block_the_reader(channel):
    owner, reader = channel
    os.remove(owner.path)
    os.mkfifo(owner.path)
    assert reader.snapshot() == AFTER_GOOD


def test_a_cleaned_up_run_keeps_the_last_values_without_a_warning(channel, caplog):
    owner, reader = channel
    os.remove(owner.path)
    with caplog.at_level(logging.WARNING, logger="magnet_demo.channel"):
        assert reader.snapshot() == AFTER_GOOD
    assert not [r for r in caplog.records if r.name == "magnet_demo.channel"]
