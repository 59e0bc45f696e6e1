"""Peak memory of one call, measured in a forked child of the test process.

The child first hands the allocator's free memory back to the system (glibc's ``malloc_trim``:
else a warm test process serves a big array from pages already resident, and the call looks
free), resets its resident set's high-water mark (Linux: ``/proc/self/clear_refs``), makes the
call and reports how far the high-water mark rose above the resident set it had before it. The
resident set sees everything the call touches: numpy's arrays and the C buffers of libsndfile and
its codecs alike (which tracemalloc does not see), and the pages of code run for the first time in
the process (import what the call imports before measuring). The parent's memory is untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import pickle
import selectors
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

import pytest

#: how long a measured call may take before the child is killed and the test fails
CHILD_TIMEOUT_SECONDS = 300.0
CLEAR_REFS = "/proc/self/clear_refs"
#: ``clear_refs`` value that resets the peak resident set (VmHWM) to the current one
RESET_PEAK = "5"


class Peak(NamedTuple):
    """What :func:`measure` returns.

    Attributes:
        rise: bytes the resident set's peak rose above the resident set before the call.
        seconds: the call's wall time.
        error: the message of the ValueError it raised, None when it returned.
        value: what it returned (pickled back from the child: keep it small).
    """

    rise: int
    seconds: float
    error: str | None
    value: object


def _status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _trim_heap() -> None:
    """Give the allocator's free memory back to the system (glibc only; elsewhere nothing)."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _child(function: Callable[[], object], write_end: int, warm_up: bool) -> None:
    """In the child: measure the call and write a pickled :class:`Peak` (or a reason to skip)."""
    if warm_up:
        try:
            function()
        except ValueError:
            pass
    try:
        _trim_heap()
        with open(CLEAR_REFS, "w") as refs:
            refs.write(RESET_PEAK)
        before = _status_bytes("VmRSS")
    except OSError as error:
        answer = ("skip", f"cannot reset the peak resident set: {error}")
    else:
        start = time.perf_counter()
        value, error = None, None
        try:
            value = function()
        except ValueError as refusal:
            error = str(refusal)
        seconds = time.perf_counter() - start
        answer = ("peak", Peak(_status_bytes("VmHWM") - before, seconds, error, value))
    with os.fdopen(write_end, "wb") as pipe:
        pickle.dump(answer, pipe)


def measure(function: Callable[[], object], *, warm_up: bool = False) -> Peak:
    """Call ``function()`` in a forked child and measure its peak memory and time (see the module).

    ``warm_up``: call it once before measuring, so that the pages of the code it runs (a
    child re-reads them on first use) are not counted, only its data.
    A ValueError is caught and reported in :attr:`Peak.error`; any other exception fails the test.
    """
    if not os.path.exists(CLEAR_REFS):
        pytest.skip("measuring peak memory needs Linux's /proc/self/clear_refs")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            _child(function, write_end, warm_up)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    data = _read_all(read_end, pid)
    _, status = os.waitpid(pid, 0)
    if not data:
        pytest.fail(f"the measuring child died (wait status {status})")
    kind, answer = pickle.loads(data)
    if kind == "skip":
        pytest.skip(answer)
    return answer


def _read_all(read_end: int, pid: int) -> bytes:
    """Everything the child writes, killing it past :data:`CHILD_TIMEOUT_SECONDS`."""
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    data = bytearray()
    with os.fdopen(read_end, "rb", buffering=0) as pipe, selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the measured call took more than {CHILD_TIMEOUT_SECONDS:g} s")
            if selector.select(left):
                chunk = pipe.read(1 << 16)
                if not chunk:
                    return bytes(data)
                data += chunk
