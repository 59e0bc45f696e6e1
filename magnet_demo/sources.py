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
#: why a server without a GPU does not offer the released models (the page and refusals say it)
CPU_ONLY_NOTE = (
    "this server has no GPU, and a released model takes minutes per clip on a CPU (about 5 s per step "
    "of a 10 s clip on 2 cores), so its operator has not offered them (app.py --hub-models-on-cpu)."
)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


@dataclass(frozen=True)
class ModelSources:
    """The server's rule for model names.

    Attributes:
        roots: folders whose sub-folders (at any depth) may be loaded as checkpoints.
        allow_any: any name: Hub repos (their files are read as tensors only) and any folder.
        extra: names the operator chose on the command line (``--model``), always allowed.
        hub_offered: whether the released ``facebook/magnet-*`` models are offered (a server
            without a GPU offers them only when its operator says so: minutes per clip there).
    """

    roots: tuple[str, ...] = ()
    allow_any: bool = False
    extra: tuple[str, ...] = ()
    hub_offered: bool = True

    def refusal(self) -> str:
        """The one message for every refused name: it does not even quote the name back, so two
        refusals (a folder that exists, one that does not) read the same; nor the server's folders."""
        released = f", one of {', '.join(HUB_MODELS)}" if self.hub_offered else ""
        folders = " or a checkpoint folder its operator named" if self.roots else ""
        return f"This server does not offer that model. Choose '{EMBEDDED_NAME}'{released}{folders}."

    def check(self, name: object) -> str:
        """``name``, stripped, if the rule allows it; ModelLoadError (a ValueError) otherwise."""
        if not isinstance(name, str):
            raise ModelLoadError(f"A model name must be text, got {type(name).__name__}.")
        name = name.strip() or EMBEDDED_NAME
        if len(name) > MAX_NAME_CHARS or "\x00" in name:
            raise ModelLoadError(self.refusal())
        if name in HUB_MODELS and not (self.hub_offered or self.allow_any or name in self.extra):
            raise ModelLoadError(f"{name} is not offered here: {CPU_ONLY_NOTE}")
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
