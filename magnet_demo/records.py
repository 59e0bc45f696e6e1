"""Immutable records of a decoding run: one :class:`StepRecord` per step, a :class:`DecodeResult`.

Records hold detached, read-only numpy copies (``tokens`` as int16: every code and the mask id
fit), so a UI can keep hundreds of them, and a trace file is their straight dump.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from magnet_demo.controls import ControlValues, DecodingConfig


def frozen_array(x: torch.Tensor | np.ndarray, dtype=None) -> np.ndarray:
    """A read-only numpy copy of ``x`` (on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = np.array(x, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


def _nothing_revised(mask_before: np.ndarray) -> np.ndarray:
    """A read-only all-False ``[B, T]`` bool array shaped like ``mask_before``."""
    return frozen_array(np.zeros(np.shape(mask_before), dtype=np.bool_))


@dataclass(frozen=True)
class StepRecord:
    """What one decoding step did. ``B`` prompts, ``K`` codebooks, ``T`` frames, ``N`` units.

    Attributes:
        stage: codebook being decoded (0-based); codebooks above it are still all masked.
        step: step within the stage (0-based); ``steps_in_stage`` steps in all.
        global_step: step counted over all stages (0-based); ``total_steps`` in all.
        mask_rate: fraction of the stage's units masked at this step (cosine schedule).
        num_masked: units masked (re-predicted) at this step; ``num_units`` units can be masked.
        cfg_coef, temperature, rescore_weight: values used by this step (temperature after
            annealing; the softmax floors it at 0.01).
        controls: the live-control snapshot taken at the start of this step.
        tokens: ``[B, K, T]`` int16 canvas after the step; the current stage holds this step's
            proposals everywhere, higher stages hold ``mask_id``.
        mask_before: ``[B, T]`` bool, frames of the current stage masked during this step.
        mask_after: ``[B, T]`` bool, frames the next step re-masks (their proposals are not kept);
            all False at the last step of a stage.
        confidence: ``[B, T]`` float32, MAGNeT's probability of each proposal of this step (NaN on
            frames fixed before this step).
        rescorer_confidence: ``[B, T]`` float32, the rescorer's probability of the same tokens, or
            None when the step was not rescored (weight 0, no rescorer, or the last step of a
            stage, whose scores choose no mask); ``rescore_weight`` is then 0 too.
        scores: ``[B, 1, N]`` float32 unit scores after the step (higher = re-mask first).
        rng_state: the sampler's generator state after the step (uint8), for resuming.
        step_seconds, elapsed: wall time of this step, and since the run started.
        given: ``[B, K, T]`` bool, True on given tokens (an audio prompt, or the audio kept around
            a re-decoded region): they are never masked, and ``tokens`` holds them in every
            codebook from the first step on (so higher stages show them among the ``mask_id``).
            None when nothing was given. One read-only array shared by all records of a run.
            ``mask_after`` may include given frames of a unit that is re-masked (they are put back
            at once): :meth:`committed_tokens` leaves them alone.
        revised: ``[B, T]`` bool, frames fixed at an earlier step of the stage that the next step
            re-masks to predict them again (revision, ``DecodingConfig.revision_share``): part of
            ``mask_after``, never given frames. All False without revision, and on records made
            (or pickled) before this field existed.
        fixed_scores: ``[B, 1, N]`` float32, for a run with revision: the score each unit had
            when it was fixed (NEVER_REMASK on units the next step masks, given ones and, after a
            stage's last step, all), which the next step's revision ranks; resuming needs it. None
            on runs without revision.
        written: ``[B, K, T]`` bool, for a record of an autoregressive run shown in the studio
            (:func:`magnet_demo.lab.ar_step_record`): the tokens this record wrote, in every
            codebook (a diagonal band along the delay pattern); ``stage`` is then the last
            codebook, ``mask_before``/``mask_after`` its frames unwritten before/after, and
            ``confidence`` the mean probability of the tokens written at each frame. None on
            MAGNeT's records.
        window: for a step of a clip longer than one window or of an extension
            (:func:`magnet_demo.clips.clip_steps`): ``(index, windows, start, stop)``, the window
            being decoded (counted within the run) and its frames on the clip's canvas; the arrays
            above cover the whole clip (the window's own values placed at its frames, earlier
            windows' tokens before it, ``mask_id`` after it). None otherwise.
    """

    stage: int
    step: int
    steps_in_stage: int
    global_step: int
    total_steps: int
    mask_rate: float
    num_masked: int
    num_units: int
    cfg_coef: float
    temperature: float
    rescore_weight: float
    controls: ControlValues
    tokens: np.ndarray
    mask_before: np.ndarray
    mask_after: np.ndarray
    confidence: np.ndarray
    rescorer_confidence: np.ndarray | None
    scores: np.ndarray
    rng_state: np.ndarray
    mask_id: int
    step_seconds: float = 0.0
    elapsed: float = 0.0
    given: np.ndarray | None = None
    revised: np.ndarray | None = None  # None = all False (see __post_init__)
    fixed_scores: np.ndarray | None = None
    written: np.ndarray | None = None
    window: tuple[int, int, int, int] | None = None

    def __post_init__(self):
        if self.revised is None:
            object.__setattr__(self, "revised", _nothing_revised(self.mask_before))

    def __setstate__(self, state: dict) -> None:
        """Unpickling: a record pickled before ``revised`` or ``written`` existed gets them."""
        self.__dict__.update({"written": None, "window": None, **state})
        self.__post_init__()

    @property
    def nbytes(self) -> int:
        """Bytes of this record's own arrays (``given`` is shared by the run's records: not counted)."""
        arrays = (
            self.tokens,
            self.mask_before,
            self.mask_after,
            self.confidence,
            self.scores,
            self.rng_state,
            self.revised,
        )
        optional = (self.rescorer_confidence, self.fixed_scores, self.written)
        extra = sum(a.nbytes for a in optional if a is not None)
        return sum(np.asarray(a).nbytes for a in arrays) + extra

    @property
    def newly_fixed(self) -> np.ndarray:
        """``[B, T]`` bool: frames whose token this step fixed for good."""
        return self.mask_before & ~self.mask_after

    @property
    def is_autoregressive(self) -> bool:
        """A record of an autoregressive run or phase (see ``written``)."""
        return self.written is not None

    @property
    def is_stage_end(self) -> bool:
        return self.step == self.steps_in_stage - 1

    @property
    def is_last(self) -> bool:
        return self.global_step == self.total_steps - 1

    def committed_tokens(self) -> np.ndarray:
        """``[B, K, T]`` tokens with the frames the next step re-masks set to ``mask_id``."""
        tokens = np.array(self.tokens)
        remasked = self.mask_after if self.given is None else self.mask_after & ~self.given[:, self.stage]
        tokens[:, self.stage][remasked] = self.mask_id
        return tokens


@dataclass(frozen=True)
class DecodeResult:
    """The outcome of a run: final tokens ``[B, K, T]``, audio ``[B, samples]`` and every record."""

    tokens: torch.Tensor
    audio: np.ndarray | None
    sample_rate: int
    records: tuple[StepRecord, ...]
    config: DecodingConfig
    prompts: tuple[str, ...]
    seed: int
    cancelled: bool = False
    resumed_from: int | None = None
    info: dict = field(default_factory=dict)
