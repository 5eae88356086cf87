"""The activation-mode control: the same sparse estimator on the hidden activations."""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from retcodec.modes.estimators import ContributionModes

__all__ = ["fit_activation_modes"]


def fit_activation_modes(activation: xr.DataArray, random_state: int = 0, **options: Any) -> xr.Dataset:
    """Modes of the spatially summed, centred activations ``(time, channel)`` (signed dictionary).

    The control for contribution modes: fitted with the same estimator and options, so
    the comparison is fair. Returns ``modes (mode, channel)``, ``loadings (time, mode)``, ``r2``.
    """
    X = activation.transpose("time", "channel").values.astype(np.float64)
    X = X - X.mean(axis=0)
    est = ContributionModes(random_state=random_state, nonneg=False, **options).fit(X)
    z = est.transform(X)
    coords = {"time": activation["time"].values, "channel": activation["channel"].values,
              "mode": np.arange(z.shape[1])}
    atom = getattr(est, "atom_index_", None)
    if atom is not None and len(atom) == z.shape[1]:
        coords["atom"] = ("mode", np.asarray(atom))
    return xr.Dataset({"modes": (("mode", "channel"), est.components_),
                       "loadings": (("time", "mode"), z), "r2": est.r2_},
                      coords=coords,
                      attrs={"estimator": "ContributionModes", "fitted_on": "activation (centred)"})
