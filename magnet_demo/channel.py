"""Live controls and a Stop flag that reach a decoding in another process.

A run's :class:`SharedControls` and :class:`StopFlag` behave like
:class:`~magnet_demo.controls.LiveControls` and ``threading.Event`` in the process that made them,
and also keep their state in two small files of a folder of the run. Pickled into another
process (a ``multiprocessing`` worker, or the GPU function of a ZeroGPU Space, which runs in a
forked process), they carry only those paths and read the files: the engine's one
:meth:`~SharedControls.snapshot` per step then sees what a person set during the previous step.

Files, not pipes or shared memory: they need no server process, survive any start method
(spawn, fork, forkserver) and any pickling path, and a reader costs one small file read per step.
Writers replace the file atomically (``os.replace``), so a reader sees the old or the new values,
never half of them.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

from magnet_demo.controls import ControlValues, LiveControls
from magnet_demo.schedules import CFGSchedule

CONTROLS_FILE = "controls.json"
STOP_FILE = "stop"


def controls_to_json(values: ControlValues) -> str:
    cfg = values.cfg
    return json.dumps(
        {
            "cfg": {
                "kind": cfg.kind,
                "max_coef": cfg.max_coef,
                "min_coef": cfg.min_coef,
                "points": list(cfg.points),
            },
            "temperature": values.temperature,
            "rescore_weight": values.rescore_weight,
        }
    )


def controls_from_json(text: str) -> ControlValues:
    data = json.loads(text)
    cfg = data["cfg"]
    return ControlValues(
        cfg=CFGSchedule(cfg["kind"], cfg["max_coef"], cfg["min_coef"], tuple(cfg["points"])),
        temperature=data["temperature"],
        rescore_weight=data["rescore_weight"],
    )


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    partial.write_text(text)
    os.replace(partial, path)


class SharedControls(LiveControls):
    """:class:`LiveControls` whose values another process can read (see the module doc).

    In the process that made it, :meth:`snapshot` is the in-memory value; in any other process
    (one that unpickled it, or a fork that inherited it), :meth:`snapshot` reads the file (the
    last good value if it is gone).
    """

    def __init__(self, folder: str | Path, values: ControlValues | None = None):
        super().__init__(values)
        self.path = Path(folder) / CONTROLS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owner = os.getpid()
        self._publish = threading.Lock()
        _write_atomically(self.path, controls_to_json(self._values))

    def update(self, **changes) -> ControlValues:
        with self._publish:
            values = super().update(**changes)
            _write_atomically(self.path, controls_to_json(values))
            return values

    def snapshot(self) -> ControlValues:
        if os.getpid() == self._owner:
            return super().snapshot()
        try:
            self._values = controls_from_json(self.path.read_text())
        except (OSError, ValueError, KeyError):
            pass  # the run was cleaned up: keep the last values read
        return self._values

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "values": controls_to_json(self._values)}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self._lock = threading.Lock()
        self._publish = threading.Lock()
        self._values = controls_from_json(state["values"])
        self._owner = None


class StopFlag:
    """A ``threading.Event``-like stop request, visible to other processes (a file exists)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / STOP_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()
        try:
            self.path.touch()
        except OSError:  # the run's folder is gone: the run is over anyway
            pass

    def is_set(self) -> bool:
        return self._event.is_set() or self.path.exists()

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "set": self._event.is_set()}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self._event = threading.Event()
        if state["set"]:
            self._event.set()


def remove_channel(folder: str | Path) -> None:
    """Delete a run's channel folder (after the run ended; readers keep their last values)."""
    shutil.rmtree(folder, ignore_errors=True)
