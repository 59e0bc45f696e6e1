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
