"""The loader: clear errors, offline behaviour, our components."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE, magnet_lm_config, save_package
from magnet_demo.models import ModelLoadError, load_model, resolve_name


def test_hub_name_offline_gives_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", True
    )  # no retries against a closed network
    monkeypatch.setenv("AUDIOCRAFT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        load_model("facebook/magnet-small-10secs", device="cpu")
    message = str(info.value)
    assert "facebook/magnet-small-10secs" in message and "embedded" in message and "Traceback" not in message


def test_hub_rescorer_offline_gives_a_clear_error(monkeypatch, tmp_path):
    """``load_lm`` (rescorers) reads hub names like ``load_model``: cache first, then a clear error."""
    import huggingface_hub.constants

    from magnet_demo.models import load_lm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("AUDIOCRAFT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelLoadError, match="'facebook/musicgen-small'.*embedded"):
        load_lm("facebook/musicgen-small")


def test_unknown_name_and_incomplete_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="Unknown model"):
        resolve_name("no such model")
    (tmp_path / LM_FILE).write_bytes(b"")
    with pytest.raises(ModelLoadError, match=COMPRESSION_FILE):
        load_model(str(tmp_path))


def test_autoregressive_checkpoint_is_refused(tmp_path, tiny_folder):
    import shutil

    from magnet_demo.models import build_lm

    cfg = magnet_lm_config(
        lm_model="transformer_lm", card=64, dim=16, num_heads=2, num_layers=1, memory_efficient=False
    )
    save_package(build_lm(cfg).state_dict(), cfg, tmp_path / LM_FILE)
    shutil.copy(tiny_folder / COMPRESSION_FILE, tmp_path / COMPRESSION_FILE)
    with pytest.raises(ModelLoadError, match="not a MAGNeT checkpoint"):
        load_model(str(tmp_path))


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory mapping holds ``tensor``'s data (from /proc/self/maps), or None."""
    address = tensor.untyped_storage().data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(v, 16) for v in fields[0].split("-"))
            if start <= address < end:
                return fields[5] if len(fields) > 5 else None
    return None


def test_packages_are_memory_mapped_and_legacy_files_still_load(tmp_path, tiny_folder):
    """Checkpoints are read memory-mapped (one in-memory copy of the weights when the model loads
    them); a file in torch's legacy format, which cannot be mapped, is read into memory instead."""
    from magnet_demo.checkpoints import load_package

    path = tiny_folder / LM_FILE
    mapped = load_package(path)
    name, weights = next(iter(mapped["best_state"].items()))
    assert _mapped_file(weights) == str(path.resolve())
    assert _mapped_file(load_package(path, mmap=False)["best_state"][name]) != str(path.resolve())
    legacy = tmp_path / "legacy.bin"
    torch.save(mapped, legacy, _use_new_zipfile_serialization=False)
    again = load_package(legacy)
    assert again["xp.cfg"] == mapped["xp.cfg"] and torch.equal(again["best_state"][name], weights)


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_loading_without_random_init_gives_the_same_model(which, tiny_folder):
    """Models built for a checkpoint skip the random initialisation; every parameter and buffer
    (persistent or not) equals that of a randomly initialised model loaded with the same weights."""
    from itertools import chain

    from omegaconf import OmegaConf

    from magnet_demo.checkpoints import load_package
    from magnet_demo.models import EMBEDDED_DIR, build_lm, build_lm_for

    normal = torch.nn.init.normal_
    folder = tiny_folder if which == "tiny" else EMBEDDED_DIR
    package = load_package(folder / LM_FILE)
    cfg = OmegaConf.create(package["xp.cfg"])
    reference = build_lm(cfg)
    reference.load_state_dict(package["best_state"])
    loaded = build_lm_for(package["best_state"], cfg)
    assert torch.nn.init.normal_ is normal  # restored
    tensors = list(chain(reference.named_parameters(), reference.named_buffers()))
    own = dict(chain(loaded.named_parameters(), loaded.named_buffers()))
    assert len(tensors) == len(own) and len(tensors) > 10
    for name, tensor in tensors:
        assert torch.equal(own[name], tensor), name


def test_unreadable_checkpoint_gives_a_clear_error(tmp_path, tiny_folder):
    import shutil

    shutil.copy(tiny_folder / COMPRESSION_FILE, tmp_path / COMPRESSION_FILE)
    (tmp_path / LM_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=f"Could not read the checkpoint of '{tmp_path}'"):
        load_model(str(tmp_path))


def test_loaded_tiny_model(tiny_model):
    assert tiny_model.kind == "folder" and tiny_model.custom_parts == ()
    assert (tiny_model.sample_rate, tiny_model.frame_rate, tiny_model.max_duration) == (32000, 50, 12.0)
    assert tiny_model.lm.span_len == 3 and tiny_model.lm.subcodes_context == 5


def test_cached_hub_checkpoint_loads_offline(monkeypatch, tmp_path, tiny_folder):
    """A facebook/magnet-* name whose files sit in the Hub cache loads with no network at all."""
    import shutil

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("AUDIOCRAFT_CACHE_DIR", str(tmp_path))
    repo = tmp_path / "models--facebook--magnet-small-10secs"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    for name in (LM_FILE, COMPRESSION_FILE):
        shutil.copy(tiny_folder / name, snapshot / name)
    model = load_model("facebook/magnet-small-10secs", device="cpu")
    assert model.kind == "hub" and model.name == "facebook/magnet-small-10secs"
    assert model.max_duration == 12.0


def test_precision_choice():
    from magnet_demo.models import native_bfloat16_matmul, resolve_precision

    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cuda") == "bfloat16"
    assert resolve_precision("auto", "cuda") == "float32"
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native_bfloat16_matmul() else "float32")
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="precision"):
        load_model("embedded", device="cpu", precision="half")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_bfloat16_hardware_is_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, expected):
    """Intel AMX tiles and AVX-512 BF16 (AMD Zen 4/5) both make "auto" pick bfloat16 on the CPU."""
    from magnet_demo.models import native_bfloat16_matmul, resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert native_bfloat16_matmul() is expected
    assert resolve_precision("auto", "cpu") == ("bfloat16" if expected else "float32")


def test_bfloat16_weights_decode(tiny_folder, tiny_model):
    """bfloat16 weights give float32 records; the first step's confidences stay close to float32's."""
    from magnet_demo.controls import DecodingConfig
    from magnet_demo.engine import Engine

    model = load_model(str(tiny_folder), device="cpu", precision="bfloat16")
    assert model.precision == "bfloat16" and tiny_model.precision == "float32"
    assert {p.dtype for p in model.lm.parameters()} == {torch.bfloat16}
    config = DecodingConfig(decoding_steps=(2, 1, 1, 1), duration=2.0)
    low = next(Engine(model).steps(["a sad piano"], config, seed=0))
    full = next(Engine(tiny_model).steps(["a sad piano"], config, seed=0))
    assert low.confidence.dtype == np.float32 and low.scores.dtype == np.float32
    assert int(low.tokens[:, 0].max()) < tiny_model.lm.card  # stage 0 is sampled, the others still masked
    masked = ~np.isnan(full.confidence)
    assert np.array_equal(masked, ~np.isnan(low.confidence))
    same = low.tokens[:, 0][masked] == full.tokens[:, 0][masked]
    assert same.mean() > 0.5  # same seed: most sampled tokens agree despite rounding


def test_recommended_settings_of_hub_models():
    """audiocraft's demo samples its sound models at 3.5 / 0.8 / CFG 20, its music models at the defaults."""
    from magnet_demo.models import recommended_settings

    sound = {"temperature": 3.5, "top_p": 0.8, "max_cfg_coef": 20.0}
    assert recommended_settings("facebook/audio-magnet-small", "hub") == sound
    assert recommended_settings("facebook/audio-magnet-medium", "hub") == sound
    assert recommended_settings("facebook/magnet-small-10secs", "hub") == {}


def test_a_folder_recommends_its_sampling_settings_and_runs_start_from_them(tmp_path):
    import json

    from magnet_demo.engine import Engine
    from magnet_demo.models import SETTINGS_FILE
    from magnet_demo.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "m", seed=0)
    assert load_model(str(folder), device="cpu").settings == {}
    (folder / SETTINGS_FILE).write_text(json.dumps({"temperature": 2.0, "max_cfg_coef": 4.0}))
    model = load_model(str(folder), device="cpu")
    assert model.settings == {"temperature": 2.0, "max_cfg_coef": 4.0}
    config = model.default_config()
    assert (config.temperature, config.max_cfg_coef, config.top_p, config.min_cfg_coef) == (
        2.0,
        4.0,
        0.9,
        1.0,
    )
    first = next(Engine(model).steps(["a b"]))  # no config: the model's
    assert first.controls.temperature == 2.0 and first.controls.cfg.max_coef == 4.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"duration": 5}', "unknown settings \\['duration'\\]"),
        ('{"temperature": -1}', "temperature must be >= 0.0"),
        ("[2.0]", "JSON object"),
        ("temperature: 2", "Expecting value"),
    ],
)
def test_a_bad_settings_file_is_a_readable_load_error(tmp_path, text, message):
    from magnet_demo.models import SETTINGS_FILE
    from magnet_demo.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "m", seed=0)
    (folder / SETTINGS_FILE).write_text(text)
    with pytest.raises(ModelLoadError, match=f"Bad generation.json in '{folder}': .*{message}"):
        load_model(str(folder), device="cpu")
