"""What a Hugging Face Space preloads at build time (its front matter's ``preload_from_hub``): every
Hub repo, and only the files, that loading its default model and that model's rescorer reads, so
that a visitor's first run downloads nothing. README's front matter is checked against
:func:`space_preloads` (``tests/test_space_front_matter.py``).
"""

from __future__ import annotations

from magnet_demo.models import (
    HUB_RESCORER_T5,
    LM_FILE,
    ModelLoadError,
    checkpoint_piece,
    known_pieces,
    resolve_name,
    t5_piece,
)
from magnet_demo.rescoring import rescorer_for


def space_preloads(model_name: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every Hub repo that loading ``model_name`` and the rescorer proposed for it
    (:func:`magnet_demo.rescoring.rescorer_for`) reads, each with the files read (``HubPiece.files``):
    a Space's ``preload_from_hub``, so that its first run downloads nothing. Local models: none.

    Example: ``facebook/magnet-small-10secs`` -> itself (both files), ``t5-base``,
    ``facebook/encodec_32khz`` and ``facebook/musicgen-small`` (:func:`load_lm` reads its LM file only).
    """

    def on_hub(name: str | None) -> bool:
        try:
            return name is not None and resolve_name(name)[1] == "hub"
        except ModelLoadError:
            return False

    pieces = known_pieces(model_name) if on_hub(model_name) else []
    rescorer, _ = rescorer_for(model_name)
    if on_hub(rescorer):
        pieces += [checkpoint_piece(rescorer, (LM_FILE,)), *map(t5_piece, HUB_RESCORER_T5.get(rescorer, ()))]
    files: dict[str, list[str]] = {}
    for piece in pieces:
        listed = files.setdefault(piece.repo, [])
        listed += [f for f in piece.files if f not in listed]
    return [(repo, tuple(names)) for repo, names in files.items()]
