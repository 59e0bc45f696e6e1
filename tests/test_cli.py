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


def _wav(path, seconds):
    import numpy as np

    t = np.arange(round(seconds * 32000)) / 32000
    sf.write(path, (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 32000)
    return str(path)


def _audio_in_run(tiny_folder, tmp_path, *extra):
    return main(
        [
            "a b",
            "--model",
            str(tiny_folder),
            "--duration",
            "2",
            "--steps",
            "2,1,1,1",
            "--out",
            str(tmp_path),
            *extra,
        ]
    )


def test_cli_continues_a_file(tiny_folder, tmp_path, capsys):
    from magnet_demo import audio_in
    from magnet_demo.models import load_model

    song = _wav(tmp_path / "song.wav", 1.0)
    assert _audio_in_run(tiny_folder, tmp_path, "--continue", song, "--keep", "0.5") == 0
    assert "note: Used the first 0.5 s of the 1 s audio." in capsys.readouterr().out
    records, info = load_trace(tmp_path / "trace.npz")
    assert info["continue"] == song and info["keep"] == 0.5
    given = records[-1].given
    assert given.shape == (1, 4, 99) and given[..., :25].all() and not given[..., 25:].any()
    # the kept half second is the codec's encoding of the file's first half second
    codes, _ = audio_in.audio_codes(load_model(str(tiny_folder)), song, duration=0.5)
    assert (records[-1].tokens[..., :25] == codes.numpy()[..., :25]).all()


def test_cli_inpaints_a_region_of_a_file(tiny_folder, tmp_path, capsys):
    song = _wav(tmp_path / "song.wav", 2.0)
    assert _audio_in_run(tiny_folder, tmp_path, "--inpaint", song, "--region", "0.7", "1.3") == 0
    assert "note: The region was widened to whole spans: 0.66-1.32 s." in capsys.readouterr().out
    records, info = load_trace(tmp_path / "trace.npz")
    assert info["inpaint"] == song and info["region"] == [0.66, 1.32]
    given = records[0].given[0, 0]
    assert not given[33:66].any() and given[:33].all() and given[66:].all()


def test_cli_audio_in_errors_are_messages(tiny_folder, tmp_path, capsys):
    import pytest

    song = _wav(tmp_path / "song.wav", 2.0)
    assert _audio_in_run(tiny_folder, tmp_path, "--inpaint", song, "--region", "1.2", "0.4") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The region 1.2-0.4 s is reversed") and "Traceback" not in err
    assert _audio_in_run(tiny_folder, tmp_path, "--continue", song, "--keep", "3") == 2
    assert capsys.readouterr().err.startswith("error: Keeping 3 s leaves nothing to generate")
    for extra, message in (
        (["--continue", song, "--inpaint", song], "argument --inpaint: not allowed with argument --continue"),
        (["--continue", song], "--continue FILE needs --keep SECONDS"),
        (["--inpaint", song, "--keep", "1"], "--inpaint FILE needs --region START END"),
        (["--region", "0", "1"], "--region goes with --inpaint FILE"),
    ):
        with pytest.raises(SystemExit) as stop:
            _audio_in_run(tiny_folder, tmp_path, *extra)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def _with_partner(tmp_path):
    """A tiny MAGNeT whose folder holds its own tiny AR partner (offered as its rescorer)."""
    from magnet_demo.tiny import write_tiny_checkpoint, write_tiny_rescorer

    folder = write_tiny_checkpoint(tmp_path / "model")
    write_tiny_rescorer(folder / "rescorer", folder)
    return str(folder)


def test_cli_orders_and_revision_reach_the_trace(tiny_folder, tmp_path):
    flags = ["--duration", "1", "--steps", "4,2,2,2", "--order", "entropy", "--revision", "0.25"]
    assert main(["a b", "--model", str(tiny_folder), *flags, "--out", str(tmp_path)]) == 0
    records, info = load_trace(tmp_path / "trace.npz")
    assert (info["config"]["unmasking_order"], info["config"]["revision_share"]) == ("entropy", 0.25)
    assert any(record.revised.any() for record in records)


def test_cli_autoregressive_and_hybrid_runs_write_audio(tmp_path, capsys):
    model = _with_partner(tmp_path)
    for method in ("autoregressive", "hybrid"):
        out = tmp_path / method
        flags = ["--method", method, "--prefix-seconds", "0.4", "--duration", "1", "--steps", "2,1,1,1"]
        assert main(["a b", "--model", model, *flags, "--seed", "3", "--out", str(out)]) == 0
        audio, rate = sf.read(out / "sample_0.wav")
        assert rate == 32000 and audio.shape == (48 * 640,)  # 50 frames trimmed to spans: 48
        assert f"{method}: " in capsys.readouterr().out and not (out / "trace.npz").exists()
    # a run is its seed's: the same seed writes the same audio, another seed other audio
    again, other = tmp_path / "again", tmp_path / "other"
    for seed, out in (("3", again), ("4", other)):
        flags = ["--method", "autoregressive", "--duration", "1", "--seed", seed, "--out", str(out)]
        assert main(["a b", "--model", model, *flags]) == 0
    first = sf.read(tmp_path / "autoregressive" / "sample_0.wav")[0]
    assert (first == sf.read(again / "sample_0.wav")[0]).all()
    assert not (first == sf.read(other / "sample_0.wav")[0]).all()


def test_cli_decodes_a_clip_longer_than_the_window_window_after_window(tiny_folder, tmp_path, capsys):
    flags = ["--duration", "20", "--overlap", "5", "--steps", "2,1,1,1", "--seed", "4"]
    assert main(["a b", "--model", str(tiny_folder), *flags, "--out", str(tmp_path)]) == 0
    audio, rate = sf.read(tmp_path / "sample_0.wav")
    assert audio.shape == (999 * 640,)  # 20 s cut to spans: windows [0, 600), [351, 951), [702, 999)
    records, info = load_trace(tmp_path / "trace.npz")
    assert len(records) == 15 and [r.window[:2] for r in records[::5]] == [(0, 3), (1, 3), (2, 3)]
    assert info["config"]["clip_seconds"] == 20.0
    assert "window 3/3" in capsys.readouterr().out
    bad = ["--duration", "20", "--continue", str(tmp_path / "sample_0.wav"), "--keep", "2"]
    assert main(["a b", "--model", str(tiny_folder), *bad, "--out", str(tmp_path / "x")]) == 2
    assert "--continue and --inpaint work within one window (12 s)" in capsys.readouterr().err
