"""Compact modes: merge a sparse autoencoder's atoms into one mode per direction.

The thresholded autoencoder (``ContributionModes(compact=False)``) spends many
atoms on one direction at several magnitudes, and on mixtures of directions.
Here its atoms become a small dictionary whose loadings are continuous:

1. :func:`merge_atoms` groups the unit-norm atom directions into ``k`` groups
   (spherical k-means weighted by each atom's energy, k-means++ start), takes
   each group's energy-weighted mean direction, and refines the dictionary and
   the loadings by alternating non-negative least squares (:func:`refine`).
2. :func:`choose_count` picks ``k``: the smallest count whose R² on held-out
   samples (every fifth) lies within ``tolerance`` of the best R² over
   ``k = 1..max_modes``.
3. Loadings of any sample are its exact non-negative least-squares
   coefficients on the fixed modes (:func:`nnls_loadings`).

Dictionaries here are unit-norm rows ``D`` (k, d); loadings ``Z`` (n, k) are
non-negative and ``X ≈ Z @ D``. With ``nonneg=False`` the dictionary rows may
have any sign (the loadings stay non-negative).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


__all__ = ["unit_rows", "nnls_loadings", "hals_loadings", "refine", "spherical_kmeans",
           "merge_atoms", "choose_count", "mode_energy", "explained_r2"]

REFINE_ITERATIONS = 200   # alternating least-squares sweeps when refining a merged dictionary
REFINE_TOL = 1e-6         # stop refining when the relative loss change falls below this
HELD_OUT_EVERY = 5        # choose_count holds out every fifth sample (20 %)


def explained_r2(X: np.ndarray, X_hat: np.ndarray) -> float:
    """Variance-weighted R² of ``X_hat`` against ``X``, both (samples, features)."""
    X, X_hat = np.asarray(X, dtype=np.float64), np.asarray(X_hat, dtype=np.float64)
    total = float(((X - X.mean(axis=0)) ** 2).sum())
    residual = float(((X - X_hat) ** 2).sum())
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def unit_rows(A: np.ndarray) -> np.ndarray:
    """Rows of ``A`` divided by their Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return np.divide(A, norms, out=np.zeros_like(A, dtype=np.float64), where=norms > 0)


def nnls_loadings(X: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Exact non-negative least-squares loadings, sample by sample: (n, d), (k, d) -> (n, k)."""
    if len(D) == 0:
        return np.zeros((len(X), 0))
    A = np.ascontiguousarray(D.T)
    return np.array([nnls(A, x)[0] for x in X]).reshape(len(X), len(D))


def hals_loadings(X: np.ndarray, D: np.ndarray, Z: np.ndarray | None = None,
                  sweeps: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Approximate non-negative loadings for a whole batch by coordinate descent (HALS).

    ``X`` (n, d), ``D`` (k, d), optional start ``Z`` (n, k); stops when a sweep
    changes ``Z`` by less than ``tol`` times the first sweep's change.
    """
    G = D @ D.T
    B_t = D @ X.T                                          # (k, n): rows contiguous
    Z_t = np.zeros((len(D), len(X))) if Z is None else np.ascontiguousarray(Z.T)
    diagonal = np.maximum(np.diag(G), 1e-300)
    first = None
    for _ in range(sweeps):
        change = 0.0
        for j in range(len(D)):
            new = Z_t[j] + (B_t[j] - G[j] @ Z_t) / diagonal[j]
            np.maximum(new, 0.0, out=new)
            step = new - Z_t[j]
            change += float(step @ step)
            Z_t[j] = new
        first = change if first is None else first
        if change <= tol * max(first, 1e-300):
            break
    return Z_t.T


def _update_dictionary(X: np.ndarray, Z: np.ndarray, D: np.ndarray, nonneg: bool) -> np.ndarray:
    """One block-coordinate pass over the rows of ``D`` (non-negative when ``nonneg``)."""
    G, B = Z.T @ Z, Z.T @ X
    D = D.copy()
    for j in range(len(D)):
        if G[j, j] <= 0:
            continue
        row = D[j] + (B[j] - G[j] @ D) / G[j, j]
        D[j] = np.maximum(row, 0.0) if nonneg else row
    return D


def refine(X: np.ndarray, D: np.ndarray, nonneg: bool = True,
           max_iter: int = REFINE_ITERATIONS, tol: float = REFINE_TOL
           ) -> tuple[np.ndarray, np.ndarray]:
    """Alternate loadings and dictionary updates from ``D``; drop modes that end up empty.

    Returns unit-norm ``D`` (k', d) with ``k' <= k`` and loadings ``Z`` (n, k').
    """
    D = unit_rows(D)
    Z = hals_loadings(X, D, sweeps=50)
    previous = np.inf
    for _ in range(max_iter):
        D = _update_dictionary(X, Z, D, nonneg)
        norms = np.linalg.norm(D, axis=1)
        keep = norms > 1e-12
        D, Z = D[keep] / norms[keep, None], Z[:, keep] * norms[keep]
        Z = hals_loadings(X, D, Z, sweeps=5)
        loss = float(((X - Z @ D) ** 2).sum())
        if previous - loss <= tol * max(loss, 1e-300):
            break
        previous = loss
    used = Z.max(axis=0) > 0 if len(Z) else np.zeros(len(D), bool)
    return D[used], Z[:, used]


def spherical_kmeans(U: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator,
                     max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Group unit rows ``U`` (m, d) into ``k`` directions; returns centres (k, d), labels (m,).

    Weighted by ``weights`` (m,) ≥ 0; k-means++ start on cosine distance.
    """
    p = weights / weights.sum() if weights.sum() > 0 else np.full(len(U), 1 / len(U))
    centres = [U[rng.choice(len(U), p=p)]]
    for _ in range(1, k):
        distance = np.maximum(1 - np.max(U @ np.array(centres).T, axis=1), 0) * p
        total = distance.sum()
        centres.append(U[rng.choice(len(U), p=distance / total)] if total > 0
                       else U[rng.choice(len(U))])
    centres = np.array(centres)
    labels = np.argmax(U @ centres.T, axis=1)
    for _ in range(max_iter):
        new = centres.copy()
        for j in range(k):
            members = labels == j
            if members.any():
                new[j] = (weights[members, None] * U[members]).sum(axis=0)
        new = unit_rows(new)
        new[np.linalg.norm(new, axis=1) == 0] = centres[np.linalg.norm(new, axis=1) == 0]
        labels = np.argmax(U @ new.T, axis=1)
        if np.allclose(new, centres):
            break
        centres = new
    return centres, labels


def merge_atoms(X: np.ndarray, atoms: np.ndarray, weights: np.ndarray, k: int,
                rng: np.random.Generator, nonneg: bool = True, n_init: int = 4
                ) -> tuple[np.ndarray, np.ndarray]:
    """Best of ``n_init`` merges of ``atoms`` (m, d) into ``k`` refined modes on ``X`` (n, d).

    Returns unit-norm modes ``D`` (k', d), ``k' <= k``, and their loadings (n, k').
    """
    U = unit_rows(atoms)
    best = None
    for _ in range(n_init):
        centres, _ = spherical_kmeans(U, weights, min(k, len(U)), rng)
        D, Z = refine(X, centres, nonneg)
        loss = float(((X - Z @ D) ** 2).sum())
        if best is None or loss < best[0]:
            best = (loss, D, Z)
    return best[1], best[2]


def choose_count(X: np.ndarray, atoms: np.ndarray, weights: np.ndarray, max_modes: int,
                 tolerance: float, rng: np.random.Generator, nonneg: bool = True,
                 n_init: int = 4) -> tuple[int, np.ndarray]:
    """Number of modes: the smallest ``k`` with held-out R² ≥ (best over k) − ``tolerance``.

    Every ``HELD_OUT_EVERY``-th sample of ``X`` (n, d) is held out (a fixed,
    interleaved split, so that the count does not depend on a random split);
    for ``k = 1, 2, ...`` the atoms are merged into ``k`` modes on the other
    samples (best of ``n_init`` groupings) and scored by the held-out R² of
    their non-negative loadings. The scan stops at ``max_modes`` or when two
    more modes gain less than ``tolerance / 4``, or as soon as the current
    choice scores at least ``1 − tolerance`` (held-out R² cannot exceed 1, so
    scanning further could not change it). Returns ``k`` and the R² per ``k``.
    """
    held_out = np.arange(len(X)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    if held_out.all() or not held_out.any():
        held_out = np.zeros(len(X), dtype=bool)
        held_out[-1] = True
    X_out, X_fit = X[held_out], X[~held_out]
    path: list[float] = []
    for k in range(1, max_modes + 1):
        D, _ = merge_atoms(X_fit, atoms, weights, k, rng, nonneg, n_init=n_init)
        path.append(explained_r2(X_out, hals_loadings(X_out, D) @ D))
        if k >= 3 and path[-1] - path[-3] < tolerance / 4:
            break
        if path[_smallest_within(path, tolerance)] >= 1.0 - tolerance:
            break           # R² <= 1: no larger count can change the choice
    scores = np.array(path)
    return _smallest_within(path, tolerance) + 1, scores


def _smallest_within(path: list[float], tolerance: float) -> int:
    """Index of the first score within ``tolerance`` of the best."""
    scores = np.asarray(path)
    return int(np.flatnonzero(scores >= scores.max() - tolerance)[0])


def mode_energy(X: np.ndarray, Z: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Share of ``Σ‖x‖²`` carried by each mode's part ``z_k d_k`` of the reconstruction: (k,)."""
    total = float((X ** 2).sum())
    energy = (Z ** 2).sum(axis=0) * (D ** 2).sum(axis=1)
    return energy / total if total > 0 else energy
