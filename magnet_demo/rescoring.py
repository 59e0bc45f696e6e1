"""Rescoring MAGNeT's proposals with an autoregressive model (paper section 3.3; not in audiocraft).

A :class:`Rescorer` answers one question per decoding step: how probable is every current token
under another model? The engine (:mod:`magnet_demo.engine`) mixes the answer into the span
confidences, ``confidence = (1 - w) * p_magnet + w * p_rescorer``, for the stage being decoded.

:class:`LMRescorer` wraps any audiocraft autoregressive ``LMModel`` (MusicGen, AudioGen, the
embedded model's own rescorer): one teacher-forced forward over the current canvas, as in
training. The canvas ``[B, K, T]`` is laid out with the model's codebook pattern (MusicGen's delay
pattern: codebook ``k`` is shifted right by ``k`` steps, behind one start token), the model runs
once with the prompts' conditions (cached per prompt tuple), the logits are mapped back to
``[B, K, T, card]`` with the pattern (``LMModel.compute_predictions``), and the softmax is read at
each current token.

Mask positions. Codebooks above the current stage still hold MAGNeT's mask id, which equals
audiocraft's special token id (``card``) of both models. The autoregressive model reads them as
its special token, the same token it sees for "not yet defined" in its own pattern; their
probabilities are returned as NaN. Through the delay pattern, the probability of codebook ``k`` at
frame ``t`` depends on codebooks ``j < k`` up to frame ``t + k - j - 1`` and on codebooks ``j > k``
before frame ``t - (j - k)``; during stage ``k`` the latter are still masked, so the rescorer scores
a codebook with its finer codebooks unknown, which is the best a teacher-forced pass can do.

Pairing. A rescorer can only read MAGNeT's tokens if both use the same tokenizer: same sample
rate, frame rate, codebook size, number of codebooks and the same codec weights. The 32 kHz music
MAGNeT models pair with MusicGen, the 16 kHz audio-magnet models with AudioGen, and the embedded
model with the rescorer trained beside it (``assets/embedded/rescorer``). :func:`tokenizer_of`
identifies a tokenizer without loading the language models, :func:`rescorer_for` and
:func:`rescorer_choices` say what to offer and why, :func:`pair_rescorer` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE
from magnet_demo.compat import audiocraft_checkpoint_file, import_audiocraft
from magnet_demo.models import (
    EMBEDDED_DIR,
    EMBEDDED_NAME,
    HUB_MODELS,
    LoadedModel,
    build_compression_model,
    load_lm,
    pretrained_codec,
    read_package,
    resolve_name,
    resolve_precision,
    set_precision,
)

import_audiocraft()
from audiocraft.models.encodec import CompressionModel  # noqa: E402
from audiocraft.models.lm import LMModel  # noqa: E402
from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes  # noqa: E402

# --------------------------------------------------------------------------------------------
# tokenizers

#: the 32 kHz EnCodec shared by MusicGen and the music MAGNeT models
ENCODEC_32KHZ = "facebook/encodec_32khz"
#: the 16 kHz EnCodec shipped with AudioGen, shared by the audio-magnet models (DESIGN.md section 2)
ENCODEC_16KHZ_AUDIOGEN = "facebook/audiogen-medium codec (EnCodec 16 kHz)"

#: name of the rescorer trained beside the embedded model, and where it ships
EMBEDDED_RESCORER = "embedded-rescorer"
EMBEDDED_RESCORER_DIR = EMBEDDED_DIR / "rescorer"
#: a checkpoint folder may ship its own rescorer in this sub-folder (the embedded model does)
RESCORER_SUBDIR = "rescorer"

#: autoregressive hub checkpoints that can rescore, with the domain whose tokens they read.
#: (musicgen-melody shares the 32 kHz tokenizer but needs a chroma conditioner, i.e. torchaudio.)
HUB_RESCORERS = {
    "facebook/musicgen-small": {"domain": "music", "params": "300M"},
    "facebook/musicgen-medium": {"domain": "music", "params": "1.5B"},
    "facebook/musicgen-large": {"domain": "music", "params": "3.3B"},
    "facebook/audiogen-medium": {"domain": "sound", "params": "1.5B"},
}
#: the rescorer proposed first for each hub domain (the smallest: rescoring runs every step)
DEFAULT_HUB_RESCORER = {"music": "facebook/musicgen-small", "sound": "facebook/audiogen-medium"}
#: codec of each hub domain
DOMAIN_CODEC = {"music": ENCODEC_32KHZ, "sound": ENCODEC_16KHZ_AUDIOGEN}
#: how many prompt tuples' condition tensors a rescorer keeps
CONDITION_CACHE_SIZE = 8
#: hex digits of the weights digest kept in a tokenizer's codec name
DIGEST_CHARS = 16


@dataclass(frozen=True)
class Tokenizer:
    """What a language model's tokens mean: the codec that makes them.

    Attributes:
        sample_rate: audio sample rate in Hz.
        frame_rate: token frames per second.
        cardinality: codes per codebook (the mask / special token id is this number).
        num_codebooks: codebooks per frame (K).
        codec: the codec's identity: a pretrained codec's name (``facebook/encodec_32khz``) or a
            digest of its weights (``weights sha256:...``).
    """

    sample_rate: int
    frame_rate: float
    cardinality: int
    num_codebooks: int
    codec: str

    def differences(self, other: Tokenizer) -> list[str]:
        """Human-readable differences from ``other`` (empty when the tokenizers match)."""
        out = []
        if self.sample_rate != other.sample_rate:
            out.append(f"sample rate {self.sample_rate} Hz vs {other.sample_rate} Hz")
        if abs(self.frame_rate - other.frame_rate) > 1e-6:
            out.append(f"frame rate {self.frame_rate:g} Hz vs {other.frame_rate:g} Hz")
        if self.cardinality != other.cardinality:
            out.append(f"codebook size {self.cardinality} vs {other.cardinality}")
        if self.num_codebooks != other.num_codebooks:
            out.append(f"{self.num_codebooks} vs {other.num_codebooks} codebooks")
        if self.codec != other.codec:
            out.append(f"codec '{self.codec}' vs '{other.codec}'")
        return out

    def describe(self) -> str:
        return (
            f"{self.codec}: {self.sample_rate / 1000:g} kHz, {self.frame_rate:g} Hz, "
            f"{self.num_codebooks} x {self.cardinality} codes"
        )


#: tokenizers of the pretrained codecs named by the hub checkpoints (no download needed)
KNOWN_TOKENIZERS = {
    ENCODEC_32KHZ: Tokenizer(32000, 50.0, 2048, 4, ENCODEC_32KHZ),
    ENCODEC_16KHZ_AUDIOGEN: Tokenizer(16000, 50.0, 2048, 4, ENCODEC_16KHZ_AUDIOGEN),
}
#: the codec of every hub checkpoint we know, MAGNeT and autoregressive
HUB_CODECS = {
    **{name: DOMAIN_CODEC[info["domain"]] for name, info in HUB_MODELS.items()},
    **{name: DOMAIN_CODEC[info["domain"]] for name, info in HUB_RESCORERS.items()},
}


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short, stable name for a set of weights: sha256 over names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"weights sha256:{digest.hexdigest()[:DIGEST_CHARS]}"


def _codec_numbers(codec: CompressionModel, name: str) -> Tokenizer:
    return Tokenizer(
        sample_rate=int(codec.sample_rate),
        frame_rate=float(codec.frame_rate),
        cardinality=int(codec.cardinality),
        num_codebooks=int(codec.num_codebooks),
        codec=name,
    )


_TOKENIZER_CACHE: dict[tuple[str, float], Tokenizer] = {}
_TOKENIZER_LOCK = threading.Lock()


def _package_tokenizer(location: str) -> Tokenizer:
    """Tokenizer of a checkpoint folder (or unknown hub name): read its compression package."""
    path = Path(location) / COMPRESSION_FILE
    key = (
        str(path.resolve()) if path.is_file() else location,
        path.stat().st_mtime if path.is_file() else 0.0,
    )
    with _TOKENIZER_LOCK:
        if key in _TOKENIZER_CACHE:
            return _TOKENIZER_CACHE[key]
    # audiocraft's load_compression_model_ckpt, read with weights_only (ModelLoadError if refused)
    package = read_package(audiocraft_checkpoint_file(location, COMPRESSION_FILE), location)
    if "pretrained" in package:
        name = package["pretrained"]
        if isinstance(name, str) and name in KNOWN_TOKENIZERS:
            tokenizer = KNOWN_TOKENIZERS[name]
        else:
            tokenizer = _codec_numbers(pretrained_codec(name, "cpu")[0], str(name))
    else:
        cfg = OmegaConf.create(package["xp.cfg"])
        codec = build_compression_model(cfg, "cpu")  # random weights: only its numbers are read
        tokenizer = _codec_numbers(codec, weights_digest(package["best_state"]))
    with _TOKENIZER_LOCK:
        _TOKENIZER_CACHE[key] = tokenizer
    return tokenizer


def _rescorer_location(name: str) -> str:
    """Where a rescorer name's checkpoint lives (hub names stay names)."""
    name = str(name).strip()
    if name == EMBEDDED_RESCORER:
        return str(EMBEDDED_RESCORER_DIR)
    return name


def tokenizer_of(source: str | os.PathLike | LoadedModel) -> Tokenizer:
    """The tokenizer of a loaded MAGNeT model, a model / rescorer name, or a checkpoint folder.

    Hub checkpoints we know are answered from :data:`HUB_CODECS` without any download; folders
    (the embedded model and its rescorer included) from their ``compression_state_dict.bin``.

    Raises:
        ValueError: the checkpoint is unknown or its codec cannot be read.
    """
    if isinstance(source, LoadedModel):
        if source.kind == "hub" and source.name in HUB_CODECS:
            return KNOWN_TOKENIZERS[HUB_CODECS[source.name]]
        location, _ = resolve_name(source.name)
        return _package_tokenizer(location)
    name = str(source).strip()
    if name in HUB_CODECS:
        return KNOWN_TOKENIZERS[HUB_CODECS[name]]
    if name in ("", EMBEDDED_NAME):
        name = str(EMBEDDED_DIR)
    location = _rescorer_location(name)
    if os.path.isdir(location):
        if not os.path.isfile(os.path.join(location, COMPRESSION_FILE)):
            raise ValueError(
                f"Cannot tell which tokenizer '{name}' uses: {location} has no {COMPRESSION_FILE} "
                f"(a rescorer folder must ship the codec its tokens come from)."
            )
        return _package_tokenizer(location)
    if name == EMBEDDED_RESCORER:
        raise ValueError(f"The embedded rescorer is missing from {EMBEDDED_RESCORER_DIR}: train it first.")
    try:
        return _package_tokenizer(location)
    except Exception as error:  # hub errors come in many types (offline, not found, gated)
        raise ValueError(
            f"Cannot tell which tokenizer '{name}' uses: it is not a known hub checkpoint or a local "
            f"folder, and its codec could not be read ({type(error).__name__}: {error})."
        ) from error


def check_tokenizers(model: Tokenizer, rescorer: Tokenizer, model_name: str, rescorer_name: str) -> None:
    """Raise ValueError, saying what differs, unless the rescorer reads the model's tokens."""
    differences = model.differences(rescorer)
    if differences:
        raise ValueError(
            f"The rescorer '{rescorer_name}' cannot rescore '{model_name}': their tokenizers differ "
            f"({'; '.join(differences)}). A rescorer must read the very tokens MAGNeT writes: the 32 kHz "
            f"music MAGNeT models pair with MusicGen, the 16 kHz audio-magnet models with AudioGen, and "
            f"the embedded model with its own rescorer."
        )


# --------------------------------------------------------------------------------------------
# rescorers


class Rescorer(ABC):
    """Probability of every current token under an external model.

    Attributes:
        name: what the rescorer was loaded from (hub name, folder or ``embedded-rescorer``).
        tokenizer: the tokenizer of the tokens it reads.
    """

    name: str
    tokenizer: Tokenizer

    @abstractmethod
    def token_probs(self, tokens: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Probabilities of the current tokens.

        Args:
            tokens: ``[B, K, T]`` long codes; positions not decoded yet hold the mask id (``card``).
            prompts: B text descriptions, one per item.
        Returns:
            ``[B, K, T]`` float32 probability of each token; NaN where ``tokens`` holds the mask id.
        """


class LMRescorer(Rescorer):
    """An audiocraft autoregressive ``LMModel`` (MusicGen, AudioGen, the embedded rescorer).

    Args:
        lm: the language model (put in eval mode); its codebook pattern lays out the canvas.
        tokenizer: the tokenizer its tokens come from (:func:`tokenizer_of` its checkpoint).
        name: for messages and the UI.
        cfg_coef: classifier-free guidance on the rescorer's own logits; 1.0 (default) runs the
            conditional model alone (batch B), anything else also runs the null condition (2B).
    Raises:
        ValueError: ``lm`` is a MAGNeT (non-autoregressive) model or its codebooks disagree
            with ``tokenizer``.
    """

    def __init__(self, lm: LMModel, tokenizer: Tokenizer, name: str = "rescorer", *, cfg_coef: float = 1.0):
        cfg = getattr(lm, "cfg", None)
        if cfg is not None and cfg.get("lm_model") == "transformer_lm_magnet":
            raise ValueError(
                f"'{name}' is a MAGNeT (non-autoregressive) model, not an autoregressive rescorer."
            )
        if not lm.transformer.layers[0].self_attn.causal:
            raise ValueError(f"'{name}' is not causal: a teacher-forced pass would let it see the future.")
        if lm.card != tokenizer.cardinality or lm.num_codebooks != tokenizer.num_codebooks:
            raise ValueError(
                f"'{name}' predicts {lm.num_codebooks} x {lm.card} codes but its codec has "
                f"{tokenizer.num_codebooks} x {tokenizer.cardinality}."
            )
        self.lm = lm.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.cfg_coef = float(cfg_coef)
        self._conditions: OrderedDict[tuple[str, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.condition_cache_hits = 0

    @classmethod
    def load(
        cls,
        name: str | os.PathLike,
        device: str = "cpu",
        *,
        cfg_coef: float = 1.0,
        precision: str = "float32",
    ) -> LMRescorer:
        """Load a rescorer: a hub name (``facebook/musicgen-small``), a folder, or ``embedded-rescorer``.

        ``precision`` (one of :data:`magnet_demo.controls.PRECISIONS`) sets its weights as
        :func:`magnet_demo.models.set_precision` does (int8: its linear layers quantized, CPU only);
        the probabilities it returns are float32 either way.
        """
        name = str(name)
        precision = resolve_precision(precision, device)
        tokenizer = tokenizer_of(name)
        lm = load_lm(_rescorer_location(name), device)
        return cls(set_precision(lm, precision), tokenizer, name, cfg_coef=cfg_coef)

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def condition_tensors(self, prompts: Sequence[str]) -> dict[str, Any]:
        """Condition tensors for ``prompts`` (batch B, or 2B with the null conditions appended
        when ``cfg_coef != 1``); the last :data:`CONDITION_CACHE_SIZE` prompt tuples are cached."""
        key = tuple(prompts)
        with self._lock:
            if key in self._conditions:
                self._conditions.move_to_end(key)
                self.condition_cache_hits += 1
                return self._conditions[key]
        provider = self.lm.condition_provider
        names = list(provider.text_conditions)
        attributes = [ConditioningAttributes(text={n: text for n in names}) for text in key]
        if self.cfg_coef != 1.0:
            attributes = attributes + ClassifierFreeGuidanceDropout(p=1.0)(attributes)
        with torch.no_grad():
            tensors = provider(provider.tokenize(attributes))
        with self._lock:
            self._conditions[key] = tensors
            while len(self._conditions) > CONDITION_CACHE_SIZE:
                self._conditions.popitem(last=False)
        return tensors

    def _check_tokens(self, tokens: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 3 or tokens.shape[1] != self.lm.num_codebooks:
            raise ValueError(f"tokens must be [B, {self.lm.num_codebooks}, T], got {list(tokens.shape)}.")
        if tokens.shape[0] != len(prompts):
            raise ValueError(f"{tokens.shape[0]} token rows but {len(prompts)} prompts.")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() > self.lm.special_token_id):
            raise ValueError(f"tokens must be codes in [0, {self.lm.card}] (the mask id included).")
        return tokens.to(self.device)

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Logits ``[B, K, T, card]`` of every position given everything before it in the pattern.

        Uses the whole pattern (``keep_only_valid_steps=False``, as generation does), so every
        frame of every codebook gets logits, the last ones of the delayed codebooks included.
        """
        tokens = self._check_tokens(tokens, prompts)
        conditions = self.condition_tensors(prompts)
        if self.cfg_coef == 1.0:
            return self.lm.compute_predictions(tokens, [], conditions, keep_only_valid_steps=False).logits
        both = self.lm.compute_predictions(
            torch.cat([tokens, tokens]), [], conditions, keep_only_valid_steps=False
        ).logits
        cond, uncond = both.split(tokens.shape[0])
        return uncond + (cond - uncond) * self.cfg_coef

    def _gather(self, values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``values[b, k, t, tokens[b, k, t]]`` as float32, NaN where tokens hold the mask id."""
        tokens = tokens.to(values.device)
        masked = tokens == self.lm.special_token_id
        picked = values.gather(-1, tokens.clamp(max=self.lm.card - 1).unsqueeze(-1))[..., 0]
        return picked.float().masked_fill(masked, float("nan"))

    def token_probs(self, tokens: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, K, T]`` float32 probability of each token (softmax of :meth:`logits`); NaN on mask ids."""
        tokens = self._check_tokens(tokens, prompts)
        return self._gather(torch.softmax(self.logits(tokens, prompts).float(), dim=-1), tokens)

    def token_log_probs(self, tokens: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, K, T]`` float32 log-probability of each token; NaN on mask ids."""
        tokens = self._check_tokens(tokens, prompts)
        return self._gather(torch.log_softmax(self.logits(tokens, prompts).float(), dim=-1), tokens)

    def mean_nll(self, tokens: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``[B]`` mean negative log-likelihood (nats per token) over the tokens that are not masked."""
        log_probs = self.token_log_probs(tokens, prompts)
        known = ~torch.isnan(log_probs)
        return -(log_probs.nan_to_num(0.0).sum(dim=(1, 2)) / known.sum(dim=(1, 2)).clamp(min=1))


def load_rescorer(name: str | os.PathLike, device: str = "cpu", *, cfg_coef: float = 1.0) -> LMRescorer:
    """Load a rescorer by hub name, folder, or ``embedded-rescorer`` (see :meth:`LMRescorer.load`)."""
    return LMRescorer.load(name, device, cfg_coef=cfg_coef)


def pair_rescorer(
    magnet_model: LoadedModel,
    rescorer: str | os.PathLike | LMRescorer | LMModel,
    *,
    tokenizer: Tokenizer | None = None,
    cfg_coef: float = 1.0,
) -> LMRescorer:
    """A rescorer for ``magnet_model``, refusing one that reads other tokens. One given by name
    or folder is loaded at the model's precision (``magnet_model.precision``).

    Args:
        magnet_model: the loaded MAGNeT model.
        rescorer: a name or folder (checked before anything is loaded or downloaded), an
            :class:`LMRescorer`, or a bare ``LMModel`` together with its ``tokenizer``.
        cfg_coef: the rescorer's own guidance (names and folders only).
    Raises:
        ValueError: the tokenizers differ (the message says how), or a bare ``LMModel`` came
            without its tokenizer.
    """
    model_tokenizer = tokenizer_of(magnet_model)
    if isinstance(rescorer, LMRescorer):
        check_tokenizers(model_tokenizer, rescorer.tokenizer, magnet_model.name, rescorer.name)
        return rescorer
    if isinstance(rescorer, LMModel):
        if tokenizer is None:
            raise ValueError(
                "A bare LMModel does not say which codec its tokens come from: pass tokenizer=..., "
                "or give the rescorer as a hub name or checkpoint folder."
            )
        check_tokenizers(model_tokenizer, tokenizer, magnet_model.name, "the given LMModel")
        return LMRescorer(rescorer, tokenizer, "the given LMModel", cfg_coef=cfg_coef)
    name = str(rescorer)
    check_tokenizers(model_tokenizer, tokenizer_of(name), magnet_model.name, name)
    # the rescorer's matrix products run at the model's precision (bfloat16 or int8 where the model's do)
    return LMRescorer.load(
        name, str(magnet_model.device), cfg_coef=cfg_coef, precision=magnet_model.precision
    )


# --------------------------------------------------------------------------------------------
# what to offer in the UI


@dataclass(frozen=True)
class RescorerChoice:
    """One rescorer the UI may list for a model.

    Attributes:
        name: what :func:`pair_rescorer` / :func:`load_rescorer` take.
        label: a short description for a menu.
        offered: True when it reads the model's tokens.
        reason: why it is (or is not) offered.
    """

    name: str
    label: str
    offered: bool
    reason: str


def _own_rescorer(model_name: str) -> str | None:
    """The rescorer that ships with a model (embedded, or a folder's ``rescorer/``), if any is named."""
    name = model_name.strip()
    if name in ("", EMBEDDED_NAME):
        return EMBEDDED_RESCORER
    if os.path.isdir(name):
        return os.path.join(name, RESCORER_SUBDIR)
    return None


def _choice(
    name: str, label: str, model_tokenizer: Tokenizer | None, model_error: str | None
) -> RescorerChoice:
    if model_tokenizer is None:
        return RescorerChoice(name, label, False, f"the model's tokenizer is unknown: {model_error}")
    location = _rescorer_location(name)
    if name not in HUB_CODECS and not os.path.isfile(os.path.join(location, LM_FILE)):
        return RescorerChoice(name, label, False, f"not available: {location} has no {LM_FILE} yet")
    try:
        rescorer_tokenizer = tokenizer_of(name)
    except ValueError as error:
        return RescorerChoice(name, label, False, str(error))
    differences = model_tokenizer.differences(rescorer_tokenizer)
    if differences:
        return RescorerChoice(name, label, False, "different tokenizer: " + "; ".join(differences))
    reason = f"reads the same tokens ({rescorer_tokenizer.describe()})"
    if name in HUB_RESCORERS:
        reason += "; downloaded from the Hugging Face Hub on first use (its T5 text encoder too)"
    return RescorerChoice(name, label, True, reason)


def rescorer_choices(model_name: str) -> list[RescorerChoice]:
    """Every rescorer we know, for ``model_name``: the offered ones first, each with its reason.

    The model's own rescorer (embedded, or a folder's ``rescorer/`` sub-folder) comes first, then
    the hub's MusicGen / AudioGen checkpoints, the domain's default before the others.
    """
    try:
        model_tokenizer, model_error = tokenizer_of(model_name), None
    except Exception as error:  # unreadable checkpoints are reported, not raised, to the UI
        model_tokenizer, model_error = None, str(error)
    choices = []
    own = _own_rescorer(model_name)
    if own is not None:
        choices.append(_choice(own, "the model's own autoregressive rescorer", model_tokenizer, model_error))
    elif model_name.strip() != EMBEDDED_RESCORER and EMBEDDED_RESCORER_DIR.is_dir():
        label = "rescorer of the embedded model"
        choices.append(_choice(EMBEDDED_RESCORER, label, model_tokenizer, model_error))
    domain = HUB_MODELS.get(model_name.strip(), {}).get("domain")
    default = DEFAULT_HUB_RESCORER.get(domain)
    hub = sorted(HUB_RESCORERS, key=lambda n: (n != default, HUB_RESCORERS[n]["domain"] != domain))
    for name in hub:
        info = HUB_RESCORERS[name]
        label = f"{name.split('/')[-1]} ({info['params']}, {info['domain']})"
        choices.append(_choice(name, label, model_tokenizer, model_error))
    return sorted(choices, key=lambda c: not c.offered)


def rescorer_for(model_name: str) -> tuple[str | None, str]:
    """The rescorer to propose for ``model_name`` and why, or ``(None, why none fits)``.

    Examples: ``facebook/magnet-small-10secs`` -> ``facebook/musicgen-small``;
    ``facebook/audio-magnet-small`` -> ``facebook/audiogen-medium``; ``embedded`` ->
    ``embedded-rescorer`` once it is trained.
    """
    choices = rescorer_choices(model_name)
    offered = [c for c in choices if c.offered]
    if offered:
        return offered[0].name, offered[0].reason
    if not choices:
        return None, "no rescorer is known"
    own = _own_rescorer(model_name)
    first = next((c for c in choices if c.name == own), choices[0])
    return None, f"no rescorer reads this model's tokens ({first.name}: {first.reason})"
