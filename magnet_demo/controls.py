"""What a decoding run is asked to do: a frozen, validated config and thread-safe live controls.

:class:`DecodingConfig` fixes a run (names as audiocraft's ``set_generation_params``).
:class:`LiveControls` holds the settings a person may change while the run goes on (CFG schedule,
temperature, rescoring weight); the engine takes one :class:`ControlValues` snapshot at the start
of every step, so a change made during step k shows in step k + 1 and is recorded there.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

from magnet_demo.schedules import CFG_LINEAR, CFGSchedule
from magnet_demo.spans import (
    MAX_REVISION_SHARE,
    ORDER_CONFIDENCE,
    SPAN_ARRANGEMENTS,
    SPAN_SCORINGS,
    UNMASKING_ORDERS,
)

#: audiocraft's MAGNeT defaults (MAGNeT.set_generation_params)
DEFAULT_DECODING_STEPS = (20, 10, 10, 10)
DEFAULT_TEMPERATURE = 3.0
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_CFG = 10.0
DEFAULT_MIN_CFG = 1.0
DEFAULT_DURATION = 10.0
DEFAULT_SPAN_SCORING = "max"
DEFAULT_SPAN_ARRANGEMENT = "nonoverlap"
#: MAGNeT's own unmasking order: by the confidence of the sampled tokens (``span_scoring``)
DEFAULT_UNMASKING_ORDER = ORDER_CONFIDENCE
#: how a run decodes (the decoding lab, :mod:`magnet_demo.lab`): MAGNeT alone; Hybrid (the model's
#: autoregressive partner writes the first ``prefix_seconds``, MAGNeT the rest); or the partner alone
METHOD_MAGNET, METHOD_HYBRID, METHOD_AR = "magnet", "hybrid", "autoregressive"
METHODS = (METHOD_MAGNET, METHOD_HYBRID, METHOD_AR)
#: seconds the autoregressive partner writes first in a Hybrid run
DEFAULT_PREFIX_SECONDS = 1.0
#: a clip longer than the model's window: seconds each window continues of the one before (half of a
#: 10 s window), and the longest clip a server decodes (``--max-clip-seconds``)
DEFAULT_OVERLAP_SECONDS = 5.0
#: seconds the Extend button adds to the run shown, unless told otherwise
DEFAULT_EXTEND_SECONDS = 10.0
DEFAULT_MAX_CLIP_SECONDS = 60.0
#: the rescoring weight's convention, as the page says it (the paper's figure; see README's Rescoring)
RESCORING_HELP = (
    "Span confidence = (1 − w) · MAGNeT + w · rescorer (the paper's figure). w = 0 is plain MAGNeT."
)
#: what the page's CFG curve box starts with (used when the schedule is 'curve')
DEFAULT_CFG_CURVE_TEXT = "10, 6, 3, 1"
#: precisions of the language model's weights (:func:`magnet_demo.models.load_model`); "auto" =
#: bfloat16 on a CPU that multiplies bfloat16 matrices in hardware (AMX or AVX-512 BF16), else float32;
#: "int8" = its linear layers quantized by torch's dynamic quantization (CPU only; never chosen by auto)
PRECISIONS = ("auto", "float32", "bfloat16", "int8")
#: the precisions a training run takes (int8 is for inference: dynamic quantization does not train)
TRAIN_PRECISIONS = tuple(p for p in PRECISIONS if p != "int8")


#: the caps a public server puts on one request (app.py's flags; shown next to their controls)
DEFAULT_MAX_STEPS = 400
#: runs whose files a server keeps, all sessions together (``--keep-runs``)
DEFAULT_KEEP_RUNS = 50
#: runs whose files one session keeps; beyond it that session's oldest go (``--keep-runs-per-session``)
DEFAULT_KEEP_RUNS_PER_SESSION = 10
#: bytes all runs keep in memory, in MiB (``--memory-mb``): records, step previews, feeds, audio
DEFAULT_MEMORY_MB = 256
#: a run's work: decoding steps x samples x seconds of audio, all codebooks (``--max-work``);
#: audiocraft's default 50 steps of one 10 s sample is 500, 400 steps of one 10 s sample 4000
DEFAULT_MAX_WORK = 4000
#: wall-clock seconds a run may decode before it is stopped like Stop (``--max-run-seconds``)
DEFAULT_MAX_RUN_SECONDS = 300
#: models a process keeps loaded; loading one more evicts the least recently used (``--max-models``)
DEFAULT_MAX_MODELS = 2
MAX_PROMPT_CHARS = 500
MAX_CFG_POINTS = 32
MAX_FORK_DEPTH = 16
MAX_CFG_COEF = 50.0
MAX_TEMPERATURE = 20.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask for on this server.

    Attributes:
        max_steps: decoding steps of a run, all codebooks together (a fork counts its parent's).
        prompt_chars: characters of a prompt.
        cfg_points: points of a CFG curve.
        fork_depth: forks of forks of ... a run.
        max_cfg, max_temperature: the largest CFG coefficient and temperature accepted.
        max_work: decoding steps x samples x seconds of a run (a fork counts its parent's steps).
        max_run_seconds: wall-clock seconds a run decodes before the server stops it.
        max_clip_seconds: seconds of a clip longer than one window (decoded window after window).
    """

    max_steps: int = DEFAULT_MAX_STEPS
    prompt_chars: int = MAX_PROMPT_CHARS
    cfg_points: int = MAX_CFG_POINTS
    fork_depth: int = MAX_FORK_DEPTH
    max_cfg: float = MAX_CFG_COEF
    max_temperature: float = MAX_TEMPERATURE
    max_work: float = DEFAULT_MAX_WORK
    max_run_seconds: float = DEFAULT_MAX_RUN_SECONDS
    max_clip_seconds: float = DEFAULT_MAX_CLIP_SECONDS

    def check_steps(self, steps: tuple[int, ...]) -> None:
        total = sum(steps)
        if total > self.max_steps:
            raise ValueError(
                f"Decoding steps: {total} steps in all; this server allows at most {self.max_steps} per "
                f"run (audiocraft's default is {sum(DEFAULT_DECODING_STEPS)})."
            )

    def check_work(self, steps: tuple[int, ...], samples: int, duration: float) -> None:
        """ValueError when ``steps`` (all codebooks) x ``samples`` x ``duration`` s is over :attr:`max_work`."""
        total = sum(steps)
        work = total * samples * duration
        if work > self.max_work + 1e-9:
            raise ValueError(
                f"This run is too much work for this server: {total} steps x {samples} "
                f"sample{'s' if samples != 1 else ''} x {duration:g} s = {work:g}; it allows at most "
                f"{self.max_work:g} per run. Ask for fewer steps, samples or seconds."
            )


def _check_number(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}.")


def _check_weight(value: float) -> None:
    _check_number("rescore_weight", value, 0.0, 1.0)


@dataclass(frozen=True)
class ControlValues:
    """One snapshot of the live controls: what a step actually used."""

    cfg: CFGSchedule = field(default_factory=CFGSchedule)
    temperature: float = DEFAULT_TEMPERATURE
    rescore_weight: float = 0.0

    def __post_init__(self):
        _check_number("temperature", self.temperature, 0.0)
        _check_weight(self.rescore_weight)


@dataclass(frozen=True)
class DecodingConfig:
    """Settings of one MAGNeT decoding run; raises ValueError with a clear message when invalid.

    ``decoding_steps`` holds one step count per codebook; its length is checked against the
    model in :meth:`check_model`, as is ``duration`` against the model's training length.

    Beyond audiocraft (whose decoding the defaults reproduce bit for bit):

    - ``unmasking_order``, one of :data:`~magnet_demo.spans.UNMASKING_ORDERS`: how a step ranks the
      units it predicted for re-masking. ``confidence`` is MAGNeT's (scored as ``span_scoring``
      says); ``margin`` and ``entropy`` rank by the predicted distribution (chunks combine their
      frames as ``span_scoring`` says); ``random`` by a seeded draw. The rescorer mixes into
      ``confidence`` only: other orders call none.
    - ``revision_share`` in [0, :data:`~magnet_demo.spans.MAX_REVISION_SHARE`]: every step but a
      stage's last also re-masks this share of the least sure units fixed at an earlier step of
      the stage (never given ones), which the next step predicts again. 0 = no revision.
    - ``method`` (:data:`METHODS`) and ``prefix_seconds``: how the studio's worker runs the clip
      (:mod:`magnet_demo.lab`); :class:`~magnet_demo.engine.Engine` itself decodes MAGNeT only and
      ignores them.
    - ``clip_seconds`` > ``duration``: a clip longer than one window, decoded window after window
      (:mod:`magnet_demo.windows`), each window ``duration`` s long and continuing the last
      ``overlap_seconds`` of the one before; 0 = one window. The Engine ignores them too.
    """

    decoding_steps: tuple[int, ...] = DEFAULT_DECODING_STEPS
    duration: float = DEFAULT_DURATION
    use_sampling: bool = True
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = 0
    top_p: float = DEFAULT_TOP_P
    max_cfg_coef: float = DEFAULT_MAX_CFG
    min_cfg_coef: float = DEFAULT_MIN_CFG
    cfg_schedule: str = CFG_LINEAR
    cfg_curve: tuple[float, ...] = ()
    anneal_temp: bool = True
    span_scoring: str = DEFAULT_SPAN_SCORING
    span_arrangement: str = DEFAULT_SPAN_ARRANGEMENT
    rescore_weight: float = 0.0
    unmasking_order: str = DEFAULT_UNMASKING_ORDER
    revision_share: float = 0.0
    method: str = METHOD_MAGNET
    prefix_seconds: float = DEFAULT_PREFIX_SECONDS
    clip_seconds: float = 0.0
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS

    def __post_init__(self):
        steps = tuple(self.decoding_steps)
        object.__setattr__(self, "decoding_steps", steps)
        object.__setattr__(self, "cfg_curve", tuple(float(v) for v in self.cfg_curve))
        if not steps:
            raise ValueError("decoding_steps is empty: give one step count per codebook.")
        for i, n in enumerate(steps):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"decoding_steps[{i}] must be an integer >= 1, got {n!r}.")
        _check_number("duration", self.duration)
        if self.duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}.")
        _check_number("temperature", self.temperature, 0.0)
        _check_number("top_p", self.top_p, 0.0, 1.0)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}.")
        if self.span_scoring not in SPAN_SCORINGS:
            raise ValueError(
                f"Unknown span_scoring '{self.span_scoring}': choose one of {', '.join(SPAN_SCORINGS)}."
            )
        if self.span_arrangement not in SPAN_ARRANGEMENTS:
            raise ValueError(
                f"Unknown span_arrangement '{self.span_arrangement}': choose one of {', '.join(SPAN_ARRANGEMENTS)}."
            )
        _check_weight(self.rescore_weight)
        if self.unmasking_order not in UNMASKING_ORDERS:
            raise ValueError(
                f"Unknown unmasking_order '{self.unmasking_order}': choose one of {', '.join(UNMASKING_ORDERS)}."
            )
        _check_number("revision_share", self.revision_share, 0.0, MAX_REVISION_SHARE)
        if self.method not in METHODS:
            raise ValueError(f"Unknown method '{self.method}': choose one of {', '.join(METHODS)}.")
        _check_number("prefix_seconds", self.prefix_seconds, 0.0)
        _check_number("clip_seconds", self.clip_seconds, 0.0)
        _check_number("overlap_seconds", self.overlap_seconds, 0.0)
        self.cfg()  # validates the CFG schedule

    def cfg(self) -> CFGSchedule:
        return CFGSchedule(self.cfg_schedule, self.max_cfg_coef, self.min_cfg_coef, self.cfg_curve)

    def controls(self) -> ControlValues:
        """The live-control values this config starts with."""
        return ControlValues(self.cfg(), self.temperature, self.rescore_weight)

    def check_model(self, num_codebooks: int, max_duration: float, card: int) -> None:
        """Raise ValueError if this config cannot run on a model with these properties."""
        if len(self.decoding_steps) != num_codebooks:
            raise ValueError(
                f"decoding_steps has {len(self.decoding_steps)} entries but the model has {num_codebooks} "
                f"codebooks: give one step count per codebook."
            )
        if self.duration > max_duration + 1e-9:
            raise ValueError(
                f"duration {self.duration} s is longer than this model supports ({max_duration:g} s)."
            )
        if self.top_k > card:
            raise ValueError(f"top_k ({self.top_k}) is larger than the codebook size ({card}).")

    def replace(self, **changes) -> DecodingConfig:
        return replace(self, **changes)


class LiveControls:
    """Settings that may change while a run goes on; safe to update from any thread.

    The engine calls :meth:`snapshot` once at the start of every step.
    """

    def __init__(self, values: ControlValues | None = None):
        self._lock = threading.Lock()
        self._values = values or ControlValues()

    @classmethod
    def from_config(cls, config: DecodingConfig) -> LiveControls:
        return cls(config.controls())

    def snapshot(self) -> ControlValues:
        with self._lock:
            return self._values

    def update(
        self,
        *,
        max_cfg_coef: float | None = None,
        min_cfg_coef: float | None = None,
        cfg_schedule: str | None = None,
        cfg_curve: tuple[float, ...] | None = None,
        temperature: float | None = None,
        rescore_weight: float | None = None,
    ) -> ControlValues:
        """Change some values (None = keep); validated as a whole, ValueError if invalid."""
        with self._lock:
            old = self._values
            cfg = CFGSchedule(
                kind=old.cfg.kind if cfg_schedule is None else cfg_schedule,
                max_coef=old.cfg.max_coef if max_cfg_coef is None else max_cfg_coef,
                min_coef=old.cfg.min_coef if min_cfg_coef is None else min_cfg_coef,
                points=old.cfg.points if cfg_curve is None else tuple(float(v) for v in cfg_curve),
            )
            self._values = ControlValues(
                cfg=cfg,
                temperature=old.temperature if temperature is None else temperature,
                rescore_weight=old.rescore_weight if rescore_weight is None else rescore_weight,
            )
            return self._values
