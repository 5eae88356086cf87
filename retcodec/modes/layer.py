"""Modes of one layer as labelled data: fit on a (time, channel, sign) contribution, read and write modes files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from sklearn.utils.validation import check_is_fitted

from retcodec.errors import ConfigurationError, MissingDataError
from retcodec.io.paths import user_path
from retcodec.io.provenance import provenance_attrs
from retcodec.io.storage import write_netcdf_atomic
from retcodec.modes.estimators import SIGNS, ModesBase, check_sign, estimator_from_dataset
from retcodec.modes.features import layer_matrix
from retcodec.modes.stability import mode_stability

__all__ = ['layer_matrix', 'fit_layer', 'modes_dataset', 'save_modes', 'load_modes', 'estimator_from_dataset',
           'ACTIVE_RULE', 'active_loadings']

#: the one definition of an active mode, used by the modes table, the combinations and the report
ACTIVE_RULE = ("a mode is active at a time bin when its loading is non-zero; the model zeroes every loading "
               "whose part of the reconstruction is below its activity cut")


def active_loadings(loadings: xr.DataArray) -> xr.DataArray:
    """Boolean ``(time, mode)``: where a mode is active (:data:`ACTIVE_RULE`: its loading is non-zero)."""
    return (loadings != 0).rename("active")


def fit_layer(estimator: ModesBase, contribution: xr.DataArray, sign: str | None = None,
              layer: str | None = None, stability_seeds: Sequence[int] | None = None
              ) -> xr.Dataset:
    """Fit ``estimator`` (in place) on one layer's contribution and return its modes.

    ``contribution`` (time, channel, sign); ``sign`` defaults to the estimator's
    (see :func:`layer_matrix`); a given ``sign`` is also set on the estimator.
    Returns a Dataset with ``modes (mode, channel, sign)`` in contribution units
    and signs (``neg`` entries ≤ 0 for non-negative modes, zeros for a sign not
    fitted), so that ``loadings @ modes`` reconstructs the contribution (plus
    ``mean`` for PCA); ``loadings (time, mode)``; ``r2``; ``energy (mode)``
    (share of ``Σ‖x‖²`` per mode; modes are in decreasing energy); coords
    ``mode`` (0..n-1) and ``atom (mode)`` (representative atom, see
    ``docs/modes.md``); attrs ``n_modes``, ``l0``, ``count_rule``; and what
    :func:`estimator_from_dataset` needs. With ``stability_seeds`` (two or
    more), a clone of the estimator is also fitted once per seed and the attrs
    ``stability`` (mean over seed pairs of :func:`stability_score`),
    ``stability_min``, ``stability_seeds`` and ``stability_n_modes`` are added.
    """
    sign = check_sign(sign if sign is not None else getattr(estimator, "sign", "pos"))
    if estimator.get_params(deep=False).get("sign", sign) != sign:
        estimator.set_params(sign=sign)
    X, feature_channel, feature_sign = layer_matrix(contribution, sign)
    loadings = estimator.fit_transform(X)
    stability = None
    if stability_seeds is not None:
        seed = estimator.get_params(deep=False).get("random_state")
        # the fit just made is the one its own seed would give: not fitted twice
        same = {int(seed): estimator} if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else {}
        stability = mode_stability(estimator, X, seeds=stability_seeds, fitted=same)
    layer = layer if layer is not None else contribution.name
    ds = modes_dataset(estimator, loadings, feature_channel, feature_sign,
                       contribution["channel"].values, contribution["time"],
                       layer=layer, source_attrs=dict(contribution.attrs))
    if stability is not None:
        ds.attrs.update(stability=stability.attrs["stability"],
                        stability_min=stability.attrs["stability_min"],
                        stability_seeds=json.dumps([int(s) for s in stability["seed"].values]),
                        stability_n_modes=json.dumps(stability["n_modes"].values.tolist()))
    return ds


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
         "energy": (("mode",), np.asarray(estimator.energy_, dtype=np.float64)),
         "r2": ((), float(estimator.r2_))},
        coords={"mode": mode, "atom": ("mode", np.asarray(estimator.atom_index_)),
                "channel": channels, "sign": list(SIGNS), "time": time_coord,
                "feature": np.arange(len(feature_channel)),
                "feature_channel": ("feature", feature_channel),
                "feature_sign": ("feature", feature_sign)})
    ds["modes"].attrs["description"] = "mode rows in contribution units and signs"
    ds["loadings"].attrs["description"] = "loading of each mode at each time"
    ds["components"].attrs["description"] = "mode rows in the fitted feature space"
    ds["energy"].attrs["description"] = "share of the summed squared contributions per mode"
    ds = ds.assign(estimator._state_variables())
    params = estimator.get_params(deep=False)
    ds.attrs = provenance_attrs(
        params, estimator=type(estimator).__name__, layer="" if layer is None else str(layer),
        sign=params.get("sign", "pos"), random_state=params.get("random_state"),
        r2=float(estimator.r2_), l0=float(estimator.l0_), n_modes=int(n_modes),
        fraction_none=float(getattr(estimator, "fraction_none_", np.nan)),
        active_rule=ACTIVE_RULE,
        n_alive=int(np.sum(estimator.alive_)), n_atoms=int(len(estimator.alive_)),
        scale=float(estimator.scale_),
        count_rule=getattr(estimator, "count_rule_", f"fixed: n_modes={n_modes}"),
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
    path = user_path(path, "modes file")
    if not path.is_file():
        raise MissingDataError(f"no modes file at {path}")
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        tree = tree.load()
    if tree.children:
        return {name: child.to_dataset() for name, child in tree.children.items()}
    return tree.to_dataset()
