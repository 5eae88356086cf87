"""Small helpers shared by the clusterings: canonical labels and standardised feature columns."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["canonical_labels", "standardize_columns"]


def canonical_labels(labels: Sequence[Any]) -> np.ndarray:
    """Relabel ``0, 1, …`` in order of first appearance: ``[5, 5, 2, 7, 2] -> [0, 0, 1, 2, 1]``."""
    labels = np.asarray(labels)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.reshape(-1)].astype(np.int64)


def standardize_columns(features: np.ndarray) -> np.ndarray:
    """Each column minus its mean over rows, divided by its std (ddof 0); constant columns → 0."""
    features = np.asarray(features, dtype=np.float64)
    centred = features - features.mean(axis=0)
    std = features.std(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
