"""Shared parts of the modes estimators: input checks, :class:`ModesBase`, and rebuilding a stored estimator.

:class:`ModesBase` gives every estimator (:class:`~retcodec.modes.autoencoder.ContributionModes`,
:class:`~retcodec.modes.estimators.NMFModes`, :class:`~retcodec.modes.estimators.PCAModes`)
reconstruction, scoring, summary attributes and its Dataset round trip
(``docs/modes.md``). Each estimator class registers itself with
:func:`register_estimator` so that :func:`estimator_from_dataset` can rebuild
it from a :func:`~retcodec.modes.layer.fit_layer` Dataset.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from retcodec.errors import ConfigurationError, NonFiniteError, ShapeError
from retcodec.modes.compact import explained_r2, mode_energy

__all__ = ["ModesBase", "check_matrix", "check_positive_int", "check_n_modes", "check_sign",
           "global_scale", "energy_order", "register_estimator", "estimator_from_dataset"]

_ESTIMATORS: dict[str, type] = {}   # class name -> estimator class, filled by register_estimator


# --------------------------------------------------------------------------- checks
def check_matrix(X: Any, *, nonneg: bool, n_features: int | None = None, what: str = "X",
                  owner: str = "the estimator", min_samples: int = 1,
                  allow_empty: bool = False) -> np.ndarray:
    """``X`` as a finite float64 (samples, features) array; raise a specific error if not.

    Dense numeric input only (``sklearn.utils.check_array`` rules); at least
    ``min_samples`` rows; ``n_features`` columns when given; no negative entries
    when ``nonneg``.
    """
    if isinstance(X, (xr.DataArray, xr.Dataset)):
        raise ShapeError(f"{what} is an xarray object; use fit_layer(estimator, contribution) "
                         f"for (time, channel, sign) data, or pass a (samples, features) array")
    try:
        X = check_array(X, dtype=np.float64, input_name=what,
                        ensure_min_samples=0 if allow_empty else min_samples,
                        ensure_min_features=0 if allow_empty else 1)
    except (TypeError, ValueError) as error:
        message = str(error)
        kind = NonFiniteError if ("NaN" in message or "infinity" in message) else ShapeError
        raise kind(f"{what}: {message}") from error
    if n_features is not None and X.shape[1] != n_features:
        raise ShapeError(f"{what} has {X.shape[1]} features, but {owner} is expecting "
                         f"{n_features} features as input")
    if nonneg and X.size and X.min() < 0:
        raise ConfigurationError(
            f"Negative values in data passed to {owner} ({what} min {X.min():.3g}): its "
            f"modes are non-negative. Pass the positive part C+ or the magnitudes "
            f"[|C-|, C+] (fit_layer(..., sign='both')), or use signed modes (nonneg=False)")
    return X


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_n_modes(n_modes: Any) -> int:
    return check_positive_int(n_modes, "n_modes")


def check_sign(sign: str) -> str:
    if sign not in ("pos", "both"):
        raise ConfigurationError(f"sign must be 'pos' (C+ only) or 'both' ([|C-|, C+]), "
                                 f"got {sign!r}")
    return sign


def global_scale(X: np.ndarray, scale: str | float | None) -> float:
    """The number ``X`` is divided by before fitting: its global std, 1, or a given value."""
    if scale is None or scale == "none":
        return 1.0
    if scale == "std":
        std = float(X.std())
        return std if std > 0 else 1.0
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 \
            and math.isfinite(scale):
        return float(scale)
    raise ConfigurationError(f"scale must be 'std', 'none'/None or a positive number, "
                             f"got {scale!r}")


# --------------------------------------------------------------------------- shared estimator
class ModesBase(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared parts: reconstruction, scoring, mode ordering and summary attributes."""

    @property
    def _n_features_out(self) -> int:
        return self.n_modes_

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Reconstruction ``Z @ components_`` (+ ``mean_`` for PCA): (n, n_modes_) -> (n, d)."""
        check_is_fitted(self)
        Z = check_matrix(Z, nonneg=False, n_features=self.n_modes_, what="Z",
                          owner=type(self).__name__, allow_empty=self.n_modes_ == 0)
        return Z @ self.components_ + self._offset()

    def score(self, X: Any, y: Any = None) -> float:
        """R² of ``inverse_transform(transform(X))`` against ``X``."""
        X = self._validate_input(X)
        return explained_r2(X, self.inverse_transform(self.transform(X)))

    def _offset(self) -> np.ndarray | float:
        return 0.0

    def _validate_input(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return check_matrix(X, nonneg=self._needs_nonneg_input(), n_features=self.n_features_in_,
                             owner=type(self).__name__)

    def _needs_nonneg_input(self) -> bool:
        return False

    def _set_summary(self, X: np.ndarray, Z: np.ndarray) -> None:
        """``r2_``, ``l0_`` and ``energy_`` of the fitted modes on the training data."""
        self.r2_ = explained_r2(X, Z @ self.components_ + self._offset())
        self.l0_ = float((Z != 0).sum(axis=1).mean()) if Z.size else 0.0
        self.fraction_none_ = float(((Z != 0).sum(axis=1) == 0).mean()) if len(Z) else 0.0
        self.energy_ = mode_energy(X - self._offset(), Z, self.components_)

    def _set_all_alive(self, n_modes: int) -> None:
        """Baselines: every component is a mode, in the order found."""
        self.n_modes_ = n_modes
        self.alive_ = np.ones(n_modes, dtype=bool)
        self.atom_index_ = np.arange(n_modes)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> "ModesBase":
        """The fitted estimator stored by :func:`fit_layer` / :func:`modes_dataset`."""
        estimator = estimator_from_dataset(ds)
        if not isinstance(estimator, cls):
            raise ConfigurationError(f"the dataset holds a {type(estimator).__name__}, "
                                     f"not a {cls.__name__}")
        return estimator

    # ---- what a Dataset stores beyond components, atoms and r2 (see modes_dataset)
    def _state_variables(self) -> dict[str, tuple]:
        return {}

    def _state_attrs(self) -> dict[str, Any]:
        return {}

    def _restore(self, ds: xr.Dataset) -> None:
        """Fitted attributes from a Dataset written by :func:`modes_dataset`."""
        self.components_ = ds["components"].values.astype(np.float64)
        self.n_modes_, self.n_features_in_ = self.components_.shape
        self.atom_index_ = ds["atom"].values.astype(np.int64)
        self.alive_ = np.ones(self.n_modes_, dtype=bool)
        self.scale_ = float(ds.attrs["scale"])
        self.r2_ = float(ds["r2"].values)
        self.l0_ = float(ds.attrs["l0"])
        self.fraction_none_ = float(ds.attrs.get("fraction_none", np.nan))
        self.energy_ = (ds["energy"].values.astype(np.float64) if "energy" in ds
                        else np.full(self.n_modes_, np.nan))  # files written before energy


def energy_order(Z: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Mode order by decreasing explained energy ``Σ_samples z² · ‖component‖²`` (ties: lower index first)."""
    energy = (Z ** 2).sum(axis=0) * (components ** 2).sum(axis=1)
    return np.argsort(-energy, kind="stable")


# --------------------------------------------------------------------------- stored estimators
def register_estimator(cls: type[ModesBase]) -> type[ModesBase]:
    """Class decorator: make ``cls`` known to :func:`estimator_from_dataset` by its class name."""
    _ESTIMATORS[cls.__name__] = cls
    return cls


def estimator_from_dataset(ds: xr.Dataset) -> ModesBase:
    """Rebuild the fitted estimator stored in a :func:`fit_layer` Dataset (it can ``transform``)."""
    name = ds.attrs.get("estimator")
    classes = dict(_ESTIMATORS)
    if name not in classes:
        raise ConfigurationError(f"the dataset names no known estimator (attr 'estimator' = "
                                 f"{name!r}); expected one of {sorted(classes)}")
    params = json.loads(ds.attrs["parameters"])
    if not isinstance(params.get("random_state"), (int, type(None))):
        params["random_state"] = None
    estimator = classes[name](**params)
    estimator._restore(ds)
    return estimator
