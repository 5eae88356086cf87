"""Robustness of the modes to their settings, as in the paper's supplement.

:func:`robustness_sweep` refits an estimator with one setting changed at a
time (threshold θ, dictionary size, L1 strength of the dictionary, seed) and
compares every fit with the default fit: modes paired by the Hungarian
algorithm on cosine (:func:`~retcodec.modes.stability.match_modes`),
stability (matched cosine summed / the larger count), the correlation over
time of the matched modes' loadings, R², L0, the share of samples with no
active mode and the number of modes. :func:`sweep_verdict` says, per setting,
whether the paper's claim (results robust to it) holds on these data.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr
from sklearn.base import clone

from retcodec.errors import ConfigurationError
from retcodec.modes.estimators import ModesBase, check_matrix
from retcodec.modes.stability import match_modes, stability_score

__all__ = ["SWEEP_GRID", "ROBUST_STABILITY", "ROBUST_R2_LOSS", "robustness_sweep", "sweep_verdict"]

#: the paper's supplement: θ 0.5-0.9, dictionary 1-5x the channels, dictionary L1 0-1e-2, seeds
SWEEP_GRID: dict[str, tuple] = {"threshold": (0.5, 0.7, 0.9), "multiplier": (1, 3, 5),
                                "l1_dictionary": (0.0, 1e-4, 1e-2), "random_state": (0, 1, 2, 3, 4)}
#: a setting leaves the modes unchanged when every value keeps stability to the default at least this
ROBUST_STABILITY = 0.9
#: ... and R² within this of the default's
ROBUST_R2_LOSS = 0.02


def robustness_sweep(estimator: ModesBase, X: Any, grid: Mapping[str, Sequence[Any]] | None = None,
                     progress: Callable[[str], None] | None = None) -> xr.Dataset:
    """Refit ``estimator`` on ``X`` (samples, features) with one parameter changed at a time.

    ``grid`` maps parameter names to values (default :data:`SWEEP_GRID`,
    restricted to the estimator's parameters). The default fit is the
    estimator with its own parameters; a value equal to the default reuses it.
    Returns a Dataset over ``setting`` (coords ``parameter``, ``value`` as
    text, ``is_default``) with ``stability`` and ``mean_cosine`` (of the modes
    matched to the default's), ``loading_correlation`` (mean over matched
    pairs of the Pearson correlation over samples of their loadings), ``r2``,
    ``l0``, ``fraction_none``, ``n_modes`` and ``cpu_seconds``; attrs
    ``default`` (JSON of the swept parameters' default values) and ``verdict``
    (JSON of :func:`sweep_verdict`).
    """
    X = check_matrix(X, nonneg=False, what="X")
    params = estimator.get_params(deep=False)
    grid = dict(SWEEP_GRID if grid is None else grid)
    unknown = sorted(set(grid) - set(params))
    if unknown:
        raise ConfigurationError(f"cannot sweep {unknown}: {type(estimator).__name__} has no such "
                                 f"parameter(s); it has {sorted(params)}")
    say = progress or (lambda message: None)
    say("default fit")
    default, default_z, default_cpu = _fit(clone(estimator), X)
    rows = []
    for name, values in grid.items():
        for value in values:
            same = _same(value, params[name])
            if same:
                fit, Z, cpu = default, default_z, default_cpu
            else:
                say(f"{name} = {value}")
                fit, Z, cpu = _fit(clone(estimator).set_params(**{name: value}), X)
            rows.append(_compare(name, value, same, fit, Z, cpu, default, default_z))
    ds = xr.Dataset(
        {key: ("setting", np.array([row[key] for row in rows]))
         for key in ("stability", "mean_cosine", "loading_correlation", "r2", "l0", "fraction_none",
                     "n_modes", "cpu_seconds")},
        coords={"setting": np.arange(len(rows)),
                "parameter": ("setting", [row["parameter"] for row in rows]),
                "value": ("setting", [row["value"] for row in rows]),
                "is_default": ("setting", [row["is_default"] for row in rows])},
        attrs={"estimator": type(estimator).__name__,
               "default": json.dumps({name: params[name] for name in grid}, default=str),
               "robust_stability": ROBUST_STABILITY, "robust_r2_loss": ROBUST_R2_LOSS})
    ds["stability"].attrs["description"] = "matched cosine to the default's modes, summed / the larger count"
    ds["loading_correlation"].attrs["description"] = "correlation over samples of matched modes' loadings"
    ds.attrs["verdict"] = json.dumps(sweep_verdict(ds))
    return ds


def sweep_verdict(sweep: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Per swept parameter: whether the modes are robust to it, and the worst values behind the answer.

    Robust when every value keeps ``stability >= ROBUST_STABILITY`` against
    the default fit and R² within ``ROBUST_R2_LOSS`` of the default's.
    """
    default_r2 = float(sweep["r2"].where(sweep["is_default"], drop=True).max())
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(sweep["parameter"].values.tolist()):
        part = sweep.where(sweep["parameter"] == name, drop=True)
        worst = int(np.argmin(part["stability"].values))
        holds = bool((part["stability"] >= ROBUST_STABILITY).all()
                     and (part["r2"] >= default_r2 - ROBUST_R2_LOSS).all())
        out[str(name)] = {"robust": holds,
                          "worst_value": str(part["value"].values[worst]),
                          "worst_stability": float(part["stability"].values[worst]),
                          "lowest_r2": float(part["r2"].min()),
                          "l0_range": [float(part["l0"].min()), float(part["l0"].max())],
                          "n_modes_range": [int(part["n_modes"].min()), int(part["n_modes"].max())]}
    return out


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default)
    except (TypeError, ValueError):
        return False


def _fit(estimator: ModesBase, X: np.ndarray) -> tuple[ModesBase, np.ndarray, float]:
    start = time.process_time()
    Z = estimator.fit_transform(X)
    return estimator, Z, time.process_time() - start


def _compare(name: str, value: Any, same: bool, fit: ModesBase, Z: np.ndarray, cpu: float,
             default: ModesBase, default_z: np.ndarray) -> dict[str, Any]:
    rows, cols, cosine = match_modes(default.components_, fit.components_)
    correlations = [_correlation(default_z[:, r], Z[:, c]) for r, c in zip(rows, cols)]
    return {"parameter": name, "value": str(value), "is_default": same,
            "stability": stability_score(default.components_, fit.components_),
            "mean_cosine": float(cosine.mean()) if cosine.size else np.nan,
            "loading_correlation": float(np.nanmean(correlations)) if correlations else np.nan,
            "r2": float(fit.r2_), "l0": float(fit.l0_),
            "fraction_none": float(getattr(fit, "fraction_none_", np.nan)),
            "n_modes": int(fit.n_modes_), "cpu_seconds": float(cpu)}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])
