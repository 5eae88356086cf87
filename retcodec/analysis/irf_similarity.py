"""Uncertainty of the IRF within/across-combination similarity: bootstrap over cells, shuffled-label null.

The IRF analysis (:func:`~retcodec.analysis.combinations.combination_irfs`)
compares a cell's rank-1 spatial filters at moments with the same combination
of active modes (*within*) and with different combinations (*across*).
:func:`similarity_statistics` adds

* percentile intervals of the pooled within, across and within - across
  similarities from a bootstrap over cells (cells are the independent units;
  each resampled cell brings all its pairs);
* a null of within - across from shuffling the combination labels of each
  cell's moments (set sizes kept), with the one-sided p-value
  ``(1 + #{null >= observed}) / (1 + n_shuffle)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retcodec.analysis.uncertainty import LEVEL, N_BOOT, permutation_p

__all__ = ["similarity_statistics", "N_SHUFFLE"]

#: label shuffles of the null
N_SHUFFLE = 1000


def _pairs(corr: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    upper = np.triu(np.ones(corr.shape, dtype=bool), k=1)
    same = owner[:, None] == owner[None, :]
    within, across = corr[upper & same], corr[upper & ~same]
    return within[np.isfinite(within)], across[np.isfinite(across)]


def _pooled(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    w = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0)
    a = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0)
    return (float(w.mean()) if w.size else np.nan), (float(a.mean()) if a.size else np.nan)


def similarity_statistics(cells: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = N_BOOT,
                          n_shuffle: int = N_SHUFFLE, level: float = LEVEL,
                          random_state: int = 0) -> dict[str, np.ndarray | float]:
    """Intervals and a shuffled-label null of the pooled IRF similarities.

    Parameters
    ----------
    cells : per cell, ``(corr, owner)``: the Pearson correlations between all
        its moments' spatial filters ``(n, n)`` (NaN for flat filters) and the
        combination of each moment ``(n,)``.

    Returns
    -------
    dict with ``within``, ``across``, ``difference`` (pooled over all pairs of
    all cells), ``*_low`` / ``*_high`` (bootstrap over cells), ``null``
    (``(n_shuffle,)`` differences under shuffled labels) and ``p_value``.
    """
    rng = np.random.default_rng(random_state)
    pairs = [_pairs(c, o) for c, o in cells]
    within, across = _pooled(pairs)
    out: dict[str, np.ndarray | float] = {"within": within, "across": across, "difference": within - across}
    usable = [k for k, (w, a) in enumerate(pairs) if w.size or a.size]
    tail = (1 - level) / 2
    if usable:
        draws = np.array([_pooled([pairs[k] for k in rng.choice(usable, size=len(usable))])
                          for _ in range(n_boot)])
        for name, values in (("within", draws[:, 0]), ("across", draws[:, 1]),
                             ("difference", draws[:, 0] - draws[:, 1])):
            finite = values[np.isfinite(values)]
            lo, hi = np.quantile(finite, [tail, 1 - tail]) if finite.size else (np.nan, np.nan)
            out[f"{name}_low"], out[f"{name}_high"] = float(lo), float(hi)
    else:
        for name in ("within", "across", "difference"):
            out[f"{name}_low"] = out[f"{name}_high"] = np.nan
    null = np.full(n_shuffle, np.nan)
    for i in range(n_shuffle):
        w, a = _pooled([_pairs(c, rng.permutation(o)) for c, o in cells])
        null[i] = w - a
    out["null"] = null
    out["p_value"] = permutation_p(float(out["difference"]), null)
    return out
