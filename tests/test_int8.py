"""``--precision int8``: the language model's linear layers quantized by torch's dynamic quantization.

On seeded tiny models (``magnet_demo.tiny``): the load quantizes every ``nn.Linear`` of the
transformer and the output heads and nothing else, decoding gives valid tokens, the first step's
logits stay close to float32's, a paired rescorer follows the model into int8, and int8 is refused
off the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet_demo.controls import PRECISIONS, DecodingConfig
from magnet_demo.engine import Engine
from magnet_demo.models import load_model, quantized_linears, resolve_precision, stage_logits

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a sad piano"
CONFIG = DecodingConfig(decoding_steps=(2, 1, 1, 1), duration=2.0)
#: the first step's logits (stage 0, all masked) of int8 vs float32, relative max error
#: max |int8 - float32| / max |float32|: measured 0.018, 0.024 and 0.017 on the tiny models of
#: seeds 0, 1 and 2 (x86 engine); int8 rounds each weight to 1/254 of its tensor's range and each
#: input to 1/255 of its range, so a few percent after 2 layers is the expected size. The bound
#: leaves 2x room for other CPUs' kernels (fbgemm, oneDNN, qnnpack round differently).
LOGITS_RTOL = 0.05
#: ... and the largest total-variation distance between the two precisions' per-frame sampling
#: distributions (temperature 1): measured 0.010, 0.011 and 0.010. It bounds the chance that a
#: frame's sampled code changes with the precision (coupled sampling), so int8 keeps ~99% of them.
MAX_TOTAL_VARIATION = 0.03


@pytest.fixture(scope="module")
def int8_model(tiny_folder):
    return load_model(str(tiny_folder), device="cpu", precision="int8")


def first_step_logits(model) -> torch.Tensor:
    """Stage-0 logits ``[1, T, card]`` of an all-masked 2 s canvas conditioned on ``PROMPT``."""
    from audiocraft.modules.conditioners import ConditioningAttributes

    lm = model.lm
    tokens = torch.full((1, lm.num_codebooks, model.frames(CONFIG)), lm.special_token_id)
    names = list(lm.condition_provider.text_conditions)
    attributes = [ConditioningAttributes(text={name: PROMPT for name in names})]
    with torch.no_grad():
        conditions = lm.condition_provider(lm.condition_provider.tokenize(attributes))
        return stage_logits(lm, tokens, conditions, 0)


def test_resolve_int8():
    assert "int8" in PRECISIONS
    assert resolve_precision("int8", "cpu") == "int8"
    for device in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ValueError, match="runs on a CPU only"):
            resolve_precision("int8", device)
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, int8"):
        resolve_precision("int4", "cpu")
    assert resolve_precision("auto", "cpu") in ("float32", "bfloat16")  # auto never picks int8


def test_int8_refused_on_cuda_before_loading(tiny_folder):
    with pytest.raises(ValueError, match="'int8'.*CPU only.*cuda"):
        load_model(str(tiny_folder), device="cuda", precision="int8")


def test_cli_offers_int8():
    from magnet_demo.cli import build_parser

    assert build_parser().parse_args([PROMPT, "--precision", "int8"]).precision == "int8"


def test_int8_load_quantizes_the_linear_layers(int8_model, tiny_model):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    lm = int8_model.lm
    assert int8_model.precision == "int8" and tiny_model.precision == "float32"
    layers = len(lm.transformer.layers)
    # per layer: the self- and cross-attention output projections and the two feed-forward layers;
    # then one output head per codebook
    assert quantized_linears(lm) == 4 * layers + lm.num_codebooks
    assert quantized_linears(tiny_model.lm) == 0
    assert not any(type(m) is torch.nn.Linear for m in (*lm.transformer.modules(), *lm.linears.modules()))
    for layer in lm.transformer.layers:
        for module in (layer.self_attn.out_proj, layer.linear1, layer.linear2):
            assert isinstance(module, DynamicQuantizedLinear)
        # audiocraft's custom attention projects q, k, v with a bare parameter: it stays float32
        assert layer.self_attn.in_proj_weight.dtype == torch.float32
    assert {p.dtype for p in lm.parameters()} == {torch.float32}  # what is left: embeddings, norms, ...
    assert int8_model.device == torch.device("cpu")


def test_int8_decodes_valid_tokens(int8_model, tiny_model):
    result = Engine(int8_model).decode([PROMPT], CONFIG, seed=0)
    reference = Engine(tiny_model).decode([PROMPT], CONFIG, seed=0)
    assert result.tokens.shape == reference.tokens.shape
    assert int(result.tokens.min()) >= 0 and int(result.tokens.max()) < int8_model.lm.card  # no mask ids
    assert len(result.records) == sum(CONFIG.decoding_steps)
    assert result.audio.shape == reference.audio.shape and np.isfinite(result.audio).all()
    first = result.records[0]
    assert first.confidence.dtype == np.float32 and first.scores.dtype == np.float32


def test_int8_first_step_logits_close_to_float32(int8_model, tiny_model):
    low, full = first_step_logits(int8_model), first_step_logits(tiny_model)
    error = float((low - full).abs().max() / full.abs().max())
    assert 1e-4 < error < LOGITS_RTOL  # really quantized, and close
    total_variation = 0.5 * (low.softmax(-1) - full.softmax(-1)).abs().sum(-1)
    assert float(total_variation.max()) < MAX_TOTAL_VARIATION


def test_rescorer_follows_the_model_into_int8(tiny_pair):
    """A named rescorer paired with an int8 model is quantized too; its probabilities stay float32
    and within 0.01 of float32's (measured: at most 0.0024, for probabilities up to 0.098)."""
    from magnet_demo.rescoring import LMRescorer, pair_rescorer

    model32 = load_model(str(tiny_pair["magnet"]), device="cpu")
    model8 = load_model(str(tiny_pair["magnet"]), device="cpu", precision="int8")
    rescorer8 = pair_rescorer(model8, str(tiny_pair["ar"]))
    rescorer32 = pair_rescorer(model32, str(tiny_pair["ar"]))
    assert quantized_linears(rescorer8.lm) > 0 and quantized_linears(rescorer32.lm) == 0
    tokens = Engine(model32).decode([PROMPT], CONFIG, seed=0, with_audio=False).tokens
    probs8, probs32 = rescorer8.token_probs(tokens, [PROMPT]), rescorer32.token_probs(tokens, [PROMPT])
    assert probs8.dtype == torch.float32
    assert not torch.equal(probs8, probs32)  # it really ran in int8
    assert float((probs8 - probs32).abs().max()) < 0.01
    with pytest.raises(ValueError, match="CPU only"):
        LMRescorer.load(str(tiny_pair["ar"]), "cuda", precision="int8")
