"""A Fréchet distance between sets of clips, in the attribute classifier's embedding space.

The paper measures quality with FAD: the Fréchet distance between Gaussians fitted to embeddings
of generated and of reference audio. No pretrained audio embedding can be downloaded here, so the
embedding is our attribute classifier's joint layer (``classifier.embeddings``, 256 numbers per
clip, trained on real corpus audio). Accuracy asks "is it the right instrument, tempo, mode?" of
each clip; this distance asks "does the set of clips sound like the corpus?", so it also sees
artefacts that leave the labels alone.

The reference is a fixed, evenly spread set of real *training* clips (``REFERENCE_CLIPS``,
``bench.eval_embedded.reference_set``), never one of the clips being scored; distances are
measured in its ``REFERENCE_DIMS`` principal axes. A finite set of real clips is not at distance 0
from it: score the real clips behind the captions too, as the floor to read the others against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from magnet_demo.train.classifier import AttributeClassifier, embeddings, prepare_audio

#: real training clips behind the reference
REFERENCE_CLIPS = 1024
#: principal axes of the reference embeddings the distance is measured in: fewer than the 200-235
#: clips of a scored set, whose covariance in all 256 dimensions would be singular
REFERENCE_DIMS = 64
#: clips embedded at once
EMBED_BATCH = 128


@dataclass(frozen=True)
class Reference:
    """The real clips to measure against: their top principal axes ``basis`` ``[D, k]`` and their
    Gaussian in those axes (mean ``[k]``, covariance ``[k, k]``)."""

    basis: np.ndarray
    mean: np.ndarray
    cov: np.ndarray


def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` of embeddings ``[N, D]`` (N >= 2)."""
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need embeddings [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two ``(mean, covariance)`` pairs."""
    (mu_a, cov_a), (mu_b, cov_b) = a, b
    root = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))  # rounding leaves tiny imaginary parts
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    return float(max(distance, 0.0))


def clip_embeddings(classifier: AttributeClassifier, clips: np.ndarray) -> np.ndarray:
    """Embeddings ``[N, D]`` of clips ``[N, samples]`` (any loudness; int16 or float), in batches."""
    parts = [  # prepare_audio sets the loudness, so int16 samples need no rescaling
        embeddings(classifier, prepare_audio(np.asarray(clips[s : s + EMBED_BATCH], np.float32)))
        for s in range(0, len(clips), EMBED_BATCH)
    ]
    return np.concatenate(parts)


def fit_reference(x: np.ndarray, dims: int = REFERENCE_DIMS) -> Reference:
    """The :class:`Reference` of real-clip embeddings ``[N, D]``: their ``dims`` top principal axes."""
    mean, cov = gaussian(x)
    if not 1 <= dims <= len(mean):
        raise ValueError(f"dims must be in 1..{len(mean)}, got {dims}")
    _values, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    basis = vectors[:, ::-1][:, :dims]
    projected_mean, projected_cov = gaussian(x @ basis)
    return Reference(basis, projected_mean, projected_cov)


def embedding_distance(reference: Reference, x: np.ndarray) -> float:
    """Fréchet distance of embeddings ``[N, D]`` to ``reference``, in its principal axes."""
    return frechet_distance(gaussian(x @ reference.basis), (reference.mean, reference.cov))


def distance_to(reference: Reference, classifier: AttributeClassifier, clips: np.ndarray) -> float:
    """Fréchet distance of clips ``[N, samples]`` to ``reference``, in its principal axes."""
    return embedding_distance(reference, clip_embeddings(classifier, clips))
