"""``python -m magnet_demo.train.all --quick`` end to end: corpus, codec, tokens, MAGNeT, rescorer, classifier."""

from __future__ import annotations

import pytest

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE

#: training seconds per trained step: enough for a few optimiser steps of each micro model
TRAIN_SECONDS = 2


@pytest.mark.slow
def test_quick_retraining_produces_a_loadable_model(tmp_path):
    from magnet_demo.controls import DecodingConfig
    from magnet_demo.engine import Engine
    from magnet_demo.models import load_lm, load_model
    from magnet_demo.train import all as train_all
    from magnet_demo.train.classifier import load_classifier

    folder = tmp_path / "model"
    seconds = train_all.main(["--quick", "--out", str(folder), "--quick-seconds", str(TRAIN_SECONDS)])
    assert list(seconds) == list(train_all.STEPS)
    for path in (folder / LM_FILE, folder / COMPRESSION_FILE, folder / "rescorer" / LM_FILE):
        assert path.is_file()
    assert (folder / "rescorer" / COMPRESSION_FILE).is_file()  # the rescorer folder stands alone

    model = load_model(str(folder), device="cpu")
    assert model.sample_rate == 16_000 and model.num_codebooks == 4
    assert set(model.custom_parts) == {"codec", "conditioner"}
    config = DecodingConfig(duration=0.3, decoding_steps=(2, 1, 1, 1))
    result = Engine(model).decode(["a fast piano tune at 120 bpm"], config, seed=0)
    assert result.tokens.shape == (1, 4, 15)
    assert result.audio.shape[-1] > 0 and result.sample_rate == 16_000

    rescorer = load_lm(str(folder / "rescorer"))
    assert type(rescorer).__name__ == "LMModel" and rescorer.card == model.lm.card
    load_classifier(tmp_path / "classifier.pt")

    # a second call skips every step whose output exists
    assert train_all.main(["--quick", "--out", str(folder)]) == {}


def test_full_run_continues_decoder_and_magnet_in_legs(monkeypatch, tmp_path):
    """The full run's decoder and MAGNeT steps train their first leg, then each further leg from
    the weights exported so far, in its own run folder with its own budget (trainers recorded)."""
    from magnet_demo.train import all as train_all
    from magnet_demo.train import train_codec, train_magnet

    calls = []
    monkeypatch.setattr(train_codec, "main", lambda argv: calls.append(("codec", argv)))
    monkeypatch.setattr(train_magnet, "main", lambda argv: calls.append(("magnet", argv)))
    monkeypatch.setattr(
        train_all, "FURTHER_LEGS", {"decoder": ((3.0, ["--lr", "1e-4"]),), "magnet": ((5.0, []),)}
    )
    out, runs = tmp_path / "model", tmp_path / "runs"
    train_all.main(["--out", str(out), "--runs", str(runs), "--only", "decoder,magnet"])

    def option(argv, name):
        return argv[len(argv) - 1 - argv[::-1].index(name) + 1]  # the last one given wins

    assert [(who, option(a, "--run-dir"), option(a, "--minutes")) for who, a in calls] == [
        ("codec", str(runs / "decoder"), str(train_all.FULL_MINUTES["decoder"])),
        ("codec", str(runs / "decoder_2"), "3.0"),
        ("magnet", str(runs / "magnet"), str(train_all.FULL_MINUTES["magnet"])),
        ("magnet", str(runs / "magnet_2"), "5.0"),
    ]
    assert [option(a, "--init") for _, a in calls[:2]] == [str(out), str(out)]
    assert [option(a, "--lr") for _, a in calls[:2]] == ["5e-4", "1e-4"]
    assert "--init" not in calls[2][1] and option(calls[3][1], "--init") == str(out)
    assert [option(a, "--device") for _, a in calls] == ["auto"] * 4  # every trainer follows --device
    # the MAGNeT step is done only when its last leg is: a finished first leg does not skip it
    for leg in ("magnet", "magnet_2"):
        calls.clear()
        (runs / leg).mkdir(parents=True, exist_ok=True)
        (runs / leg / "metrics.json").write_text("{}")
        train_all.main(["--out", str(out), "--runs", str(runs), "--only", "magnet"])
        assert len(calls) == (2 if leg == "magnet" else 0)


# --- the training objective and loop (fast) ---------------------------------------------------------


def test_resolve_device_takes_cpu_or_cuda_and_explains_what_it_cannot_use():
    import torch

    from magnet_demo.train.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'gpu' is not a device name"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="run on cpu or cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda:0")


def test_training_precision_autocasts_on_gpus_with_bfloat16_and_otherwise_follows_the_app(monkeypatch):
    import torch

    from magnet_demo.models import resolve_precision
    from magnet_demo.train.device import training_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for precision in ("auto", "float32", "bfloat16"):
        assert training_precision(precision, cpu) == resolve_precision(precision, "cpu")
    for supported, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert training_precision("auto", gpu) == expected
        assert training_precision("float32", gpu) == "float32"  # an explicit choice is kept
    with pytest.raises(ValueError, match="precision must be one of"):
        training_precision("fp8", cpu)


TRAINER_DATA = {"train_magnet": ["--tokens", "synthetic"], "train_rescorer": ["--tokens", "synthetic"]}


@pytest.mark.parametrize("trainer", ["train_magnet", "train_rescorer", "train_codec"])
def test_trainers_refuse_an_unusable_device_before_any_work(trainer, tmp_path, capsys):
    import importlib

    module = importlib.import_module(f"magnet_demo.train.{trainer}")
    with pytest.raises(SystemExit):
        module.main(
            [*TRAINER_DATA.get(trainer, []), "--quick", "--run-dir", str(tmp_path / "run"), "--device", "gpu"]
        )
    assert "--device 'gpu' is not a device name" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_full_run_refuses_an_unusable_device_before_its_first_step(tmp_path, capsys):
    from magnet_demo.train import all as train_all

    with pytest.raises(SystemExit):
        train_all.main(["--quick", "--out", str(tmp_path / "model"), "--device", "gpu"])
    assert "--device 'gpu' is not a device name" in capsys.readouterr().err
    assert not (tmp_path / "quick_data").exists() and not (tmp_path / "model").exists()


def test_span_mask_reaches_the_rate_with_spans_of_three():
    import torch

    from magnet_demo.train.train_magnet import span_mask

    rates = torch.tensor([0.0, 0.01, 0.3, 0.5, 0.9, 1.0])
    mask = span_mask(rates, 500, 3, torch.Generator().manual_seed(0))
    counts = mask.sum(1)
    targets = (rates * 500).round().clamp(min=1)
    assert ((counts >= targets) & (counts <= targets + 2)).all()  # a span adds at most 3 frames
    assert counts[0] == 3 and bool(mask[-1].all())
    padded = torch.nn.functional.pad(mask.int(), (1, 1))
    starts, ends = (padded.diff(dim=1) == 1).nonzero(), (padded.diff(dim=1) == -1).nonzero()
    assert ((ends[:, 1] - starts[:, 1]) >= 3).all()  # every masked run is at least one span


def test_mask_rates_power_favours_high_mask_rates():
    import math

    import torch

    from magnet_demo.train.train_magnet import mask_rates

    draws = torch.rand(4000, generator=torch.Generator().manual_seed(3))
    paper = mask_rates(4000, torch.Generator().manual_seed(3))
    assert torch.equal(paper, torch.cos(draws * math.pi / 2))  # power 1: the paper's schedule
    biased = mask_rates(4000, torch.Generator().manual_seed(3), power=2.0)
    assert torch.equal(biased, torch.cos(draws**2 * math.pi / 2))
    # P(rate > 0.7) = P(u < acos(0.7) / (pi / 2) = 0.506): 0.506 for the paper's u, 0.712 with power 2
    assert abs(float((paper > 0.7).float().mean()) - 0.506) < 0.03
    assert abs(float((biased > 0.7).float().mean()) - 0.712) < 0.03


def test_batch_stages_weights_stage_zero():
    import numpy as np

    from magnet_demo.train.train_magnet import batch_stages

    stages = batch_stages(8, 0.5, 4, np.random.default_rng(0))
    assert stages[:4].tolist() == [0] * 4 and len(set(stages[4:].tolist())) == 1 and stages[4] > 0


def test_magnet_loss_only_scores_masked_tokens_of_the_stage():
    import torch

    from magnet_demo.models import build_lm
    from magnet_demo.train.train_magnet import (
        QUICK_SIZE,
        QUICK_TEXT,
        condition_tensors,
        lm_config,
        magnet_loss,
    )

    torch.manual_seed(0)
    lm = build_lm(lm_config(["fast", "piano"], QUICK_SIZE, QUICK_TEXT))
    codes = torch.randint(0, 256, (2, 4, 30))
    conditions = condition_tensors(lm, ["fast piano", None])
    stages, rates = torch.tensor([0, 2]), torch.tensor([0.5, 0.5])
    loss, per_stage = magnet_loss(lm, codes, conditions, stages, rates, torch.Generator().manual_seed(0))
    assert set(per_stage) == {0, 2} and all(15 <= n <= 17 for _, n in per_stage.values())
    loss.backward()
    assert lm.linears[0].weight.grad.abs().sum() > 0 and lm.linears[2].weight.grad.abs().sum() > 0
    assert lm.linears[1].weight.grad is None or lm.linears[1].weight.grad.abs().sum() == 0


def test_self_context_rewrites_only_visible_spans_with_the_models_own_samples():
    """--self-context: a share of the visible frames of the stage is rewritten by what the model
    samples there with them masked; masked frames, other stages and the rest stay; share 0 is a no-op."""
    import torch

    from magnet_demo.models import build_lm, stage_logits
    from magnet_demo.train.train_magnet import (
        QUICK_SIZE,
        QUICK_TEXT,
        condition_tensors,
        lm_config,
        self_context,
        span_mask,
    )

    torch.manual_seed(0)
    lm = build_lm(lm_config(["fast", "piano"], QUICK_SIZE, QUICK_TEXT)).eval()
    T, stage, mask_id = 60, 1, lm.special_token_id
    codes = torch.randint(0, 256, (2, 4, T))
    masked = span_mask(torch.tensor([0.5, 0.2]), T, 3, torch.Generator().manual_seed(1))
    sequence = codes.clone()
    sequence[:, stage][masked] = mask_id
    sequence[:, stage + 1 :] = mask_id
    conditions = condition_tensors(lm, ["fast piano", None])
    out = self_context(lm, sequence, masked, conditions, stage, 0.4, torch.Generator().manual_seed(2))
    changed = out[:, stage] != sequence[:, stage]  # [2, T]
    assert not changed[masked].any() and (out[:, stage][masked] == mask_id).all()
    assert torch.equal(out[:, :stage], sequence[:, :stage]) and torch.equal(
        out[:, stage + 1 :], sequence[:, stage + 1 :]
    )
    visible = (~masked).sum(1)
    assert all(0 < int(n) <= int(v) for n, v in zip(changed.sum(1), visible, strict=True))
    # the rewritten frames hold the Gumbel-max sample of the model's logits with them masked
    generator = torch.Generator().manual_seed(2)
    rewrite = span_mask(torch.full((2,), 0.4), T, 3, generator) & ~masked
    probe = sequence.clone()
    probe[:, stage][rewrite] = mask_id
    with torch.no_grad():
        logits = stage_logits(lm, probe, conditions, stage).float()
    noise = torch.rand(logits.shape, generator=generator)
    expected = (logits - torch.log(-torch.log(noise.clamp_min(1e-9)))).argmax(-1)
    assert torch.equal(out[:, stage][rewrite], expected[rewrite])
    assert torch.equal(out[:, stage][~rewrite], sequence[:, stage][~rewrite])
    assert self_context(lm, sequence, masked, conditions, stage, 0.0, generator) is sequence


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_self_context_outside_zero_one_is_refused(value, tmp_path, capsys):
    from magnet_demo.train import train_magnet

    with pytest.raises(SystemExit):
        train_magnet.main(
            ["--tokens", "synthetic", "--quick", "--run-dir", str(tmp_path / "run"), "--self-context", value]
        )
    assert f"--self-context must be a share in [0, 1], got {float(value)}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_at_a_fixed_mask_rate_of_one_scores_the_caption_alone():
    import torch
    import torch.nn.functional as F

    from magnet_demo.models import build_lm, stage_logits
    from magnet_demo.train.train_magnet import (
        QUICK_SIZE,
        QUICK_TEXT,
        condition_tensors,
        evaluate,
        lm_config,
        synthetic_data,
    )

    torch.manual_seed(0)
    data = synthetic_data()
    lm = build_lm(lm_config(data.train_captions(), QUICK_SIZE, QUICK_TEXT)).eval()
    full = evaluate(lm, data, n_clips=2, batch=2, rate=1.0, n_stages=1)
    assert set(full) == {"true/stage0", "null/stage0", "swapped/stage0"}
    # every stage-0 token masked, codebooks above too: only the caption is left to predict from
    codes = data.codes(data.test[:2])
    canvas = torch.full_like(codes, lm.special_token_id)
    conditions = condition_tensors(lm, [data.captions[i][0] for i in data.test[:2]])
    with torch.no_grad():
        logits = stage_logits(lm, canvas, conditions, 0)  # [2, T, card]
    expected = F.cross_entropy(logits.reshape(-1, lm.card).float(), codes[:, 0].reshape(-1))
    assert abs(full["true/stage0"] - float(expected)) < 1e-3
    assert evaluate(lm, data, n_clips=2, batch=2, rate=0.2)["true/stage0"] != full["true/stage0"]


def test_learning_rate_warms_up_holds_then_decays():
    from magnet_demo.train.train_magnet import learning_rate

    assert learning_rate(1e-3, 0, 0.0, warmup=100, decay=0.2) == 1e-5
    assert learning_rate(1e-3, 500, 0.5, warmup=100, decay=0.2) == 1e-3
    assert learning_rate(1e-3, 500, 0.9, warmup=100, decay=0.2) < 1e-3
    assert abs(learning_rate(1e-3, 500, 1.0, warmup=100, decay=0.2) - 1e-4) < 1e-9


def test_training_resumes_and_exports(tmp_path):
    import json

    from magnet_demo.models import load_lm
    from magnet_demo.train import train_magnet, train_rescorer

    def args(run: str, minutes: float, *extra: str) -> list[str]:
        folders = ["--run-dir", str(tmp_path / run), "--out", str(tmp_path / run / "export")]
        return [
            "--tokens",
            "synthetic",
            "--quick",
            "--codec",
            "none",
            *folders,
            "--minutes",
            str(minutes),
            *extra,
        ]

    first = train_magnet.main(args("run", 0.03, "--self-context", "0.3"))
    # a budget beyond the time already spent (however slow the machine): at least one more step
    more = first["minutes"] + 0.03
    second = train_magnet.main(args("run", more, "--resume"))
    assert second["step"] > first["step"] and second["minutes"] >= more
    assert set(second) >= {"true/stage0", "null/stage0", "swapped/stage3"}
    assert len((tmp_path / "run" / "eval.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == second["step"]
    # --init starts a new run from the exported weights and config
    assert train_magnet.main(args("run2", 0.01, "--init", str(tmp_path / "run" / "export")))["step"] >= 1
    # --init-partial: the arguments' config, the matching tensors of a run state
    grown = train_magnet.main(args("run3", 0.01, "--init-partial", str(tmp_path / "run" / "last.pt")))
    assert grown["step"] >= 1
    rescorer = train_rescorer.main(args("ar", 0.01))
    assert rescorer["step"] >= 1 and type(load_lm(str(tmp_path / "ar" / "export"))).__name__ == "LMModel"
