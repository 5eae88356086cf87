"""Seed stability of modes: Hungarian matching of modes by cosine similarity."""
from __future__ import annotations

import copy
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from retcodec.engine.threads import torch_threads
import xarray as xr
from scipy.optimize import linear_sum_assignment, nnls
from scipy.stats import norm
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                          clone)
from sklearn.exceptions import ConvergenceWarning
from sklearn.decomposition import NMF, PCA
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted
from torch import nn

from retcodec.errors import ConfigurationError, MissingDataError, NonFiniteError, ShapeError
from retcodec.io.provenance import provenance_attrs
from retcodec.io.storage import write_netcdf_atomic

from retcodec.modes.estimators import ModesBase, SIGNS, check_matrix, check_positive_int, check_sign, explained_r2
from retcodec.modes.layer import layer_matrix

__all__ = ['match_modes', 'mode_stability', 'unit_rows']


def match_modes(reference: np.ndarray, candidate: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair modes one-to-one by maximal total cosine similarity (Hungarian algorithm).

    ``reference`` (n_a, d) and ``candidate`` (n_b, d); returns ``(rows, cols,
    cosine)``, ``min(n_a, n_b)`` pairs: ``reference[rows[i]]`` matches
    ``candidate[cols[i]]`` with cosine ``cosine[i]`` (0 for a zero-norm mode).
    """
    A = check_matrix(reference, nonneg=False, what="reference", allow_empty=True)
    B = check_matrix(candidate, nonneg=False, n_features=A.shape[1], what="candidate",
                      allow_empty=True)
    similarity = unit_rows(A) @ unit_rows(B).T
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return rows, cols, similarity[rows, cols]


def mode_stability(estimator: ModesBase, X: Any, seeds: Sequence[int] = (0, 1, 2),
                   n_top: int | None = None) -> xr.Dataset:
    """How much the modes depend on the seed: matched cosine similarity between fits.

    ``estimator`` is cloned and fitted once per seed (``random_state=seed``) on
    ``X`` (samples, features), or on a ``(time, channel, sign)`` DataArray
    (through :func:`layer_matrix` with the estimator's ``sign``). For each pair
    of seeds the modes (the first ``n_top`` of each, in mode order, if given)
    are paired by :func:`match_modes`. Returns a Dataset over ``pair`` with
    ``seed_a``, ``seed_b``, ``mean_cosine``, ``min_cosine``, ``n_matched``, and
    over ``seed`` with ``r2`` and ``n_modes``; attrs ``mean_cosine`` /
    ``min_cosine`` over all pairs.
    """
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigurationError(f"seeds must hold at least two distinct seeds, got {seeds!r}")
    if n_top is not None:
        check_positive_int(n_top, "n_top")
    if isinstance(X, xr.DataArray):
        X = layer_matrix(X, getattr(estimator, "sign", "pos"))[0]
    fits = [clone(estimator).set_params(random_state=seed).fit(X) for seed in seeds]
    tops = [fit.components_[:n_top] for fit in fits]
    pairs = [(a, b) for a in range(len(seeds)) for b in range(a + 1, len(seeds))]
    cosines = [match_modes(tops[a], tops[b])[2] for a, b in pairs]
    mean = np.array([c.mean() if c.size else np.nan for c in cosines])
    low = np.array([c.min() if c.size else np.nan for c in cosines])
    return xr.Dataset(
        {"mean_cosine": ("pair", mean), "min_cosine": ("pair", low),
         "n_matched": ("pair", np.array([c.size for c in cosines])),
         "r2": ("seed", np.array([fit.r2_ for fit in fits])),
         "n_modes": ("seed", np.array([fit.n_modes_ for fit in fits]))},
        coords={"pair": np.arange(len(pairs)), "seed": list(seeds),
                "seed_a": ("pair", [seeds[a] for a, _ in pairs]),
                "seed_b": ("pair", [seeds[b] for _, b in pairs])},
        attrs={"estimator": type(estimator).__name__, "n_top": "None" if n_top is None else n_top,
               "mean_cosine": float(np.nanmean(mean)) if np.isfinite(mean).any() else np.nan,
               "min_cosine": float(np.nanmin(low)) if np.isfinite(low).any() else np.nan})


def unit_rows(A: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return np.divide(A, norms, out=np.zeros_like(A), where=norms > 0)
