"""What a server's runs may hold, all visitors together: files on disk and bytes in memory.

- :class:`FileBudget`: the files of at most ``keep_runs`` runs, and at most ``per_session`` runs'
  files of any one session. A session over its share loses its own oldest files; when the server
  as a whole is over, the session holding the most loses its oldest first. So one visitor's many
  tiny runs delete only that visitor's files.
- :class:`MemoryBudget`: the bytes runs keep in memory (step records, step previews, the canvas
  feed, final audio), one budget shared by all sessions. Beyond it the least recently used run
  that is not decoding releases its steps (:meth:`~magnet_demo.session.Run.release`): it keeps its
  audio file, trace file, settings and seed, and says so.

No Gradio here. Runs are anything with the few attributes named in the docstrings.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, defaultdict, deque

from magnet_demo.controls import DEFAULT_KEEP_RUNS, DEFAULT_KEEP_RUNS_PER_SESSION, DEFAULT_MEMORY_MB

MIB = 2**20


class FileBudget:
    """The files of at most ``keep_runs`` finished runs server-wide, ``per_session`` per session.

    A run's session is its ``directory``. A run whose files were deleted keeps its records, audio,
    settings and seed in its session (``run.files_deleted``), and says so.
    """

    def __init__(self, keep_runs: int = DEFAULT_KEEP_RUNS, per_session: int = DEFAULT_KEEP_RUNS_PER_SESSION):
        if keep_runs < 1 or per_session < 1:
            raise ValueError(f"keep_runs and per_session must be at least 1, got {keep_runs}, {per_session}.")
        self.keep_runs = keep_runs
        self.per_session = min(per_session, keep_runs)
        self._by_session: defaultdict[object, deque] = defaultdict(deque)
        self._order = 0
        self._lock = threading.Lock()

    def add(self, run) -> list:
        """Count ``run``'s files; delete those of the runs beyond the budget (returned, oldest first)."""
        with self._lock:
            self._order += 1
            self._by_session[run.directory].append((self._order, run))
            evicted = []
            own = self._by_session[run.directory]
            while len(own) > self.per_session:
                evicted.append(own.popleft())
            while sum(len(runs) for runs in self._by_session.values()) > self.keep_runs:
                # the largest holder gives up its oldest run (ties: the oldest of those runs)
                largest = max(self._by_session.values(), key=lambda runs: (len(runs), -runs[0][0]))
                evicted.append(largest.popleft())
            for key in [key for key, runs in self._by_session.items() if not runs]:
                del self._by_session[key]
        oldest_first = [old for _, old in sorted(evicted, key=lambda item: item[0])]
        for old in oldest_first:
            old.delete_files()
        return oldest_first


class MemoryBudget:
    """At most ``max_bytes`` held by runs in memory, all sessions together.

    :meth:`charge` (a run grew, or was shown) moves the run to the most recently used end and
    releases the least recently used runs that are not decoding until the total fits. Runs need
    ``memory_bytes()``, ``release()``, ``is_busy`` (decoding, or writing its files) and
    ``steps_released``.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_MB * MIB):
        if max_bytes < 1:
            raise ValueError(f"The memory budget must be at least 1 byte, got {max_bytes}.")
        self.max_bytes = max_bytes
        # id(run) -> (a weak reference, its bytes): a run its session dropped is not kept alive here
        self._runs: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return sum(size for _, size in self._runs.values())

    def charge(self, run) -> list:
        """Count ``run``'s bytes now; release the least recently used others beyond the budget.

        Returns the runs released. A busy run (decoding, or writing its trace and animation from
        its steps) is never released, even if the budget is spent
        (the total may then exceed it until the run ends).
        """
        released = []
        with self._lock:
            self._runs[id(run)] = (weakref.ref(run), 0 if run.steps_released else run.memory_bytes())
            self._runs.move_to_end(id(run))
            for key in [key for key, (ref, _) in self._runs.items() if ref() is None]:
                del self._runs[key]
            total = sum(size for _, size in self._runs.values())
            for key in list(self._runs):
                if total <= self.max_bytes:
                    break
                ref, size = self._runs[key]
                old = ref()
                if old is None or old is run or old.is_busy:
                    continue
                del self._runs[key]
                total -= size
                released.append(old)
        for old in released:
            old.release()
        return released
