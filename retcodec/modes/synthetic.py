"""Planted problems: synthetic data built from known sparse non-negative modes."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.utils import check_random_state

from retcodec.errors import ConfigurationError

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
