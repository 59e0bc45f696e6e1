"""Which models visitors of a server may load: decided from the name alone, before any disk or network.

By default a server offers ``embedded``, ``auto``, the released ``facebook/magnet-*`` names (their
rescorers are paired by :mod:`magnet_demo.rescoring`, never typed) and the folders under the roots
its operator names (``--model-root``). Everything else is refused with one message that does not
say whether a path exists, since it is decided without looking. ``--allow-any-model`` lifts this
for a trusted single-user machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from magnet_demo.models import EMBEDDED_NAME, HUB_MODELS, ModelLoadError

AUTO_NAME = "auto"
#: longest model name or path considered (longer ones are refused unread)
MAX_NAME_CHARS = 300


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


@dataclass(frozen=True)
class ModelSources:
    """The server's rule for model names.

    Attributes:
        roots: folders whose sub-folders (at any depth) may be loaded as checkpoints.
        allow_any: any name: Hub repos (their files are read as tensors only) and any folder.
        extra: names the operator chose on the command line (``--model``), always allowed.
    """

    roots: tuple[str, ...] = ()
    allow_any: bool = False
    extra: tuple[str, ...] = ()

    def refusal(self) -> str:
        """The one message for every refused name: it does not even quote the name back, so two
        refusals (a folder that exists, one that does not) read the same."""
        folders = " or a checkpoint folder under " + ", ".join(self.roots) if self.roots else ""
        return (
            f"This server does not offer that model. Choose '{EMBEDDED_NAME}', one of "
            f"{', '.join(HUB_MODELS)}{folders}."
        )

    def check(self, name: object) -> str:
        """``name``, stripped, if the rule allows it; ModelLoadError (a ValueError) otherwise."""
        if not isinstance(name, str):
            raise ModelLoadError(f"A model name must be text, got {type(name).__name__}.")
        name = name.strip() or EMBEDDED_NAME
        if len(name) > MAX_NAME_CHARS or "\x00" in name:
            raise ModelLoadError(self.refusal())
        if self.allow_any or name in (EMBEDDED_NAME, AUTO_NAME, *HUB_MODELS, *self.extra):
            return name
        if self.roots and os.path.isabs(name):
            path = os.path.normpath(name)
            for root in self.roots:
                root = os.path.normpath(os.path.abspath(root))
                # the name, and where its links lead, both inside the root
                if (
                    path != root
                    and _inside(path, root)
                    and _inside(os.path.realpath(path), os.path.realpath(root))
                ):
                    return path
        raise ModelLoadError(self.refusal())
