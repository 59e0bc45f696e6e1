"""Checkpoint packages in audiocraft's export format, and the configurations we write into them.

A checkpoint folder holds ``state_dict.bin`` (the language model) and
``compression_state_dict.bin`` (the codec). Each file is a ``torch.save``-d dict::

    {'best_state': state_dict, 'xp.cfg': <YAML string>, 'version': str, 'exported': True}

which is what ``audiocraft.models.loaders`` reads for ``facebook/magnet-*``. The embedded model and
the tiny models of the tests are written in the same format, so one loader serves all of them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from magnet_demo import __version__

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"

#: MAGNeT's frame rate and span length (paper; audiocraft's magnet solver config)
FRAME_RATE = 50
SPAN_LEN = 3
#: restricted self-attention context for codebooks > 0, in frames on each side
SUBCODES_CONTEXT = 5

#: transformer sizes of audiocraft's config/model/lm/model_scale files (which the wheel lacks)
MODEL_SCALES = {
    "xsmall": {"dim": 256, "num_heads": 8, "num_layers": 8},
    "small": {"dim": 1024, "num_heads": 16, "num_layers": 24},  # ~300M, magnet-small
    "medium": {"dim": 1536, "num_heads": 24, "num_layers": 48},  # ~1.5B, magnet-medium
}


#: the LM architecture of MAGNeT checkpoints (any other is a plain audiocraft LM, e.g. the tests')
MAGNET_LM = "transformer_lm_magnet"
#: the sample rate of the magnet-* checkpoints' EnCodec (32 kHz)
SAMPLE_RATE = 32000
#: the CFG coefficient audiocraft's solver config writes (the engine's schedule replaces it)
INFERENCE_CFG_COEF = 3.0
#: the default conditioner: a LUT over the ``noop`` tokenizer's words, which builds offline
DEFAULT_CONDITIONERS: dict[str, Any] = {
    "description": {"model": "lut", "lut": {"n_bins": 64, "dim": 32, "tokenizer": "noop"}}
}


def magnet_lm_config(
    *,
    n_q: int = 4,
    card: int = 2048,
    dim: int = 1024,
    num_heads: int = 16,
    num_layers: int = 24,
    segment_duration: float = 10,
    memory_efficient: bool = True,
    conditioners: dict[str, Any] | None = None,
    cross: tuple[str, ...] = ("description",),
    lm_model: str = MAGNET_LM,
    cfg_dropout: float = 0.2,
) -> dict[str, Any]:
    """The ``xp.cfg`` of a MAGNeT language model as audiocraft's magnet_32khz solver writes it.

    Defaults are those of facebook/magnet-small-10secs (pre-norm, no biases, 4 x 2048 codes,
    cross-attention to a ``description`` condition). ``conditioners`` maps a condition name to its
    conditioner config; by default :data:`DEFAULT_CONDITIONERS`, a LUT conditioner with the
    ``noop`` tokenizer, which builds offline (the real checkpoints use T5). Another ``lm_model``
    than :data:`MAGNET_LM` gives a plain causal LM with the delay pattern.
    """
    magnet = lm_model == MAGNET_LM
    sizes = {"dim": dim, "num_heads": num_heads, "num_layers": num_layers, "n_q": n_q, "card": card}
    cfg: dict[str, Any] = {
        "lm_model": lm_model,
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "dataset": {"segment_duration": segment_duration},
        "codebooks_pattern": _codebooks_pattern(n_q, magnet),
        "transformer_lm": _transformer_lm(sizes, magnet=magnet, memory_efficient=memory_efficient),
        "classifier_free_guidance": {"training_dropout": cfg_dropout, "inference_coef": INFERENCE_CFG_COEF},
        "attribute_dropout": {},
        "fuser": _fuser(cross),
        "conditioners": copy.deepcopy(DEFAULT_CONDITIONERS if conditioners is None else conditioners),
    }
    if magnet:
        cfg["masking"] = {"span_len": SPAN_LEN}
    return cfg


def _codebooks_pattern(n_q: int, magnet: bool) -> dict[str, Any]:
    """How the ``n_q`` codebooks are interleaved: all in parallel for MAGNeT, else delayed by one
    frame each (audiocraft's MusicGen pattern)."""
    if magnet:
        return {"modeling": "parallel", "parallel": {"empty_initial": -1}}
    return {
        "modeling": "delay",
        "delay": {"delays": list(range(n_q)), "flatten_first": 0, "empty_initial": 0},
    }


def _transformer_lm(sizes: dict[str, int], *, magnet: bool, memory_efficient: bool) -> dict[str, Any]:
    """The ``transformer_lm`` section: ``sizes`` holds ``dim``, ``num_heads``, ``num_layers``,
    ``n_q`` and ``card``. MAGNeT's is non-causal and restricts the attention of codebooks > 0 to
    :data:`SUBCODES_CONTEXT` frames on each side."""
    section = {
        "dim": sizes["dim"],
        "num_heads": sizes["num_heads"],
        "num_layers": sizes["num_layers"],
        "hidden_scale": 4,
        "n_q": sizes["n_q"],
        "card": sizes["card"],
        "dropout": 0.0,
        "emb_lr": None,
        "activation": "gelu",
        "norm_first": True,
        "bias_ff": False,
        "bias_attn": False,
        "bias_proj": False,
        "past_context": None,
        "causal": not magnet,
        "custom": False,
        "memory_efficient": memory_efficient,
        "attention_as_float32": False,
        "layer_scale": None,
        "positional_embedding": "sin",
        "xpos": False,
        "checkpointing": "none",
        "weight_init": "gaussian",
        "depthwise_init": "current",
        "zero_bias_init": True,
        "norm": "layer_norm",
        "cross_attention": False,
        "qk_layer_norm": False,
        "qk_layer_norm_cross": False,
        "attention_dropout": None,
        "kv_repeat": 1,
        "two_step_cfg": False,
    }
    if magnet:
        section["subcodes_context"] = SUBCODES_CONTEXT
        section["compression_model_framerate"] = FRAME_RATE
        section["segment_duration"] = 0
        section["span_len"] = -1
    return section


def _fuser(cross: tuple[str, ...]) -> dict[str, Any]:
    """How conditions reach the transformer: the ``cross`` ones by cross-attention, none other."""
    return {
        "cross_attention_pos_emb": False,
        "cross_attention_pos_emb_scale": 1,
        "sum": [],
        "prepend": [],
        "cross": list(cross),
        "input_interpolate": [],
    }


def save_package(state_dict: dict[str, torch.Tensor], cfg: dict[str, Any], path: str | Path) -> Path:
    """Write one checkpoint file in audiocraft's export format; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    yaml = OmegaConf.to_yaml(OmegaConf.create(cfg))
    package = {
        "best_state": {k: v.detach().cpu() for k, v in state_dict.items()},
        "xp.cfg": yaml,
        "version": f"magnet-demo {__version__}",
        "exported": True,
    }
    torch.save(package, path)
    return path


def load_package(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """Read one checkpoint file; ``xp.cfg`` stays a YAML string as in the real checkpoints.

    Only tensors and plain values are read (``weights_only``): audiocraft's packages hold nothing
    else, and a file that needs code to unpickle raises ``pickle.UnpicklingError``, unrun.

    With ``mmap`` the tensors stay in the file's pages (memory-mapped) instead of being read into
    memory: loading them into a model then holds one copy of the weights, not two (the model's and
    the package's). Files in torch's legacy format, which cannot be mapped, are read as usual.
    """
    if mmap:
        try:
            return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
    return torch.load(Path(path), map_location="cpu", weights_only=True)
