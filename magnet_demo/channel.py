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

A reader trusts nothing in the folder: the channel folder is made private (mode 0o700, refused if
it is a symbolic link or another user's), a reader opens files without following symbolic links
(neither the folder nor the file may be one) and reads at most :data:`MAX_CONTROLS_BYTES`, and a
controls file whose values are not of the right types or lie outside the server's
:class:`~magnet_demo.controls.Limits` is ignored: the reader keeps the last good values.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

from magnet_demo.controls import ControlValues, Limits, LiveControls
from magnet_demo.schedules import CFGSchedule

log = logging.getLogger(__name__)

CONTROLS_FILE = "controls.json"
STOP_FILE = "stop"
#: mode of a channel folder: only the server's user may list, read or write it
CHANNEL_MODE = 0o700
#: the most bytes a reader takes from the controls file (a valid one with a 32-point curve is < 1 KiB)
MAX_CONTROLS_BYTES = 4096
#: keys of the controls file and of its ``cfg`` object
CONTROLS_KEYS = frozenset({"cfg", "temperature", "rescore_weight"})
CFG_KEYS = frozenset({"kind", "max_coef", "min_coef", "points"})

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NON_BLOCKING = getattr(os, "O_NONBLOCK", 0)


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


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a number the controls may hold")


def _object(value: Any, keys: frozenset[str], what: str) -> dict:
    if not isinstance(value, dict) or set(value) != keys:
        raise ValueError(f"{what} must be an object with exactly the keys {', '.join(sorted(keys))}")
    return value


def _number(value: Any, what: str, high: float | None) -> float:
    """``value`` if it is a finite JSON number in ``[0, high]`` (no bound above: ``high`` None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        finite = False
    if not finite or value < 0 or (high is not None and value > high):
        bound = "" if high is None else f" and <= {high:g}"
        raise ValueError(f"{what} must be >= 0{bound}, got {value!r:.40}")
    return value


def controls_from_json(text: str | bytes, limits: Limits | None = None) -> ControlValues:
    """The values of a controls file (:func:`controls_to_json`); ValueError unless it holds exactly
    those fields, of the right types, within ``limits`` (the server's caps: CFG coefficients and
    curve points up to ``max_cfg``, at most ``cfg_points`` points, a temperature up to
    ``max_temperature``, a rescoring weight in [0, 1]). Without ``limits`` only types and the
    values' own rules are checked (for values that come from the process that made them)."""
    try:
        data = json.loads(text, parse_constant=_not_json)  # no NaN or Infinity
    except RecursionError:  # brackets nested deeper than Python's stack
        raise ValueError("the controls are nested too deeply") from None
    data = _object(data, CONTROLS_KEYS, "the controls")
    cfg = _object(data["cfg"], CFG_KEYS, "cfg")
    max_cfg = None if limits is None else limits.max_cfg
    if not isinstance(cfg["kind"], str):
        raise ValueError(f"cfg.kind must be text, got {type(cfg['kind']).__name__}")
    points = cfg["points"]
    if not isinstance(points, list):
        raise ValueError(f"cfg.points must be a list, got {type(points).__name__}")
    if limits is not None and len(points) > limits.cfg_points:
        raise ValueError(f"cfg.points holds {len(points)} points; at most {limits.cfg_points} are allowed")
    return ControlValues(
        cfg=CFGSchedule(
            cfg["kind"],
            _number(cfg["max_coef"], "cfg.max_coef", max_cfg),
            _number(cfg["min_coef"], "cfg.min_coef", max_cfg),
            tuple(_number(v, "a cfg.points value", max_cfg) for v in points),
        ),
        temperature=_number(
            data["temperature"], "temperature", None if limits is None else limits.max_temperature
        ),
        rescore_weight=_number(data["rescore_weight"], "rescore_weight", 1.0),
    )


def check_limits(values: ControlValues, limits: Limits) -> None:
    """ValueError when ``values`` lie outside ``limits`` (the bounds a reader applies)."""
    controls_from_json(controls_to_json(values), limits)


def channel_folder(folder: str | Path) -> Path:
    """``folder``, made (mode :data:`CHANNEL_MODE`) if needed and checked: ValueError when it is a
    symbolic link, not a folder, or another user's (whoever owns it could forge its files)."""
    folder = Path(folder)
    if folder.is_symlink():
        raise ValueError(f"The channel folder {folder} is a symbolic link: refusing to use it.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=CHANNEL_MODE)
    except FileExistsError:
        pass
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"The channel folder {folder} is not a plain folder: refusing to use it.")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ValueError(f"The channel folder {folder} belongs to another user: refusing to use it.")
    if stat.S_IMODE(info.st_mode) & 0o022:  # an existing folder others may write into
        os.chmod(folder, CHANNEL_MODE)
    return folder


def _open_folder(folder: Path) -> int:
    """A descriptor of ``folder`` itself (OSError when it is gone or a symbolic link)."""
    return os.open(folder, os.O_RDONLY | _DIRECTORY | _NO_FOLLOW)


def read_capped(path: Path, limit: int = MAX_CONTROLS_BYTES) -> bytes:
    """The bytes of ``path``, following no symbolic link (neither the folder nor the file) and never
    blocking on a pipe: OSError when it cannot be opened so (it is gone: FileNotFoundError),
    ValueError when it is not a regular file or holds more than ``limit`` bytes."""
    folder = _open_folder(path.parent)
    try:
        fd = os.open(path.name, os.O_RDONLY | _NO_FOLLOW | _NON_BLOCKING, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(f"{path.name} holds more than {limit} bytes")
    return b"".join(chunks)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    partial.write_text(text)
    os.replace(partial, path)


class SharedControls(LiveControls):
    """:class:`LiveControls` whose values another process can read (see the module doc).

    In the process that made it, :meth:`snapshot` is the in-memory value; in any other process
    (one that unpickled it, or a fork that inherited it), :meth:`snapshot` reads the file: the last
    good values if it is gone, and, with one warning, if it holds values of the wrong type or
    outside ``limits`` (the server's :class:`Limits`, carried through pickling), is larger than
    :data:`MAX_CONTROLS_BYTES`, is not JSON, or is not a regular file. :meth:`update` refuses
    (ValueError) values outside ``limits``, which a reader would ignore.
    """

    def __init__(self, folder: str | Path, values: ControlValues | None = None, limits: Limits | None = None):
        super().__init__(values)
        self.limits = limits or Limits()
        self.path = channel_folder(folder) / CONTROLS_FILE
        self._owner = os.getpid()
        self._publish = threading.Lock()
        self._warned = False
        _write_atomically(self.path, controls_to_json(self._values))

    def update(self, **changes) -> ControlValues:
        with self._publish:
            check_limits(LiveControls(super().snapshot()).update(**changes), self.limits)
            values = super().update(**changes)
            _write_atomically(self.path, controls_to_json(values))
            return values

    def snapshot(self) -> ControlValues:
        if os.getpid() == self._owner:
            return super().snapshot()
        try:
            self._values = controls_from_json(read_capped(self.path), self.limits)
        except FileNotFoundError:
            pass  # the run was cleaned up: keep the last values read
        except (OSError, ValueError) as error:  # a symbolic link, a forged or oversized file
            if not self._warned:
                self._warned = True
                # the message may quote the file: quoted and cut, so it cannot forge log lines
                log.warning(
                    "ignoring the live controls in %s (keeping the last good ones): %.200r",
                    self.path,
                    str(error),
                )
        return self._values

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "values": controls_to_json(self._values), "limits": self.limits}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self.limits = state.get("limits") or Limits()
        self._lock = threading.Lock()
        self._publish = threading.Lock()
        self._values = controls_from_json(state["values"])
        self._owner = None
        self._warned = False


class StopFlag:
    """A ``threading.Event``-like stop request, visible to other processes (a file exists; a
    reader follows no symbolic link to see it)."""

    def __init__(self, folder: str | Path):
        self.path = channel_folder(folder) / STOP_FILE
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()
        try:
            self.path.touch()
        except OSError:  # the run's folder is gone: the run is over anyway
            pass

    def is_set(self) -> bool:
        return self._event.is_set() or self._file_exists()

    def _file_exists(self) -> bool:
        try:
            folder = _open_folder(self.path.parent)
        except OSError:  # gone (the run is over) or replaced by a symbolic link
            return False
        try:
            os.stat(self.path.name, dir_fd=folder, follow_symlinks=False)
            return True
        except OSError:
            return False
        finally:
            os.close(folder)

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
