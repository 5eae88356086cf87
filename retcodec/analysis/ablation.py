"""Ablation and preservation curves of modes (the paper's Fig. 6), summarised from ``experiments.nc``.

:func:`ablation_curves` reads the dose curves that
:func:`~retcodec.analysis.experiments.experiments` measured (the mean rate of
each cell with the top ``fraction`` of a mode's channels silenced, *ablate*,
or with only them kept, *preserve*, relative to the intact model) and
summarises them per layer and mode source (contribution modes vs the
activation-mode control), separately for the mode's own cells (those whose
rate correlates with the mode's loadings) and the other cells: the mean over
modes with a bootstrap interval over modes. The random-set control (random
channel sets of the size of each mode's channel set) is summarised at its
size next to the mode's own set.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from retcodec.analysis.uncertainty import LEVEL, N_BOOT, bootstrap_interval
from retcodec.errors import MissingDataError
from retcodec.io.provenance import provenance_attrs

__all__ = ["ablation_curves", "GROUPS"]

#: the two cell groups of a mode: its own cells and all others
GROUPS = ("own cells", "other cells")
_NEEDED = ("ratio", "mode_cell", "mode_layer", "mode_source")


def _group_means(values: np.ndarray, own: np.ndarray) -> np.ndarray:
    """``(..., cell)`` -> ``(..., group)`` means over own / other cells (NaN for an empty group)."""
    out = []
    for mask in (own, ~own):
        out.append(values[..., mask].mean(axis=-1) if mask.any() else np.full(values.shape[:-1], np.nan))
    return np.stack(out, axis=-1)


def _nanmean_rows(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def ablation_curves(exp: xr.Dataset, n_boot: int = N_BOOT, level: float = LEVEL,
                    random_state: int = 0) -> xr.Dataset:
    """Mean ratio-vs-fraction curves per layer, mode source, kind and cell group, with intervals.

    Parameters
    ----------
    exp : the Dataset of :func:`~retcodec.analysis.experiments.experiments`
        (needs ``ratio (mode, kind, fraction, cell)``, ``mode_cell``,
        ``mode_layer``, ``mode_source``; uses ``mode_channels``,
        ``mode_effect``, ``mode_control_effect`` and ``specificity`` when present).

    Returns
    -------
    xarray.Dataset
        - ``curve (layer, source, kind, group, fraction)``: mean over modes of the
          group's mean ratio (rate perturbed / intact), ``curve_low`` /
          ``curve_high`` its bootstrap interval over modes, ``n_modes (layer, source)``;
        - ``specificity (layer, source, kind)``: median over modes, with interval;
        - per contribution mode (dim ``set``): ``set_fraction`` (share of the
          layer's channels in the mode's set), ``set_ratio (set, group)`` (1 +
          effect of silencing the mode's set) and ``random_ratio`` with
          ``random_low`` / ``random_high`` (mean and 2.5-97.5 % over random sets of
          the same size).
    """
    missing = [v for v in _NEEDED if v not in exp.variables]
    if missing:
        raise MissingDataError(f"experiments data lack {missing}: rerun the experiments stage "
                               f"(retcodec run) to get the mode dose curves")
    ratio = exp["ratio"].transpose("mode", "kind", "fraction", "cell").values
    own = exp["mode_cell"].transpose("mode", "cell").values.astype(bool)
    layers = list(dict.fromkeys(str(v) for v in exp["mode_layer"].values))
    sources = list(dict.fromkeys(str(v) for v in exp["mode_source"].values))
    kinds = [str(v) for v in exp["kind"].values]
    fractions = exp["fraction"].values
    per_mode = np.stack([_group_means(ratio[m], own[m]) for m in range(ratio.shape[0])])  # (m, k, f, g)
    shape = (len(layers), len(sources), len(kinds), len(GROUPS), len(fractions))
    curve, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    n_modes = np.zeros(shape[:2], dtype=np.int64)
    spec = np.full((len(layers), len(sources), len(kinds), 3), np.nan)
    layer_of, source_of = exp["mode_layer"].values.astype(str), exp["mode_source"].values.astype(str)
    for i, layer in enumerate(layers):
        for j, source in enumerate(sources):
            rows = np.flatnonzero((layer_of == layer) & (source_of == source))
            n_modes[i, j] = rows.size
            if not rows.size:
                continue
            for k in range(len(kinds)):
                for g in range(len(GROUPS)):
                    for f in range(len(fractions)):
                        values = per_mode[rows, k, f, g]
                        curve[i, j, k, g, f], low[i, j, k, g, f], high[i, j, k, g, f] = bootstrap_interval(
                            values, _nanmean_rows, n_boot, level, random_state=random_state)
                if "specificity" in exp:
                    values = exp["specificity"].values[rows, k]
                    spec[i, j, k] = bootstrap_interval(values, _nanmedian, n_boot, level,
                                                       random_state=random_state)
    dims = ("layer", "source", "kind", "group", "fraction")
    out = xr.Dataset(
        {"curve": (dims, curve, {"long_name": "mean over modes of the group's mean rate, perturbed / intact"}),
         "curve_low": (dims, low, {"long_name": f"{level:.0%} bootstrap interval over modes, low"}),
         "curve_high": (dims, high, {"long_name": f"{level:.0%} bootstrap interval over modes, high"}),
         "n_modes": (("layer", "source"), n_modes),
         "specificity": (("layer", "source", "kind", "statistic"), spec,
                         {"long_name": "median over modes of the specificity (AUC difference), with "
                                       f"{level:.0%} bootstrap interval over modes"})},
        coords={"layer": layers, "source": sources, "kind": kinds, "group": list(GROUPS),
                "fraction": ("fraction", fractions, {"long_name": "share of the layer's channels silenced "
                                                                  "(ablate) or kept (preserve)"}),
                "statistic": ["median", "low", "high"]},
        attrs=provenance_attrs({"n_boot": n_boot, "level": level, "random_state": random_state},
                               method="ablation_curves"))
    return out.merge(_random_sets(exp, own))


def _nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else np.nan


def _random_sets(exp: xr.Dataset, own: np.ndarray) -> xr.Dataset:
    """Per contribution mode: its silenced set vs random sets of the same size (ratio = 1 + effect)."""
    needed = ("mode_channels", "mode_effect", "mode_control_effect")
    if any(v not in exp for v in needed):
        return xr.Dataset()
    rows = np.flatnonzero(exp["mode_source"].values.astype(str) == "contribution")
    if not rows.size:
        return xr.Dataset()
    n_channels = _layer_channels(exp)
    chans = exp["mode_channels"].values[rows].sum(axis=1)
    fraction = np.array([c / n_channels[str(exp["mode_layer"].values[m])] for c, m in zip(chans, rows)])
    mode_set = np.stack([_group_means(1 + exp["mode_effect"].values[m], own[m]) for m in rows])
    control = np.stack([_group_means(1 + exp["mode_control_effect"].transpose("mode", "draw", "cell").values[m],
                                     own[m]) for m in rows])                               # (set, draw, group)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(control, axis=1)
        lo, hi = np.nanquantile(control, 0.025, axis=1), np.nanquantile(control, 0.975, axis=1)
    dims = ("set", "group")
    return xr.Dataset(
        {"set_fraction": ("set", fraction, {"long_name": "share of the layer's channels in the mode's set"}),
         "set_ratio": (dims, mode_set, {"long_name": "rate with the mode's set silenced / intact"}),
         "random_ratio": (dims, mean, {"long_name": "mean over random sets of the same size"}),
         "random_low": (dims, lo, {"long_name": "2.5 % over random sets"}),
         "random_high": (dims, hi, {"long_name": "97.5 % over random sets"})},
        coords={"set": exp["mode"].values[rows], "set_layer": ("set", exp["mode_layer"].values[rows])})


def _layer_channels(exp: xr.Dataset) -> dict[str, int]:
    """Channels per layer: the modes' weights are NaN-padded beyond a layer's channels."""
    out = {}
    for layer in dict.fromkeys(str(v) for v in exp["mode_layer"].values):
        sel = exp["mode_layer"].values.astype(str) == layer
        if "mode_weight" in exp:
            out[layer] = int(np.isfinite(exp["mode_weight"].values[sel]).any(axis=0).sum())
        else:
            out[layer] = exp.sizes["channel"]
    return out
