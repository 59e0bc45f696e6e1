"""The models (and rescorers) a process has loaded: each loaded once, the least recently used evicted.

One :class:`ModelCache` serves a process: the server's main process, and a decoding worker process
(:mod:`magnet_demo.workers`) has its own. Concurrent requests for one name wait for a single load.
A model that failed to load is not tried again for :data:`LOAD_FAILURE_TTL_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from magnet_demo.controls import DEFAULT_MAX_MODELS
from magnet_demo.models import EMBEDDED_NAME, LoadedModel, load_model

log = logging.getLogger(__name__)

#: a model that failed to load is not tried again for this long (offline hub look-ups are slow)
LOAD_FAILURE_TTL_S = 300.0


class ModelCache:
    """Loads each model and rescorer once; concurrent requests for one name wait for that load.

    Args:
        loader: ``name -> LoadedModel`` (raises a ValueError, e.g. ModelLoadError, when it cannot).
        max_models: models kept at once; the least recently used one (with its rescorer) is
            dropped when another is loaded. A run that still holds a dropped model finishes with it.
    """

    def __init__(
        self, loader: Callable[[str], LoadedModel] = load_model, max_models: int = DEFAULT_MAX_MODELS
    ):
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}.")
        self.loader = loader
        self.max_models = max_models
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._rescorers: dict[str, tuple[str, object]] = {}  # rescorer name -> (model name, rescorer)
        self._failures: dict[str, tuple[float, ValueError]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _name_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def loaded(self, name: str) -> bool:
        return name.strip() in self._models

    def names(self) -> list[str]:
        """Names of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def _hit(self, name: str) -> LoadedModel | None:
        with self._lock:
            model = self._models.get(name)
            if model is not None:
                self._models.move_to_end(name)
            return model

    def _store(self, name: str, model: LoadedModel) -> None:
        with self._lock:
            self._models[name] = model
            while len(self._models) > self.max_models:
                evicted, _ = self._models.popitem(last=False)
                for key in [k for k, (owner, _) in self._rescorers.items() if owner == evicted]:
                    del self._rescorers[key]
                log.info("evicted model %s (at most %d kept)", evicted, self.max_models)

    def get(self, name: str) -> LoadedModel:
        """The model called ``name`` (ModelLoadError, a ValueError, when it cannot be loaded)."""
        name = (name or EMBEDDED_NAME).strip()
        model = self._hit(name)
        if model is not None:
            return model
        with self._name_lock(name):
            model = self._hit(name)
            if model is not None:
                return model
            failed = self._failures.get(name)
            if failed is not None and time.monotonic() - failed[0] < LOAD_FAILURE_TTL_S:
                raise failed[1]
            started = time.perf_counter()
            try:
                model = self.loader(name)
            except ValueError as error:
                self._failures[name] = (time.monotonic(), error)
                raise
            log.info("loaded model %s in %.1f s", name, time.perf_counter() - started)
            self._store(name, model)
            return model

    def rescorer_name(self, model_name: str) -> tuple[str | None, str]:
        """The rescorer offered for a model and why (None when none fits or rescoring is absent)."""
        try:
            from magnet_demo.rescoring import rescorer_for
        except ImportError:
            return None, "rescoring is not available in this build"
        try:
            return rescorer_for(model_name)
        except Exception as error:  # a broken checkpoint must not break the page
            return None, f"no rescorer: {error}"

    def rescorer(self, model_name: str, model: LoadedModel):
        """The loaded rescorer for ``model`` (None when none is offered); ValueError if it fails."""
        name, _ = self.rescorer_name(model_name)
        if name is None:
            return None
        if name in self._rescorers:
            return self._rescorers[name][1]
        with self._name_lock(f"rescorer:{name}"):
            if name not in self._rescorers:
                from magnet_demo.rescoring import pair_rescorer

                try:
                    rescorer = pair_rescorer(model, name)
                except ValueError:
                    raise
                except Exception as error:  # hub download errors and the like
                    raise ValueError(f"Could not load the rescorer '{name}': {error}") from error
                self._rescorers[name] = (model_name.strip(), rescorer)
            return self._rescorers[name][1]
