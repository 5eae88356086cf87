"""Consensus clustering of cells: how sure the cell types are, and how many there are.

Cell features are recomputed on many resamples of the data: a circular block
bootstrap of the windows (blocks of neighbouring windows, so the temporal
correlation of the stimulus is kept) and a random subset of the cells. For every
``k`` the resample is clustered by k-means, and the **consensus** ``M_k[i, j]``
is the fraction of the resamples holding both cells ``i`` and ``j`` in which
they fell in one cluster (Monti et al. 2003).

From the consensus:

* ``pac (k)``: the proportion of ambiguous clustering, the fraction of cell
  pairs whose consensus lies strictly between ``PAC_BOUNDS`` (Şenbabaoğlu et
  al. 2014): a k whose clusters reappear in every resample has few ambiguous
  pairs; a k that splits a real type at random has many.
* the ``consensus`` rule chooses the largest ``k`` whose ``pac`` is at most
  ``threshold`` (``PAC_THRESHOLD``) and whose consensus clusters all hold at
  least ``MIN_TYPE_CELLS`` cells: split as long as the splits are reproducible
  and make types, not lone cells (a k that isolates single cells leaves most
  pairs apart in every resample and so looks unambiguous).
* labels at any ``k``: average-linkage clustering of ``1 − M_k``, cut into ``k``
  clusters (:func:`consensus_labels`).
* per-cell confidence: the mean consensus of a cell with the other members of
  its cluster; its alternative: the other cluster it shares most resamples with
  (:func:`cell_confidence`).

Features are given as a function of the windows: ``make(time_index) -> (cell,
feature)``, so any feature set (drive profiles, mode-rate correlations, rate
correlations) is resampled the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from retcodec.analysis.kmeans import kmeans
from retcodec.analysis.labels import canonical_labels, standardize_columns
from retcodec.errors import ConfigurationError

__all__ = ["FeatureMaker", "Resampler", "correlation_resampler", "block_bootstrap", "consensus_matrices", "ambiguous_fraction", "choose_k_consensus",
           "consensus_labels", "cell_confidence", "consensus_evidence", "separating_features", "ari_interval", "adjusted_rand", "PAC_BOUNDS", "PAC_THRESHOLD",
           "N_CONSENSUS_RESAMPLES", "N_CONTROL_RESAMPLES", "MIN_TYPE_CELLS", "CELL_FRACTION", "BLOCK_WINDOWS"]

#: ``make(time_index)`` -> features ``(cell, feature)`` computed on those windows (positions; repeats allowed)
FeatureMaker = Callable[[np.ndarray], np.ndarray]



@dataclass(frozen=True)
class Resampler:
    """How to rebuild a clustering's features on resampled windows: ``make(time_index) -> (cell, feature)``."""

    make: FeatureMaker
    n_time: int


def correlation_resampler(y: np.ndarray, z: np.ndarray) -> Resampler:
    """Features ``corr_t(y[:, cell], z[:, feature])`` on the resampled windows (NaN, from constants, -> 0).

    ``y (time, cell)``, ``z (time, feature)``: e.g. rates and mode loadings, or rates and rates.
    """
    y, z = np.asarray(y, dtype=np.float64), np.asarray(z, dtype=np.float64)
    if y.ndim != 2 or z.ndim != 2 or len(y) != len(z):
        raise ConfigurationError(f"y (time, cell) and z (time, feature) must share time, got {y.shape}, {z.shape}")

    def make(index: np.ndarray) -> np.ndarray:
        a, b = y[index], z[index]
        a, b = a - a.mean(axis=0), b - b.mean(axis=0)
        norm = np.sqrt((a ** 2).sum(axis=0))[:, None] * np.sqrt((b ** 2).sum(axis=0))[None, :]
        return np.divide(a.T @ b, norm, out=np.zeros((a.shape[1], b.shape[1])), where=norm > 0)

    return Resampler(make, len(y))


#: consensus values strictly inside these bounds count as ambiguous
PAC_BOUNDS = (0.1, 0.9)
#: the consensus rule picks the largest k with at most this fraction of ambiguous pairs (tuned, docs/celltypes.md)
PAC_THRESHOLD = 0.05
#: a type holds at least this many cells (the consensus rule never picks a k that isolates one cell)
MIN_TYPE_CELLS = 2
#: resamples of windows and cells
N_CONSENSUS_RESAMPLES = 50
#: resamples for the controls' consensus (their evidence matters less than the primary's)
N_CONTROL_RESAMPLES = 20
#: fraction of the cells kept in each resample
CELL_FRACTION = 0.8
#: windows per bootstrap block (neighbouring windows are correlated)
BLOCK_WINDOWS = 20


def block_bootstrap(n_time: int, rng: np.random.Generator, block: int = BLOCK_WINDOWS) -> np.ndarray:
    """Positions ``(n_time,)`` of a circular block bootstrap: random blocks of ``block`` neighbouring windows."""
    if n_time < 1:
        raise ConfigurationError("no windows to resample")
    block = int(min(max(1, block), n_time))
    n_blocks = -(-n_time // block)
    starts = rng.integers(0, n_time, size=n_blocks)
    index = (starts[:, None] + np.arange(block)[None, :]).ravel() % n_time
    return index[:n_time]


def consensus_matrices(make: FeatureMaker, n_time: int, n_cells: int, ks: Sequence[int],
                       n_resamples: int = N_CONSENSUS_RESAMPLES, cell_fraction: float = CELL_FRACTION,
                       block: int = BLOCK_WINDOWS, random_state: int = 0, n_init: int = 2,
                       standardize: bool = False) -> np.ndarray:
    """Consensus ``(k, cell, cell)``: the fraction of resamples holding both cells that put them together.

    Each resample draws a block bootstrap of the ``n_time`` windows
    (:func:`block_bootstrap`) and ``cell_fraction`` of the cells, builds the
    features with ``make``, centres them (and standardises each column when
    ``standardize``) and runs k-means for every ``k``. Pairs never drawn
    together keep consensus 0.5 (undecided); the diagonal is 1.
    """
    rng = np.random.default_rng(random_state)
    m = max(2, int(round(cell_fraction * n_cells)))
    together = np.zeros((len(ks), n_cells, n_cells))
    drawn = np.zeros((len(ks), n_cells, n_cells))
    for b in range(n_resamples):
        cells = np.sort(rng.choice(n_cells, size=m, replace=False))
        x = np.asarray(make(block_bootstrap(n_time, rng, block)), dtype=np.float64)[cells]
        x = standardize_columns(x) if standardize else x - x.mean(axis=0)
        n_distinct = np.unique(x, axis=0).shape[0]
        for i, k in enumerate(ks):
            if k > min(m - 1, n_distinct):
                continue
            drawn[i][np.ix_(cells, cells)] += 1
            labels = kmeans(x, k, random_state + 1 + b, n_init)[0]
            same = labels[:, None] == labels[None, :]
            together[i][np.ix_(cells, cells)] += same
    consensus = np.divide(together, drawn, out=np.full_like(together, np.nan), where=drawn > 0)
    idx = np.arange(n_cells)
    consensus[:, idx, idx] = 1.0
    return consensus


def ambiguous_fraction(consensus: np.ndarray, bounds: tuple[float, float] = PAC_BOUNDS) -> np.ndarray:
    """``pac (k)``: fraction of cell pairs (i < j) with consensus strictly inside ``bounds`` (NaN where a pair
    was never clustered at that k)."""
    n = consensus.shape[-1]
    upper = np.triu_indices(n, 1)
    values = consensus[:, upper[0], upper[1]]
    pac = ((values > bounds[0]) & (values < bounds[1])).mean(axis=1)
    return np.where(np.isnan(values).any(axis=1), np.nan, pac)


def choose_k_consensus(ks: Sequence[int], pac: np.ndarray, threshold: float = PAC_THRESHOLD,
                       smallest_type: Sequence[int] | None = None, min_cells: int = MIN_TYPE_CELLS) -> int:
    """The largest k with at most ``threshold`` ambiguous pairs and no type under ``min_cells`` cells.

    ``smallest_type (k)``: the size of the smallest consensus cluster at each k
    (all k qualify when omitted). When no k passes both tests, the least
    ambiguous k among those with types of ``min_cells`` (or among all k).
    """
    ks, pac = list(ks), np.asarray(pac, dtype=np.float64)
    if not np.isfinite(pac).any():
        raise ConfigurationError(f"no k in {ks} has a consensus")
    sizes = np.full(len(ks), min_cells) if smallest_type is None else np.asarray(smallest_type)
    sized = np.isfinite(pac) & (sizes >= min_cells)
    ok = [k for k, p, s in zip(ks, pac, sized) if s and p <= threshold]
    if ok:
        return max(ok)
    pool = sized if sized.any() else np.isfinite(pac)
    return ks[int(np.flatnonzero(pool)[np.argmin(pac[pool])])]


def consensus_labels(consensus: np.ndarray, k: int) -> np.ndarray:
    """Labels ``(cell,)`` at ``k``: average linkage of the distance ``1 − consensus``, cut into ``k`` clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - consensus, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return canonical_labels(fcluster(tree, t=k, criterion="maxclust"))


def cell_confidence(consensus: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: mean consensus with its own cluster, the best other cluster, and the mean consensus with it.

    Returns ``confidence (cell,)`` (for a cell alone in its cluster: one minus its
    mean consensus with the closest other cluster),
    ``alternative (cell,)`` (−1 when there is a single cluster) and
    ``alternative_consensus (cell,)``.
    """
    labels = np.asarray(labels)
    n = labels.size
    clusters = np.unique(labels)
    mean_with = np.zeros((n, clusters.size))
    for j, c in enumerate(clusters):
        members = labels == c
        for i in range(n):
            others = members.copy()
            others[i] = False
            mean_with[i, j] = consensus[i, others].mean() if others.any() else np.nan
    own = np.searchsorted(clusters, labels)
    other = mean_with.copy()
    other[np.arange(n), own] = -np.inf
    confidence = mean_with[np.arange(n), own]
    alone = ~np.isfinite(confidence)            # a cell alone in its cluster: how far it stands from the rest
    confidence[alone] = 1.0 - (other.max(axis=1)[alone] if clusters.size > 1 else 0.0)
    alternative = np.where(clusters.size > 1, clusters[np.argmax(other, axis=1)], -1)
    alt_value = np.where(clusters.size > 1, other.max(axis=1), 0.0)
    return confidence, alternative.astype(np.int64), alt_value


def consensus_evidence(make: FeatureMaker, n_time: int, cells: np.ndarray, ks: Sequence[int],
                       threshold: float = PAC_THRESHOLD, n_resamples: int = N_CONSENSUS_RESAMPLES,
                       cell_fraction: float = CELL_FRACTION, block: int = BLOCK_WINDOWS,
                       random_state: int = 0, n_init: int = 2, standardize: bool = False) -> xr.Dataset:
    """Consensus clustering of ``cells`` over ``ks``, the chosen k, labels and per-cell confidence.

    Returns ``consensus (k, cell, cell2)``, ``pac (k)``, ``consensus_cluster (k, cell)``
    (labels at every k), ``chosen_k``, ``confidence (cell)``, ``alternative (cell)`` and
    ``alternative_consensus (cell)`` at the chosen k.
    """
    cells = np.asarray(cells)
    ks = [int(k) for k in ks if 2 <= int(k) <= cells.size - 1]
    if not ks:
        raise ConfigurationError(f"no k in 2..{cells.size - 1} to try for {cells.size} cells")
    cap = cells.size // MIN_TYPE_CELLS                 # more types than that would isolate single cells
    ks = [k for k in ks if k <= cap] or ks[:1]
    consensus = consensus_matrices(make, n_time, cells.size, ks, n_resamples, cell_fraction, block,
                                   random_state, n_init, standardize)
    pac = ambiguous_fraction(consensus)
    defined = np.isfinite(pac)
    if not defined.any():
        raise ConfigurationError(f"no k in {ks} could be tried on resamples of {cells.size} cells")
    ks, consensus, pac = [k for k, d in zip(ks, defined) if d], consensus[defined], pac[defined]
    labels_by_k = np.array([consensus_labels(c, k) for c, k in zip(consensus, ks)])
    smallest = np.array([np.bincount(labels).min() for labels in labels_by_k])
    chosen = choose_k_consensus(ks, pac, threshold, smallest)
    labels = labels_by_k[ks.index(chosen)]
    confidence, alternative, alt_value = cell_confidence(consensus[ks.index(chosen)], labels)
    return xr.Dataset(
        {"consensus": (("k", "cell", "cell2"), consensus,
                       {"long_name": "fraction of resamples (window blocks, cells) holding both cells that "
                                     "cluster them together"}),
         "pac": ("k", pac, {"long_name": f"fraction of cell pairs with consensus in {PAC_BOUNDS} "
                                         f"(ambiguous pairs)"}),
         "consensus_cluster": (("k", "cell"), labels_by_k,
                               {"long_name": "average-linkage clusters of 1 - consensus at each k"}),
         "smallest_type": ("k", smallest, {"long_name": "cells in the smallest consensus cluster"}),
         "chosen_k": ((), chosen, {"long_name": f"largest k with at most {threshold} ambiguous pairs and "
                                                f"types of at least {MIN_TYPE_CELLS} cells"}),
         "confidence": ("cell", confidence,
                        {"long_name": "mean consensus of the cell with the other members of its type"}),
         "alternative": ("cell", alternative, {"long_name": "the other type the cell is most often put in"}),
         "alternative_consensus": ("cell", alt_value,
                                   {"long_name": "mean consensus of the cell with its alternative type"})},
        coords={"k": ks, "cell": cells, "cell2": cells},
        attrs={"n_resamples": n_resamples, "cell_fraction": cell_fraction, "block_windows": block,
               "pac_threshold": threshold, "pac_bounds": list(PAC_BOUNDS), "random_state": random_state})


def separating_features(features: xr.DataArray, labels: np.ndarray, top: int = 3) -> xr.Dataset:
    """For every pair of types, the features that tell them apart most.

    ``features (cell, feature)``; ``labels (cell,)``. The separation of a
    feature is the difference of the two types' means divided by their pooled
    within-type standard deviation (floored at a tenth of the feature's standard
    deviation over all cells, so that types of identical cells do not divide by
    zero): a signed effect size, type ``a`` minus type ``b``. Returns
    ``separating_feature (type_a, type_b, rank)`` (names) and ``separation
    (type_a, type_b, rank)``, ranks ordered by ``|separation|``; the diagonal is empty.
    """
    if not isinstance(features, xr.DataArray) or features.ndim != 2 or "cell" not in features.dims:
        raise ConfigurationError("features must be a DataArray (cell, feature)")
    feature_dim = next(d for d in features.dims if d != "cell")
    x = features.transpose("cell", feature_dim).values.astype(np.float64)
    names = np.asarray(features[feature_dim].values).astype(str)
    labels = np.asarray(labels)
    types = np.unique(labels)
    top = int(min(top, x.shape[1]))
    floor = 0.1 * x.std(axis=0) + 1e-12
    name_out = np.full((types.size, types.size, top), "", dtype=object)
    value_out = np.full((types.size, types.size, top), np.nan)
    for i, a in enumerate(types):
        for j, b in enumerate(types):
            if i == j:
                continue
            xa, xb = x[labels == a], x[labels == b]
            dof = max(len(xa) + len(xb) - 2, 1)
            pooled = np.sqrt((((xa - xa.mean(0)) ** 2).sum(0) + ((xb - xb.mean(0)) ** 2).sum(0)) / dof)
            d = (xa.mean(0) - xb.mean(0)) / np.maximum(pooled, floor)
            order = np.argsort(-np.abs(d), kind="stable")[:top]
            name_out[i, j], value_out[i, j] = names[order], d[order]
    return xr.Dataset({"separating_feature": (("type_a", "type_b", "rank"), name_out.astype(str),
                                              {"long_name": "features that separate type a from type b most"}),
                       "separation": (("type_a", "type_b", "rank"), value_out,
                                      {"long_name": "mean difference (a - b) over pooled within-type std"})},
                      coords={"type_a": types, "type_b": types, "rank": np.arange(top)})


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie), from their contingency table."""
    _, ia = np.unique(np.asarray(a), return_inverse=True)
    _, ib = np.unique(np.asarray(b), return_inverse=True)
    table = np.bincount(ia.ravel() * (ib.max() + 1) + ib.ravel(), minlength=(ia.max() + 1) * (ib.max() + 1))
    pairs = lambda v: (v * (v - 1) / 2.0).sum()                      # noqa: E731
    index = pairs(table)
    rows = pairs(table.reshape(ia.max() + 1, -1).sum(axis=1))
    cols = pairs(table.reshape(ia.max() + 1, -1).sum(axis=0))
    total = ia.size * (ia.size - 1) / 2.0
    expected = rows * cols / total if total > 0 else 0.0
    maximum = 0.5 * (rows + cols)
    if maximum == expected:                                          # both trivial: identical partitions
        return 1.0
    return float((index - expected) / (maximum - expected))


def ari_interval(true_types: np.ndarray, labels: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 random_state: int = 0) -> tuple[float, float]:
    """Bootstrap interval (cells drawn with replacement) of the adjusted Rand index of ``labels`` vs the truth."""
    true_types, labels = np.asarray(true_types), np.asarray(labels)
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, labels.size, size=(n_boot, labels.size))
    values = np.array([adjusted_rand(true_types[d], labels[d]) for d in draws])
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
