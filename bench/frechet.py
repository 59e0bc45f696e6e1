"""A Fréchet distance between sets of clips, in the attribute classifier's embedding space.

The paper measures quality with FAD: the Fréchet distance between Gaussians fitted to embeddings
of generated and of reference audio. No pretrained audio embedding can be downloaded here, so the
embedding is our attribute classifier's joint layer (``classifier.embeddings``, 256 numbers per
clip, trained on real corpus audio). Accuracy asks "is it the right instrument, tempo, mode?" of
each clip; this distance asks "does the set of clips sound like the corpus?", so it also sees
artefacts that leave the labels alone.

The reference is a fixed, evenly spread set of real *training* clips (``REFERENCE_CLIPS``,
``bench.eval_embedded.reference_gaussian``), never one of the clips being scored. A finite set of real clips is not at distance 0 from it: score the
real clips behind the captions too, as the floor to read the others against.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from magnet_demo.train.classifier import AttributeClassifier, embeddings, prepare_audio

#: real training clips behind the reference Gaussian (4x the 256 dimensions it is fitted in)
REFERENCE_CLIPS = 1024
#: clips embedded at once
EMBED_BATCH = 128


def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` of embeddings ``[N, D]`` (N >= 2)."""
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need embeddings [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two ``(mean, covariance)`` pairs."""
    (mu_a, cov_a), (mu_b, cov_b) = a, b
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)  # rounding leaves tiny imaginary parts
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    return float(max(distance, 0.0))


def clips_gaussian(classifier: AttributeClassifier, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian of clips ``[N, samples]`` (any loudness; int16 or float), embedded in batches."""
    parts = [  # prepare_audio sets the loudness, so int16 samples need no rescaling
        embeddings(classifier, prepare_audio(np.asarray(clips[s : s + EMBED_BATCH], np.float32)))
        for s in range(0, len(clips), EMBED_BATCH)
    ]
    return gaussian(np.concatenate(parts))


def distance_to(
    reference: tuple[np.ndarray, np.ndarray], classifier: AttributeClassifier, clips: np.ndarray
) -> float:
    """Fréchet distance of clips ``[N, samples]`` to ``reference`` (a :func:`gaussian`)."""
    return frechet_distance(clips_gaussian(classifier, clips), reference)
