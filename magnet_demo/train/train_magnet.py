"""Train the embedded MAGNeT language model on the corpus tokens, with MAGNeT's masked objective.

Commands::

    python -m magnet_demo.train.train_magnet --minutes 70 --threads 2          # new run -> assets/embedded
    python -m magnet_demo.train.train_magnet --minutes 70 --resume             # continue runs/magnet
    python -m magnet_demo.train.train_magnet --minutes 30 --init assets/embedded --run-dir runs/magnet2
    python -m magnet_demo.train.train_magnet --quick --tokens T --corpus C --out DIR   # micro model
    python -m magnet_demo.train.train_magnet time --sizes 256x6x4,192x6x4       # generation speed

The objective (paper, section 3): every example gets a codebook stage (stage 0, the hard one, for
``--stage0`` of the batch; the others uniformly), a mask rate ``cos(u * pi / 2)`` with
``u ~ U(0, 1)`` reached with random spans of 3 frames on that stage, every codebook above the stage
fully masked (mask id = card) and the ones below given; the loss is the cross-entropy on the masked
tokens of the stage. Each example reads one of its clip's captions at random; ``--cond-dropout`` of
the examples get the null condition instead (for classifier-free guidance). The forward is
:func:`magnet_demo.models.stage_logits` (restricted attention for stages > 0), as at inference.
The transformer uses rotary position encoding (``positional_embedding: rope``, see :data:`POSITIONAL`).

``--rate-power P`` draws ``u`` as ``U(0, 1) ** P`` instead: P > 1 trains more on high mask rates,
the first decoding steps, where the caption is all the model has (``bench.mask_rate_loss``).
``--self-context F`` trains on context the model wrote itself, as in generation: in each example,
spans covering a share F of the frames that are not masked are replaced by the model's own samples
(temperature 1, drawn with those spans masked too, without gradient); the targets stay the true
tokens of the masked frames (:func:`self_context`). It costs one more forward per step.

AdamW with a linear warm-up and a constant learning rate, cosine-decayed over the last
``--decay`` of the budget (DESIGN.md section 10 found a run-long decay flattening the curve).
``--precision auto`` trains with bfloat16 autocast on CPUs that multiply bfloat16 in hardware
(AMX): 3.5 steps/s instead of 2.0 for the embedded model on 2 idle cores; on a GPU it autocasts
where the GPU supports bfloat16 (:func:`magnet_demo.train.device.training_precision`).
``--device auto`` (the default) trains on the GPU when torch sees one (``cuda``), else on the CPU;
``--device cpu`` keeps a GPU machine's run on its CPU. The shipped model was trained on CPU, and
the exported weights are always CPU tensors, so a GPU run ships the same way.
The budget is wall time: ``--minutes`` is the total over all resumed sessions of a run folder.
Every ``--export-every`` seconds (and at the end) the held-out loss is logged per stage with the
true, the null and a swapped caption, and the model is exported to ``--out/state_dict.bin``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from magnet_demo.checkpoints import (
    COMPRESSION_FILE,
    LM_FILE,
    SPAN_LEN,
    load_package,
    magnet_lm_config,
    save_package,
)
from magnet_demo.compat import import_audiocraft
from magnet_demo.conditioning import build_vocab, conditioner_config
from magnet_demo.controls import TRAIN_PRECISIONS
from magnet_demo.models import build_lm, stage_logits
from magnet_demo.train.device import add_device_argument, resolve_device, training_precision

import_audiocraft()
from audiocraft.modules.conditioners import ConditioningAttributes  # noqa: E402

log = logging.getLogger("train_magnet")

CARD = 256
N_Q = 4
SAMPLE_RATE = 16_000
SEGMENT_SECONDS = 10
CONDITION = "description"
#: the same text, pooled into one vector added to every frame (audiocraft's ``sum`` fuser)
GLOBAL_CONDITION = "description_global"
#: size of the shipped model, picked by generation time (``time``): 2 heads, because on CPU the
#: attention's [B, heads, T, T] softmax and mask costs as much as the linear layers at T = 498
DEFAULT_SIZE = {"dim": 256, "num_heads": 2, "num_layers": 4}
DEFAULT_TEXT = {"dim": 128, "num_layers": 2, "num_heads": 4}
#: rotary position encoding. With audiocraft's additive sinusoids the model never learned to look
#: at its neighbours on this budget (1,000 steps: stage-0 loss flat in the mask rate, logits
#: unchanged when a neighbouring token changes: a bag of tokens); with rope it does in 200 steps.
POSITIONAL = "rope"
#: micro model of ``--quick``
QUICK_SIZE = {"dim": 32, "num_heads": 2, "num_layers": 1}
QUICK_TEXT = {"dim": 32, "num_layers": 1, "num_heads": 2}
QUICK_SECONDS = 20
#: condition variants of the held-out evaluation
EVAL_CONDITIONS = ("true", "null", "swapped")
#: a number of generation runs timed per candidate size (the median is reported)
TIMING_RUNS = 5
TIMING_PROMPT = "an upbeat pop song with piano, bass and drums at 120 bpm"


# --- data -----------------------------------------------------------------------------------------


@dataclass
class TokenData:
    """Corpus tokens and captions.

    Attributes:
        tokens: int16 ``[N, K, T]`` codes, corpus order.
        captions: per clip, its list of captions.
        train, test: clip indices of each split.
    """

    tokens: np.ndarray
    captions: list[list[str]]
    train: np.ndarray
    test: np.ndarray

    def codes(self, index: np.ndarray) -> torch.Tensor:
        """Tokens of clips ``index`` as a long tensor ``[B, K, T]``."""
        return torch.from_numpy(self.tokens[np.asarray(index)].astype(np.int64))

    def train_captions(self) -> list[str]:
        return [c for i in self.train for c in self.captions[i]]


def load_data(tokens_path: str | Path, corpus_dir: str | Path) -> TokenData:
    """``tokens.npy`` (int16 [N, K, T]) and the corpus ``meta.jsonl`` (same order)."""
    tokens = np.load(tokens_path, mmap_mode="r")
    with open(Path(corpus_dir) / "meta.jsonl") as f:
        meta = [json.loads(line) for line in f if line.strip()]
    if len(meta) != len(tokens):
        raise ValueError(f"{tokens_path} holds {len(tokens)} clips but {corpus_dir} describes {len(meta)}")
    captions = [m.get("captions") or [m["caption"]] for m in meta]
    split = np.array([m.get("split", "train") for m in meta])
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if len(test) == 0:  # tiny corpora: hold out the last clip
        train, test = train[:-1], train[-1:]
    return TokenData(np.asarray(tokens), captions, train, test)


def synthetic_data(n: int = 16, frames: int = 150, card: int = CARD, seed: int = 0) -> TokenData:
    """Random tokens and made-up captions, for tests and development without a corpus."""
    rng = np.random.default_rng(seed)
    words = ("fast", "slow", "piano", "guitar", "drums", "happy", "sad", "bright")
    captions = [[" ".join(rng.choice(words, 3)) + f" at {rng.integers(60, 180)} bpm"] for _ in range(n)]
    tokens = rng.integers(0, card, (n, N_Q, frames)).astype(np.int16)
    return TokenData(tokens, captions, np.arange(n - 2), np.arange(n - 2, n))


def condition_tensors(lm, texts: list[str | None]) -> dict:
    """Condition tensors of ``texts`` (``None`` = null condition) for every text condition of ``lm``."""
    attributes = [
        ConditioningAttributes(text={n: t for n in lm.condition_provider.text_conditions}) for t in texts
    ]
    return lm.condition_provider(lm.condition_provider.tokenize(attributes))


def pick_captions(data: TokenData, index: np.ndarray, rng: np.random.Generator, dropout: float) -> list:
    """One random caption per clip, ``None`` (null condition) with probability ``dropout``."""
    texts = [data.captions[i][rng.integers(len(data.captions[i]))] for i in index]
    return [None if rng.random() < dropout else t for t in texts]


# --- the MAGNeT objective -------------------------------------------------------------------------


def span_mask(rates: torch.Tensor, T: int, span_len: int, generator: torch.Generator) -> torch.Tensor:
    """Random spans of ``span_len`` frames covering at least ``rate * T`` frames of each row.

    Span starts are visited in a random order; the mask is the union of the first spans that
    reach the target count. Args: rates ``[B]`` in [0, 1]. Returns: bool ``[B, T]``.
    """
    B = rates.shape[0]
    rank = torch.rand(B, T, generator=generator).argsort(dim=1).argsort(dim=1).float()  # order of starts
    padded = F.pad(rank, (span_len - 1, 0), value=float("inf"))
    cover = padded.unfold(1, span_len, 1).amin(-1)  # [B, T]: first span (in order) covering frame t
    target = (rates * T).round().long().clamp(1, T)
    threshold = cover.sort(dim=1).values.gather(1, (target - 1)[:, None])
    return cover <= threshold


def mask_rates(n: int, generator: torch.Generator, power: float = 1.0) -> torch.Tensor:
    """MAGNeT's cosine schedule: ``cos(u * pi / 2)``, ``u = v ** power``, ``v ~ U(0, 1)``; ``[n]``.

    ``power`` 1 is the paper's; above 1 more examples get high mask rates, the regime of the first
    decoding steps, where the caption alone has to lay out the music (2: 71% of the rates above
    0.7 instead of 51%).
    """
    u = torch.rand(n, generator=generator) ** power
    return torch.cos(u * math.pi / 2)


def _select(conditions: dict, index: torch.Tensor) -> dict:
    return {name: (emb[index], mask[index]) for name, (emb, mask) in conditions.items()}


@torch.no_grad()
def self_context(
    lm,
    sequence: torch.Tensor,
    masked: torch.Tensor,
    conditions: dict,
    stage: int,
    share: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """``sequence`` with spans covering ``share`` of the unmasked frames of ``stage`` rewritten by the model.

    The rewritten spans are masked along with ``masked`` and sampled from the model's predictions
    (temperature 1) for them, the way generation fills its canvas: in training the visible context
    is then partly the model's own, possibly wrong, writing, as it always is at inference.

    Args:
        sequence: ``[b, K, T]`` input tokens (mask id on ``masked`` frames of ``stage`` and above it);
        masked: bool ``[b, T]``, the frames of the loss; share: in [0, 1].
    Returns:
        a new ``[b, K, T]`` sequence; frames of ``masked`` stay masked. Noise is drawn on the CPU
        from ``generator``, so a run is reproducible on any device.
    """
    if share <= 0:
        return sequence
    b, _, T = sequence.shape
    rewrite = span_mask(torch.full((b,), share), T, SPAN_LEN, generator).to(masked.device) & ~masked
    if not bool(rewrite.any()):
        return sequence
    probe = sequence.clone()
    probe[:, stage][rewrite] = lm.special_token_id
    logits = stage_logits(lm, probe, conditions, stage).float()  # [b, T, card]
    noise = torch.rand(logits.shape, generator=generator).to(logits.device)
    sampled = (logits - torch.log(-torch.log(noise.clamp_min(1e-9)))).argmax(-1)  # Gumbel-max, [b, T]
    out = sequence.clone()
    out[:, stage][rewrite] = sampled[rewrite]
    return out


def magnet_loss(
    lm,
    codes: torch.Tensor,
    conditions: dict,
    stages: torch.Tensor,
    rates: torch.Tensor,
    generator: torch.Generator,
    rewrite: float = 0.0,
) -> tuple[torch.Tensor, dict[int, tuple[float, int]]]:
    """Masked cross-entropy, averaged over the masked tokens of the whole batch.

    Args:
        codes: ``[B, K, T]`` tokens; conditions: condition tensors of the batch (B rows);
        stages: ``[B]`` codebook stage per example; rates: ``[B]`` mask rate per example;
        rewrite: share of the visible frames of the stage rewritten by the model (:func:`self_context`).
    Returns:
        the loss and, per stage present, (summed cross-entropy, number of masked tokens).
    """
    B, K, T = codes.shape
    mask_id = lm.special_token_id
    device = next(lm.parameters()).device
    codes = codes.to(device)
    total, count, per_stage = codes.new_zeros((), dtype=torch.float), 0, {}
    for stage in stages.unique().tolist():
        index = (stages == stage).nonzero().flatten()
        target = codes[index.to(device)]
        masked = span_mask(rates[index], T, SPAN_LEN, generator).to(device)  # [b, T], drawn on the CPU
        sequence = target.clone()
        sequence[:, stage][masked] = mask_id
        sequence[:, stage + 1 :] = mask_id
        selected = _select(conditions, index.to(device))
        sequence = self_context(lm, sequence, masked, selected, stage, rewrite, generator)  # as is for 0
        logits = stage_logits(lm, sequence, selected, stage)  # [b, T, card]
        ce = F.cross_entropy(logits[masked].float(), target[:, stage][masked], reduction="sum")
        total, count = total + ce, count + int(masked.sum())
        per_stage[stage] = (float(ce.detach()), int(masked.sum()))
    return total / max(count, 1), per_stage


def batch_stages(batch: int, stage0: float, n_q: int, rng: np.random.Generator) -> torch.Tensor:
    """``round(stage0 * batch)`` examples on stage 0, the others on one stage drawn from 1..K-1; ``[B]``.

    One upper stage per batch keeps it at two forwards (stage 0 and a restricted-attention one);
    over many steps the upper stages are uniform.
    """
    n0 = round(stage0 * batch) if n_q > 1 else batch
    upper = int(rng.integers(1, n_q)) if n_q > 1 else 0
    return torch.as_tensor([0] * n0 + [upper] * (batch - n0), dtype=torch.long)


@torch.no_grad()
def evaluate(
    lm,
    data: TokenData,
    n_clips: int,
    batch: int,
    seed: int = 0,
    rate: float | None = None,
    n_stages: int | None = None,
) -> dict[str, float]:
    """Held-out loss per stage with the true, the null and a swapped caption (same masks for all three).

    Mask rates follow the schedule on a regular grid of ``u`` so that runs compare, or are all
    ``rate`` when given (e.g. 1.0: the caption alone, as at the first decoding step). ``n_stages``
    scores only the first stages (default all). Returns ``{'true/stage0': ce, ..., 'swapped/stage3': ce}``.
    """
    was_training = lm.training
    lm.eval()
    clips = data.test[:n_clips]
    n = len(clips)
    swapped = np.roll(clips, n // 2) if n > 1 else clips
    u = (torch.arange(n) + 0.5) / n
    rates = torch.cos(u * math.pi / 2) if rate is None else torch.full((n,), float(rate))
    out = {}
    for variant in EVAL_CONDITIONS:
        for stage in range(n_stages or lm.num_codebooks):
            generator = torch.Generator().manual_seed(seed + stage)
            ce_sum, count = 0.0, 0
            for start in range(0, n, batch):
                idx = clips[start : start + batch]
                texts = {
                    "true": [data.captions[i][0] for i in idx],
                    "null": [None] * len(idx),
                    "swapped": [data.captions[i][0] for i in swapped[start : start + batch]],
                }[variant]
                codes = data.codes(idx)
                stages = torch.full((len(idx),), stage)
                _, per_stage = magnet_loss(
                    lm, codes, condition_tensors(lm, texts), stages, rates[start : start + batch], generator
                )
                ce_sum, count = ce_sum + per_stage[stage][0], count + per_stage[stage][1]
            out[f"{variant}/stage{stage}"] = round(ce_sum / max(count, 1), 4)
    lm.train(was_training)
    return out


def format_eval(metrics: dict[str, float], n_q: int) -> str:
    """One line per condition variant: ``true     6.12 6.50 ...``."""
    lines = []
    for variant in EVAL_CONDITIONS:
        values = " ".join(
            f"{metrics[f'{variant}/stage{s}']:.3f}" for s in range(n_q) if f"{variant}/stage{s}" in metrics
        )
        lines.append(f"  {variant:8s} {values}")
    return "\n".join(lines)


# --- configs, packages, the training loop (shared with train_rescorer) ----------------------------


def lm_config(
    vocab: list[str],
    size: dict,
    text: dict,
    positional: str = POSITIONAL,
    global_condition: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """The ``xp.cfg`` of the embedded model (or, with ``lm_model='transformer_lm'``, its rescorer).

    ``positional``: audiocraft's ``positional_embedding`` ('sin', 'rope' or 'sin_rope').
    ``global_condition``: besides the word vectors for cross-attention (``description``), feed the
    text through a pooled conditioner whose vector is added to every frame (``description_global``);
    the engine gives the prompt to every text condition, CFG nulls them all.
    """
    conditioners = {CONDITION: conditioner_config(vocab, **text)}
    if global_condition:
        conditioners[GLOBAL_CONDITION] = conditioner_config(vocab, **text, pool=True)
    cfg = magnet_lm_config(
        card=CARD,
        n_q=N_Q,
        segment_duration=SEGMENT_SECONDS,
        memory_efficient=False,
        conditioners=conditioners,
        **size,
        **kwargs,
    )
    cfg["fuser"]["sum"] = [GLOBAL_CONDITION] if global_condition else []
    cfg["transformer_lm"]["custom"] = True
    cfg["transformer_lm"]["positional_embedding"] = positional
    cfg["sample_rate"] = SAMPLE_RATE
    return cfg


def export(lm, cfg: dict, folder: str | Path, codec: str | Path | None) -> Path:
    """Write ``folder/state_dict.bin`` atomically; copy the codec there when it lacks one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (LM_FILE + ".tmp")
    save_package({name: value.cpu() for name, value in lm.state_dict().items()}, cfg, tmp)
    os.replace(tmp, folder / LM_FILE)
    if codec is not None:
        source = Path(codec) / COMPRESSION_FILE if Path(codec).is_dir() else Path(codec)
        target = folder / COMPRESSION_FILE
        if source.is_file() and source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    return folder / LM_FILE


def learning_rate(
    base: float, step: int, progress: float, warmup: int, decay: float, floor: float = 0.1
) -> float:
    """Linear warm-up, constant, then a cosine to ``floor * base`` over the last ``decay`` of the budget."""
    ramp = min(1.0, (step + 1) / warmup)
    tail = min(1.0, max(0.0, (progress - (1 - decay)) / decay)) if decay > 0 else 0.0
    return base * ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * tail)))


def prepare_model(args: argparse.Namespace, make_cfg: Callable[[], dict]) -> tuple[Any, dict, dict | None]:
    """(lm, cfg, saved state or None): resumed from ``run_dir/last.pt``, initialised from an exported
    folder (``--init``), or new from ``make_cfg()`` (with the tensors of ``--init-partial`` whose
    names and shapes match: a way to grow a trained model, e.g. add a conditioner); on ``--device``."""
    lm, cfg, state = _build_model(args, make_cfg)
    device = resolve_device(args.device)
    log.info("training device: %s", device)
    return lm.to(device), cfg, state


def _build_model(args: argparse.Namespace, make_cfg: Callable[[], dict]) -> tuple[Any, dict, dict | None]:
    state_path = Path(args.run_dir) / "last.pt"
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        lm = build_lm(state["cfg"])
        lm.load_state_dict(state["model"])
        log.info("resumed %s at step %d (%.1f min)", state_path, state["step"], state["elapsed"] / 60)
        return lm, state["cfg"], state
    if args.init:
        package = load_package(Path(args.init) / LM_FILE)
        cfg = OmegaConf.to_container(OmegaConf.create(package["xp.cfg"]), resolve=True)
        lm = build_lm(cfg)
        lm.load_state_dict(package["best_state"])
        log.info("initialised from %s", args.init)
        return lm, cfg, None
    cfg = make_cfg()
    lm = build_lm(cfg)
    if args.init_partial:
        path = Path(args.init_partial)
        if path.is_dir():
            weights = load_package(path / LM_FILE)["best_state"]
        else:
            weights = torch.load(path, map_location="cpu", weights_only=False)["model"]
        own = lm.state_dict()
        kept = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        lm.load_state_dict(kept, strict=False)
        fresh = sorted({k.rsplit(".", 2)[0] for k in own if k not in kept})
        log.info("initialised %d of %d tensors from %s; new: %s", len(kept), len(own), path, fresh)
    return lm, cfg, None


def training_loop(
    args: argparse.Namespace,
    lm,
    cfg: dict,
    state: dict | None,
    step_loss: Callable[[Any, np.random.Generator, torch.Generator], tuple[torch.Tensor, dict]],
    evaluate_fn: Callable[[Any], dict],
    export_fn: Callable[[Any, dict], Path],
) -> dict:
    """Optimise ``step_loss`` for the wall-time budget, saving ``run_dir/last.pt`` every ``--save-every``
    seconds and evaluating + exporting every ``--export-every`` seconds and at the end.

    ``step_loss(lm, rng, generator)`` draws its own batch and returns (loss, terms to log).
    Returns the last evaluation, with the step count and speed.
    """
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    opt = torch.optim.AdamW(lm.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    step, elapsed, history = 0, 0.0, []
    if state is not None:
        opt.load_state_dict(state["opt"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
    rng = np.random.default_rng([args.seed, step])
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    torch.manual_seed(args.seed + step)
    n_params = sum(p.numel() for p in lm.parameters())
    log.info(
        "%s: %.2fM parameters, budget %.1f min, %s", type(lm).__name__, n_params / 1e6, args.minutes, run_dir
    )

    def save():
        payload = {"model": lm.state_dict(), "opt": opt.state_dict(), "cfg": cfg, "step": step}
        payload.update({"elapsed": elapsed, "history": history})
        torch.save(payload, run_dir / "last.pt.tmp")
        os.replace(run_dir / "last.pt.tmp", run_dir / "last.pt")

    def eval_and_export() -> dict:
        t0 = time.monotonic()
        metrics = evaluate_fn(lm)
        path = export_fn(lm, cfg)
        record = {"step": step, "minutes": round(elapsed / 60, 2), **metrics}
        with open(run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            "step %d held-out (%.0f s), exported %s:\n%s",
            step,
            time.monotonic() - t0,
            path,
            json.dumps(metrics),
        )
        return record

    # bfloat16 autocast: float32 master weights and optimiser, bfloat16 matrix products (on a CPU
    # with AMX a training step of the embedded model is ~2.5x faster); evaluation stays float32
    device = next(lm.parameters()).device
    low_precision = training_precision(args.precision, device) == "bfloat16"
    log.info("training precision: %s", "bfloat16 autocast" if low_precision else "float32")
    lm.train()
    session_start, session_steps, window = time.monotonic(), 0, []
    last_log = last_save = last_export = time.monotonic()
    metrics: dict = {}
    while elapsed < budget:
        t0 = time.monotonic()
        lr = learning_rate(args.lr, step, elapsed / budget, args.warmup, args.decay)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision):
            loss, terms = step_loss(lm, rng, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), args.clip)
        opt.step()
        step, session_steps = step + 1, session_steps + 1
        elapsed += time.monotonic() - t0
        window.append(terms)
        now = time.monotonic()
        if now - last_log >= args.log_every or elapsed >= budget:
            keys = sorted({k for w in window for k in w})
            mean = {k: round(float(np.mean([w[k] for w in window if k in w])), 4) for k in keys}
            rate = session_steps / (now - session_start)
            log.info(
                "step %d  %.1f/%.1f min  %.2f steps/s  lr %.1e  %s",
                step,
                elapsed / 60,
                args.minutes,
                rate,
                lr,
                mean,
            )
            history.append(
                {"step": step, "elapsed": round(elapsed, 1), "steps_per_s": round(rate, 3), **mean}
            )
            window, last_log = [], now
        if now - last_export >= args.export_every and elapsed < budget:
            lm.eval()
            metrics = eval_and_export()
            lm.train()
            save()
            last_export = last_save = time.monotonic()
        elif now - last_save >= args.save_every:
            save()
            last_save = now
    save()
    lm.eval()
    metrics = eval_and_export()
    metrics.update({"params": n_params, "steps_per_s": history[-1]["steps_per_s"] if history else None})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def add_training_args(
    p: argparse.ArgumentParser, *, run_dir: str, out: str, minutes: float, batch: int
) -> None:
    """Arguments shared by the MAGNeT and rescorer trainers."""
    p.add_argument("--tokens", default="data/tokens.npy", help="int16 [N, 4, T] tokens ('synthetic': random)")
    p.add_argument("--corpus", default="data/corpus", help="corpus folder with meta.jsonl (captions, split)")
    p.add_argument("--codec", default="assets/embedded", help="codec folder copied next to the export")
    p.add_argument("--out", default=out, help="export folder")
    p.add_argument("--run-dir", default=run_dir)
    p.add_argument("--minutes", type=float, default=minutes, help="total wall-time budget of the run")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt if present")
    p.add_argument("--init", default=None, help="start from the weights (and config) of an exported folder")
    p.add_argument(
        "--init-partial",
        default=None,
        help="new config from the arguments, matching weights from an exported folder or a last.pt",
    )
    p.add_argument("--quick", action="store_true", help=f"micro model, {QUICK_SECONDS} s budget")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay", type=float, default=0.15, help="share of the budget with a cosine decay")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--cond-dropout", type=float, default=0.25, help="share of null conditions (CFG)")
    p.add_argument("--eval-clips", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--precision",
        default="auto",
        choices=TRAIN_PRECISIONS,
        help="matrix products of training steps (auto: bfloat16 autocast on CPUs with AMX or AVX-512 BF16, GPUs that support it; else float32)",
    )
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=float, default=60.0, help="seconds")
    p.add_argument("--save-every", type=float, default=300.0, help="seconds")
    p.add_argument("--export-every", type=float, default=600.0, help="seconds")


def setup(args: argparse.Namespace, name: str) -> TokenData:
    """Threads, logging, quick-mode overrides; returns the data."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(message)s")
    for handler in log.handlers:
        handler.close()
    log.handlers = [
        logging.StreamHandler(sys.stdout),
        logging.FileHandler(Path(args.run_dir) / f"{name}.log"),
    ]
    for handler in log.handlers:
        handler.setFormatter(formatter)
    log.setLevel(logging.INFO)
    log.propagate = False
    if args.quick:
        args.minutes = min(args.minutes, QUICK_SECONDS / 60)
        args.warmup, args.eval_clips, args.export_every = 10, 2, float("inf")
    if args.tokens == "synthetic":
        return synthetic_data()
    return load_data(args.tokens, args.corpus)


def model_size(args: argparse.Namespace, default: dict, quick: dict) -> dict:
    size = dict(quick if args.quick else default)
    for key, value in (("dim", args.dim), ("num_layers", args.layers), ("num_heads", args.heads)):
        if value is not None:
            size[key] = value
    return size


# --- MAGNeT ---------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict:
    """Train (or resume) the MAGNeT LM for the budget; export and return the last held-out metrics."""
    data = setup(args, "train_magnet")
    log.info(
        "data: %d train / %d test clips, tokens %s", len(data.train), len(data.test), data.tokens.shape[1:]
    )

    def make_cfg() -> dict:
        vocab = build_vocab(data.train_captions())
        log.info("vocabulary: %d words", len(vocab))
        size = model_size(args, DEFAULT_SIZE, QUICK_SIZE)
        text = QUICK_TEXT if args.quick else DEFAULT_TEXT
        return lm_config(vocab, size, text, positional=args.positional, cfg_dropout=args.cond_dropout)

    lm, cfg, state = prepare_model(args, make_cfg)
    n_q = lm.num_codebooks

    def step_loss(lm, rng, generator):
        index = rng.choice(data.train, args.batch)
        stages = batch_stages(args.batch, args.stage0, n_q, rng)
        conditions = condition_tensors(lm, pick_captions(data, index, rng, args.cond_dropout))
        loss, per_stage = magnet_loss(
            lm,
            data.codes(index),
            conditions,
            stages,
            mask_rates(args.batch, generator, args.rate_power),
            generator,
            args.self_context,
        )
        terms = {f"stage{s}": ce / max(n, 1) for s, (ce, n) in per_stage.items()}
        return loss, {"loss": float(loss.detach()), **terms}

    def evaluate_fn(lm):
        metrics = evaluate(lm, data, args.eval_clips, args.batch)
        log.info(
            "held-out cross-entropy per stage (uniform = %.2f):\n%s",
            math.log(lm.card),
            format_eval(metrics, n_q),
        )
        return metrics

    return training_loop(
        args, lm, cfg, state, step_loss, evaluate_fn, lambda lm, cfg: export(lm, cfg, args.out, args.codec)
    )


# --- generation speed of candidate sizes ----------------------------------------------------------


def time_sizes(sizes: list[dict], codec: str | Path | None, runs: int = TIMING_RUNS) -> list[dict]:
    """Median ``Engine.decode`` time of 10 s at default settings (CFG: batch 2) for random-weight models.

    Each candidate is exported with a (random if missing) codec and loaded through ``load_model``.
    Reports wall time and CPU time (``process_time``, all threads): on a machine shared with other
    jobs the wall time says little, the single-thread CPU time stays comparable.
    """
    from magnet_demo.codec import build_codec, codec_config, save_codec
    from magnet_demo.controls import DecodingConfig
    from magnet_demo.engine import Engine
    from magnet_demo.models import load_model

    vocab = build_vocab([TIMING_PROMPT] * 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        codec_file = Path(codec or "") / COMPRESSION_FILE
        if not codec_file.is_file():
            codec_file = save_codec(build_codec(codec_config()), Path(tmp) / "codec")
        for size in sizes:
            folder = Path(tmp) / "x".join(str(v) for v in size.values())
            cfg = lm_config(vocab, size, DEFAULT_TEXT)
            export(build_lm(cfg), cfg, folder, codec_file)
            engine = Engine(load_model(str(folder), device="cpu"))
            params = sum(p.numel() for p in engine.lm.parameters())
            engine.decode([TIMING_PROMPT], DecodingConfig(), seed=0)  # warm-up
            walls, cpus = [], []
            for seed in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                engine.decode([TIMING_PROMPT], DecodingConfig(), seed=seed)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            row = {**size, "params_M": round(params / 1e6, 2), "threads": torch.get_num_threads()}
            row.update({"median_s": round(statistics.median(walls), 2), "min_s": round(min(walls), 2)})
            rows.append({**row, "cpu_s": round(statistics.median(cpus), 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _parse_size(text: str) -> dict:
    dim, layers, heads = (int(v) for v in text.split("x"))
    return {"dim": dim, "num_heads": heads, "num_layers": layers}


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["time"]:
        p = argparse.ArgumentParser(description="time 10 s generation of random-weight candidate sizes")
        p.add_argument("--sizes", default="256x6x4,256x4x4,192x6x4", help="DIMxLAYERSxHEADS,...")
        p.add_argument("--codec", default="assets/embedded")
        p.add_argument("--threads", type=int, default=2)
        args = p.parse_args(argv[1:])
        torch.set_num_threads(args.threads)
        time_sizes([_parse_size(s) for s in args.sizes.split(",")], args.codec)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(p, run_dir="runs/magnet", out="assets/embedded", minutes=70, batch=8)
    p.add_argument("--stage0", type=float, default=0.5, help="share of each batch on codebook stage 0")
    p.add_argument(
        "--rate-power",
        type=float,
        default=1.0,
        help="mask rates cos(u pi/2) with u = U(0,1) ** P: P > 1 favours high mask rates (1: the paper's)",
    )
    p.add_argument(
        "--self-context",
        type=float,
        default=0.0,
        help="share of the visible frames rewritten by the model's own samples (0: the paper's training)",
    )
    p.add_argument(
        "--positional", default=POSITIONAL, choices=("sin", "rope", "sin_rope"), help="position encoding"
    )
    args = p.parse_args(argv)
    if not args.rate_power > 0:
        p.error(f"--rate-power must be positive, got {args.rate_power}")
    if not 0 <= args.self_context <= 1:
        p.error(f"--self-context must be a share in [0, 1], got {args.self_context}")
    return train(args)


if __name__ == "__main__":
    main()
