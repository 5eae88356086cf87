"""Sparse modes: merge a sparse autoencoder's atoms by direction, with thresholded loadings.

The thresholded autoencoder (``ContributionModes(compact=False)``) spends many
atoms on one direction at several magnitudes. Here its atoms become a
dictionary of *modes* whose loadings are continuous and sparse by construction
(``docs/modes.md``):

1. :func:`thresholded_loadings` - a mode is *active* in a sample when its part
   of the reconstruction, ``‖z_k d_k‖``, is at least the model's activity cut
   (``activity_threshold`` times the median sample norm of the training data);
   loadings below it are exactly 0, and the others are refitted by
   non-negative least squares on the active modes until every active part
   passes the cut.
2. :func:`direction_tree` / :func:`tree_candidates` - atoms are merged by
   direction only: average-linkage clustering of their unit directions on
   cosine distance, so scaled copies of one direction join first; cutting the
   tree into ``k`` groups gives a candidate dictionary (each group's
   energy-weighted mean direction), refined on the data by alternating
   thresholded loadings and non-negative dictionary updates (:func:`refine`).
3. :func:`scan_frontier` / :func:`choose_operating_point` - the
   reconstruction-sparsity frontier: held-out R² and L0 (active modes per
   sample) of every candidate count; the operating point is the smallest count
   whose held-out R² is within ``tolerance`` of the best and whose L0 is within
   ``l0_tolerance`` of the lowest L0 among those; then :func:`prune_modes` drops
   modes that buy less than ``tolerance / 4`` of held-out R² and save less than
   ``l0_tolerance`` of L0.

Dictionaries here are unit-norm rows ``D`` (k, d); loadings ``Z`` (n, k) are
non-negative and ``X ≈ Z @ D``. With ``nonneg=False`` dictionary rows may have
any sign (the loadings stay non-negative).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import nnls

__all__ = ["unit_rows", "nnls_loadings", "hals_loadings", "thresholded_loadings", "sparse_hals",
           "activity_cut", "refine", "direction_tree", "tree_candidates", "Frontier", "scan_frontier",
           "choose_operating_point", "prune_modes", "copies_pool", "next_direction", "mode_energy", "explained_r2", "HELD_OUT_EVERY"]

REFINE_ITERATIONS = 40    # alternating sweeps when refining the chosen dictionary
SCAN_ITERATIONS = 15      # alternating sweeps when refining a candidate during the scan
REFINE_TOL = 1e-5         # stop refining when the relative loss change falls below this
HELD_OUT_EVERY = 5        # the frontier holds out every fifth sample (20 %)
SCAN_PATIENCE = 3         # stop the scan after this many counts without progress


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


def activity_cut(X: np.ndarray, activity_threshold: float) -> float:
    """The activity cut in the units of ``X``: ``activity_threshold`` × median sample norm (> 0)."""
    norms = np.linalg.norm(X, axis=1)
    typical = float(np.median(norms)) if norms.size else 0.0
    if typical <= 0:
        typical = float(norms.mean()) if norms.size and norms.mean() > 0 else 1.0
    return activity_threshold * typical


# --------------------------------------------------------------------------- loadings
def nnls_loadings(X: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Exact non-negative least-squares loadings, sample by sample: (n, d), (k, d) -> (n, k)."""
    if len(D) == 0:
        return np.zeros((len(X), 0))
    A = np.ascontiguousarray(D.T)
    return np.array([nnls(A, x)[0] for x in X]).reshape(len(X), len(D))


def thresholded_loadings(X: np.ndarray, D: np.ndarray, cut: float) -> np.ndarray:
    """Sparse loadings, exact and sample by sample: (n, d), (k, d) -> (n, k).

    For each sample: non-negative least squares on all modes; modes whose part
    ``z_k ‖d_k‖`` is below ``cut`` are dropped and the rest refitted, until every
    remaining part passes the cut (the support only shrinks, so this ends).
    """
    Z = np.zeros((len(X), len(D)))
    if len(D) == 0:
        return Z
    norms = np.linalg.norm(D, axis=1)
    A = np.ascontiguousarray(D.T)
    for t, x in enumerate(X):
        support = np.flatnonzero(norms > 0)
        while support.size:
            z = nnls(A[:, support], x)[0]
            keep = z * norms[support] >= cut
            if keep.all():
                Z[t, support] = z
                break
            support = support[keep]
    return Z


def hals_loadings(X: np.ndarray, D: np.ndarray, Z: np.ndarray | None = None,
                  sweeps: int = 100, tol: float = 1e-6, mask: np.ndarray | None = None) -> np.ndarray:
    """Approximate non-negative loadings for a batch by coordinate descent (HALS).

    ``X`` (n, d), ``D`` (k, d), optional start ``Z`` (n, k) and boolean ``mask``
    (n, k) of the loadings allowed to be non-zero; stops when a sweep changes
    ``Z`` by less than ``tol`` times the first sweep's change.
    """
    G = D @ D.T
    B_t = D @ X.T                                          # (k, n): rows contiguous
    Z_t = np.zeros((len(D), len(X))) if Z is None else np.array(Z.T, dtype=np.float64, order="C")
    M_t = None if mask is None else np.ascontiguousarray(mask.T)
    if M_t is not None:
        Z_t *= M_t
    diagonal = np.maximum(np.diag(G), 1e-300)
    first = None
    for _ in range(sweeps):
        change = 0.0
        for j in range(len(D)):
            new = Z_t[j] + (B_t[j] - G[j] @ Z_t) / diagonal[j]
            np.maximum(new, 0.0, out=new)
            if M_t is not None:
                new *= M_t[j]
            step = new - Z_t[j]
            change += float(step @ step)
            Z_t[j] = new
        first = change if first is None else first
        if change <= tol * max(first, 1e-300):
            break
    return Z_t.T


def sparse_hals(X: np.ndarray, D: np.ndarray, cut: float, Z: np.ndarray | None = None,
                rounds: int = 3) -> np.ndarray:
    """Fast batch version of :func:`thresholded_loadings` (HALS, ``rounds`` thresholding passes)."""
    norms = np.linalg.norm(D, axis=1)
    Z = hals_loadings(X, D, Z, sweeps=15 if Z is not None else 40, tol=1e-4)
    for _ in range(rounds):
        Z = hals_loadings(X, D, Z, sweeps=10, tol=1e-4, mask=Z * norms >= cut)
    return Z * (Z * norms >= cut)


# --------------------------------------------------------------------------- dictionaries
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


def refine(X: np.ndarray, D: np.ndarray, cut: float, nonneg: bool = True,
           max_iter: int = REFINE_ITERATIONS, tol: float = REFINE_TOL) -> np.ndarray:
    """Alternate thresholded loadings and dictionary updates from ``D`` (k, d) on ``X`` (n, d).

    Returns unit-norm modes (k', d), ``k' <= k``: modes that end up empty or
    never active are dropped.
    """
    D = unit_rows(D)
    Z, previous = None, np.inf
    for _ in range(max_iter):
        Z = sparse_hals(X, D, cut, Z, rounds=2)
        D = _update_dictionary(X, Z, D, nonneg)
        norms = np.linalg.norm(D, axis=1)
        keep = norms > 1e-12
        D, Z = D[keep] / norms[keep, None], Z[:, keep] * norms[keep]
        loss = float(((X - Z @ D) ** 2).sum())
        if previous - loss <= tol * max(loss, 1e-300):
            break
        previous = loss
    Z = sparse_hals(X, D, cut, Z)
    return D[(Z > 0).any(axis=0)] if len(D) else D


def direction_tree(atoms: np.ndarray) -> np.ndarray:
    """Average-linkage tree of the atoms' unit directions on cosine distance (scipy linkage matrix)."""
    U = unit_rows(atoms)
    if len(U) < 2:
        return np.zeros((0, 4))
    return linkage(U, method="average", metric="cosine")


def tree_candidates(atoms: np.ndarray, weights: np.ndarray, tree: np.ndarray, k: int) -> np.ndarray:
    """The tree cut into (at most) ``k`` groups: each group's energy-weighted mean direction (k', d)."""
    U = unit_rows(atoms)
    labels = tree_labels(tree, len(U), k)
    w = np.maximum(weights, 0) + 1e-12
    centres = np.array([(w[labels == j, None] * U[labels == j]).sum(axis=0)
                        for j in range(labels.max() + 1)])
    return unit_rows(centres)


def tree_labels(tree: np.ndarray, n_atoms: int, k: int) -> np.ndarray:
    """Group (0..k'-1) of each atom when the tree is cut into at most ``k`` groups."""
    if n_atoms < 2:
        return np.zeros(n_atoms, dtype=np.int64)
    return fcluster(tree, t=k, criterion="maxclust").astype(np.int64) - 1


def copies_count(tree: np.ndarray, n_atoms: int, merge_cosine: float) -> int:
    """Number of groups when only atoms within cosine ``merge_cosine`` (scaled copies) are merged."""
    if n_atoms < 2:
        return n_atoms
    labels = fcluster(tree, t=1.0 - merge_cosine, criterion="distance")
    return int(labels.max())


# --------------------------------------------------------------------------- the frontier
@dataclass
class Frontier:
    """Candidate counts of one scan: held-out R², L0 and the share of samples with no active mode."""

    n_modes: np.ndarray       # (n_candidates,) modes after refinement
    r2: np.ndarray            # held-out R²
    l0: np.ndarray            # held-out mean number of active modes per sample
    none: np.ndarray          # held-out share of samples with no active mode
    chosen: int               # index of the operating point
    modes: np.ndarray | None = None     # the chosen candidate's modes, refined on the fitted samples
    pruned: np.ndarray | None = None    # those left after prune_modes

    @property
    def pareto(self) -> np.ndarray:
        """Candidates no other candidate beats on both held-out R² (higher) and L0 (lower)."""
        out = np.ones(len(self.r2), dtype=bool)
        for i in range(len(self.r2)):
            better = (self.r2 >= self.r2[i]) & (self.l0 <= self.l0[i]) & \
                ((self.r2 > self.r2[i]) | (self.l0 < self.l0[i]))
            out[i] = not better.any()
        return out


def held_out_split(n: int) -> np.ndarray:
    """Boolean (n,): every ``HELD_OUT_EVERY``-th sample is held out (a fixed, interleaved split)."""
    held_out = np.arange(n) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    if held_out.all() or not held_out.any():
        held_out = np.zeros(n, dtype=bool)
        held_out[-1] = True
    return held_out


def copies_pool(atoms: np.ndarray, weights: np.ndarray, merge_cosine: float) -> np.ndarray:
    """Distinct directions of the atoms: scaled copies (cosine >= ``merge_cosine``) merged (m, d)."""
    tree = direction_tree(atoms)
    return tree_candidates(atoms, weights, tree, copies_count(tree, len(atoms), merge_cosine))


def next_direction(X: np.ndarray, D: np.ndarray, Z: np.ndarray, pool: np.ndarray, merge_cosine: float,
                   nonneg: bool = True, n_samples: int = 8) -> np.ndarray | None:
    """The direction that best explains what ``Z @ D`` leaves of ``X``: max ``Σ_t max(0, u·r_t)²``.

    Candidates: the ``pool`` of atom directions and the residuals of the
    ``n_samples`` worst-explained samples (positive part when ``nonneg``),
    except directions within cosine ``merge_cosine`` of a current mode (copies
    of it). None when no candidate is left.
    """
    residual = X - Z @ D if len(D) else X
    worst = residual[np.argsort(-np.linalg.norm(residual, axis=1))[:n_samples]]
    candidates = np.vstack([pool, unit_rows(np.maximum(worst, 0.0) if nonneg else worst)])
    candidates = candidates[np.linalg.norm(candidates, axis=1) > 0]
    if len(D):
        candidates = candidates[(candidates @ unit_rows(D).T).max(axis=1) < merge_cosine]
    if not len(candidates):
        return None
    gain = (np.maximum(residual @ candidates.T, 0.0) ** 2).sum(axis=0)
    return candidates[int(np.argmax(gain))]


def scan_frontier(X: np.ndarray, pool: np.ndarray, max_modes: int, cut: float, tolerance: float,
                  l0_tolerance: float, nonneg: bool = True, fixed: int | None = None,
                  merge_cosine: float = 0.95) -> Frontier:
    """Held-out R² and L0 of ``k = 1, 2, …`` modes grown from the ``pool`` of atom directions.

    Every fifth sample is held out. From ``k`` modes refined on the other
    samples, the pool direction that best explains their residual is added
    (:func:`next_direction`) and the ``k + 1`` modes refined again. The scan
    stops at ``max_modes`` (or at ``fixed`` modes, then that count is chosen),
    or once ``SCAN_PATIENCE`` further counts neither raised the best held-out
    R² by ``tolerance / 4`` nor lowered the lowest L0 (among counts within
    ``tolerance`` of the best R²) by ``l0_tolerance``.
    """
    held_out = held_out_split(len(X))
    X_out, X_fit = X[held_out], X[~held_out]
    n_modes, r2, l0, none, dictionaries = [], [], [], [], []
    D, Z = np.zeros((0, X.shape[1])), np.zeros((len(X_fit), 0))
    stale, best_r2, best_l0 = 0, -np.inf, np.inf
    for k in range(1, (fixed or max_modes) + 1):
        new = next_direction(X_fit, D, Z, pool, merge_cosine, nonneg)
        if new is None:
            break
        D = refine(X_fit, np.vstack([D, new]), cut, nonneg, max_iter=SCAN_ITERATIONS)
        Z = sparse_hals(X_fit, D, cut)
        Z_out = thresholded_loadings(X_out, D, cut)
        active = (Z_out > 0).sum(axis=1)
        dictionaries.append(D)
        n_modes.append(len(D))
        r2.append(explained_r2(X_out, Z_out @ D))
        l0.append(float(active.mean()))
        none.append(float(np.mean(active == 0)))
        scores = np.asarray(r2)
        low = float(np.asarray(l0)[scores >= scores.max() - tolerance].min())
        progressed = r2[-1] > best_r2 + tolerance / 4 or low < best_l0 - l0_tolerance
        best_r2, best_l0 = max(best_r2, r2[-1]), min(best_l0, low)
        stale = 0 if progressed else stale + 1
        if fixed is None and stale >= SCAN_PATIENCE:
            break
    frontier = Frontier(np.array(n_modes), np.array(r2), np.array(l0), np.array(none), 0)
    if fixed is not None:
        frontier.chosen = len(r2) - 1
        frontier.modes = frontier.pruned = dictionaries[-1]
        return frontier
    frontier.chosen = choose_operating_point(frontier.r2, frontier.l0, tolerance, l0_tolerance)
    frontier.modes = dictionaries[frontier.chosen]
    frontier.pruned = prune_modes(X_out, frontier.modes, cut, tolerance / 4, l0_tolerance)
    return frontier


def prune_modes(X: np.ndarray, D: np.ndarray, cut: float, r2_loss: float, l0_gain: float) -> np.ndarray:
    """Drop modes, weakest first, that buy less than ``r2_loss`` of R² or save less than ``l0_gain`` of L0.

    The growth can leave a spurious mode (a rare mixture of two others, or
    a second, partial copy of one). On ``X`` (n, d; the held-out samples) a
    mode is dropped when, without it (and the modes dropped before), R² is
    still at least the starting R² − ``r2_loss`` and L0 at most the starting
    L0 + ``l0_gain``. Modes are tried in increasing order of their energy on
    ``X``; returns the kept rows of ``D``.
    """
    keep = np.ones(len(D), dtype=bool)
    Z = thresholded_loadings(X, D, cut)
    r2_start, l0_start = explained_r2(X, Z @ D), float((Z > 0).sum(axis=1).mean())
    for j in np.argsort(mode_energy(X, Z, D), kind="stable"):
        trial = keep.copy()
        trial[j] = False
        if not trial.any():
            break
        Zt = thresholded_loadings(X, D[trial], cut)
        if explained_r2(X, Zt @ D[trial]) >= r2_start - r2_loss and \
                (Zt > 0).sum(axis=1).mean() <= l0_start + l0_gain:
            keep = trial
    return D[keep]


def choose_operating_point(r2: np.ndarray, l0: np.ndarray, tolerance: float, l0_tolerance: float) -> int:
    """Index of the operating point on a frontier of candidate counts ``1, 2, …``.

    Among the candidates whose held-out R² is within ``tolerance`` of the best,
    the smallest count whose L0 is within ``l0_tolerance`` of the lowest L0
    among them.
    """
    r2, l0 = np.asarray(r2, dtype=float), np.asarray(l0, dtype=float)
    good = r2 >= np.nanmax(r2) - tolerance
    sparse = l0 <= np.min(l0[good]) + l0_tolerance
    return int(np.flatnonzero(good & sparse)[0])


def mode_energy(X: np.ndarray, Z: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Share of ``Σ‖x‖²`` carried by each mode's part ``z_k d_k`` of the reconstruction: (k,)."""
    total = float((X ** 2).sum())
    energy = (Z ** 2).sum(axis=0) * (D ** 2).sum(axis=1)
    return energy / total if total > 0 else energy
