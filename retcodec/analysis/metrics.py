"""Correlation, the one definition every analysis uses."""
from __future__ import annotations

import numpy as np

__all__ = ["pearson"]


def pearson(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` along ``axis`` (broadcasting the other axes).

    Convention: a constant series has no defined correlation, so the result is NaN
    wherever ``a`` or ``b`` is constant along ``axis``. Callers that want such pairs
    to count as uncorrelated (e.g. a silent cell in a median over cells) replace
    NaN by 0 explicitly with ``np.nan_to_num(r, nan=0.0)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    denom = np.sqrt(np.sum(a * a, axis=axis) * np.sum(b * b, axis=axis))
    num = np.sum(a * b, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), np.nan)
