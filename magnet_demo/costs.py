"""What a run will cost on this server, said before it starts: seconds of decoding learned per unit
of work, per model and method. No Gradio here.

A MAGNeT step runs the model over the whole clip, so its cost grows with the samples and the
seconds: a MAGNeT run's work is ``steps x samples x seconds`` (the server's work cap counts the
same). An autoregressive record runs ``FRAMES_PER_RECORD`` one-frame steps whatever the clip's
length (the key-value cache holds the rest): its work is ``records x samples``. A Hybrid run is an
autoregressive prefix then a MAGNeT run, each at its own rate.

Rates come from measurements on this server: a one-step-per-codebook probe when a model is first
offered (:meth:`CostModel.probe`), then every finished run (:meth:`CostModel.learn`), the newest
measurement replacing the older one (a server's speed changes with its load; the newest says most).
"""

from __future__ import annotations

import math
import statistics
import threading
from dataclasses import dataclass

from magnet_demo.controls import METHOD_AR, METHOD_HYBRID, METHOD_MAGNET, DecodingConfig
from magnet_demo.lab import LabPlan, phase_seconds
from magnet_demo.records import StepRecord

#: how a rate was measured, for the page
PROBE, RUN = "a probe", "run"


@dataclass(frozen=True)
class Rate:
    """Seconds per unit of work (see the module docstring), and where the figure comes from."""

    seconds_per_unit: float
    source: str


def work_units(plan: LabPlan, config: DecodingConfig, samples: int) -> dict[str, float]:
    """The run's work by kind: ``{METHOD_MAGNET: steps x samples x seconds, METHOD_AR: records x samples}``."""
    units = {}
    if plan.method != METHOD_AR:
        magnet_steps = plan.total_steps - plan.ar_steps
        units[METHOD_MAGNET] = magnet_steps * samples * config.duration
    if plan.method != METHOD_MAGNET:
        units[METHOD_AR] = plan.ar_steps * samples
    return units


def duration_text(seconds: float) -> str:
    """``4 min 40 s``, ``12 s``, ``0.4 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class CostModel:
    """Learned rates by (model, kind of work); thread-safe."""

    def __init__(self):
        self._rates: dict[tuple[str, str], Rate] = {}
        self._lock = threading.Lock()

    def rate(self, model: str, kind: str) -> Rate | None:
        with self._lock:
            return self._rates.get((model, kind))

    def _set(self, model: str, kind: str, seconds: float, units: float, source: str) -> None:
        if units > 0 and seconds > 0 and math.isfinite(seconds):
            with self._lock:
                self._rates[(model, kind)] = Rate(seconds / units, source)

    def probe(self, model: str, records: list[StepRecord], duration: float) -> None:
        """Learn MAGNeT's rate from the records of a one-sample probe of ``duration`` seconds (the
        median step: the first also pays for warming up)."""
        if records:
            seconds = statistics.median(r.step_seconds for r in records)
            self._set(model, METHOD_MAGNET, seconds, duration, PROBE)

    def learn(
        self, model: str, plan: LabPlan, config: DecodingConfig, samples: int, records, number: int
    ) -> None:
        """Learn from a finished run's own ``records`` (numbered ``number``)."""
        if not records:
            return
        units = work_units(plan, config, samples)
        ar_seconds, magnet_seconds = phase_seconds(records)
        source = f"{RUN} #{number}"
        if METHOD_MAGNET in units:
            self._set(model, METHOD_MAGNET, magnet_seconds, units[METHOD_MAGNET], source)
        if METHOD_AR in units:
            self._set(model, METHOD_AR, ar_seconds, units[METHOD_AR], source)

    def estimate(
        self, model: str, plan: LabPlan, config: DecodingConfig, samples: int
    ) -> tuple[float, list[str]] | None:
        """Expected seconds of decoding, and where the rates come from; None while a kind of work
        the run needs has no rate yet."""
        total, sources = 0.0, []
        for kind, units in work_units(plan, config, samples).items():
            rate = self.rate(model, kind)
            if rate is None:
                return None
            total += rate.seconds_per_unit * units
            sources.append(f"{'MAGNeT' if kind == METHOD_MAGNET else 'autoregressive'} from {rate.source}")
        return total, sources


def expected_line(
    estimate: tuple[float, list[str]] | None, plan: LabPlan, config: DecodingConfig, samples: int
) -> str:
    """The page's line on what the run will cost."""
    seconds = config.clip_seconds if plan.windows else config.duration  # a long clip's, or its window's
    windows = f" in {len(plan.windows)} windows" if len(plan.windows) > 1 else ""
    clip = f"{seconds:g} s{windows}" + (f" × {samples} samples" if samples > 1 else "")
    what = (
        f"{plan.total_steps} steps"
        if plan.method != METHOD_HYBRID
        else f"{plan.total_steps} steps in two phases"
    )
    if estimate is None:
        kind = "autoregressive" if plan.method != METHOD_MAGNET else "MAGNeT"
        return f"Expected time: not measured yet for {kind} runs of this model here; the first one will tell."
    seconds, sources = estimate
    return (
        f"Expected time: **about {duration_text(seconds)}** for {clip} with {what} on this server "
        f"(rates measured here: {', '.join(sources)})."
    )
