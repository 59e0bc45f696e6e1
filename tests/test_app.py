"""``app.py``'s command line and the hosting choices behind it (Spaces variables, device, model)."""

from __future__ import annotations

import pytest

import app
from magnet_demo import hosting
from magnet_demo.model_cache import ModelCache
from magnet_demo.workers import InProcessWorker, ProcessWorker, ZeroGPUWorker


def test_defaults():
    args = app.parse_args([])
    assert (args.host, args.port, args.model, args.device, args.worker, args.precision) == (
        None,
        None,
        "auto",
        "auto",
        "auto",
        "auto",
    )


def test_precision_choices(capsys):
    assert app.parse_args(["--precision", "float32"]).precision == "float32"
    with pytest.raises(SystemExit):
        app.parse_args(["--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_server_address_flags_then_spaces_variables_then_localhost():
    spaces = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861", "SYSTEM": "spaces"}
    assert hosting.server_address(None, None, {}) == ("127.0.0.1", 7860)
    assert hosting.server_address(None, None, spaces) == ("0.0.0.0", 7861)
    assert hosting.server_address("127.0.0.2", 9000, spaces) == ("127.0.0.2", 9000)
    with pytest.raises(ValueError, match="GRADIO_SERVER_PORT must be a port number"):
        hosting.server_address(None, None, {"GRADIO_SERVER_PORT": "http"})
    assert hosting.on_spaces(spaces) and not hosting.on_spaces({})
    assert hosting.on_zero_gpu({"SPACES_ZERO_GPU": "true"}) and not hosting.on_zero_gpu(spaces)


def test_auto_model_needs_a_gpu_and_the_checkpoint():
    always, never = (lambda name: True), (lambda name: False)
    assert hosting.choose_model("auto", "cuda", always).name == hosting.GPU_MODEL
    on_cpu = hosting.choose_model("auto", "cpu", always)
    assert on_cpu.name == "embedded" and "no GPU" in on_cpu.reason
    offline = hosting.choose_model("auto", "cuda", never)
    assert offline.name == "embedded" and "cannot be reached" in offline.reason
    assert hosting.choose_model("some/folder", "cpu", never).name == "some/folder"


def test_device_auto_is_the_cpu_here_and_cuda_is_refused():
    assert hosting.resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        hosting.resolve_device("cuda")


def test_worker_choice():
    models = ModelCache()

    def fake_gpu(duration):
        return lambda fn: fn

    assert isinstance(app.make_worker("auto", models, None, None), InProcessWorker)
    assert isinstance(app.make_worker("auto", models, None, fake_gpu), ZeroGPUWorker)
    spawned = app.make_worker("spawn", models, None, None)
    assert isinstance(spawned, ProcessWorker) and spawned.description == "in a worker process (spawn)"


def test_the_flags_defaults_are_the_modules_defaults():
    from magnet_demo.budgets import FileBudget
    from magnet_demo.controls import Limits
    from magnet_demo.model_cache import ModelCache

    args = app.parse_args([])
    assert (args.max_steps, args.keep_runs, args.max_models) == (
        Limits().max_steps,
        FileBudget().keep_runs,
        ModelCache().max_models,
    )
    assert (args.model_root, args.allow_any_model) == ([], False)
    assert app.parse_args(["--model-root", "/a", "--model-root", "/b"]).model_root == ["/a", "/b"]


@pytest.mark.parametrize(
    "flag",
    ["--max-steps", "--keep-runs", "--keep-runs-per-session", "--max-models", "--queue-size", "--max-work",
     "--max-run-seconds", "--memory-mb"],
)  # fmt: skip
def test_limits_below_one_are_refused(flag, capsys):
    with pytest.raises(SystemExit):
        app.parse_args([flag, "0"])
    assert "must be more than 0" in capsys.readouterr().err
