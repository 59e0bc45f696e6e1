"""The data the browser draws the token canvas and the schedules from: one run as NDJSON text.

The page draws every picture itself (``assets/canvas.js``); the server only sends what changed.
A :class:`CanvasFeed` is the run's text, one JSON object per line:

- the first line, ``{"kind": "run", ...}``: sizes, frame rate, steps per codebook, the sample
  shown, the legend, and the given tokens (``given``: ``[K, T]`` bits, ``given_tokens``);
- ``{"kind": "plan", "id": n, ...}``: the mask rate, CFG coefficient and temperature planned for
  every step under one set of live controls (sent again only when a control changes);
- ``{"kind": "step", ...}``: one step of the shown sample (see :func:`step_line`).

The text only grows while a run decodes, so Gradio streams it as appended diffs: each yield sends
only the new lines, and no step is lost when the page draws slower than the engine decodes (the
page parses the lines it has not read yet). ``bytes`` arrays travel as base64.

No Gradio here.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Callable, Sequence

import numpy as np

from magnet_demo import viz
from magnet_demo.controls import ControlValues
from magnet_demo.records import StepRecord

#: confidence byte of a frame that this step did not predict
NOT_PREDICTED_BYTE = 255
#: confidences 0..1 map to bytes 0..CONFIDENCE_LEVELS
CONFIDENCE_LEVELS = 254
#: decimals kept for the values of the schedules
SCHEDULE_DECIMALS = 4
FEED_VERSION = 1

_feed_ids = itertools.count(1)


def b64(array: np.ndarray) -> str:
    """Base64 of an array's bytes (little-endian, C order)."""
    data = np.ascontiguousarray(array)
    if data.dtype.byteorder == ">":
        data = data.byteswap().view(data.dtype.newbyteorder("<"))
    return base64.b64encode(data.tobytes()).decode("ascii")


def unb64(text: str, dtype) -> np.ndarray:
    """The inverse of :func:`b64` (flat array)."""
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


def confidence_bytes(values: np.ndarray) -> np.ndarray:
    """``[T]`` probabilities (NaN = not predicted) -> ``[T]`` uint8: 0..254, or 255 for NaN."""
    values = np.asarray(values, dtype=np.float32)
    predicted = np.isfinite(values)
    out = np.full(values.shape, NOT_PREDICTED_BYTE, dtype=np.uint8)
    out[predicted] = np.rint(np.clip(values[predicted], 0.0, 1.0) * CONFIDENCE_LEVELS).astype(np.uint8)
    return out


def step_line(record: StepRecord, sample: int, plan: int, rows: bool = False) -> dict:
    """One step of one sample as a JSON-able dict.

    ``state``: ``[T]`` uint8 states of the current codebook (:data:`~magnet_demo.viz.STATE_LABELS`);
    ``confidence`` / ``rescorer``: ``[T]`` bytes (:func:`confidence_bytes`; ``rescorer`` is None
    when the step was not rescored); ``tokens``: ``[T]`` uint16 token ids of the current codebook
    after the step (proposals on re-masked frames). Codebooks below the current one hold the tokens
    of their stage's last step; codebooks above it are masked, except given tokens.

    ``rows`` (a run of the decoding lab, whose steps may write every codebook) adds ``rows``:
    ``[K, T]`` uint8 states and ``row_tokens``: ``[K, T]`` uint16 tokens of every codebook.
    """
    every = viz.canvas_states(record, sample)
    states = every[record.stage]
    confidence = record.confidence[sample]
    rescorer = None
    if record.rescorer_confidence is not None:
        rescorer = np.where(np.isfinite(confidence), record.rescorer_confidence[sample], np.nan)
    return {
        "kind": "step",
        "index": record.global_step,
        "stage": record.stage,
        "step": record.step,
        "steps_in_stage": record.steps_in_stage,
        "mask_rate": round(record.mask_rate, SCHEDULE_DECIMALS),
        "cfg_coef": round(record.cfg_coef, SCHEDULE_DECIMALS),
        "temperature": round(record.temperature, SCHEDULE_DECIMALS),
        "rescore_weight": round(record.rescore_weight, SCHEDULE_DECIMALS),
        "plan": plan,
        "title": viz.step_title(record, sample),
        "state": b64(states.astype(np.uint8)),
        "confidence": b64(confidence_bytes(confidence)),
        "rescorer": None if rescorer is None else b64(confidence_bytes(rescorer)),
        "tokens": b64(record.tokens[sample, record.stage].astype(np.uint16)),
        **(
            {"rows": b64(every.astype(np.uint8)), "row_tokens": b64(record.tokens[sample].astype(np.uint16))}
            if rows
            else {}
        ),
    }


def plan_line(plan_id: int, plan: dict[str, np.ndarray]) -> dict:
    """The schedules ``plan`` (as :func:`magnet_demo.viz.planned_schedules` returns) as a line."""
    rounded = {key: [round(float(v), SCHEDULE_DECIMALS) for v in values] for key, values in plan.items()}
    return {"kind": "plan", "id": plan_id, **rounded}


def legend() -> list[dict]:
    """Label and colour of every canvas state, indexed by state."""
    return [{"label": label, "colour": colour} for label, colour in viz.legend_items()]


class CanvasFeed:
    """The NDJSON text of one run's steps for one sample; it only grows (see the module doc).

    Args:
        run: the run's number, shown by the page.
        decoding_steps: steps per codebook.
        frame_rate: frames per second (the time axis).
        sample, samples: the sample shown (0-based) and how many the run has.
        anneal: whether the temperature is annealed (the planned curve).
        given: ``[K, T]`` bool of tokens given by the input audio, or None.
        given_tokens: ``[K, T]`` their token ids (ignored where not given), or None.
        revision: the run re-masks spans fixed earlier (``DecodingConfig.revision_share > 0``).
        title: the picture's title before the first step (default: the run is starting).
        codebooks: K rows of the canvas (default: one per entry of ``decoding_steps``).
        planner: the schedules planned under a set of live controls (default: MAGNeT's, from
            ``decoding_steps`` and ``anneal``); a lab run's (:func:`magnet_demo.lab.planned_schedules`),
            whose ``decoding_steps`` are its segments, also sends every row of every step.
    """

    def __init__(
        self,
        run: int,
        decoding_steps: Sequence[int],
        num_frames: int,
        frame_rate: float,
        *,
        sample: int = 0,
        samples: int = 1,
        anneal: bool = True,
        given: np.ndarray | None = None,
        given_tokens: np.ndarray | None = None,
        title: str | None = None,
        revision: bool = False,
        codebooks: int | None = None,
        planner: Callable[[ControlValues], dict] | None = None,
    ):
        self.decoding_steps = tuple(int(n) for n in decoding_steps)
        self.planner = planner or (
            lambda controls: viz.planned_schedules(self.decoding_steps, controls, anneal)
        )
        self.rows = planner is not None
        self.sample = sample
        self.records_seen = 0
        self._plans: dict[ControlValues, int] = {}
        self._lock = threading.Lock()
        header = {
            "kind": "run",
            "version": FEED_VERSION,
            "feed": next(_feed_ids),  # a new feed is a new picture, even for the same run
            "run": run,
            "title": title,
            "codebooks": len(self.decoding_steps) if codebooks is None else int(codebooks),
            "frames": int(num_frames),
            "frame_rate": float(frame_rate),
            "decoding_steps": list(self.decoding_steps),
            "sample": sample,
            "samples": samples,
            "legend": legend(),
            "revision": revision,  # the run revises fixed spans: the legend shows that state
            "given": None if given is None else b64(np.packbits(np.asarray(given, dtype=bool), axis=None)),
            "given_tokens": None
            if given_tokens is None
            else b64(np.where(given, given_tokens, 0).astype(np.uint16)),
        }
        self._text = _dumps(header) + "\n"  # the feed is held once: this text, nothing else

    @property
    def text(self) -> str:
        """Every line so far, each ending in a newline."""
        return self._text

    def sync(self, records: Sequence[StepRecord], controls: ControlValues | None = None) -> str:
        """Add the lines of ``records[records_seen:]`` (and of any new plan); return :attr:`text`.

        ``controls`` (the run's current live controls) adds their plan when no record exists yet
        (always, for a lab feed: its autoregressive steps are drawn against it).
        """
        with self._lock:
            new: list[str] = []
            if controls is not None and (not records or self.rows):  # a lab run's AR steps draw on it
                self._plan_id(controls, new)
            for record in records[self.records_seen :]:
                plan = self._plan_of(record, new)
                new.append(_dumps(step_line(record, self.sample, plan, self.rows)))
            self.records_seen = max(self.records_seen, len(records))
            if new:
                self._text += "\n".join(new) + "\n"
            return self._text

    def _plan_of(self, record: StepRecord, out: list[str]) -> int:
        """The plan a step is drawn against: its controls' (an autoregressive step, whose controls
        are its own, draws against the latest plan of the run's controls when there is one)."""
        if record.is_autoregressive and self.rows and self._plans:
            return len(self._plans) - 1
        return self._plan_id(record.controls, out)

    def _plan_id(self, controls: ControlValues, out: list[str]) -> int:
        plan = self._plans.get(controls)
        if plan is None:
            plan = self._plans[controls] = len(self._plans)
            out.append(_dumps(plan_line(plan, self.planner(controls))))
        return plan


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def parse(text: str) -> list[dict]:
    """The objects of a feed's text (what the page reads; for tests and API users)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
