"""The Fréchet distance of bench.frechet: exact on Gaussians whose distance is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from bench.frechet import embedding_distance, fit_reference, frechet_distance, gaussian


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


def test_reference_axes_keep_the_distance_when_all_are_kept_and_the_spread_when_few_are():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 5)) * np.array([5.0, 3.0, 1.0, 0.1, 0.1])
    y = rng.standard_normal((300, 5)) + 0.5
    full = fit_reference(x, dims=5)  # a rotation: the distance does not change
    assert embedding_distance(full, y) == pytest.approx(frechet_distance(gaussian(y), gaussian(x)))
    two = fit_reference(x, dims=2)  # the two widest axes are the first two coordinates
    np.testing.assert_allclose(np.abs(two.basis), np.eye(5)[:, :2], atol=0.05)
    assert two.cov.shape == (2, 2) and two.mean.shape == (2,)
    with pytest.raises(ValueError, match="dims must be in 1..5"):
        fit_reference(x, dims=6)
