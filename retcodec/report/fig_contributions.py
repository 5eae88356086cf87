"""Contribution heat map: C+ and C- per channel over time, with cell rates and mode loadings below."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.report.figstyle import (DIVERGING, DT, FULL_WIDTH, as_dataset, bin_edges, coord_values,
                                      label_rows, per_cell_types, pretty_label, require_dims,
                                      require_variable, symmetric_norm)

__all__ = ["plot_contribution_heatmap"]


def _time_window(time_slice: Any) -> slice | None:
    if time_slice is None or isinstance(time_slice, slice):
        return time_slice
    try:
        start, stop = time_slice
    except (TypeError, ValueError):
        raise ConfigurationError(f"time_slice must be a slice or a (start, stop) pair in seconds, "
                                 f"got {time_slice!r}") from None
    return slice(start, stop)


def _select_time(da: xr.DataArray, window: slice | None, what: str) -> xr.DataArray:
    if window is None:
        return da
    if "time" not in da.coords:
        raise ConfigurationError(f"{what} has no time coordinate (s) to select {window} from")
    out = da.sel(time=window)
    if out.sizes["time"] == 0:
        raise ShapeError(f"{what} has no time points in {window} (its time runs "
                         f"{float(da.time[0]):g}..{float(da.time[-1]):g} s)")
    return out


def _label_groups(ax: Axes, groups: np.ndarray) -> None:
    """Rows sorted into consecutive groups: one tick label per group at its centre, white separators."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    stops = np.r_[starts[1:], groups.size]
    ax.set_yticks((starts + stops - 1) / 2,
                  [f"{pretty_label(groups[a])} ({b - a})" for a, b in zip(starts, stops)], fontsize="small")
    ax.tick_params(axis="y", length=0)
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="white", lw=1.5)


def _time_heatmap(fig: Figure, ax: Axes, da: xr.DataArray, row_dim: str, *, cmap: str,
                  norm: Normalize, ylabel: str, cbar_label: str | None, title: str,
                  groups: np.ndarray | None = None, max_labels: int = 24) -> Any:
    """A (row, time) heat map over physical time, with its colour bar (none if ``cbar_label`` is None).

    With ``groups`` (one label per row, rows already sorted by it) the rows
    are labelled by group instead of one by one.
    """
    data = da.transpose(row_dim, "time")
    t0, t1 = bin_edges(coord_values(data, "time", DT), DT)
    image = ax.imshow(data.values, aspect="auto", origin="lower", cmap=cmap, norm=norm,
                      extent=(t0, t1, -0.5, data.sizes[row_dim] - 0.5), interpolation="nearest")
    if groups is not None:
        _label_groups(ax, groups)
    else:
        label_rows(ax, coord_values(data, row_dim), max_labels=max_labels)
    ax.tick_params(axis="y", labelsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize="medium")
    if cbar_label is not None:
        fig.colorbar(image, ax=ax, label=cbar_label, pad=0.01)
    return image


def plot_contribution_heatmap(contrib_node: xr.Dataset | xr.DataTree,
                              rates: xr.DataArray | None = None,
                              loadings: xr.DataArray | None = None,
                              time_slice: slice | tuple[float, float] | None = None, *,
                              cell_types: Sequence[Any] | xr.DataArray | None = None,
                              target: str | None = None, stimulus: xr.DataArray | None = None) -> Figure:
    """Contributions per channel over time, with the cell rates and mode loadings below.

    Parameters
    ----------
    contrib_node
        A layer node of :func:`~retcodec.contributions.contributions`:
        ``contribution (time, channel, sign)``, ``sign`` in ``["neg", "pos"]``.
    rates
        ``(time, cell)`` rates in Hz (model or recorded), optional.
    loadings
        ``(time, mode)`` mode loadings, optional.
    time_slice
        A ``slice`` or ``(start, stop)`` in seconds, applied to every panel.
    cell_types
        One type per cell of ``rates`` (or a ``cell_type`` coordinate on
        ``rates``): rows are grouped by type and labelled by type name.
    target
        Name of the target the contributions add up to (default: the node's
        ``target`` attribute), used in the colour bar label.
    stimulus
        ``(time, y, x)`` frames, optional: a first row shows the spatial mean
        and spatial standard deviation (contrast) of each frame, in the units
        the frames are stored in.

    Returns
    -------
    Figure with stacked panels sharing the time axis (s), titled with the
    stretch shown out of the whole recording: the stimulus row, ``C+`` and ``C-``
    per channel (one diverging colour scale, centred on 0, symmetric, shared
    by both), then rates and loadings. Each panel has its colour bar; panel
    heights grow with their number of rows so that row labels never overlap.
    """
    ds = as_dataset(contrib_node, "contrib_node")
    contribution = require_dims(require_variable(ds, "contribution", "contrib_node"),
                                 ("time", "channel", "sign"), "contribution")
    signs = [s for s in ("pos", "neg") if s in contribution["sign"].values] \
        if "sign" in contribution.coords else []
    if not signs:
        raise ShapeError("contribution's sign coordinate must hold 'pos' and/or 'neg'")
    window = _time_window(time_slice)
    full_time = coord_values(contribution, "time", DT)
    contribution = _select_time(contribution, window, "contribution")
    panels: list[tuple[str, Any]] = [(s, contribution.sel(sign=s)) for s in signs]
    if stimulus is not None:
        stimulus = require_dims(stimulus, ("time", "y", "x"), "stimulus")
        times = coord_values(contribution, "time", DT)
        frames = stimulus.sel(time=times, method="nearest").astype(float)
        panels.insert(0, ("stimulus", xr.Dataset({"mean": frames.mean(("y", "x")), "sd": frames.std(("y", "x"))},
                                                 coords={"time": times})))
    groups = None
    if rates is not None:
        rates = _select_time(require_dims(rates, ("time", "cell"), "rates"), window, "rates")
        types = per_cell_types(rates, cell_types)
        if types is not None:
            order = np.argsort(types, kind="stable")
            rates, groups = rates.isel(cell=order), types[order]
        panels.append(("rates", rates))
    if loadings is not None:
        panels.append(("loadings", _select_time(require_dims(loadings, ("time", "mode"), "loadings"),
                                                window, "loadings")))
    heights = [0.9 if kind == "stimulus" else min(max(1.3, 0.13 * da.sizes[dim]), 3.2) for (kind, da), dim in
               zip(panels, [{"rates": "cell", "loadings": "mode"}.get(k, "channel") for k, _ in panels])]
    fig = Figure(figsize=(FULL_WIDTH, sum(heights) + 0.4 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    layer = ds.attrs.get("layer")
    target = target or ds.attrs.get("target")
    norm = symmetric_norm(contribution.values)
    image = None
    for ax, (kind, da), height in zip(axes, panels, heights):
        rows = int(height * 72 / 9)                      # tick labels at least ~9 pt apart
        if kind == "stimulus":
            _stimulus_row(ax, da)
        elif kind in ("pos", "neg"):
            sign = "positive contributions (C+)" if kind == "pos" else "negative contributions (C\u2212)"
            image = _time_heatmap(fig, ax, da, "channel", cmap=DIVERGING, norm=norm, ylabel="channel",
                                  cbar_label=None, title=(f"{layer} channels: " if layer else "") + sign,
                                  max_labels=rows)
        elif kind == "rates":
            _time_heatmap(fig, ax, da, "cell", cmap="viridis", norm=Normalize(0, float(da.max()) or 1),
                          ylabel="cell type (cells)" if groups is not None else "cell",
                          cbar_label="rate (Hz)", title="model firing rates", groups=groups, max_labels=rows)
            _cell_indices(ax, coord_values(da, "cell"), max_labels=int(height * 72 / 6))
        else:
            signed = float(da.min()) < 0
            _time_heatmap(fig, ax, da, "mode", cmap=DIVERGING if signed else "Purples",
                          norm=symmetric_norm(da.values) if signed else Normalize(0, float(da.max()) or 1),
                          ylabel="mode", cbar_label="loading", title="mode loadings (how much each mode "
                          "is used), in the modes figure's order", max_labels=rows)
        if kind in ("rates", "loadings"):
            ax.invert_yaxis()                            # first cell type / first mode on top
    first = 1 if stimulus is not None else 0
    unit = " (dimensionless)" if target == "surprisal" else ""
    fig.colorbar(image, ax=list(axes[first:first + len(signs)]), pad=0.01, shrink=0.9,
                 label=(f"contribution to {target}" if target else "contribution") + unit)
    axes[-1].set_xlabel("time (s)")
    shown = coord_values(contribution, "time", DT)
    span = float(full_time[-1] - full_time[0]) + (float(full_time[1] - full_time[0]) if full_time.size > 1 else DT)
    fig.suptitle(f"{shown[0]:.1f}–{shown[-1]:.1f} s shown of {span:.1f} s analysed"
                 + ("" if shown.size == full_time.size else " (the full stretch is in contributions.nc)"),
                 fontsize="small", x=0.01, ha="left")
    return fig


def _stimulus_row(ax: Axes, frames: xr.Dataset) -> None:
    """Spatial mean and spatial SD (contrast) of each frame over time, on one axis."""
    t = frames["time"].values
    ax.plot(t, frames["mean"].values, color="0.2", lw=0.9, label="mean")
    ax.plot(t, frames["sd"].values, color="0.6", lw=0.9, label="SD (contrast)")
    ax.set_ylabel("stimulus", fontsize="small")
    ax.tick_params(axis="y", labelsize="x-small")
    ax.set_title("stimulus: spatial mean and SD of each frame (units as stored)", loc="left", fontsize="medium")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _cell_indices(ax: Axes, cells: np.ndarray, max_labels: int) -> None:
    """The rows' cell indices on the right edge (every k-th when rows are too dense for 5 pt labels)."""
    right = ax.secondary_yaxis("right")
    step = max(1, int(np.ceil(len(cells) / max(1, max_labels))))
    ticks = np.arange(0, len(cells), step)
    right.set_yticks(ticks, [str(cells[i]) for i in ticks], fontsize=5)
    right.tick_params(length=0, pad=1)
    right.set_ylabel("cell", fontsize="x-small", labelpad=4)
