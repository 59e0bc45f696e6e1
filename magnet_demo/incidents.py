"""Errors as a visitor reads them: no server path, no exception class, and a short id that ties an
unexpected error to the full report in the server's log.

- A ``ValueError`` (or a :class:`ReadableFault`) is a message written for people: its message is shown, with any absolute path
  in it cut to its last part (a Hub cache, a ``--model-root`` folder or an upload folder says
  nothing a visitor needs).
- Anything else is a fault of the server: the visitor reads "an internal error (id 3f9a1c)" and
  the log keeps the traceback under the same id.

No Gradio here.
"""

from __future__ import annotations

import logging
import re
import secrets

#: an absolute path of two parts or more (``/a/b``), not inside a URL or after a word character
_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)+([\w.@+~-]*)")
#: hex characters of an incident id
INCIDENT_HEX = 6


def without_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last part (``/srv/models/mine`` -> ``mine``)."""
    return _PATH.sub(lambda match: match.group(1) or "…", text)


class Refusal(ValueError):
    """A refusal for people, with a short title for the page's error box ("Check the settings")."""

    def __init__(self, message: str, title: str = "Check the request"):
        super().__init__(message)
        self.title = title


class ReadableFault(RuntimeError):
    """A fault of the server whose message is written for people (a worker process died)."""


def visitor_message(
    error: BaseException, log: logging.Logger, context: str, readable: tuple[type, ...] = ()
) -> str:
    """What a visitor reads of ``error``; an unexpected error is logged with its traceback and an id.

    ``context`` says in the log what was being done ("run 3 of session 1a2b3c"); ``readable``:
    more exception types whose messages are for people (a ZeroGPU quota error, ``gr.Error``).
    """
    if isinstance(error, (ValueError, ReadableFault, *readable)):
        log.info("%s: %s", context, error)
        return without_paths(str(getattr(error, "message", None) or error))
    incident = secrets.token_hex(INCIDENT_HEX // 2)
    log.error("incident %s: %s", incident, context, exc_info=(type(error), error, error.__traceback__))
    return f"an internal error (id {incident}; the server's log has the details)."
