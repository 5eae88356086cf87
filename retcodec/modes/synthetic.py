"""Planted problems: synthetic data built from known sparse non-negative modes."""
from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from retcodec.errors import ConfigurationError

__all__ = ["make_sparse_modes", "make_combinatorial_modes", "mode_overlap", "MAGNITUDES"]


MAGNITUDES = ("exponential", "lognormal", "uniform")


def make_sparse_modes(n_samples: int = 6000, n_features: int = 16, n_modes: int = 6,
                      active_probability: float = 0.25, support_fraction: float = 0.35,
                      noise: float = 0.01, magnitude: str = "exponential",
                      random_state: int | np.random.RandomState | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic non-negative data built from known sparse non-negative modes.

    Each mode (unit norm) is non-zero on ``support_fraction`` of the features
    (at least 2; a larger share makes modes overlap more); each sample holds
    each mode with probability ``active_probability``, with a continuous
    loading of mean 1 drawn from ``magnitude``: ``"exponential"``,
    ``"lognormal"`` (σ = 1, heavy-tailed) or ``"uniform"`` on [0.5, 1.5];
    ``X = Z @ modes`` plus Gaussian noise of std ``noise * X.std()``, clipped at 0.

    Returns ``X`` (n_samples, n_features), ``modes`` (n_modes, n_features) and
    ``loadings`` (n_samples, n_modes).
    """
    if magnitude not in MAGNITUDES:
        raise ConfigurationError(f"magnitude must be one of {MAGNITUDES}, got {magnitude!r}")
    if not 0 < support_fraction <= 1 or not 0 < active_probability <= 1 or noise < 0:
        raise ConfigurationError("support_fraction and active_probability must lie in (0, 1] "
                                 "and noise must be >= 0")
    rng = check_random_state(random_state)
    support = max(2, int(round(support_fraction * n_features)))
    modes = np.zeros((n_modes, n_features))
    for k in range(n_modes):
        features = rng.choice(n_features, size=min(support, n_features), replace=False)
        modes[k, features] = rng.uniform(0.3, 1.0, size=len(features))
    modes /= np.linalg.norm(modes, axis=1, keepdims=True)
    active = rng.random_sample((n_samples, n_modes)) < active_probability
    loadings = active * _magnitudes(rng, magnitude, (n_samples, n_modes))
    X = loadings @ modes
    X = np.maximum(X + noise * X.std() * rng.standard_normal(X.shape), 0.0)
    return X, modes, loadings


def make_combinatorial_modes(n_samples: int = 4000, n_channels: int = 8, n_modes: int = 10,
                             max_active: int = 3, channels_per_mode: tuple[int, int] = (2, 3),
                             inhibitory: bool = True, amplitude: tuple[float, float] = (0.5, 2.0),
                             noise: float = 0.05,
                             random_state: int | np.random.RandomState | None = None
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A planted combinatorial problem: multi-channel modes, 1 to ``max_active`` active per sample.

    Each mode drives ``channels_per_mode`` (inclusive range) channels
    positively (weights in [0.4, 1]) and, with ``inhibitory``, 1-2 channels
    negatively (magnitudes in [0.2, 0.6]); channels are drawn independently per
    mode, so supports overlap. Features are the magnitudes ``[|C-|, C+]``
    (``2 · n_channels`` columns, the layout of ``fit_layer(..., sign="both")``),
    or ``C+`` alone (``n_channels`` columns) without ``inhibitory``. Modes have
    unit norm. Each sample holds a uniform number in ``1..max_active`` of
    distinct modes, each with a loading uniform in ``amplitude``; ``X = Z @
    modes`` plus Gaussian noise of std ``noise * X.std()``, clipped at 0.

    Returns ``X`` (n_samples, features), ``modes`` (n_modes, features) and
    ``loadings`` (n_samples, n_modes); the true L0 is ``(loadings > 0).sum(1).mean()``.
    """
    low, high = channels_per_mode
    if not 1 <= low <= high <= n_channels or not 1 <= max_active <= n_modes:
        raise ConfigurationError("need 1 <= channels_per_mode[0] <= channels_per_mode[1] <= n_channels "
                                 "and 1 <= max_active <= n_modes")
    if not 0 < amplitude[0] <= amplitude[1] or noise < 0:
        raise ConfigurationError("amplitude must be 0 < low <= high and noise >= 0")
    rng = check_random_state(random_state)
    offset = n_channels if inhibitory else 0
    modes = np.zeros((n_modes, offset + n_channels))
    for k in range(n_modes):
        driven = rng.choice(n_channels, size=rng.randint(low, high + 1), replace=False)
        modes[k, offset + driven] = rng.uniform(0.4, 1.0, size=len(driven))
        if inhibitory:
            suppressed = rng.choice(n_channels, size=rng.randint(1, 3), replace=False)
            modes[k, suppressed] = rng.uniform(0.2, 0.6, size=len(suppressed))
    modes /= np.linalg.norm(modes, axis=1, keepdims=True)
    loadings = np.zeros((n_samples, n_modes))
    counts = rng.randint(1, max_active + 1, size=n_samples)
    for t, count in enumerate(counts):
        chosen = rng.choice(n_modes, size=count, replace=False)
        loadings[t, chosen] = rng.uniform(amplitude[0], amplitude[1], size=count)
    X = loadings @ modes
    X = np.maximum(X + noise * X.std() * rng.standard_normal(X.shape), 0.0)
    return X, modes, loadings


def _magnitudes(rng: np.random.RandomState, magnitude: str, shape: tuple[int, int]) -> np.ndarray:
    """Positive loadings of mean 1 from the named distribution."""
    if magnitude == "exponential":
        return rng.exponential(1.0, size=shape)
    if magnitude == "lognormal":
        return rng.lognormal(-0.5, 1.0, size=shape)
    return rng.uniform(0.5, 1.5, size=shape)


def mode_overlap(modes: np.ndarray) -> float:
    """Mean cosine similarity between two different modes (rows of ``modes``); 0 for one mode."""
    if len(modes) < 2:
        return 0.0
    unit = modes / np.linalg.norm(modes, axis=1, keepdims=True)
    cosine = unit @ unit.T
    return float(cosine[~np.eye(len(modes), dtype=bool)].mean())
