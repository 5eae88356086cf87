"""Planted problems: synthetic data built from known sparse non-negative modes."""
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

__all__ = ['make_sparse_modes']


def make_sparse_modes(n_samples: int = 6000, n_features: int = 16, n_modes: int = 6,
                      active_probability: float = 0.25, support_fraction: float = 0.35,
                      noise: float = 0.01, random_state: int | np.random.RandomState | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic non-negative data built from known sparse non-negative modes.

    Each mode (unit norm) is non-zero on ``support_fraction`` of the features
    (at least 2); each sample holds each mode with probability
    ``active_probability``, with an exponential(1) loading; ``X = Z @ modes``
    plus Gaussian noise of std ``noise * X.std()``, clipped at 0.

    Returns ``X`` (n_samples, n_features), ``modes`` (n_modes, n_features) and
    ``loadings`` (n_samples, n_modes).
    """
    rng = check_random_state(random_state)
    support = max(2, int(round(support_fraction * n_features)))
    modes = np.zeros((n_modes, n_features))
    for k in range(n_modes):
        features = rng.choice(n_features, size=min(support, n_features), replace=False)
        modes[k, features] = rng.uniform(0.3, 1.0, size=len(features))
    modes /= np.linalg.norm(modes, axis=1, keepdims=True)
    active = rng.random_sample((n_samples, n_modes)) < active_probability
    loadings = active * rng.exponential(1.0, size=(n_samples, n_modes))
    X = loadings @ modes
    X = np.maximum(X + noise * X.std() * rng.standard_normal(X.shape), 0.0)
    return X, modes, loadings
