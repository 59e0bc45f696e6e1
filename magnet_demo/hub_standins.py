"""Tiny stand-ins for the released checkpoints, stored under their real names in a Hugging Face cache.

The released ``facebook/magnet-*`` models cannot be downloaded here, but their format can be
rebuilt small: a T5 text encoder (``t5-base``, d_model 768 as audiocraft sizes its projection from
that name, everything else tiny), EnCodec at 32 kHz with 4 x 2048 codes (``facebook/encodec_32khz``,
random codebooks: transformers initialises them to zeros), a MAGNeT with the ``t5`` conditioner
whose compression file holds only ``{'pretrained': 'facebook/encodec_32khz'}``
(``facebook/magnet-small-10secs``) and a MusicGen rescorer (``facebook/musicgen-small``). Written
into a cache folder in the Hub's layout, they go through exactly the loading path of the real ones.

    HF_HOME=/tmp/hf python -m magnet_demo.hub_standins        # writes into $HF_HOME's hub cache

Run it in a process whose ``HF_HOME`` points at the cache (transformers and huggingface_hub read
it when they are imported).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

T5_REPO = "t5-base"
ENCODEC_REPO = "facebook/encodec_32khz"
MAGNET_REPO = "facebook/magnet-small-10secs"
MUSICGEN_REPO = "facebook/musicgen-small"
#: audiocraft's T5 projection is sized from the T5 name's width (t5-base: 768)
T5_WIDTH = 768
CARD = 2048
CODEBOOKS = 4
#: EnCodec 32 kHz: 4 codebooks of 11 bits at 50 frames/s = 2.2 kbps; 8 * 5 * 4 * 4 = 640 = 32000 / 50
ENCODEC_BANDWIDTH = 2.2
ENCODEC_RATIOS = (8, 5, 4, 4)
#: pieces of a T5 vocabulary (a Unigram model; the first three are T5's special tokens)
T5_PIECES = (
    "<pad>",
    "</s>",
    "<unk>",
    "▁",
    *"abcdefghijklmnopqrstuvwxyz",
    "▁a",
    "▁the",
    "▁drums",
    "▁piano",
    "▁calm",
)
T5_CONDITIONER = {
    "model": "t5",
    "t5": {"name": T5_REPO, "finetune": False, "word_dropout": 0.0, "normalize_text": False},
}


def hub_cache() -> Path:
    """The cache this process's huggingface_hub reads (``$HF_HOME/hub`` or ``$HF_HUB_CACHE``)."""
    import huggingface_hub.constants

    return Path(huggingface_hub.constants.HF_HUB_CACHE)


def snapshot_folder(repo: str, cache: Path | None = None) -> Path:
    """A new snapshot folder of ``repo`` in the Hub cache layout (``refs/main`` points at it)."""
    cache = cache or hub_cache()
    repo_folder = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"magnet-demo stand-in {repo}".encode()).hexdigest()
    folder = repo_folder / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs").mkdir(exist_ok=True)
    (repo_folder / "refs" / "main").write_text(commit)
    return folder


def write_t5(seed: int = 0) -> Path:
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = snapshot_folder(T5_REPO)
    vocab = [(piece, 0.0 if i < 4 else -float(i)) for i, piece in enumerate(T5_PIECES)]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(T5_PIECES), d_model=T5_WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(folder)
    return folder


def write_encodec(seed: int = 0) -> Path:
    from transformers import EncodecConfig, EncodecModel

    folder = snapshot_folder(ENCODEC_REPO)
    config = EncodecConfig(
        target_bandwidths=[ENCODEC_BANDWIDTH],
        sampling_rate=32000,
        audio_channels=1,
        normalize=False,
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=list(ENCODEC_RATIOS),
        num_lstm_layers=1,
        codebook_size=CARD,
        use_causal_conv=False,
    )
    torch.manual_seed(seed)
    model = EncodecModel(config)
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
    model.save_pretrained(folder)
    return folder


def _write_lm(repo: str, lm_model: str, seed: int) -> Path:
    from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE, magnet_lm_config, save_package
    from magnet_demo.models import build_lm

    folder = snapshot_folder(repo)
    cfg = magnet_lm_config(
        lm_model=lm_model,
        n_q=CODEBOOKS,
        card=CARD,
        dim=32,
        num_heads=2,
        num_layers=2,
        segment_duration=10,
        memory_efficient=True,  # as released: the loader picks the einsum path without xformers
        conditioners={"description": T5_CONDITIONER},
    )
    torch.manual_seed(seed)
    lm = build_lm(cfg)
    save_package(lm.state_dict(), cfg, folder / LM_FILE)
    torch.save({"pretrained": ENCODEC_REPO}, folder / COMPRESSION_FILE)
    return folder


def write_magnet(seed: int = 0) -> Path:
    return _write_lm(MAGNET_REPO, "transformer_lm_magnet", seed)


def write_musicgen(seed: int = 1) -> Path:
    return _write_lm(MUSICGEN_REPO, "transformer_lm", seed)


def write_all() -> Path:
    """Write every stand-in into this process's Hub cache; returns the cache folder."""
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # nothing to fetch: the LMs' T5 is written first
    write_t5()
    write_encodec()
    write_magnet()
    write_musicgen()
    return hub_cache()


if __name__ == "__main__":
    if "HF_HOME" not in os.environ and "HF_HUB_CACHE" not in os.environ:
        sys.exit("Set HF_HOME (or HF_HUB_CACHE) to the cache folder to write the stand-ins into.")
    print(f"stand-ins written to {write_all()}")
