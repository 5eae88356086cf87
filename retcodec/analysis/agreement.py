"""Agreement of two clusterings of the same cells: contingency matrix and adjusted Rand index."""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from retcodec.errors import ShapeError

__all__ = ["contingency"]


def contingency(labels_a: Any, labels_b: Any, names: tuple[str, str] = ("a", "b")) -> xr.DataArray:
    """Cells per pair of clusters, ``(cluster_<a>, cluster_<b>)``, with the ARI in attrs.

    Columns are reordered so that matched clusters (Hungarian assignment on
    the counts) sit on the diagonal; rows keep the sorted labels of
    ``labels_a``. ``attrs``: ``ari`` (adjusted Rand index, 1 = identical
    partitions, 0 = chance), ``n_cells``, ``matched`` (cells on the matched
    diagonal / all cells).
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.size != b.size or a.size == 0:
        raise ShapeError(f"both clusterings must label the same cells, got {a.size} and {b.size} labels")
    rows, cols = np.unique(a), np.unique(b)
    counts = np.array([[np.sum((a == r) & (b == c)) for c in cols] for r in rows], dtype=np.int64)
    r_idx, c_idx = linear_sum_assignment(-counts)
    order = list(c_idx[np.argsort(r_idx)]) + [j for j in range(len(cols)) if j not in c_idx]
    counts = counts[:, order]
    matched = int(counts[r_idx, np.arange(len(r_idx))].sum()) if len(r_idx) else 0
    dim_a, dim_b = f"cluster_{names[0]}", f"cluster_{names[1]}"
    return xr.DataArray(counts, dims=(dim_a, dim_b), coords={dim_a: rows, dim_b: cols[order]}, name="cells",
                        attrs={"ari": float(adjusted_rand_score(a, b)), "n_cells": int(a.size),
                               "matched": matched / a.size, "long_name": "cells in both clusters"})
