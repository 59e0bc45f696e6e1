"""Pure schedule functions of MAGNeT's iterative decoding (paper section 3; audiocraft lm_magnet.py).

Within a codebook stage of ``n`` steps, step ``i`` sits at ``t = linspace(0, 1, n)[i]``:

- mask rate ``p = cos(t * pi / 2)``, computed in float32 as audiocraft does (the number of masked
  units, ``max(int(p * N), 1)``, depends on that rounding);
- classifier-free guidance annealed with the mask: ``p * max_coef + (1 - p) * min_coef``;
- temperature annealed linearly: ``temperature * (n - 1 - i) / n``, floored at
  :data:`MIN_TEMPERATURE` when used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: the softmax temperature is never below this (audiocraft: ``max(t, 1e-2)``)
MIN_TEMPERATURE = 1e-2

CFG_LINEAR = "linear"
CFG_CONSTANT = "constant"
CFG_CURVE = "curve"
CFG_SCHEDULES = (CFG_LINEAR, CFG_CONSTANT, CFG_CURVE)


def step_times(n_steps: int) -> torch.Tensor:
    """``t`` of every step of a stage: float32 ``linspace(0, 1, n_steps)``, shape ``[n_steps]``."""
    return torch.linspace(0, 1, n_steps, dtype=torch.float32)


def mask_rate(step: int, n_steps: int) -> torch.Tensor:
    """Fraction of the stage still masked at ``step`` (0-based): a float32 scalar tensor."""
    return torch.cos(step_times(n_steps)[step] * math.pi * 0.5)


def num_masked(rate: torch.Tensor, n_units: int) -> int:
    """How many units (chunks or frames) to mask: ``max(int(rate * n_units), 1)`` in float32."""
    return max(int((rate * n_units).item()), 1)


def temperature_at(temperature: float, step: int, n_steps: int, anneal: bool = True) -> float:
    """Temperature of ``step``: linearly annealed to ``temperature / n_steps`` at the last step."""
    steps_left = n_steps - 1 - step
    return temperature * (steps_left / n_steps) if anneal else temperature


@dataclass(frozen=True)
class CFGSchedule:
    """Classifier-free guidance coefficient as a function of the mask rate ``p``.

    - ``linear`` (the paper's, default): ``p * max_coef + (1 - p) * min_coef``; a fully masked
      canvas gets ``max_coef``, the last steps approach ``min_coef``.
    - ``constant``: ``max_coef`` at every step (``min_coef`` unused).
    - ``curve``: ``points`` are coefficients at evenly spaced decoding progress ``1 - p`` from 0
      (fully masked) to 1 (nothing masked), linearly interpolated.
    """

    kind: str = CFG_LINEAR
    max_coef: float = 10.0
    min_coef: float = 1.0
    points: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in CFG_SCHEDULES:
            raise ValueError(f"Unknown CFG schedule '{self.kind}': choose one of {', '.join(CFG_SCHEDULES)}.")
        for name, value in (("max_coef", self.max_coef), ("min_coef", self.min_coef)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"CFG {name} must be a finite number >= 0, got {value}.")
        if self.kind == CFG_CURVE:
            if len(self.points) < 2:
                raise ValueError("A CFG curve needs at least 2 points (coefficients from start to end).")
            if any(not math.isfinite(v) or v < 0 for v in self.points):
                raise ValueError(f"CFG curve points must be finite numbers >= 0, got {list(self.points)}.")

    def coef(self, rate: float) -> float:
        """The coefficient at mask rate ``rate`` (a Python float)."""
        if self.kind == CFG_LINEAR:
            return rate * self.max_coef + (1 - rate) * self.min_coef
        if self.kind == CFG_CONSTANT:
            return self.max_coef
        grid = np.linspace(0.0, 1.0, len(self.points))
        return float(np.interp(1.0 - rate, grid, np.asarray(self.points, dtype=np.float64)))
