"""Effects of silencing on the model's rates, and silencing recorded interneurons as directions.

An effect is the **fractional change of a cell's mean rate** over the analysed
windows, ``(mean silenced - mean intact) / mean intact``; its uncertainty comes
from ``n_blocks`` contiguous time blocks. :func:`direction_experiments`
silences each recorded interneuron as its fitted direction
(:func:`retcodec.analysis.interneuron_directions.map_interneurons`), projected
out of each hidden layer (:func:`retcodec.engine.directions.direction_rates`).
These helpers are re-exported by :mod:`retcodec.analysis.experiments`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from retcodec.analysis.interneuron_directions import blind_spots
from retcodec.engine.directions import direction_rates
from retcodec.engine.perturb import Silencer
from retcodec.errors import ConfigurationError, ShapeError

__all__ = ["channel_match_variables", "fractional_change", "block_effects", "standard_error", "direction_experiments", "consistent_directions",
           "layer_directions", "check_same_interneurons", "direction_variables", "fit_variables", "N_BLOCKS", "EXCITATORY", "INHIBITORY"]

#: contiguous time blocks for the uncertainty of an effect
N_BLOCKS = 10
#: interneuron classes that excite their targets (silencing them should lower rates) ...
EXCITATORY = ("bipolar",)
#: ... and that inhibit them (silencing them should raise rates)
INHIBITORY = ("amacrine", "horizontal")


def fractional_change(silenced: np.ndarray, intact: np.ndarray, where: np.ndarray | None = None
                      ) -> np.ndarray:
    """``(mean silenced - mean intact) / mean intact`` over time (axis 0), per cell; rows ``where``."""
    s, i = np.asarray(silenced, np.float64), np.asarray(intact, np.float64)
    if where is not None:
        s, i = s[where], i[where]
    base = i.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(base > 0, (s.mean(axis=0) - base) / np.where(base > 0, base, 1.0), np.nan)


def block_effects(silenced: np.ndarray, intact: np.ndarray, n_blocks: int = N_BLOCKS) -> np.ndarray:
    """Fractional change in each of ``n_blocks`` contiguous time blocks: ``(block, cell)``."""
    parts = np.array_split(np.arange(len(intact)), int(n_blocks))
    return np.stack([fractional_change(silenced[p], intact[p]) for p in parts])


def standard_error(blocks: np.ndarray) -> np.ndarray:
    """Standard error of the mean over the first axis (time blocks)."""
    return blocks.std(axis=0, ddof=1) / math.sqrt(blocks.shape[0])


def layer_directions(directions: xr.Dataset, i: int) -> dict[str, np.ndarray]:
    """Interneuron ``i``'s weights per layer: ``{layer: (channel,)}`` from ``direction (interneuron, unit)``."""
    w = np.asarray(directions["direction"].values[i], np.float64)
    layers = directions["unit_layer"].values.astype(str)
    channels = directions["unit_channel"].values
    out = {}
    for layer in dict.fromkeys(layers):
        sel = layers == layer
        weights = np.zeros(int(channels[sel].max()) + 1)
        weights[channels[sel]] = w[sel]
        out[str(layer)] = weights
    return out


def direction_experiments(silencer: Silencer, intact: np.ndarray, directions: xr.Dataset,
                          n_blocks: int = N_BLOCKS) -> dict[str, Any]:
    """Silence every interneuron's direction: ``effect``, ``se``, ``blocks`` and ``empty`` arrays.

    ``effect``/``se (interneuron, cell)``, ``blocks (interneuron, block, cell)``;
    ``empty (interneuron,)``: no positive weight (nothing silenced, effect 0).
    """
    if "direction" not in directions or "unit_layer" not in directions.coords:
        raise ConfigurationError("directions need 'direction (interneuron, unit)' with unit_layer and "
                                 "unit_channel coordinates, as returned by map_interneurons")
    n, n_cells = directions.sizes["interneuron"], intact.shape[1]
    effect, se = np.zeros((n, n_cells)), np.zeros((n, n_cells))
    blocks = np.zeros((n, n_blocks, n_cells))
    empty = np.zeros(n, dtype=bool)
    for i in range(n):
        per_layer = {l: w for l, w in layer_directions(directions, i).items() if np.any(w > 0)}
        empty[i] = not per_layer
        if empty[i]:
            continue
        rates = direction_rates(silencer, per_layer)
        effect[i] = fractional_change(rates, intact)
        blocks[i] = block_effects(rates, intact, n_blocks)
        se[i] = standard_error(blocks[i])
    return {"effect": effect, "se": se, "blocks": blocks, "empty": empty}


def consistent_directions(directions: xr.Dataset, single_effect: np.ndarray, units: list[str],
                          classes: np.ndarray) -> xr.Dataset:
    """Directions restricted to channels that act like the interneuron's class.

    A channel whose silencing alone lowers the cells' mean rate on average
    (``single_effect (unit, cell)``, ``units`` its labels) acts as excitation in
    the model; one that raises it, as inhibition. A bipolar cell's direction keeps
    only excitatory channels, an amacrine cell's only inhibitory ones; a class
    that is neither, or a direction left empty by the rule, is kept whole.
    ``weights_rule`` (interneuron) says which was used.
    """
    net = dict(zip(units, np.nanmean(np.asarray(single_effect, float), axis=1)))
    labels = directions["unit"].values.astype(str)
    effect = np.array([net.get(u, np.nan) for u in labels])
    w = np.asarray(directions["direction"].values, float).copy()
    rule = []
    for i, cls in enumerate(np.asarray(classes).astype(str)):
        keep = effect < 0 if cls in EXCITATORY else effect > 0 if cls in INHIBITORY else None
        if keep is None or not np.any(w[i] * keep > 0):
            rule.append("all channels")
            continue
        w[i] = w[i] * keep
        rule.append("excitatory channels" if cls in EXCITATORY else "inhibitory channels")
    return directions.assign(direction=directions["direction"].copy(data=w),
                             weights_rule=("interneuron", np.array(rule, dtype=str)))


def check_same_interneurons(match: xr.Dataset, directions: xr.Dataset) -> None:
    """ConfigurationError unless ``directions`` covers the interneurons of ``match``, in order."""
    a, b = match["interneuron"].values.astype(str), directions["interneuron"].values.astype(str)
    if a.shape != b.shape or (a != b).any():
        raise ConfigurationError("the directions and the match cover different interneurons; map the "
                                 "same interneuron files that were matched")


def direction_variables(directions: xr.Dataset, min_match_r: float, units: list[str], match: xr.Dataset,
                        used: np.ndarray) -> dict[str, Any]:
    """The direction fits for ``experiments.nc``: weights on ``units``, held-out r, chance, and
    ``match_correlation``/``blind_spot`` of the mapping ``used`` (True: the direction; False: the
    best unit of ``match``)."""
    weights = directions["direction"].reindex(unit=units, fill_value=0.0)
    held = np.asarray(directions["heldout_correlation"].values, float)
    chance = np.asarray(directions["chance_p95"].values, float)
    rule = (directions["weights_rule"].values.astype(str) if "weights_rule" in directions
            else np.full(len(held), "all channels"))
    r = np.where(used, held, np.asarray(match["heldout_correlation"].values, float))
    r_chance = np.where(used, chance, np.asarray(match["chance_p95"].values, float) if "chance_p95" in match
                        else np.nan)
    return {"direction": (("interneuron", "unit"), np.asarray(weights.values, float), {
                "long_name": "non-negative weight of each channel in the interneuron's direction"}),
            "direction_heldout_correlation": ("interneuron", held, {
                "long_name": "Pearson r of the fitted direction with Vm on held-out time"}),
            "direction_chance_p95": ("interneuron", chance, {
                "long_name": "95th percentile of that r with Vm circularly shifted"}),
            "direction_channels": ("interneuron", rule, {
                "long_name": "which channels the silenced direction may use (class-consistent rule)"}),
            **_match_quality(r, r_chance, min_match_r)}


def _match_quality(r: np.ndarray, r_chance: np.ndarray, min_match_r: float) -> dict[str, Any]:
    return {"match_correlation": ("interneuron", r, {"long_name": "held-out r of the mapping used for "
                                                                  "predicted_effect"}),
            "match_chance_p95": ("interneuron", r_chance, {"long_name": "its chance p95"}),
            "blind_spot": ("interneuron", blind_spots(r, r_chance, min_match_r), {
                "long_name": f"no model counterpart: held-out r of the mapping used <= its chance p95 "
                             f"or < {min_match_r}"})}


def channel_match_variables(match: xr.Dataset, min_match_r: float) -> dict[str, Any]:
    """``match_correlation``/``blind_spot`` when every interneuron is silenced as its best unit's channel."""
    r = np.asarray(match["heldout_correlation"].values, float)
    r_chance = (np.asarray(match["chance_p95"].values, float) if "chance_p95" in match
                else np.full(r.shape, np.nan))
    return _match_quality(r, r_chance, min_match_r)


def fit_variables(fit: xr.Dataset, n_cells: int, min_feve: float) -> dict[str, Any]:
    """``fit_correlation``, ``fit_feve`` and ``poorly_fit (cell)`` from an evaluation Dataset."""
    missing = [v for v in ("correlation", "feve") if v not in fit]
    if missing or fit["feve"].size != n_cells:
        raise ShapeError(f"fit_quality needs 'correlation' and 'feve' over the model's {n_cells} cells "
                         f"(retcodec.evaluate); missing {missing} or sized {fit['feve'].size}")
    feve = np.asarray(fit["feve"].values, float)
    return {"fit_correlation": ("cell", np.asarray(fit["correlation"].values, float),
                                {"long_name": "correlation of model and recorded rate on held-out data"}),
            "fit_feve": ("cell", feve, {"long_name": "fraction of explainable variance explained"}),
            "poorly_fit": ("cell", ~(feve >= min_feve), {
                "long_name": f"the model explains too little of this cell (FEVE < {min_feve} or unknown): "
                             f"its predicted effects are not stated as hypotheses"})}
