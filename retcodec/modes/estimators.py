"""Modes of contributions: CODEC's thresholded sparse autoencoder, its compact modes, baselines.

A layer's spatially summed contributions form a matrix ``X`` (samples x
features), e.g. ``C+`` per channel, or the magnitudes ``[|C-|, C+]``. A *mode* is a row of a dictionary (modes x
features); the *loadings* ``Z`` (samples x modes) say how much of each mode each
sample holds, and ``X ≈ Z @ components_``.

* :class:`ContributionModes` (:mod:`retcodec.modes.autoencoder`) - the
  paper's thresholded sparse autoencoder (``docs/modes.md``): MLP encoder ->
  sigmoid pre-loadings ``a`` -> hard threshold ``z = a·1[a ≥ θ]`` ->
  non-negative dictionary of atoms; by default its atoms are merged into
  compact modes with continuous loadings (:mod:`retcodec.modes.compact`,
  ``docs/modes.md``).
* :class:`NMFModes`, :class:`PCAModes` - baselines behind the same interface.

The shared :class:`ModesBase`, the input checks and :func:`estimator_from_dataset`
live in :mod:`retcodec.modes.base`; this module re-exports them.

All estimators follow scikit-learn conventions (``get_params`` / ``clone`` work).
Common fitted attributes: ``components_`` (n_modes_, n_features) in the units of
``X``, in decreasing explained energy; ``energy_`` (share of ``Σ‖x‖²`` per
mode); ``scale_`` (the global scale ``X`` was divided by while fitting);
``r2_``; ``alive_`` (bool per atom); ``atom_index_`` (representative atom of
each mode); ``n_modes_``; ``l0_`` (mean number of non-zero loadings per
sample); ``n_features_in_``.

R² everywhere is the variance-weighted coefficient of determination, with
per-feature means: ``1 - Σ(x - x̂)² / Σ(x - mean_feature(x))²``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy.optimize import nnls
from sklearn.decomposition import NMF, PCA

from retcodec.errors import ConfigurationError
from retcodec.modes.autoencoder import EMPTY_ATOM_RTOL, MAX_COMPACT_MODES, ContributionModes
from retcodec.modes.base import (ModesBase, check_matrix, check_n_modes, check_positive_int, check_sign,
                                 energy_order, estimator_from_dataset, global_scale, register_estimator)
from retcodec.modes.compact import explained_r2

__all__ = ["ContributionModes", "NMFModes", "PCAModes", "ModesBase", "explained_r2",
           "check_matrix", "check_positive_int", "check_sign", "SIGNS",
           "estimator_from_dataset", "EMPTY_ATOM_RTOL", "MAX_COMPACT_MODES"]

SIGNS = ("neg", "pos")


def _check_rank(n_modes: int, X: np.ndarray, method: str) -> None:
    if n_modes > min(X.shape):
        raise ConfigurationError(f"n_modes={n_modes} exceeds min(n_samples={X.shape[0]}, "
                                 f"n_features={X.shape[1]}), the most {method} can give")


# --------------------------------------------------------------------------- baselines
@register_estimator
class NMFModes(ModesBase):
    """Non-negative matrix factorisation baseline (``sklearn.decomposition.NMF``).

    ``X / scale_ ≈ W H`` (Frobenius loss, no regularisation);
    ``components_ = scale_ * H`` in the units of ``X``, ordered by decreasing
    ``Σ_samples w · ‖H_k‖``. ``transform`` gives each sample's exact
    non-negative least-squares loadings on the fixed components (so it is the
    same for a sample alone or in a batch).
    """

    def __init__(self, n_modes: int = 6, init: str | None = "nndsvda", max_iter: int = 1000,
                 tol: float = 1e-5, scale: str | float | None = "std", sign: str = "pos",
                 random_state: int | np.random.RandomState | None = None) -> None:
        self.n_modes = n_modes
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.scale = scale
        self.sign = sign
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> "NMFModes":
        """Fit the factorisation to ``X`` (samples, features), ``X >= 0``."""
        n_modes = check_n_modes(self.n_modes)
        check_sign(self.sign)
        X = check_matrix(X, nonneg=True, owner=type(self).__name__)
        if str(self.init).startswith("nndsvd"):
            _check_rank(n_modes, X, f"NMF with init={self.init!r}")
        self.n_features_in_ = X.shape[1]
        self.scale_ = global_scale(X, self.scale)
        nmf = NMF(n_components=n_modes, init=self.init, max_iter=self.max_iter, tol=self.tol,
                  random_state=self.random_state)
        W = nmf.fit_transform(X / self.scale_)
        order = energy_order(W, nmf.components_)
        self.components_ = nmf.components_[order] * self.scale_
        self.n_iter_ = int(nmf.n_iter_)
        self._set_all_alive(n_modes)
        self._set_summary(X, self.transform(X))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Non-negative least-squares loadings per sample: (n, d) -> (n, n_modes_)."""
        X = self._validate_input(X)
        return np.array([nnls(self.components_.T, x)[0] for x in X]).reshape(len(X), -1)

    def _needs_nonneg_input(self) -> bool:
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags

    def _state_attrs(self) -> dict[str, Any]:
        return {"n_iter": self.n_iter_}

    def _restore(self, ds: xr.Dataset) -> None:
        super()._restore(ds)
        self.n_iter_ = int(ds.attrs["n_iter"])


@register_estimator
class PCAModes(ModesBase):
    """Principal-component baseline (``sklearn.decomposition.PCA``).

    ``components_`` are orthonormal directions (rows), in explained-variance
    order; loadings are projections of ``X - mean_``; ``inverse_transform`` adds
    ``mean_`` back. ``scale_`` is recorded for a common interface only (PCA
    does not depend on a global scale).
    """

    def __init__(self, n_modes: int = 6, scale: str | float | None = "std", sign: str = "pos",
                 random_state: int | np.random.RandomState | None = None) -> None:
        self.n_modes = n_modes
        self.scale = scale
        self.sign = sign
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> "PCAModes":
        """Fit the principal components of ``X`` (samples, features)."""
        n_modes = check_n_modes(self.n_modes)
        check_sign(self.sign)
        X = check_matrix(X, nonneg=False, owner=type(self).__name__, min_samples=2)
        _check_rank(n_modes, X, "PCA")
        self.n_features_in_ = X.shape[1]
        self.scale_ = global_scale(X, self.scale)
        pca = PCA(n_components=n_modes, random_state=self.random_state).fit(X / self.scale_)
        self.components_ = pca.components_.astype(np.float64)
        self.mean_ = pca.mean_ * self.scale_
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        self._set_all_alive(n_modes)
        self._set_summary(X, self.transform(X))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Projections on the components: (n, d) -> (n, n_modes_)."""
        X = self._validate_input(X)
        return (X - self.mean_) @ self.components_.T

    def _offset(self) -> np.ndarray:
        return self.mean_

    def _state_variables(self) -> dict[str, tuple]:
        return {"mean": (("feature",), self.mean_),
                "explained_variance_ratio": (("mode",), self.explained_variance_ratio_)}

    def _restore(self, ds: xr.Dataset) -> None:
        super()._restore(ds)
        self.mean_ = ds["mean"].values
        self.explained_variance_ratio_ = ds["explained_variance_ratio"].values
