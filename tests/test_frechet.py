"""The Fréchet distance of bench.frechet: exact on Gaussians whose distance is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from bench.frechet import frechet_distance, gaussian


def test_same_gaussian_is_at_distance_zero_and_distance_is_symmetric():
    x = np.random.default_rng(0).standard_normal((500, 8))
    y = np.random.default_rng(1).standard_normal((400, 8)) * 1.5 + 0.3
    assert frechet_distance(gaussian(x), gaussian(x)) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(gaussian(x), gaussian(y)) == pytest.approx(
        frechet_distance(gaussian(y), gaussian(x))
    )


def test_closed_forms_mean_shift_and_scaled_covariance():
    cov = np.diag([1.0, 4.0, 9.0])
    shift = np.array([1.0, -2.0, 0.5])
    # same covariance: only the means' squared distance remains
    assert frechet_distance((np.zeros(3), cov), (shift, cov)) == pytest.approx(shift @ shift)
    # diagonal covariances: sum over dimensions of (sigma_a - sigma_b)^2
    assert frechet_distance((np.zeros(3), cov), (np.zeros(3), 4 * cov)) == pytest.approx(1 + 4 + 9)


def test_gaussian_needs_two_embeddings():
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian(np.zeros(4))
