"""Helpers shared by the ``bench`` scripts whose JSON figures ship in ``assets/``."""

from __future__ import annotations

import pytest

from bench.eval_embedded import evenly_spread, model_label
from bench.sampling_sweep import parse_setting
from magnet_demo.models import EMBEDDED_DIR


def test_model_label_names_a_folder_inside_the_repository_relative_to_it(tmp_path):
    assert model_label(str(EMBEDDED_DIR)) == "assets/embedded"
    assert model_label(str(tmp_path)) == str(tmp_path)


def test_parse_setting_reads_numbers_and_refuses_what_is_not_key_value():
    assert parse_setting("default") == {}
    assert parse_setting("temperature=2.5, top_k=50") == {"temperature": 2.5, "top_k": 50}
    with pytest.raises(ValueError, match="'top_k' is not KEY=VALUE"):
        parse_setting("temperature=2.5,top_k")


def test_evenly_spread_keeps_both_ends_and_steps_evenly_between():
    assert evenly_spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spread(["a", "b", "c"], 1) == ["a"]
