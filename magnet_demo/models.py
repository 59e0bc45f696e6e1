"""Loading MAGNeT checkpoints (hub names or local folders) and the forward pass the engine uses.

One loader serves ``facebook/magnet-*`` / ``facebook/audio-magnet-*`` names, local folders in
audiocraft's export format (see :mod:`magnet_demo.checkpoints`) and the embedded model in
``assets/``. It reads packages through audiocraft's loaders and builds models through audiocraft's
builders; where a package names one of our own components (the embedded model's spectral codec
or word-level text conditioner) the loader builds that part itself and says so in
:attr:`LoadedModel.kind`.

Attention. audiocraft's MAGNeT restricts the self-attention of codebooks > 0 to +/- 5 frames. It
builds that mask once, for ``segment_duration * 50`` frames padded to a multiple of 8, and its
plain-torch paths are wrong: the einsum path adds the padded mask without slicing it (so it only
runs when the generated length equals the padded size), and the ``memory_efficient`` path without
xformers calls ``scaled_dot_product_attention(is_causal=True)`` and drops the mask altogether.
:func:`stage_logits` builds the mask for the actual length ``T`` (cached), and on machines without
xformers the loader rebuilds ``memory_efficient`` checkpoints with the einsum path (same weights:
``custom`` attention is kept), which adds a correctly sized mask. With CUDA and real xformers the
fast kernel stays, fed with an 8-aligned mask that audiocraft slices itself.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from magnet_demo import spans
from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE, load_package
from magnet_demo.compat import has_real_xformers, import_audiocraft, pretrained_codec_file
from magnet_demo.controls import PRECISIONS, DecodingConfig

import_audiocraft()

from audiocraft.models import builders, loaders  # noqa: E402
from audiocraft.models.encodec import CompressionModel  # noqa: E402
from audiocraft.models.lm import LMModel  # noqa: E402
from audiocraft.models.lm_magnet import MagnetLMModel  # noqa: E402
from audiocraft.modules.transformer import set_efficient_attention_backend  # noqa: E402

#: sampling settings that audiocraft's own MAGNeT demo (demos/magnet_app.py) gives its sound
#: models; its music models use the defaults of :class:`DecodingConfig` (``set_generation_params``)
SOUND_SETTINGS = {"temperature": 3.5, "top_p": 0.8, "max_cfg_coef": 20.0}
#: the released checkpoints (audiocraft's MAGNeT.get_pretrained docstring); duration in seconds,
#: settings: recommended sampling settings where they differ from the defaults; t5 and codec: the
#: Hub repos their packages name (text encoder, and for music the pretrained EnCodec)
_MUSIC = {"domain": "music", "t5": ("t5-base",), "codec": ("facebook/encodec_32khz",)}
_SOUND = {"domain": "sound", "t5": ("t5-base",), "settings": SOUND_SETTINGS}
HUB_MODELS = {
    "facebook/magnet-small-10secs": {"duration": 10, **_MUSIC},
    "facebook/magnet-medium-10secs": {"duration": 10, **_MUSIC},
    "facebook/magnet-small-30secs": {"duration": 30, **_MUSIC},
    "facebook/magnet-medium-30secs": {"duration": 30, **_MUSIC},
    "facebook/audio-magnet-small": {"duration": 10, **_SOUND},
    "facebook/audio-magnet-medium": {"duration": 10, **_SOUND},
}
#: optional file of a checkpoint folder: its recommended sampling settings, a JSON object of
#: :class:`DecodingConfig` fields (e.g. ``{"temperature": 2.0}``)
SETTINGS_FILE = "generation.json"
#: the fields such a file may set (the rest belong to a run, not to a model)
SETTINGS_FIELDS = ("temperature", "top_p", "top_k", "max_cfg_coef", "min_cfg_coef", "span_scoring")
#: where the embedded model ships
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "assets" / "embedded"
EMBEDDED_NAME = "embedded"

#: conditioner types audiocraft's builders know; any other type is one of ours
AUDIOCRAFT_CONDITIONERS = {"t5", "lut", "chroma_stem", "clap"}
#: compression model type of our spectral codec
SPECTRAL_CODEC = "magnet_demo_spectral"
#: xformers' memory-efficient kernel wants masks padded to a multiple of this
XFORMERS_ALIGN = 8


class ModelLoadError(ValueError):
    """A checkpoint could not be loaded; the message says which and what to do."""


@dataclass
class LoadedModel:
    """A MAGNeT language model with its codec, ready for :mod:`magnet_demo.engine`.

    Attributes:
        name: what the caller asked for (hub name, folder or ``"embedded"``).
        kind: ``"hub"``, ``"folder"`` or ``"embedded"``; ``custom_parts`` lists our own components.
        lm: the MAGNeT language model (eval mode).
        compression_model: the audio codec (eval mode).
        cfg: the LM's ``xp.cfg``.
        settings: recommended sampling settings (:data:`SETTINGS_FIELDS`) where they differ from
            audiocraft's defaults; :meth:`default_config` applies them.
    """

    name: str
    kind: str
    lm: MagnetLMModel
    compression_model: CompressionModel
    cfg: DictConfig
    custom_parts: tuple[str, ...] = ()
    precision: str = "float32"
    settings: dict[str, Any] = field(default_factory=dict)

    def default_config(self) -> DecodingConfig:
        """What a run of this model starts from: audiocraft's defaults with its recommended settings."""
        return DecodingConfig(**self.settings)

    @property
    def sample_rate(self) -> int:
        return int(self.compression_model.sample_rate)

    @property
    def frame_rate(self) -> int:
        return int(self.compression_model.frame_rate)

    def frames(self, config: DecodingConfig) -> int:
        """T, the frames a run of ``config`` decodes ('nonoverlap' trims to whole spans)."""
        frames = int(config.duration * self.frame_rate)
        return spans.decoded_length(frames, config.span_arrangement, int(self.lm.span_len))

    @property
    def max_duration(self) -> float:
        """Longest generation the model was trained for, in seconds."""
        return float(self.cfg.dataset.segment_duration)

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @property
    def num_codebooks(self) -> int:
        return int(self.lm.num_codebooks)


# --------------------------------------------------------------------------------------------
# building models from configs


def _as_config(cfg: dict[str, Any] | DictConfig) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def _delete(cfg: DictConfig, dotted: str) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for part in parents:
        if part not in node:
            return
        node = node[part]
    OmegaConf.set_struct(node, False)
    if leaf in node:
        del node[leaf]


def _use_xformers(device: str) -> bool:
    return device.startswith("cuda") and has_real_xformers()


def build_lm(cfg: dict[str, Any] | DictConfig, device: str = "cpu") -> LMModel:
    """Build a (MAGNeT or autoregressive) LM from its ``xp.cfg`` with random weights.

    Mirrors ``audiocraft.models.loaders.load_lm_model(_magnet)``: same config clean-up, same
    builder. Differences, all weight-compatible: conditioners of our own types are built by
    :func:`magnet_demo.conditioning.build_conditioner` and attached after audiocraft builds the
    rest; ``memory_efficient`` attention is turned into the equivalent einsum path when xformers
    cannot run (CPU, or no xformers).
    """
    cfg = _as_config(OmegaConf.to_container(_as_config(cfg), resolve=True))
    cfg.device = device
    cfg.dtype = "float32" if device == "cpu" else "float16"
    for param in ("conditioners.args.merge_text_conditions_p", "conditioners.args.drop_desc_p"):
        _delete(cfg, param)
    _delete(cfg, "conditioners.self_wav.chroma_stem.cache_path")
    is_magnet = cfg.lm_model == "transformer_lm_magnet"
    if is_magnet:
        cfg.transformer_lm.compression_model_framerate = cfg.transformer_lm.get(
            "compression_model_framerate", 50
        )
        cfg.transformer_lm.segment_duration = cfg.dataset.segment_duration
        cfg.transformer_lm.span_len = cfg.masking.span_len
    if cfg.transformer_lm.get("memory_efficient", False):
        if _use_xformers(device):
            set_efficient_attention_backend("xformers")
        else:
            # same parameters (memory_efficient implies custom attention), correct masked path
            cfg.transformer_lm.memory_efficient = False
            cfg.transformer_lm.custom = True
    ours = {}
    if cfg.get("conditioners"):
        for name in list(cfg.conditioners.keys()):
            if name == "args":
                continue
            spec = cfg.conditioners[name]
            if spec.model not in AUDIOCRAFT_CONDITIONERS:
                ours[name] = OmegaConf.to_container(spec, resolve=True)
                _delete(cfg, f"conditioners.{name}")
    lm = builders.get_lm_model(cfg)
    if ours:
        from magnet_demo.conditioning import build_conditioner

        for name, spec in ours.items():
            conditioner = build_conditioner(
                spec["model"], spec.get(spec["model"], {}), output_dim=cfg.transformer_lm.dim
            )
            lm.condition_provider.conditioners[name] = conditioner.to(device)
    lm.cfg = cfg
    return lm


#: the ``torch.nn.init`` functions that modules call to fill new weights at random
RANDOM_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


@contextmanager
def _without_random_init() -> Iterator[None]:
    """Build modules without filling their weights at random: for a model that a checkpoint's
    ``load_state_dict(strict=True)`` then overwrites entirely. Random initialisation is most of the
    load time of a large model on CPU (magnet-small: 420M numbers drawn one layer at a time)."""
    saved = {name: getattr(torch.nn.init, name) for name in RANDOM_INIT_FUNCTIONS}

    def keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    for name in saved:
        setattr(torch.nn.init, name, keep)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def build_lm_for(
    state: dict[str, torch.Tensor], cfg: dict[str, Any] | DictConfig, device: str = "cpu"
) -> LMModel:
    """The LM of ``cfg`` holding the weights ``state`` (every tensor of the model: strict), built
    without random initialisation."""
    with _without_random_init():
        lm = build_lm(cfg, device)
    lm.load_state_dict(state)
    return lm


def build_compression_model(cfg: dict[str, Any] | DictConfig, device: str = "cpu") -> CompressionModel:
    """Build a codec from its ``xp.cfg``: audiocraft's EnCodec, or our spectral codec."""
    cfg = _as_config(cfg)
    if cfg.compression_model == SPECTRAL_CODEC:
        from magnet_demo.codec import build_codec

        return build_codec(cfg).to(device)
    cfg = cfg.copy()
    cfg.device = device
    return builders.get_compression_model(cfg)


# --------------------------------------------------------------------------------------------
# loading


#: the Hub's address, probed (3 s) before a download so that an offline machine fails at once
HUB_HOST = "huggingface.co"
HUB_PROBE_TIMEOUT_S = 3.0
#: files that show a Hub repo of a text encoder or codec is cached (any one of each tuple)
CACHED_MARKERS = (
    ("config.json",),
    ("tokenizer.json", "spiece.model"),
    ("model.safetensors", "pytorch_model.bin"),  # a T5 without its weights would fail offline
)
CODEC_MARKERS = (("config.json",), ("model.safetensors", "pytorch_model.bin"))
#: the files transformers (the pinned 5.x) reads of the released repos: T5EncoderModel and EncodecModel
#: read config.json and model.safetensors (the repos hold it, so pytorch_model.bin is never read);
#: T5Tokenizer reads tokenizer.json and, with it there, not spiece.model (t5-base has no
#: tokenizer_config.json, special_tokens_map.json, added_tokens.json: it looks for them and goes on)
T5_FILES = ("config.json", "model.safetensors", "tokenizer.json")
CODEC_FILES = ("config.json", "model.safetensors")
#: the T5 text encoders the autoregressive hub rescorers' packages name (audiocraft's text2music and
#: text2sound conditioners)
HUB_RESCORER_T5 = {
    "facebook/musicgen-small": ("t5-base",),
    "facebook/musicgen-medium": ("t5-base",),
    "facebook/musicgen-large": ("t5-base",),
    "facebook/audiogen-medium": ("t5-large",),
}


@dataclass(frozen=True)
class HubPiece:
    """A Hub repo a model needs: its checkpoint, or a part its config names (T5, EnCodec)."""

    repo: str
    what: str
    markers: tuple[tuple[str, ...], ...]
    checkpoint: bool = False  # audiocraft's files (they land in AUDIOCRAFT_CACHE_DIR when set)
    #: every file its loader reads of the released repo (what a Space preloads); a cache holding just
    #: these meets ``markers``
    files: tuple[str, ...] = ()

    @property
    def cache_dir(self) -> str:
        import huggingface_hub.constants

        if self.checkpoint and loaders.get_audiocraft_cache_dir():
            return str(loaders.get_audiocraft_cache_dir())
        return str(huggingface_hub.constants.HF_HUB_CACHE)

    def cached(self) -> bool:
        return all(any(_cached_file(self.repo, f, self.cache_dir) for f in group) for group in self.markers)


def checkpoint_piece(repo: str, files: tuple[str, ...] = (LM_FILE, COMPRESSION_FILE)) -> HubPiece:
    """A checkpoint in audiocraft's format; a rescorer's is read for its ``files=(LM_FILE,)`` only."""
    return HubPiece(repo, ", ".join(files), tuple((f,) for f in files), checkpoint=True, files=files)


def t5_piece(repo: str) -> HubPiece:
    return HubPiece(repo, "the T5 text encoder and its tokenizer", CACHED_MARKERS, files=T5_FILES)


def codec_piece(repo: str) -> HubPiece:
    return HubPiece(repo, "the EnCodec codec", CODEC_MARKERS, files=CODEC_FILES)


def _cached_file(repo: str, filename: str, cache_dir: str | None = None) -> str | None:
    """Path of ``filename`` of ``repo`` in a Hub cache (default: where audiocraft downloads), or None."""
    from huggingface_hub import try_to_load_from_cache

    cache_dir = cache_dir or loaders.get_audiocraft_cache_dir()
    path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def _hub_reachable() -> bool:
    import socket

    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _missing_message(name: str, missing: list[HubPiece], why: str) -> str:
    pieces = "; ".join(f"{p.repo} ({p.what}) into {p.cache_dir}" for p in missing)
    return (
        f"Could not load '{name}': {why}. It needs these Hugging Face repos, not all cached on this "
        f"machine: {pieces}. Connect this machine to the internet once (they are then cached), or "
        f"download them elsewhere (`hf download REPO`) into those folders. The embedded model "
        f"('{EMBEDDED_NAME}') always works offline."
    )


def known_pieces(name: str) -> list[HubPiece]:
    """What a released checkpoint needs before its files are read (:data:`HUB_MODELS`' ``needs``)."""
    info = HUB_MODELS.get(name, {})
    return [
        checkpoint_piece(name),
        *(t5_piece(r) for r in info.get("t5", ())),
        *(codec_piece(r) for r in info.get("codec", ())),
    ]


def package_pieces(lm_cfg: DictConfig, comp_pkg: dict[str, Any] | None) -> list[HubPiece]:
    """The Hub repos a checkpoint's packages name: T5 text encoders, a pretrained codec."""
    pieces = []
    for key, spec in (lm_cfg.get("conditioners") or {}).items():
        if key != "args" and spec.get("model") == "t5":
            pieces.append(t5_piece(str(spec.t5.name)))
    pretrained = (comp_pkg or {}).get("pretrained")
    if pretrained and not os.path.exists(pretrained) and not str(pretrained).startswith("dac_"):
        pieces.append(codec_piece(str(pretrained)))
    return pieces


def checkpoint_available(name: str) -> bool:
    """True when a checkpoint and the repos it needs are cached, or the Hub can be reached."""
    if name not in HUB_MODELS and "/" not in name:
        return True
    return all(p.cached() for p in known_pieces(name)) or _hub_reachable()


@contextmanager
def hub_access(name: str, pieces: list[HubPiece]) -> Iterator[None]:
    """The Hub as loading ``pieces`` needs it: offline when all are cached (no request at all: the
    Hub client would otherwise retry optional files for a minute on a machine without network);
    ModelLoadError naming every missing one when they are not and the Hub cannot be reached. Any
    error of the load inside becomes a ModelLoadError that names them too."""
    import huggingface_hub.constants

    missing = [p for p in pieces if not p.cached()]
    if missing and not _hub_reachable():
        raise ModelLoadError(_missing_message(name, missing, f"{HUB_HOST} cannot be reached"))
    saved = huggingface_hub.constants.HF_HUB_OFFLINE
    if not missing:
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as error:  # transformers' OSError for a missing file, hub errors, ...
        if not pieces:
            raise
        raise ModelLoadError(
            _missing_message(
                name, pieces, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            )
        ) from error
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _checkpoint_file(name: str, kind: str, filename: str) -> str:
    """Path of ``filename`` of a folder or hub name, downloading a hub file if needed.

    A hub file already in the cache is read from there without any network request; an uncached
    one on a machine that cannot reach the Hub fails at once with a message that names every repo
    the model needs. Downloads go where audiocraft's own loaders put them.
    """
    if kind != "hub":
        return os.path.join(name, filename)
    cached = _cached_file(name, filename)
    if cached:
        return cached
    if not _hub_reachable():
        missing = [p for p in known_pieces(name) if not p.cached()]
        raise ModelLoadError(_missing_message(name, missing, f"{HUB_HOST} cannot be reached"))
    import audiocraft
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(
            repo_id=name,
            filename=filename,
            cache_dir=loaders.get_audiocraft_cache_dir(),
            library_name="audiocraft",
            library_version=audiocraft.__version__,
        )
    except Exception as error:  # hub errors come in many types (offline, gated, not found)
        raise ModelLoadError(_missing_message(name, known_pieces(name), type(error).__name__)) from error


#: how torch's ``weights_only`` loader says a file names code to run (a class or function to rebuild)
WEIGHTS_ONLY_REFUSAL = "Unsupported global"
#: how many compression packages may chain through ``pretrained`` paths (audiocraft follows them
#: without end: a package naming itself would recurse until Python's stack runs out)
MAX_PRETRAINED_CHAIN = 4


def read_package(path: str | os.PathLike, name: str) -> dict[str, Any]:
    """One package file of the checkpoint ``name``, memory-mapped (:func:`load_package`: tensors and
    plain values only, never code); ModelLoadError, saying why, when it cannot be read or needs
    code to unpickle."""
    try:
        package = load_package(path)
    except pickle.UnpicklingError as error:
        if WEIGHTS_ONLY_REFUSAL.lower() not in str(error).lower():  # not a pickle at all
            raise ModelLoadError(f"Could not read the checkpoint of '{name}': {error}") from error
        raise ModelLoadError(
            f"Refused the checkpoint of '{name}': a file holds objects that need code to unpickle "
            "(only tensors and plain values are read)."
        ) from error
    except Exception as error:  # a truncated, foreign or unreadable file
        raise ModelLoadError(f"Could not read the checkpoint of '{name}': {error}") from error
    if not isinstance(package, dict):
        raise ModelLoadError(
            f"Could not read the checkpoint of '{name}': {Path(path).name} holds a "
            f"{type(package).__name__}, not a checkpoint package."
        )
    return package


def _read_packages(name: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The LM and codec packages of a folder or hub name, memory-mapped (:func:`read_package`):
    the model built from them then holds the only in-memory copy of the weights."""
    lm_file, comp_file = (_checkpoint_file(name, kind, f) for f in (LM_FILE, COMPRESSION_FILE))
    return read_package(lm_file, name), read_package(comp_file, name)


def resolve_name(name: str) -> tuple[str, str]:
    """Map a user's model choice to (location, kind); raises ModelLoadError for unknown names."""
    name = name.strip()
    if name in ("", EMBEDDED_NAME):
        if not (EMBEDDED_DIR / LM_FILE).is_file():
            raise ModelLoadError(
                f"The embedded model is missing from {EMBEDDED_DIR}: run the training command in README.md."
            )
        return str(EMBEDDED_DIR), "embedded"
    if os.path.isdir(name):
        missing = [f for f in (LM_FILE, COMPRESSION_FILE) if not os.path.isfile(os.path.join(name, f))]
        if missing:
            raise ModelLoadError(
                f"The folder '{name}' is not a MAGNeT checkpoint: it lacks {', '.join(missing)}."
            )
        return name, "folder"
    if name in HUB_MODELS:
        return name, "hub"
    if "/" in name and not name.startswith((".", "/")):
        return name, "hub"
    raise ModelLoadError(
        f"Unknown model '{name}': give one of {', '.join(HUB_MODELS)}, '{EMBEDDED_NAME}', or a checkpoint folder."
    )


#: torch's probes of the CPU instructions that multiply bfloat16 matrices in hardware: Intel AMX
#: tiles (Sapphire Rapids and later) and AVX-512 BF16 dot products (AMD Zen 4/5, Intel Cooper Lake)
BFLOAT16_MATMUL_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def native_bfloat16_matmul() -> bool:
    """True where this CPU multiplies bfloat16 matrices in hardware (AMX tiles or AVX-512 BF16)."""
    probes = (getattr(torch.cpu, name, None) for name in BFLOAT16_MATMUL_PROBES)
    return any(probe is not None and probe() for probe in probes)


#: the precision that quantizes the language model's linear layers to int8 (CPU only)
INT8 = "int8"
# Why "auto" never picks int8. Measured on a 2-core Xeon with AMX (int8 and bf16), AVX-512 VNNI and
# AVX-512 BF16, torch 2.13, shared with other jobs (bench/fullsize_cpu.py --precisions
# float32,int8,bfloat16 --duration 10, steps alternated): magnet-small's shapes (419.6M parameters)
# took a median 15.0 / 9.7 / 6.4 s per step in float32 / int8 / bfloat16 (--steps 3,2,2,2), and
# 31.1 / 21.6 / 12.3 s in a busier second run (--steps 2,1,1,1): int8 1.4-1.5x faster than float32,
# bfloat16 2.3-2.5x. The embedded model (dim 256) ran 1.06x faster in int8. In quality int8 cost
# nothing measurable on the embedded model (bench/int8_quality.py, 24 held-out captions x 2 seeds:
# mean classifier accuracy 0.490 / 0.500 in both precisions, the same seed-to-seed difference of
# 0.010; Fréchet distance between float32 and int8 sets 26.9 / 23.1 against 35.3 / 15.2 between
# seeds). So where auto picks bfloat16 int8 is slower, and no CPU without hardware bfloat16 (where
# auto keeps float32 and int8 might win) has been measured: int8 stays an explicit choice.


def resolve_precision(precision: str, device: str) -> str:
    """``"float32"``, ``"bfloat16"`` or ``"int8"`` for one of :data:`PRECISIONS` on ``device``
    (ValueError otherwise).

    "auto" picks bfloat16 only on a CPU with :func:`native_bfloat16_matmul`: elsewhere bfloat16
    matrices are emulated and slower than float32. It never picks int8 (the measurements above).
    "int8" (:func:`quantize_linears`) runs on a CPU only: any other device is refused.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == INT8 and not str(device).startswith("cpu"):
        raise ValueError(
            f"precision 'int8' (torch's dynamic int8 quantization) runs on a CPU only, not on '{device}': "
            "give float32 or bfloat16 (or auto) there, or --device cpu."
        )
    if precision != "auto":
        return precision
    return "bfloat16" if str(device).startswith("cpu") and native_bfloat16_matmul() else "float32"


def quantize_linears(lm: LMModel) -> LMModel:
    """``lm`` (in place, eval mode) with the ``nn.Linear`` layers of its transformer and output heads
    quantized by torch's dynamic quantization (int8 weights, per tensor; activations quantized per
    call, results in float32).

    What stays float32: the embeddings, the norms, the attention's own products (q k^T, softmax,
    times v) and, in audiocraft's ``custom`` attention (every released MAGNeT), the input projection
    of q, k and v, which is a bare ``in_proj_weight`` parameter that ``F.linear`` reads, not an
    ``nn.Linear`` (the output projection ``out_proj`` is one and is quantized). The text conditioner
    (run once per prompt, not per step) is left as it is, and so is the codec.

    torch marks ``torch.ao.quantization`` deprecated in favour of torchao (not installed here); its
    deprecation warnings are silenced for this call, and a torch without it gets a ValueError.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as error:
            raise ValueError(
                f"precision 'int8' needs torch.ao.quantization.quantize_dynamic, which torch "
                f"{torch.__version__} lacks: use float32 or bfloat16."
            ) from error
        lm.float().eval()
        for part in (lm.transformer, lm.linears):
            quantize_dynamic(part, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return lm


def set_precision(lm: LMModel, precision: str) -> LMModel:
    """``lm`` (in place, eval mode) at a precision :func:`resolve_precision` returned: every weight
    cast to float32 or bfloat16, or the linear layers quantized for int8 (:func:`quantize_linears`)."""
    if precision == INT8:
        return quantize_linears(lm)
    return lm.to(getattr(torch, precision)).eval()


def quantized_linears(module: torch.nn.Module) -> int:
    """How many of ``module``'s layers are torch's dynamically quantized linear layers."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return sum(isinstance(m, DynamicQuantizedLinear) for m in module.modules())


def recommended_settings(location: str, kind: str) -> dict[str, Any]:
    """A model's recommended sampling settings: :data:`HUB_MODELS`' for hub names, else the
    folder's :data:`SETTINGS_FILE` (none when absent). Raises ModelLoadError for a bad file."""
    if kind == "hub":
        return dict(HUB_MODELS.get(location, {}).get("settings", {}))
    path = Path(location) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
        if not isinstance(settings, dict):
            raise ValueError("it must hold a JSON object of sampling settings")
        unknown = sorted(set(settings) - set(SETTINGS_FIELDS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}; a model may set {', '.join(SETTINGS_FIELDS)}")
        DecodingConfig(**settings)  # validates the values
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ModelLoadError(f"Bad {SETTINGS_FILE} in '{location}': {error}") from None
    return settings


def load_model(
    name: str = EMBEDDED_NAME, device: str | None = None, precision: str = "float32"
) -> LoadedModel:
    """Load a MAGNeT checkpoint (hub name, folder, or ``"embedded"``) with its codec.

    ``precision`` (one of :data:`PRECISIONS`) sets the language model's weights (:func:`set_precision`;
    "int8" quantizes its linear layers, on a CPU only); the codec stays float32 and the engine turns
    logits into float32 before guidance and sampling.

    Raises:
        ModelLoadError: with a message naming the model and what to do (offline, missing files,
            not a MAGNeT checkpoint).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(precision, device)
    location, kind = resolve_name(name)
    settings = recommended_settings(location, kind)
    lm_pkg, comp_pkg = _read_packages(location, kind)
    try:
        lm_cfg = OmegaConf.create(lm_pkg["xp.cfg"])
        if lm_cfg.get("lm_model") != "transformer_lm_magnet":
            raise ModelLoadError(f"'{name}' is not a MAGNeT checkpoint (lm_model: {lm_cfg.get('lm_model')}).")
        with hub_access(name, package_pieces(lm_cfg, comp_pkg)):
            compression_model, custom = _build_codec(comp_pkg, device)
            lm_cfg.transformer_lm.compression_model_framerate = int(compression_model.frame_rate)
            if any(
                spec.model not in AUDIOCRAFT_CONDITIONERS
                for key, spec in lm_cfg.conditioners.items()
                if key != "args"
            ):
                custom.append("conditioner")
            lm = build_lm_for(lm_pkg["best_state"], lm_cfg, device)
    except ModelLoadError:
        raise
    except Exception as error:  # a package without xp.cfg, weights of other shapes, a foreign config
        raise ModelLoadError(_unreadable_message(name, error)) from error
    set_precision(lm, precision)
    return LoadedModel(
        name=name,
        kind=kind,
        lm=lm,
        compression_model=compression_model,
        cfg=lm.cfg,
        custom_parts=tuple(custom),
        precision=precision,
        settings=settings,
    )


def _unreadable_message(name: str, error: Exception) -> str:
    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"'{name}' is not a checkpoint this app can read ({type(error).__name__}: {detail})."


def pretrained_codec(name: object, device: str = "cpu", chain: int = 0) -> tuple[CompressionModel, list[str]]:
    """The codec a compression package's ``pretrained`` entry names, and ``["codec"]`` when it is
    our own spectral codec.

    As ``CompressionModel.get_pretrained``, but an exported package at a local path is read with
    ``weights_only`` (:func:`read_package`) instead of audiocraft's ``torch.load``, and a chain of
    packages naming packages ends after :data:`MAX_PRETRAINED_CHAIN`. Names of Hub codecs, DAC and
    the debug codec go to audiocraft (see :func:`magnet_demo.compat.pretrained_codec_file`).
    """
    path = pretrained_codec_file(name)
    if path is None:
        return CompressionModel.get_pretrained(name, device=device), []
    if chain >= MAX_PRETRAINED_CHAIN:
        raise ModelLoadError(
            f"The codec '{name}' names another pretrained codec, {MAX_PRETRAINED_CHAIN} packages deep: "
            "give the codec's own package."
        )
    return _build_codec(read_package(path, str(name)), device, chain + 1)


def _build_codec(comp_pkg: dict[str, Any], device: str, chain: int = 0) -> tuple[CompressionModel, list[str]]:
    """The codec of a compression package (a pretrained name, or a config with weights), and
    ``["codec"]`` when it is our own spectral codec."""
    custom: list[str] = []
    if "pretrained" in comp_pkg:
        codec, custom = pretrained_codec(comp_pkg["pretrained"], device, chain)
    else:
        comp_cfg = OmegaConf.create(comp_pkg["xp.cfg"])
        if comp_cfg.compression_model == SPECTRAL_CODEC:
            custom.append("codec")
        codec = build_compression_model(comp_cfg, device)
        codec.load_state_dict(comp_pkg["best_state"])
    return codec.eval(), custom


def load_lm(location: str, device: str = "cpu") -> LMModel:
    """Load just the language model of a folder or hub name (e.g. an autoregressive rescorer),
    read like :func:`load_model`'s (cache first, memory-mapped, tensors and plain values only, no
    random initialisation). Raises ModelLoadError for a file it cannot read or refuses."""
    kind = "folder" if os.path.isdir(location) else "hub"
    lm_pkg = read_package(_checkpoint_file(location, kind, LM_FILE), location)
    cfg = OmegaConf.create(lm_pkg["xp.cfg"])
    with hub_access(location, package_pieces(cfg, None)):
        return build_lm_for(lm_pkg["best_state"], cfg, device).eval()


# --------------------------------------------------------------------------------------------
# the forward pass


@lru_cache(maxsize=32)
def _restricted_mask(T: int, context: int, padded: int, num_heads: int, device: str) -> torch.Tensor:
    """Additive self-attention mask ``[1, H, P, P]`` (0 where |i - j| <= context, -inf elsewhere).

    ``P`` (``padded``) is ``T`` on the einsum path and ``T`` rounded up to a multiple of 8 for
    xformers (rows/columns beyond ``T`` are 0, as audiocraft pads them; it slices them off).
    """
    pos = torch.arange(T, device=device)
    allowed = (pos[:, None] - pos[None, :]).abs() <= context
    mask = torch.zeros(1, num_heads, padded, padded, device=device)
    mask[..., :T, :T] = torch.where(allowed, 0.0, float("-inf"))
    return mask


def attention_mask(lm: MagnetLMModel, stage: int, T: int) -> torch.Tensor | None:
    """The self-attention mask for predicting codebook ``stage`` over ``T`` frames (None = full)."""
    if stage == 0 or getattr(lm, "subcodes_context", -1) < 0:
        return None
    attn = lm.transformer.layers[0].self_attn
    device = next(lm.parameters()).device
    if attn.memory_efficient:
        padded = math.ceil(T / XFORMERS_ALIGN) * XFORMERS_ALIGN
        heads = attn.num_heads
    else:
        padded, heads = T, 1
    mask = _restricted_mask(T, lm.subcodes_context, padded, heads, str(device))
    return mask.to(next(lm.parameters()).dtype)


def stage_logits(
    lm: MagnetLMModel, sequence: torch.Tensor, condition_tensors: dict[str, Any], stage: int
) -> torch.Tensor:
    """Logits of codebook ``stage`` for every frame.

    Same arithmetic as ``LMModel.forward(sequence, [], condition_tensors, stage=stage)[:, stage]``
    but with an attention mask sized for ``T`` and only the ``stage`` output head evaluated.

    Args:
        sequence: tokens ``[B, K, T]`` (masked positions hold ``lm.special_token_id``).
        condition_tensors: pre-computed conditions for the batch (``lm.condition_provider`` output).
    Returns:
        logits ``[B, T, card]``.
    """
    B, K, T = sequence.shape
    x = sum(lm.emb[k](sequence[:, k]) for k in range(K))
    x, cross = lm.fuser(x, condition_tensors)
    out = lm.transformer(x, cross_attention_src=cross, src_mask=attention_mask(lm, stage, T))
    if lm.out_norm is not None:
        out = lm.out_norm(out)
    logits = lm.linears[stage](out)
    if len(lm.fuser.fuse2cond["prepend"]) > 0:
        logits = logits[:, -T:]
    return logits
