"""A word-level free-text conditioner for the embedded model (audiocraft model type ``magnet_demo_words``).

audiocraft's own text conditioners need hub weights (T5, CLAP), a spaCy pipeline (``lut`` with the
``whitespace`` tokenizer) or give one hash bin per whole string (``noop``); see DESIGN.md section 9.
This one needs nothing but its config:

- **Tokenisation** (:func:`split_words`): lowercase; words are runs of letters (a trailing ``#``
  kept, for keys such as ``f#``), numbers are runs of digits (with an optional decimal part), so
  ``"120bpm"``, ``"120 bpm"`` and ``"120-BPM"`` all give ``["120", "bpm"]``. Everything else separates.
- **Ids**: 0 pads; 1 stands for every number, whose value enters through sinusoidal features of
  ``log(1 + value)`` (so 117 bpm lands near 120 bpm even if never seen); a few hash buckets take
  unknown words (stable CRC-32 hash); the vocabulary, built from the corpus captions by
  :func:`build_vocab`, is stored in the model config, so the model needs no extra file.
- **Encoder**: word + position embeddings (+ number features), a small pre-norm transformer
  encoder over the words, a final norm and audiocraft's ``output_proj`` to the LM's width.
- **Null condition**: ``None`` (what classifier-free guidance and condition dropout produce) and an
  empty text give no words: an all-zero embedding with an all-zero mask, as audiocraft's LUT
  conditioner does. Sequences are always padded to ``max_words``, so the output for a text never
  depends on the other texts of its batch (audiocraft's cross-attention ignores the mask and would
  otherwise see different numbers of zero keys).
- **Pooled variant** (``pool: true``): the mean of the word vectors, ``[B, 1, output_dim]``, for
  audiocraft's ``sum`` fuser. A cross-attention can learn to put all its weight on the zero padding
  slots and so switch the text off for good (the embedded MAGNeT did, once it learned to copy its
  neighbours); a vector added to every frame cannot be silenced that way.
- **Word dropout** (training only): each word of a text is dropped with probability
  ``word_dropout`` (at least one is kept), so that short prompts from people still work.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from magnet_demo.compat import import_audiocraft

import_audiocraft()
from audiocraft.modules.conditioners import ConditionType, TextConditioner  # noqa: E402

#: audiocraft ``conditioners.<name>.model`` value of this conditioner
MODEL_TYPE = "magnet_demo_words"

PAD_ID = 0
NUMBER_ID = 1
FIRST_BUCKET_ID = 2
NUMBER_TOKEN = "<num>"
_TOKEN_RE = re.compile(r"[a-z]+#?|\d+(?:\.\d+)?")
_NUMBER_RE = re.compile(r"\d")

#: constructor defaults (everything but ``vocab`` and ``output_dim``)
DEFAULTS: dict[str, Any] = {
    "dim": 128,
    "num_layers": 2,
    "num_heads": 4,
    "max_words": 32,
    "hash_buckets": 32,
    "number_features": 8,
    "word_dropout": 0.1,
    "pool": False,
}
#: frequencies of the number features, applied to log(1 + value)
NUMBER_MAX_FREQ = 4.0
FF_SCALE = 4


def split_words(text: str) -> list[str]:
    """Lowercased words and numbers of ``text``: ``"Fast 120BPM, F# minor"`` -> fast 120 bpm f# minor."""
    return _TOKEN_RE.findall(text.lower())


def is_number(word: str) -> bool:
    return bool(_NUMBER_RE.match(word))


def build_vocab(captions: Iterable[str], min_count: int = 2, max_size: int = 2000) -> list[str]:
    """Words (not numbers) seen at least ``min_count`` times, most frequent first (ties: alphabetical)."""
    counts = Counter(w for text in captions for w in split_words(text) if not is_number(w))
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:max_size]


def conditioner_args(vocab: list[str], **overrides: Any) -> dict[str, Any]:
    """The ``conditioners.<name>.magnet_demo_words`` section of an LM config."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown {MODEL_TYPE} arguments: {sorted(unknown)}")
    return {"vocab": list(vocab), **DEFAULTS, **overrides}


def conditioner_config(vocab: list[str], **overrides: Any) -> dict[str, Any]:
    """``{'model': 'magnet_demo_words', 'magnet_demo_words': {...}}``, for ``magnet_lm_config(conditioners=...)``."""
    return {"model": MODEL_TYPE, MODEL_TYPE: conditioner_args(vocab, **overrides)}


class WordConditioner(TextConditioner):
    """Free text -> ``(embeddings [B, L, output_dim], mask [B, L])``; see the module doc.

    ``L = max_words`` (one vector per word slot, for cross-attention), or ``L = 1`` with ``pool``
    (the mean over the words, for audiocraft's ``sum`` fuser, which adds it to every frame).
    """

    def __init__(
        self,
        vocab: list[str],
        output_dim: int,
        dim: int = DEFAULTS["dim"],
        num_layers: int = DEFAULTS["num_layers"],
        num_heads: int = DEFAULTS["num_heads"],
        max_words: int = DEFAULTS["max_words"],
        hash_buckets: int = DEFAULTS["hash_buckets"],
        number_features: int = DEFAULTS["number_features"],
        word_dropout: float = DEFAULTS["word_dropout"],
        pool: bool = DEFAULTS["pool"],
    ):
        super().__init__(dim, output_dim)
        self.vocab = list(vocab)
        self.max_words = max_words
        self.hash_buckets = hash_buckets
        self.word_dropout = word_dropout
        self.pool = pool
        self.first_word_id = FIRST_BUCKET_ID + hash_buckets
        self.word_ids = {w: self.first_word_id + i for i, w in enumerate(self.vocab)}
        self.embed = nn.Embedding(self.first_word_id + len(self.vocab), dim, padding_idx=PAD_ID)
        self.position = nn.Embedding(max_words, dim)
        freqs = torch.logspace(-1, math.log10(NUMBER_MAX_FREQ), number_features)
        self.register_buffer("number_freqs", freqs, persistent=False)
        self.number_proj = nn.Linear(2 * number_features, dim)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, FF_SCALE * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    # ---------------------------------------------------------------- text -> ids
    def word_id(self, word: str) -> int:
        """Id of one word from :func:`split_words` (numbers share :data:`NUMBER_ID`)."""
        if is_number(word):
            return NUMBER_ID
        if word in self.word_ids:
            return self.word_ids[word]
        return FIRST_BUCKET_ID + zlib.crc32(word.encode()) % self.hash_buckets

    def tokenize(self, x: list[str | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Texts (``None`` = null condition) -> ids ``[B, L]`` long, number values ``[B, L]`` float,
        mask ``[B, L]`` int, with ``L = max_words`` (longer texts are truncated)."""
        B, L = len(x), self.max_words
        ids = torch.full((B, L), PAD_ID, dtype=torch.long)
        values = torch.zeros((B, L))
        for b, text in enumerate(x):
            words = split_words(text)[:L] if text is not None else []
            for i, word in enumerate(words):
                ids[b, i] = self.word_id(word)
                if ids[b, i] == NUMBER_ID:
                    values[b, i] = float(word)
        mask = (ids != PAD_ID).int()
        device = self.embed.weight.device
        return ids.to(device), values.to(device), mask.to(device)

    # ---------------------------------------------------------------- ids -> embeddings
    def _drop_words(self, mask: torch.Tensor) -> torch.Tensor:
        """Training-time word dropout on ``mask [B, L]``; a non-empty text keeps at least one word."""
        keep = (torch.rand(mask.shape, device=mask.device) >= self.word_dropout) & mask.bool()
        emptied = (keep.sum(1) == 0) & (mask.sum(1) > 0)
        first = torch.zeros_like(keep)
        first[:, 0] = True
        keep = torch.where(emptied[:, None], first & mask.bool(), keep)
        return keep.int()

    def number_embedding(self, values: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of ``log(1 + value)``: values ``[B, L]`` -> ``[B, L, dim]``."""
        phase = torch.log1p(values.clamp(min=0))[..., None] * self.number_freqs.float()
        features = torch.cat([phase.sin(), phase.cos()], dim=-1)  # float32, whatever the weights' dtype
        return self.number_proj(features.to(self.number_proj.weight.dtype))

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> ConditionType:
        ids, values, mask = inputs
        if self.training and self.word_dropout > 0:
            mask = self._drop_words(mask)
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
        x = x + self.number_embedding(values) * (ids == NUMBER_ID)[..., None]
        # a text with no words would give an all-masked softmax (NaN): let it see its first slot
        padding = ~mask.bool()
        padding[:, 0] = padding[:, 0] & (mask.sum(1) > 0)
        x = self.norm(self.encoder(x, src_key_padding_mask=padding))
        if self.pool:  # one vector per text: the mean over its words
            weights = mask[..., None].to(x.dtype)
            x = (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
            mask = (mask.sum(1, keepdim=True) > 0).int()
        embeds = self.output_proj(x) * mask[..., None]
        return embeds, mask


def build_conditioner(model_type: str, args: dict[str, Any], output_dim: int) -> WordConditioner:
    """Build a conditioner of one of our own types from its config section (see :mod:`magnet_demo.models`)."""
    if model_type != MODEL_TYPE:
        raise ValueError(f"Unknown conditioner type '{model_type}': magnet-demo only adds '{MODEL_TYPE}'.")
    return WordConditioner(output_dim=output_dim, **args)
