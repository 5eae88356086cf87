"""k-means for the few-cells, many-features problems of cell typing, in plain NumPy.

Cell typing fits k-means over a range of ``k``, on reference data sets (gap
statistic) and on subsamples: about a thousand small fits per clustering. A
general-purpose implementation spends most of that time checking its inputs;
this one runs the same algorithm (greedy k-means++ starts, Lloyd iterations,
best of ``n_init`` by inertia) directly on arrays of a few dozen rows.
"""
from __future__ import annotations

import numpy as np

from retcodec.errors import ConfigurationError

__all__ = ["kmeans", "kmeans_plus_plus"]

#: Lloyd iterations stop when the centres move less than this, relative to the data's mean variance
RELATIVE_TOLERANCE = 1e-4
MAX_ITERATIONS = 300


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` starting centres ``(k, d)`` for the rows of ``x (n, d)`` by greedy k-means++.

    The first centre is a uniformly drawn row; each next one is the best, by the
    summed squared distance it leaves, of ``2 + ⌊ln k⌋`` rows drawn with
    probability proportional to their squared distance to the nearest centre.
    """
    n = len(x)
    trials = 2 + int(np.log(k))
    centres = [x[rng.integers(n)]]
    closest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:                                    # fewer distinct rows than k
            candidates = rng.integers(n, size=trials)
        else:
            candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * total)
            candidates = np.minimum(candidates, n - 1)
        distance = ((x[None, :, :] - x[candidates][:, None, :]) ** 2).sum(axis=2)   # (trials, n)
        potential = np.minimum(closest[None, :], distance).sum(axis=1)
        best = int(np.argmin(potential))
        centres.append(x[candidates[best]])
        closest = np.minimum(closest, distance[best])
    return np.array(centres)


def _assign(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distance = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)          # (n, k)
    labels = np.argmin(distance, axis=1)
    return labels, distance[np.arange(len(x)), labels]


def _lloyd(x: np.ndarray, centres: np.ndarray, tolerance: float) -> tuple[np.ndarray, float]:
    k = len(centres)
    for _ in range(MAX_ITERATIONS):
        labels, distance = _assign(x, centres)
        members = labels[None, :] == np.arange(k)[:, None]                 # (k, n)
        counts = members.sum(axis=1)
        new = (members @ x) / np.maximum(counts, 1)[:, None]
        for j in np.flatnonzero(counts == 0):             # an empty cluster takes the farthest row
            far = int(np.argmax(distance))
            new[j], distance[far] = x[far], 0.0
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tolerance:
            break
    labels, distance = _assign(x, centres)
    return labels, float(distance.sum())


def kmeans(x: np.ndarray, k: int, random_state: int = 0, n_init: int = 10) -> tuple[np.ndarray, float]:
    """Labels ``(n,)`` and inertia (summed squared distance to the centres) of the best of ``n_init`` runs.

    Deterministic for a given ``random_state``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ConfigurationError(f"k-means needs 1 <= k <= rows of a 2-d array, got k={k} for shape {x.shape}")
    if n_init < 1:
        raise ConfigurationError(f"n_init must be >= 1, got {n_init}")
    rng = np.random.default_rng(random_state)
    tolerance = RELATIVE_TOLERANCE * float(np.var(x, axis=0).mean())
    best: tuple[np.ndarray, float] | None = None
    for _ in range(n_init):
        labels, inertia = _lloyd(x, kmeans_plus_plus(x, k, rng), tolerance)
        if best is None or inertia < best[1]:
            best = (labels, inertia)
    return best
