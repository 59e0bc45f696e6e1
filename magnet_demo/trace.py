"""A run's records to a compact ``.npz`` (plus JSON metadata) and back.

Per-step arrays are stacked along a leading step axis ``S``: ``tokens [S, B, K, T]`` int16,
``mask_before`` / ``mask_after`` ``[S, B, T]`` bool, ``confidence`` ``[S, B, T]`` float32,
``scores [S, B, 1, N]``, ``rng_state [S, L]`` uint8, and one array per scalar field; a run with
given tokens adds ``given [S, B, K, T]`` bool (all False on records without), a run of the
decoding lab ``written [S, B, K, T]`` bool (its autoregressive records'; ``scores`` are then
stored a step each, ``scores_<s>``, when the steps differ in units). The live
controls of every step, the decoding config, prompts, seed and model name go into a JSON string
stored in the archive (key ``meta``) and, when asked, into a ``.json`` file beside it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from magnet_demo.controls import ControlValues, DecodingConfig
from magnet_demo.records import DecodeResult, StepRecord, frozen_array
from magnet_demo.schedules import CFGSchedule

TRACE_VERSION = 1
#: the key prefix of a step's ``fixed_scores`` (runs with revision): ``fixed_scores_3``
FIXED_SCORES = "fixed_scores_"
#: the key prefix of a step's ``scores`` when steps differ in units (a Hybrid run): ``scores_3``
SCORES = "scores_"
_ARRAYS = ("tokens", "mask_before", "mask_after", "confidence", "rng_state")
_SCALARS = (
    "stage",
    "step",
    "steps_in_stage",
    "global_step",
    "total_steps",
    "mask_rate",
    "num_masked",
    "num_units",
    "cfg_coef",
    "temperature",
    "rescore_weight",
    "mask_id",
    "step_seconds",
    "elapsed",
)


def _controls_to_json(values: ControlValues) -> dict[str, Any]:
    cfg = dataclasses.asdict(values.cfg)
    cfg["points"] = list(cfg["points"])
    return {"cfg": cfg, "temperature": values.temperature, "rescore_weight": values.rescore_weight}


def _controls_from_json(data: dict[str, Any]) -> ControlValues:
    cfg = dict(data["cfg"])
    cfg["points"] = tuple(cfg["points"])
    return ControlValues(CFGSchedule(**cfg), data["temperature"], data["rescore_weight"])


def save_trace(
    run: DecodeResult | Sequence[StepRecord],
    path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    json_sidecar: bool = False,
) -> Path:
    """Write the records of ``run`` (a result, or a list of records) to ``path`` (.npz)."""
    records = run.records if isinstance(run, DecodeResult) else tuple(run)
    if not records:
        raise ValueError("No steps to save: the run has no records.")
    info: dict[str, Any] = {"version": TRACE_VERSION, **(meta or {})}
    if isinstance(run, DecodeResult):
        config = dataclasses.asdict(run.config)
        info.update(config=config, prompts=list(run.prompts), seed=run.seed, cancelled=run.cancelled)
        info.setdefault("sample_rate", run.sample_rate)
        info.setdefault("resumed_from", run.resumed_from)
    info["controls"] = [_controls_to_json(r.controls) for r in records]
    arrays = {name: np.stack([getattr(r, name) for r in records]) for name in _ARRAYS}
    arrays.update(_lab_arrays(records, info))
    for name in _SCALARS:
        arrays[name] = np.asarray([getattr(r, name) for r in records])
    if all(r.rescorer_confidence is not None for r in records):
        arrays["rescorer_confidence"] = np.stack([r.rescorer_confidence for r in records])
    else:
        # NaN marks steps that ran without a rescorer
        shape = records[0].confidence.shape
        arrays["rescorer_confidence"] = np.stack(
            [
                np.full(shape, np.nan, np.float32) if r.rescorer_confidence is None else r.rescorer_confidence
                for r in records
            ]
        )
        info["rescored_steps"] = [r.rescorer_confidence is not None for r in records]
    if any(np.any(r.revised) for r in records):  # a run with revision; others store nothing more
        arrays["revised"] = np.stack([r.revised for r in records])
    for s, record in enumerate(records):  # one array a step: their shapes differ at a stage's start
        if record.fixed_scores is not None:
            arrays[f"{FIXED_SCORES}{s}"] = record.fixed_scores
    if any(r.given is not None for r in records):
        none = np.zeros(records[0].tokens.shape, np.bool_)
        arrays["given"] = np.stack([none if r.given is None else r.given for r in records])
        info["given_steps"] = [r.given is not None for r in records]
    text = json.dumps(info, default=str)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, meta=np.asarray(text), **arrays)
    if json_sidecar:
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    return path


def load_trace(path: str | Path) -> tuple[list[StepRecord], dict[str, Any]]:
    """Read a trace: the records (equal, field for field, to the saved ones) and the metadata."""
    with np.load(Path(path), allow_pickle=False) as data:
        info = json.loads(str(data["meta"]))
        if info.get("version") != TRACE_VERSION:
            raise ValueError(
                f"Unsupported trace version {info.get('version')} (this build reads {TRACE_VERSION})."
            )
        arrays = {name: data[name] for name in data.files if name != "meta"}
    rescored = info.get("rescored_steps")
    given_steps = info.get("given_steps") or [False] * len(info["controls"])
    records = []
    shared: np.ndarray | None = None  # records of one run share one given array, as they did
    for s, controls in enumerate(info["controls"]):
        fields: dict[str, Any] = {name: frozen_array(arrays[name][s]) for name in _ARRAYS}
        fields.update(_lab_fields(arrays, info, s))
        for name in _SCALARS:
            fields[name] = arrays[name][s].item()
        has_rescorer = rescored[s] if rescored is not None else True
        fields["rescorer_confidence"] = (
            frozen_array(arrays["rescorer_confidence"][s]) if has_rescorer else None
        )
        fields["controls"] = _controls_from_json(controls)
        fields.update(_revision_fields(arrays, s))
        if given_steps[s]:
            if shared is None or not np.array_equal(shared, arrays["given"][s]):
                shared = frozen_array(arrays["given"][s], np.bool_)
            fields["given"] = shared
        records.append(StepRecord(**fields))
    return records, info


def _lab_arrays(records: Sequence[StepRecord], info: dict[str, Any]) -> dict[str, np.ndarray]:
    """``scores`` (stacked, or a step each when their shapes differ), ``written`` and ``window``;
    notes in ``info``."""
    arrays = {}
    if len({r.scores.shape for r in records}) == 1:
        arrays["scores"] = np.stack([r.scores for r in records])
    else:
        arrays.update({f"{SCORES}{s}": r.scores for s, r in enumerate(records)})
    if any(r.window is not None for r in records):  # a long clip: each step's window
        arrays["window"] = np.asarray([r.window or (-1, -1, -1, -1) for r in records], dtype=np.int64)
    if any(r.written is not None for r in records):
        none = np.zeros(records[0].tokens.shape, np.bool_)
        arrays["written"] = np.stack([none if r.written is None else r.written for r in records])
        info["written_steps"] = [r.written is not None for r in records]
    return arrays


def _lab_fields(arrays: dict[str, np.ndarray], info: dict[str, Any], s: int) -> dict[str, Any]:
    """Step ``s``'s ``scores``, ``written`` and ``window`` (see :func:`_lab_arrays`)."""
    scores = arrays["scores"][s] if "scores" in arrays else arrays[f"{SCORES}{s}"]
    fields: dict[str, Any] = {"scores": frozen_array(scores)}
    if "window" in arrays and arrays["window"][s][0] >= 0:
        fields["window"] = tuple(int(v) for v in arrays["window"][s])
    if (info.get("written_steps") or [False] * (s + 1))[s]:
        fields["written"] = frozen_array(arrays["written"][s], np.bool_)
    return fields


def _revision_fields(arrays: dict[str, np.ndarray], s: int) -> dict[str, Any]:
    """Step ``s``'s ``revised`` and ``fixed_scores`` (absent from traces of runs without revision)."""
    fields: dict[str, Any] = {}
    if "revised" in arrays:
        fields["revised"] = frozen_array(arrays["revised"][s], np.bool_)
    if f"{FIXED_SCORES}{s}" in arrays:
        fields["fixed_scores"] = frozen_array(arrays[f"{FIXED_SCORES}{s}"])
    return fields


def config_from_trace(info: dict[str, Any]) -> DecodingConfig:
    """The DecodingConfig a trace was made with."""
    if "config" not in info:
        raise ValueError("This trace has no decoding config (it was saved from bare records).")
    return DecodingConfig(**info["config"])
