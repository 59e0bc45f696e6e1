"""Tiny random MAGNeT checkpoints in audiocraft's export format, for tests and benchmarks.

They go through exactly the loading path of ``facebook/magnet-*`` (a folder with
``state_dict.bin`` and ``compression_state_dict.bin``), so the real loader is what gets tested.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from magnet_demo.checkpoints import COMPRESSION_FILE, FRAME_RATE, LM_FILE, magnet_lm_config, save_package
from magnet_demo.compat import import_audiocraft
from magnet_demo.models import SPECTRAL_CODEC, build_compression_model, build_lm

import_audiocraft()
from audiocraft.models import loaders  # noqa: E402

#: 32 kHz / (8 * 8 * 10) = 50 frames per second, like EnCodec 32 kHz
TINY_SAMPLE_RATE = 32000
TINY_RATIOS = (10, 8, 8)


def tiny_encodec_config(card: int = 64, n_q: int = 4, sample_rate: int = TINY_SAMPLE_RATE) -> dict[str, Any]:
    """``xp.cfg`` of a small random SEANet EnCodec at 50 frames/s."""
    hop = 1
    for r in TINY_RATIOS:
        hop *= r
    assert sample_rate // hop == FRAME_RATE, "tiny codec must run at 50 frames/s"
    return {
        "compression_model": "encodec",
        "sample_rate": sample_rate,
        "channels": 1,
        "device": "cpu",
        "encodec": {
            "autoencoder": "seanet",
            "quantizer": "rvq",
            "sample_rate": sample_rate,
            "channels": 1,
            "causal": False,
            "renormalize": False,
        },
        "seanet": {
            "dimension": 16,
            "channels": 1,
            "causal": False,
            "n_filters": 4,
            "n_residual_layers": 1,
            "ratios": list(TINY_RATIOS),
            "activation": "ELU",
            "activation_params": {"alpha": 1.0},
            "norm": "weight_norm",
            "norm_params": {},
            "kernel_size": 7,
            "residual_kernel_size": 3,
            "last_kernel_size": 7,
            "dilation_base": 2,
            "pad_mode": "constant",
            "true_skip": True,
            "compress": 2,
            "lstm": 0,
            "disable_norm_outer_blocks": 0,
            "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
            "encoder": {},
        },
        "rvq": {
            "n_q": n_q,
            "q_dropout": False,
            "bins": card,
            "decay": 0.99,
            "kmeans_init": False,
            "kmeans_iters": 1,
            "threshold_ema_dead_code": 2,
            "orthogonal_reg_weight": 0.0,
            "orthogonal_reg_active_codes_only": False,
            "orthogonal_reg_max_codes": None,
        },
    }


def write_tiny_checkpoint(
    folder: str | Path,
    *,
    seed: int = 0,
    card: int = 64,
    dim: int = 32,
    num_heads: int = 2,
    num_layers: int = 2,
    segment_duration: float = 12,
    memory_efficient: bool = False,
    lm_overrides: dict[str, Any] | None = None,
) -> Path:
    """Export a random MAGNeT (LM + EnCodec) to ``folder``; returns the folder.

    The default 12 s segment gives audiocraft's restricted mask 600 frames, a multiple of 8 and 3,
    so audiocraft's own CPU generation runs unpatched at 12 s and can be compared with the engine.
    """
    folder = Path(folder)
    torch.manual_seed(seed)
    comp_cfg = tiny_encodec_config(card=card)
    codec = build_compression_model(comp_cfg)
    lm_cfg = magnet_lm_config(
        card=card,
        dim=dim,
        num_heads=num_heads,
        num_layers=num_layers,
        segment_duration=segment_duration,
        memory_efficient=memory_efficient,
    )
    lm_cfg["sample_rate"] = TINY_SAMPLE_RATE
    if not memory_efficient:
        lm_cfg["transformer_lm"]["custom"] = True
    for key, value in (lm_overrides or {}).items():
        lm_cfg["transformer_lm"][key] = value
    lm = build_lm(lm_cfg)
    # random, non-degenerate output heads: the default init zeroes biases but keeps weights random
    save_package(codec.state_dict(), comp_cfg, folder / COMPRESSION_FILE)
    save_package(lm.state_dict(), lm_cfg, folder / LM_FILE)
    return folder


def write_tiny_rescorer(
    folder: str | os.PathLike,
    codec_from: str | os.PathLike,
    *,
    seed: int = 0,
    dim: int = 32,
    num_heads: int = 2,
    num_layers: int = 2,
) -> Path:
    """Export a random MusicGen-style rescorer that shares the codec of the folder ``codec_from``.

    The language model has MusicGen's delay pattern and causal attention, the same codebooks and
    condition (a LUT ``description``) as :func:`magnet_demo.tiny.write_tiny_checkpoint`; the codec
    file is copied, so the tokenizers match.
    """
    folder, codec_from = Path(folder), Path(codec_from)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(codec_from / COMPRESSION_FILE, folder / COMPRESSION_FILE)
    codec_cfg = OmegaConf.create(loaders.load_compression_model_ckpt(str(codec_from))["xp.cfg"])
    if codec_cfg.compression_model == SPECTRAL_CODEC:
        raise ValueError("write_tiny_rescorer expects an EnCodec folder (tests and benchmarks).")
    torch.manual_seed(seed)
    cfg = magnet_lm_config(
        lm_model="transformer_lm",
        n_q=int(codec_cfg.rvq.n_q),
        card=int(codec_cfg.rvq.bins),
        dim=dim,
        num_heads=num_heads,
        num_layers=num_layers,
        memory_efficient=False,
    )
    cfg["sample_rate"] = int(codec_cfg.sample_rate)
    cfg["transformer_lm"]["custom"] = True
    lm = build_lm(cfg)
    save_package(lm.state_dict(), cfg, folder / LM_FILE)
    return folder
