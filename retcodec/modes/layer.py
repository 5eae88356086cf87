"""Modes of one layer as labelled data: fit on a (time, channel, sign) contribution, read and write modes files."""
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

from retcodec.modes.estimators import ModesBase, estimator_from_dataset, SIGNS, check_matrix, check_positive_int, check_sign, explained_r2

__all__ = ['layer_matrix', 'fit_layer', 'modes_dataset', 'save_modes', 'load_modes', 'estimator_from_dataset']


def layer_matrix(contribution: xr.DataArray, sign: str = "pos"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature matrix of a ``(time, channel, sign)`` contribution.

    ``sign="pos"``: the ``C+`` columns, one per channel; ``sign="both"``: the
    magnitudes ``[|C-|, C+]`` (all ``neg`` channels, then all ``pos``). Returns
    ``X`` (time, features), and per feature its ``channel`` and ``sign`` labels.
    """
    check_sign(sign)
    if not isinstance(contribution, xr.DataArray):
        raise ShapeError(f"contribution must be an xarray.DataArray (time, channel, sign), "
                         f"got {type(contribution).__name__}")
    if set(contribution.dims) != {"time", "channel", "sign"}:
        raise ShapeError(f"contribution must have dims (time, channel, sign), "
                         f"got {contribution.dims}")
    C = contribution.transpose("time", "channel", "sign")
    labels = [str(s) for s in C["sign"].values] if "sign" in C.coords else []
    needed = ("neg", "pos") if sign == "both" else ("pos",)
    missing = [s for s in needed if s not in labels]
    if missing:
        raise ShapeError(f"sign={sign!r} needs sign coordinates {list(needed)}; "
                         f"the contribution has {labels}")
    pos = check_matrix(C.sel(sign="pos").values, nonneg=False, what="contribution 'pos'")
    if (pos < 0).any():
        raise ConfigurationError("the 'pos' part of the contribution has negative values: "
                                 "it must be C+ = max(C, 0) (docs/method.md §4)")
    channels = C["channel"].values
    if sign == "pos":
        return pos, channels.copy(), np.array(["pos"] * len(channels))
    neg = check_matrix(C.sel(sign="neg").values, nonneg=False, what="contribution 'neg'")
    if (neg > 0).any():
        raise ConfigurationError("the 'neg' part of the contribution has positive values: "
                                 "it must be C- = min(C, 0) (docs/method.md §4)")
    X = np.concatenate([-neg, pos], axis=1)
    return (X, np.concatenate([channels, channels]),
            np.array(["neg"] * len(channels) + ["pos"] * len(channels)))


def fit_layer(estimator: ModesBase, contribution: xr.DataArray, sign: str | None = None,
              layer: str | None = None) -> xr.Dataset:
    """Fit ``estimator`` (in place) on one layer's contribution and return its modes.

    ``contribution`` (time, channel, sign); ``sign`` defaults to the estimator's
    (see :func:`layer_matrix`); a given ``sign`` is also set on the estimator.
    Returns a Dataset with ``modes (mode, channel, sign)`` in contribution units
    and signs (``neg`` entries ≤ 0 for non-negative modes, zeros for a sign not
    fitted), so that ``loadings @ modes`` reconstructs the contribution (plus
    ``mean`` for PCA); ``loadings (time, mode)``; ``r2``; coords ``mode``
    (0..n-1) and ``atom (mode)``; and what :func:`estimator_from_dataset` needs.
    """
    sign = check_sign(sign if sign is not None else getattr(estimator, "sign", "pos"))
    if estimator.get_params(deep=False).get("sign", sign) != sign:
        estimator.set_params(sign=sign)
    X, feature_channel, feature_sign = layer_matrix(contribution, sign)
    loadings = estimator.fit_transform(X)
    layer = layer if layer is not None else contribution.name
    return modes_dataset(estimator, loadings, feature_channel, feature_sign,
                         contribution["channel"].values, contribution["time"],
                         layer=layer, source_attrs=dict(contribution.attrs))


def modes_dataset(estimator: ModesBase, loadings: np.ndarray, feature_channel: np.ndarray,
                  feature_sign: np.ndarray, channels: np.ndarray, time_coord: Any,
                  layer: str | None = None, source_attrs: Mapping[str, Any] | None = None
                  ) -> xr.Dataset:
    """Dataset of a fitted estimator's modes (see :func:`fit_layer`)."""
    check_is_fitted(estimator)
    n_modes = estimator.n_modes_
    mode = np.arange(n_modes)
    ds = xr.Dataset(
        {"modes": (("mode", "channel", "sign"),
                   _modes_in_layout(estimator.components_, feature_channel, feature_sign,
                                    channels)),
         "loadings": (("time", "mode"), np.asarray(loadings, dtype=np.float64)),
         "components": (("mode", "feature"), estimator.components_),
         "r2": ((), float(estimator.r2_))},
        coords={"mode": mode, "atom": ("mode", np.asarray(estimator.atom_index_)),
                "channel": channels, "sign": list(SIGNS), "time": time_coord,
                "feature": np.arange(len(feature_channel)),
                "feature_channel": ("feature", feature_channel),
                "feature_sign": ("feature", feature_sign)})
    ds["modes"].attrs["description"] = "mode rows in contribution units and signs"
    ds["loadings"].attrs["description"] = "loading of each mode at each time"
    ds["components"].attrs["description"] = "mode rows in the fitted feature space"
    ds = ds.assign(estimator._state_variables())
    params = estimator.get_params(deep=False)
    ds.attrs = provenance_attrs(
        params, estimator=type(estimator).__name__, layer="" if layer is None else str(layer),
        sign=params.get("sign", "pos"), random_state=params.get("random_state"),
        r2=float(estimator.r2_), l0=float(estimator.l0_), n_alive=int(n_modes),
        n_atoms=int(len(estimator.alive_)), scale=float(estimator.scale_),
        n_features=int(estimator.n_features_in_),
        contribution_attrs=json.dumps(dict(source_attrs or {}), default=str, sort_keys=True),
        **estimator._state_attrs())
    return ds


def _modes_in_layout(components: np.ndarray, feature_channel: np.ndarray,
                     feature_sign: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """(n_modes, features) magnitudes -> (n_modes, channel, sign) signed contributions."""
    out = np.zeros((len(components), len(channels), len(SIGNS)))
    channel_index = {c: i for i, c in enumerate(channels.tolist())}
    for f, (channel, sign) in enumerate(zip(feature_channel.tolist(), feature_sign.tolist())):
        signed = -1.0 if sign == "neg" else 1.0
        out[:, channel_index[channel], SIGNS.index(sign)] = signed * components[:, f]
    return out


def save_modes(modes: xr.Dataset | Mapping[str, xr.Dataset] | xr.DataTree,
               path: str | Path) -> Path:
    """Write one layer's modes (a Dataset) or several (layer -> Dataset, one group each)."""
    if isinstance(modes, Mapping) and not isinstance(modes, xr.Dataset):
        modes = xr.DataTree.from_dict({str(k): _check_dataset(v, k) for k, v in modes.items()})
    if not isinstance(modes, (xr.Dataset, xr.DataTree)):
        raise ConfigurationError(f"save_modes takes a Dataset, a mapping layer -> Dataset or "
                                 f"a DataTree, got {type(modes).__name__}")
    return write_netcdf_atomic(modes, path)


def _check_dataset(ds: Any, layer: Any) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset):
        raise ConfigurationError(f"modes of layer {layer!r} must be an xarray.Dataset, "
                                 f"got {type(ds).__name__}")
    return ds


def load_modes(path: str | Path) -> xr.Dataset | dict[str, xr.Dataset]:
    """Read what :func:`save_modes` wrote: a Dataset, or a dict layer -> Dataset."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"no modes file at {path}")
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        tree = tree.load()
    if tree.children:
        return {name: child.to_dataset() for name, child in tree.children.items()}
    return tree.to_dataset()
