"""Command-line generation on a tiny exported checkpoint."""

from __future__ import annotations

import soundfile as sf

from magnet_demo.cli import main
from magnet_demo.trace import load_trace


def test_cli_writes_wav_and_trace(tiny_folder, tmp_path, capsys):
    code = main(
        [
            "a b",
            "--model",
            str(tiny_folder),
            "--duration",
            "0.5",
            "--steps",
            "2,1,1,1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    audio, rate = sf.read(tmp_path / "sample_0.wav")
    assert rate == 32000 and audio.shape == (24 * 640,)  # 25 frames trimmed to 24
    records, info = load_trace(tmp_path / "trace.npz")
    assert len(records) == 5 and info["prompts"] == ["a b"]
    assert capsys.readouterr().out.count("step ") >= 5


def test_cli_bad_settings_are_a_message_not_a_traceback(tiny_folder, tmp_path, capsys):
    assert main(["x", "--model", str(tiny_folder), "--steps", "2,1,1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: decoding_steps has 3 entries") and "Traceback" not in err


def test_cli_starts_from_the_models_recommended_settings(tiny_folder, tmp_path):
    """A folder's generation.json sets what the flags leave out; a flag wins over it."""
    import json
    import shutil

    from magnet_demo.models import SETTINGS_FILE

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    (folder / SETTINGS_FILE).write_text(json.dumps({"temperature": 2.0, "top_p": 0.5}))
    common = ["a b", "--model", str(folder), "--duration", "0.5", "--steps", "1,1,1,1"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--top-p", "0.7", "--out", str(tmp_path / "two")]) == 0
    for out, top_p in (("one", 0.5), ("two", 0.7)):
        records, info = load_trace(tmp_path / out / "trace.npz")
        assert records[0].controls.temperature == 2.0
        assert info["config"]["top_p"] == top_p
