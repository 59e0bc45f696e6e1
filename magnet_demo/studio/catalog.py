"""The models a studio offers: which names visitors may pick, loading them, and what the page says
of one (its sizes, its rescorer, its recommended sampling settings, its example prompts).

No Gradio here: :class:`ModelOffer` is plain data the handlers turn into the page's updates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from magnet_demo.controls import RESCORING_HELP, DecodingConfig
from magnet_demo.form import default_steps, number
from magnet_demo.incidents import Refusal
from magnet_demo.model_cache import ModelCache
from magnet_demo.models import EMBEDDED_NAME, HUB_MODELS, LoadedModel
from magnet_demo.session import model_domain
from magnet_demo.sources import AUTO_NAME, ModelSources

EXAMPLES_PATH = Path(__file__).resolve().parent.parent.parent / "assets" / "examples.json"


def load_examples(path: Path = EXAMPLES_PATH) -> dict[str, list[str]]:
    """Example prompts by model domain ('embedded', 'music', 'sound'); empty lists if missing."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = {}
    return {key: list(data.get(key, [])) for key in ("embedded", "music", "sound")}


@dataclass(frozen=True)
class ModelOffer:
    """What the page shows when a model is picked.

    Attributes:
        name: the model's name as the server resolved it.
        info: one Markdown line: kind, codebooks, codes, sample and frame rates, longest clip.
        steps: audiocraft's default step counts for its codebooks, as text ("20, 10, 10, 10").
        max_duration: its longest clip, seconds; ``duration`` the page's duration, capped by it.
        examples: example prompts for its domain.
        rescoring: the rescoring weight's help: the convention and which rescorer (or none, why).
        defaults: its recommended sampling settings over audiocraft's defaults.
    """

    name: str
    info: str
    steps: str
    max_duration: float
    duration: float
    examples: list[str]
    rescoring: str
    defaults: DecodingConfig


class Catalog:
    """The models a server offers (``sources``) and has loaded (``models``)."""

    def __init__(
        self,
        default_model: str,
        models: ModelCache,
        sources: ModelSources,
        examples: dict[str, list[str]] | None = None,
    ):
        self.default_model = default_model
        self.models = models
        self.sources = sources
        self.examples = load_examples() if examples is None else examples

    def name(self, name: object) -> str:
        """The name a visitor chose, resolved ('auto' is this page's default) and allowed by the
        server's :class:`ModelSources`; ValueError (refused unread) otherwise."""
        name = self.sources.check(name)
        return self.default_model if name == AUTO_NAME else name

    def load(self, name: object) -> LoadedModel:
        """The model, or a :class:`Refusal` with a readable message (refused, or the loader's)."""
        try:
            return self.models.get(self.name(name))
        except ValueError as error:
            raise Refusal(str(error), "Model not available") from None

    def choices(self) -> list[str]:
        """The model menu: the embedded model, the released ones where offered, this page's default."""
        choices = [EMBEDDED_NAME, *(HUB_MODELS if self.sources.hub_offered else ())]
        if self.default_model not in choices:
            choices.insert(0, self.default_model)
        return choices

    def examples_for(self, name: str, model: LoadedModel | None = None) -> list[str]:
        return list(self.examples.get(model_domain(name, model), []))

    def offer(self, name: object, duration: object = None) -> ModelOffer:
        """Load ``name`` and describe it for the page; ValueError when it cannot be used."""
        name = self.name(name)
        model = self.models.get(name)
        rescorer, why = self.models.rescorer_name(name)
        parts = f", {', '.join(model.custom_parts)}" if model.custom_parts else ""
        info = (
            f"**{name}** ({model.kind}{parts}) · {model.num_codebooks} codebooks × {model.lm.card} codes · "
            f"{model.sample_rate / 1000:g} kHz · {model.frame_rate} frames/s · up to {model.max_duration:g} s"
        )
        if model.settings:
            shown = ", ".join(f"{key} {value}" for key, value in model.settings.items())
            info += f" · recommended sampling: {shown}"
        rescoring = f"{RESCORING_HELP} Rescorer: " + (
            f"**{rescorer}** ({why})." if rescorer else f"none ({why})."
        )
        return ModelOffer(
            name=name,
            info=info,
            steps=", ".join(str(n) for n in default_steps(model.num_codebooks)),
            max_duration=model.max_duration,
            duration=min(_duration_or(duration, model.max_duration), model.max_duration),
            examples=self.examples_for(name, model),
            rescoring=rescoring,
            defaults=model.default_config(),
        )


def _duration_or(value: object, default: float) -> float:
    try:
        return number(value, "Duration", 0) if value not in (None, "") else default
    except ValueError:
        return default
