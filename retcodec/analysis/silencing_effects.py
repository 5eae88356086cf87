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

from retcodec.engine.directions import direction_rates
from retcodec.engine.perturb import Silencer
from retcodec.errors import ConfigurationError

__all__ = ["fractional_change", "block_effects", "standard_error", "direction_experiments", "N_BLOCKS"]

#: contiguous time blocks for the uncertainty of an effect
N_BLOCKS = 10


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
