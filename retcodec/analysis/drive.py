"""Per-cell drive profiles: which hidden channels (and modes) drive each cell's own rate.

Input: the tree of :func:`retcodec.engine.percell.per_cell_contributions`, one
child per layer with ``contribution (time, cell, channel, sign)`` (the
contribution of every channel, split into its negative (I) and positive (E)
parts, to each cell's own rate).

* :func:`drive_profiles` — the **drive profile** of cell ``k`` in layer ``l``:
  ``D_k[c, s] = mean_t C_{k}(t)[c, s] / Σ_{c,s} |mean_t C_{k}(t)[c, s]|``, the
  time-averaged E and I drive of each channel as a signed fraction of the
  cell's total drive in that layer (so a cell's overall gain drops out; each
  layer's block has L1 norm 1). Layers are concatenated along ``feature``.
* :func:`drive_over_modes` — the same drive expressed over a layer's modes: for
  every window the cell's contribution vector is decomposed onto the mode rows
  by non-negative least squares; the mean loadings over windows, as fractions
  of their sum, form the cell's pattern of modes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from retcodec.analysis.consensus import Resampler
from retcodec.errors import ConfigurationError, ShapeError

__all__ = ["drive_profiles", "drive_over_modes", "per_cell_layers", "layer_drive", "drive_resampler"]


def per_cell_layers(per_cell: xr.DataTree, layers: Sequence[str] | None = None) -> list[str]:
    """The layers of a per-cell contribution tree (all children holding ``contribution``)."""
    if not isinstance(per_cell, xr.DataTree):
        raise ShapeError(f"per_cell must be the DataTree of per_cell_contributions, got {type(per_cell).__name__}")
    have = [name for name, child in per_cell.children.items() if "contribution" in child.ds]
    if layers is None:
        layers = have
    missing = [name for name in layers if name not in have]
    if not layers or missing:
        raise ConfigurationError(f"layers {list(layers)} are not all in the per-cell tree (it holds {have})")
    return list(layers)


def layer_drive(per_cell: xr.DataTree, layer: str) -> xr.DataArray:
    """``contribution (time, cell, channel, sign)`` of one layer, checked."""
    c = per_cell[layer]["contribution"]
    if set(c.dims) != {"time", "cell", "channel", "sign"}:
        raise ShapeError(f"{layer}/contribution must have dims (time, cell, channel, sign), got {c.dims}")
    c = c.transpose("time", "cell", "channel", "sign").load()
    if not np.isfinite(c.values).all():
        raise ConfigurationError(f"{layer}/contribution holds NaN or Inf")
    return c


def _normalised(block: np.ndarray) -> np.ndarray:
    """Rows divided by their L1 norm (rows of zeros stay zero)."""
    norm = np.abs(block).sum(axis=1, keepdims=True)
    return np.divide(block, norm, out=np.zeros_like(block), where=norm > 0)


def drive_profiles(per_cell: xr.DataTree, layers: Sequence[str] | None = None,
                   time_index: Any = None) -> xr.DataArray:
    """Drive profiles ``(cell, feature)``: each layer's mean E/I drive per channel, as fractions.

    ``time_index`` (optional) selects windows (positions along ``time``), e.g.
    for resampling. Feature coordinates: ``layer``, ``channel``, ``sign``.
    """
    blocks, layer_c, chan_c, sign_c = [], [], [], []
    cells = None
    for name in per_cell_layers(per_cell, layers):
        c = layer_drive(per_cell, name)
        if time_index is not None:
            c = c.isel(time=time_index)
        mean = c.values.astype(np.float64).mean(axis=0)              # (cell, channel, sign)
        blocks.append(_normalised(mean.reshape(mean.shape[0], -1)))
        ch, sg = np.meshgrid(c["channel"].values, c["sign"].values.astype(str), indexing="ij")
        layer_c += [name] * ch.size
        chan_c += ch.ravel().tolist()
        sign_c += sg.ravel().tolist()
        cells = c["cell"].values
    x = np.concatenate(blocks, axis=1)
    labels = [f"{l}:{c}:{s}" for l, c, s in zip(layer_c, chan_c, sign_c)]
    return xr.DataArray(x, dims=("cell", "feature"),
                        coords={"cell": cells, "feature": labels, "layer": ("feature", layer_c),
                                "channel": ("feature", np.asarray(chan_c)), "sign": ("feature", sign_c)},
                        name="drive_profile",
                        attrs={"long_name": "mean contribution of each channel (E: pos, I: neg) to the "
                                            "cell's own rate, as a signed fraction of the cell's total "
                                            "absolute drive in that layer"})


def _mode_loads(per_cell: xr.DataTree, modes: Mapping[str, xr.Dataset], layers: Sequence[str] | None
                ) -> tuple[list[np.ndarray], list[str], list[int], np.ndarray]:
    """Per layer the NNLS loadings ``(time, cell, mode)`` of each window's per-cell contributions on the modes."""
    from scipy.optimize import nnls

    loads, layer_c, mode_c = [], [], []
    cells = None
    for name in per_cell_layers(per_cell, layers):
        if name not in modes or "modes" not in modes[name]:
            raise ConfigurationError(f"no modes for layer {name!r}: give modes[{name!r}]['modes']")
        c = layer_drive(per_cell, name)
        rows = modes[name]["modes"].transpose("mode", "channel", "sign")
        rows = rows.sel(channel=c["channel"].values, sign=c["sign"].values).values.astype(np.float64)
        a = rows.reshape(rows.shape[0], -1)
        used = np.abs(a).sum(axis=0) > 0
        if not used.any():
            raise ConfigurationError(f"the modes of layer {name!r} are all zero")
        a = a[:, used].T                                               # (features, mode)
        v = c.values.astype(np.float64).reshape(c.sizes["time"], c.sizes["cell"], -1)[..., used]
        loads.append(np.array([[nnls(a, v[t, k])[0] for k in range(v.shape[1])] for t in range(v.shape[0])]))
        layer_c += [name] * a.shape[1]
        mode_c += modes[name]["mode"].values.tolist()
        cells = c["cell"].values
    return loads, layer_c, mode_c, cells


def drive_over_modes(per_cell: xr.DataTree, modes: Mapping[str, xr.Dataset],
                     layers: Sequence[str] | None = None) -> tuple[xr.DataArray, Resampler]:
    """Each cell's pattern of modes ``(cell, feature)``: mean NNLS loadings on each layer's modes.

    ``modes``: layer -> modes Dataset with ``modes (mode, channel, sign)``
    (contribution units, as :func:`retcodec.modes.fit_layer` returns). Only the
    (channel, sign) entries some mode uses are fitted. Each layer's block is
    normalised to sum 1 per cell. Returns the features and their :class:`Resampler`
    (the same features rebuilt on resampled windows, for consensus clustering).
    """
    loads, layer_c, mode_c, cells = _mode_loads(per_cell, modes, layers)
    resampler = _block_means_resampler(loads)
    labels = [f"{l}:mode{m}" for l, m in zip(layer_c, mode_c)]
    features = xr.DataArray(resampler.make(np.arange(resampler.n_time)), dims=("cell", "feature"),
                            coords={"cell": cells, "feature": labels, "layer": ("feature", layer_c),
                                    "mode": ("feature", np.asarray(mode_c))},
                            name="drive_over_modes",
                            attrs={"long_name": "mean NNLS loading of each mode in the cell's own-rate "
                                                "contributions, as a fraction of the cell's total per layer"})
    return features, resampler


def _block_means_resampler(blocks: Sequence[np.ndarray]) -> Resampler:
    """Features: per block ``(time, cell, f)``, the mean over the resampled windows as L1 fractions."""
    def make(index: np.ndarray) -> np.ndarray:
        return np.concatenate([_normalised(b[index].mean(axis=0)) for b in blocks], axis=1)

    return Resampler(make, len(blocks[0]))


def drive_resampler(per_cell: xr.DataTree, layers: Sequence[str] | None = None) -> Resampler:
    """:func:`drive_profiles` rebuilt on resampled windows (for consensus clustering)."""
    blocks = []
    for name in per_cell_layers(per_cell, layers):
        c = layer_drive(per_cell, name).values.astype(np.float64)
        blocks.append(c.reshape(c.shape[0], c.shape[1], -1))
    return _block_means_resampler(blocks)

