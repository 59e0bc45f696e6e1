"""``app.py``'s command line: defaults and refused values."""

from __future__ import annotations

import pytest

import app


def test_defaults():
    args = app.parse_args([])
    assert (args.host, args.port, args.model, args.precision) == ("127.0.0.1", 7860, "embedded", "auto")


def test_precision_choices(capsys):
    assert app.parse_args(["--precision", "float32"]).precision == "float32"
    with pytest.raises(SystemExit):
        app.parse_args(["--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
