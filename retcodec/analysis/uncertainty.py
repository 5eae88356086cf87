"""Resampling helpers for intervals and nulls: block bootstrap, percentile intervals, corrections.

* :func:`block_bootstrap` — resampled index sets of a time series, drawn as
  whole contiguous blocks (neighbouring windows overlap and are correlated, so
  single windows are not independent draws).
* :func:`bootstrap_interval` — a statistic's estimate and percentile interval
  under case or block resampling.
* :func:`median_interval` — the median of finite values with its bootstrap interval.
* :func:`holm` — Holm step-down adjusted p-values (family-wise error control).
* :func:`permutation_p` — ``(1 + #{null >= observed}) / (1 + n)``.

Every function is deterministic under ``random_state``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from retcodec.errors import ConfigurationError

__all__ = ["block_bootstrap", "bootstrap_interval", "median_interval", "holm", "permutation_p",
           "N_BOOT", "LEVEL", "N_BOOT_BLOCKS"]

#: bootstrap resamples unless told otherwise
N_BOOT = 200
#: coverage of the percentile intervals
LEVEL = 0.95
#: contiguous blocks a time series is cut into for the block bootstrap
N_BOOT_BLOCKS = 20


def block_bootstrap(n: int, n_boot: int = N_BOOT, n_blocks: int | None = N_BOOT_BLOCKS,
                    random_state: int = 0) -> np.ndarray:
    """``(n_boot, n)`` indices: each row ``n_blocks`` contiguous blocks drawn with replacement.

    ``n_blocks=None`` (or ``>= n``) resamples single cases. Rows may be a few
    indices shorter than ``n`` when ``n`` is not a multiple of ``n_blocks``:
    they are padded by wrapping, so every row has length ``n``.
    """
    if n < 1:
        raise ConfigurationError(f"block_bootstrap needs at least one sample, got n={n}")
    if n_boot < 1:
        raise ConfigurationError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(random_state)
    if n_blocks is None or n_blocks >= n:
        return rng.integers(0, n, size=(n_boot, n))
    if n_blocks < 2:
        raise ConfigurationError(f"n_blocks must be >= 2 (or None for single cases), got {n_blocks}")
    edges = np.linspace(0, n, n_blocks + 1).astype(int)
    blocks = [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
    out = np.empty((n_boot, n), dtype=np.int64)
    for i in range(n_boot):
        drawn = np.concatenate([blocks[j] for j in rng.integers(0, n_blocks, size=n_blocks)])
        out[i] = np.resize(drawn, n)
    return out


def bootstrap_interval(values: Any, statistic: Callable[[np.ndarray], float], n_boot: int = N_BOOT,
                       level: float = LEVEL, n_blocks: int | None = None,
                       random_state: int = 0) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of ``statistic(values)`` with a percentile bootstrap interval.

    ``values`` is resampled along its first axis (single cases, or contiguous
    blocks with ``n_blocks``). Resamples whose statistic is not finite are
    left out; with none finite the interval is NaN.
    """
    if not 0 < level < 1:
        raise ConfigurationError(f"level must be in (0, 1), got {level}")
    values = np.asarray(values)
    estimate = float(statistic(values))
    index = block_bootstrap(len(values), n_boot, n_blocks, random_state)
    draws = np.array([statistic(values[rows]) for rows in index], dtype=float)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return estimate, np.nan, np.nan
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return estimate, float(low), float(high)


def _finite_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else np.nan


def median_interval(values: Any, n_boot: int = N_BOOT, level: float = LEVEL, n_blocks: int | None = None,
                    random_state: int = 0) -> tuple[float, float, float]:
    """Median of the finite ``values`` with its bootstrap percentile interval (see :func:`bootstrap_interval`)."""
    values = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(values).any():
        return np.nan, np.nan, np.nan
    return bootstrap_interval(values, _finite_median, n_boot, level, n_blocks, random_state)


def holm(p_values: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN, not counted).

    Reject where the adjusted p is at most the family-wise level: equivalent
    to Holm's procedure, uniformly more powerful than Bonferroni.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if not m:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def permutation_p(observed: float, null: Any) -> float:
    """One-sided p ``(1 + #{null >= observed}) / (1 + n)`` over the finite null draws."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or not null.size:
        return np.nan
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def median_intervals(ds: Any, variables: Any, where: Any = None, n_boot: int = N_BOOT, level: float = LEVEL,
                     random_state: int = 0) -> Any:
    """``(variable, statistic)`` DataArray: the median over ``cell`` of each variable with its interval.

    ``ds`` holds ``(cell,)`` variables; ``where`` (a boolean per cell, e.g.
    ``reliable``) restricts the cells. Statistics: ``median``, ``low``, ``high``
    (bootstrap over cells).
    """
    import xarray as xr

    names = [v for v in variables if v in ds]
    keep = np.ones(ds.sizes["cell"], bool) if where is None else np.asarray(where, dtype=bool)
    if not keep.any():
        keep = np.ones_like(keep)
    values = np.array([median_interval(np.asarray(ds[v].values, dtype=float)[keep], n_boot, level,
                                       random_state=random_state) for v in names]).reshape(len(names), 3)
    return xr.DataArray(values, dims=("variable", "statistic"),
                        coords={"variable": names, "statistic": ["median", "low", "high"]},
                        attrs={"long_name": f"median over cells with {level:.0%} bootstrap interval over cells",
                               "n_cells": int(keep.sum())})
