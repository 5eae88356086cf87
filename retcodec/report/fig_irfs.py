"""Receptive-field figure: rank-1 IRF filters per mode combination, and readable combination labels."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.report.figstyle import (DIVERGING, DT, FULL_WIDTH, bin_edges, coord_values, mode_names,
                                      per_cell_types, pretty_label, require_dims, symmetric_norm, type_colors)

__all__ = ["plot_irf_filters", "combination_labels"]


def plot_irf_filters(spatial: xr.DataArray, temporal: xr.DataArray, max_cells: int = 6, *,
                     modes: xr.DataArray | None = None,
                     cell_types: Sequence[Any] | xr.DataArray | None = None,
                     layer: str | None = None) -> Figure:
    """Rank-1 IRF filters per mode combination: cropped spatial maps and temporal filters vs lag.

    Parameters
    ----------
    spatial
        ``(combination, y, x)`` or ``(combination, cell, y, x)``; ``y``/``x``
        coordinates in stimulus pixels. NaN where a cell never fired during a
        combination.
    temporal
        ``(combination, lag)`` or ``(combination, cell, lag)``; ``lag`` in s
        before the predicted bin (index × 10 ms without a coordinate).
    max_cells
        At most this many cells get a column: one per cell type when types are
        known (the cell of that type with the fewest empty combinations), else
        cells picked so that every combination shows a firing cell.
    modes
        ``(mode, channel[, sign])`` mode weights: combinations such as ``"0+5"``
        are then described by their modes' main channels (:func:`mode_names`).
    cell_types
        One type per cell (or a ``cell_type`` coordinate on ``spatial``).
    layer
        Named in the title.

    Returns
    -------
    Figure with one row per combination, headed by its modes: a map per shown
    cell, cropped to a common square around each cell's receptive field
    (diverging, limits ``±max|value|`` shared by all maps, one colour bar),
    and at the right the same cells' temporal filters, in the colour of their
    cell type. Maps of a cell that never fired during the combination read
    "cell silent".
    """
    spatial = require_dims(spatial, ("combination", "y", "x"), "spatial", optional=("cell",))
    temporal = require_dims(temporal, ("combination", "lag"), "temporal", optional=("cell",))
    if max_cells < 1:
        raise ConfigurationError(f"max_cells must be >= 1, got {max_cells}")
    combos = coord_values(spatial, "combination")
    if temporal.sizes["combination"] != len(combos) or (
            "combination" in temporal.coords and "combination" in spatial.coords
            and not np.array_equal(temporal["combination"].values, combos)):
        raise ShapeError(f"spatial and temporal must hold the same combinations, got {list(combos)} "
                         f"and {list(coord_values(temporal, 'combination'))}")
    spatial = spatial.expand_dims(cell=[None]) if "cell" not in spatial.dims else spatial
    spatial = spatial.transpose("combination", "cell", "y", "x")
    temporal = temporal.transpose("combination", "cell", "lag") if "cell" in temporal.dims else \
        temporal.expand_dims(cell=[None]).transpose("combination", "cell", "lag")
    types = per_cell_types(spatial, cell_types)
    columns = _representative_cells(spatial.values, types, max_cells)
    maps = spatial.values[:, columns]
    lines = temporal.values[:, columns] if temporal.sizes["cell"] == spatial.sizes["cell"] \
        else np.repeat(temporal.values[:, :1], len(columns), axis=1)
    cells = coord_values(spatial, "cell")[columns]
    shown_types = None if types is None else types[columns]
    colors = type_colors(types) if types is not None else {}
    column_colors = [colors.get(t, "0.2") for t in shown_types] if shown_types is not None \
        else [colormaps["tab10"](k % 10) for k in range(len(columns))]
    headers = combination_labels(combos, modes)
    n_rows, n_img = len(combos), len(columns)
    norm = symmetric_norm(np.nan_to_num(maps))
    ys, xs = coord_values(spatial, "y"), coord_values(spatial, "x")
    extent = (*bin_edges(xs), *bin_edges(ys)[::-1])
    windows, side = _crop_windows(maps, ys, xs)
    lag = coord_values(temporal, "lag", DT)
    # the first row carries the cell titles, the last the lag label: taller, so all maps match
    ratios = [1.0] * n_rows
    ratios[0] += 0.35
    ratios[-1] += 0.12
    fig = Figure(figsize=(FULL_WIDTH, 1.35 * sum(ratios) + 0.9), layout="constrained")
    rows = fig.subfigures(n_rows + 1, 1, height_ratios=ratios + [0.7])
    image, scale_ax, first_line_ax = None, None, None
    for r, row in enumerate(rows[:-1]):
        axes = row.subplots(1, n_img + 1, width_ratios=[1] * n_img + [max(1.6, 0.5 * n_img)])
        row.suptitle(headers[r], x=0.01, ha="left", fontsize="small", fontweight="bold")
        for c in range(n_img):
            ax = axes[c]
            ax.set_xticks([])
            ax.set_yticks([])
            (wx0, wx1), (wy0, wy1) = windows[c]
            if not np.isfinite(maps[r, c]).any():
                ax.set_facecolor("0.95")
                ax.text(0.5, 0.5, "cell\nsilent", transform=ax.transAxes,
                        ha="center", va="center", fontsize="x-small", color="0.4")
            else:
                image = ax.imshow(maps[r, c], cmap=DIVERGING, norm=norm, origin="upper", extent=extent,
                                  interpolation="nearest")
            ax.set_xlim(wx0, wx1)
            ax.set_ylim(wy1, wy0)
            ax.set_aspect("equal")
            for spine in ax.spines.values():
                spine.set_edgecolor(column_colors[c])
            if r == 0:
                title = f"cell {cells[c]}" if cells[c] is not None else "all cells"
                if shown_types is not None:
                    title = f"{_wrapped(pretty_label(shown_types[c]))}\n{title}"
                ax.set_title(title, fontsize="x-small", color=column_colors[c])
        scale_ax = axes[0]
        ax = axes[-1]
        if first_line_ax is not None:
            ax.sharex(first_line_ax)
            ax.sharey(first_line_ax)
        first_line_ax = first_line_ax or ax
        drawn = [c for c in range(n_img) if np.isfinite(lines[r, c]).any()]
        for c in drawn:
            ax.plot(lag, lines[r, c], lw=1.3, color=column_colors[c])
        if not drawn:
            ax.text(0.5, 0.5, "no shown cell fired", transform=ax.transAxes, ha="center", va="center",
                    fontsize="x-small", color="0.4")
        ax.axhline(0, color="0.6", lw=0.6)
        ax.tick_params(labelsize="small")
        ax.set_ylabel("weight", fontsize="small")
        if r == 0:
            ax.set_title("temporal filters (unit norm;\npositive at the peak lag)", fontsize="x-small")
        if r == n_rows - 1:
            ax.set_xlabel("lag before the response (s)", fontsize="small")
    _scale_bar(scale_ax, side)
    if image is not None:
        cax = rows[-1].add_axes((0.2, 0.72, 0.6, 0.1))
        cbar = rows[-1].colorbar(image, cax=cax, orientation="horizontal")
        cbar.ax.tick_params(labelsize="small")
        cbar.set_label(f"spatial filter weight (unit norm; sign: temporal filter positive at its peak lag, so "
                       f"red centre = ON, blue = OFF)\neach map shows {side:g} × {side:g} stimulus px around "
                       "its cell's receptive field", fontsize="small")
    fig.suptitle((f"{layer}: " if layer else "") + "instantaneous receptive fields while a mode combination "
                 "is active", fontsize="medium")
    return fig


def _wrapped(label: str, width: int = 10) -> str:
    """A type name on two lines when longer than ``width`` (split at the space nearest the middle)."""
    if len(label) <= width or " " not in label:
        return label
    spaces = [i for i, ch in enumerate(label) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(label) / 2))
    return label[:cut] + "\n" + label[cut + 1:]


def _representative_cells(maps: np.ndarray, types: np.ndarray | None, max_cells: int) -> np.ndarray:
    """Columns to show: per type (in sorted order) the cell with most non-empty combinations."""
    fires = np.isfinite(maps).any(axis=(2, 3))                       # (combination, cell)
    filled = fires.sum(axis=0)
    if types is None:
        return _covering_cells(fires, max_cells)
    chosen = []
    for t in sorted(set(types.tolist()), key=str):
        members = np.flatnonzero(types == t)
        chosen.append(int(members[np.argmax(filled[members])]))
    return np.array(chosen[:max_cells])


def _covering_cells(fires: np.ndarray, max_cells: int) -> np.ndarray:
    """Up to ``max_cells`` cells, picked greedily so that every combination has a firing cell."""
    chosen: list[int] = []
    covered = np.zeros(fires.shape[0], bool)
    filled = fires.sum(axis=0)
    while len(chosen) < min(max_cells, fires.shape[1]):
        gain = (fires & ~covered[:, None]).sum(axis=0) * (fires.shape[0] + 1) + filled
        gain[chosen] = -1
        best = int(np.argmax(gain))
        chosen.append(best)
        covered |= fires[:, best]
    return np.sort(np.array(chosen, dtype=int))


def _crop_windows(maps: np.ndarray, ys: np.ndarray, xs: np.ndarray, level: float = 0.1,
                  margin: float = 3.0) -> tuple[list[tuple[tuple[float, float], tuple[float, float]]], float]:
    """Per column of ``maps (combination, cell, y, x)`` a square (x, y) window around its RF, one size.

    The window is centred on the cell's peak of ``max |map|`` over combinations;
    its half-width covers, for every cell, the pixels above ``level`` of that
    cell's peak, plus ``margin`` px, and stays inside the map.
    """
    envelope = np.nanmax(np.abs(np.nan_to_num(maps, nan=0.0)), axis=0)   # (cell, y, x)
    step_y = float(np.median(np.diff(ys))) if ys.size > 1 else 1.0
    step_x = float(np.median(np.diff(xs))) if xs.size > 1 else 1.0
    centres, half = [], 1.0
    for env in envelope:
        peak = float(env.max())
        if peak <= 0:
            centres.append((float(np.median(ys)), float(np.median(xs))))
            continue
        iy, ix = np.unravel_index(int(np.argmax(env)), env.shape)
        centres.append((float(ys[iy]), float(xs[ix])))
        yy, xx = np.nonzero(env >= level * peak)
        half = max(half, float(np.max(np.abs(ys[yy] - ys[iy]))), float(np.max(np.abs(xs[xx] - xs[ix]))))
    half += margin
    (y_lo, y_hi), (x_lo, x_hi) = bin_edges(ys), bin_edges(xs)
    half = min(half, (y_hi - y_lo) / 2, (x_hi - x_lo) / 2)
    windows = []
    for cy, cx in centres:
        x0 = float(np.clip(cx - half - step_x / 2, x_lo, x_hi - 2 * half - step_x))
        y0 = float(np.clip(cy - half - step_y / 2, y_lo, y_hi - 2 * half - step_y))
        windows.append(((x0, x0 + 2 * half + step_x), (y0, y0 + 2 * half + step_y)))
    return windows, round(2 * half + step_x, 6)


def _scale_bar(ax: Axes, side: float) -> None:
    """A bar of a round number of stimulus pixels in the lower left of a map."""
    length = next((v for v in (20, 10, 5, 2, 1) if v <= side / 2), side / 2)
    x0, _ = ax.get_xlim()
    y_bottom, _ = ax.get_ylim()                               # y axis runs downwards
    pad = side * 0.08
    ax.plot([x0 + pad, x0 + pad + length], [y_bottom - pad] * 2, color="k", lw=2, solid_capstyle="butt")
    ax.text(x0 + pad + length / 2, y_bottom - 2 * pad, f"{length:g} px", ha="center", va="bottom",
            fontsize="x-small")


def combination_labels(combinations: Sequence[Any], modes: xr.DataArray | None = None,
                       max_listed: int = 6) -> list[str]:
    """Readable descriptions of mode combinations such as ``"0+5"``.

    With ``modes`` (``(mode, channel[, sign])``), each combination names its
    modes with their main channels (:func:`mode_names`); long combinations
    list the first ``max_listed`` modes and the channels that all of them use.
    Combinations that are not ``+``-joined mode ids are returned as given.
    """
    names: dict[str, str] = {}
    if modes is not None:
        names = {str(m): n for m, n in zip(coord_values(modes, "mode"), mode_names(modes))}
    labels = []
    for combo in combinations:
        members = [m.strip() for m in str(combo).split("+") if m.strip()]
        if not members:
            labels.append(str(combo))
            continue
        if len(members) == 1:
            name = names.get(members[0])
            labels.append(f"mode {members[0]}" + (f" ({name})" if name else "") + " alone")
            continue
        if len(members) <= 3 and names:
            labels.append(" + ".join(f"mode {m} ({names.get(m, '?')})" for m in members))
            continue
        listed = ", ".join(members[:max_listed]) + (", …" if len(members) > max_listed else "")
        label = f"{len(members)} modes together ({listed})"
        if names:
            terms = sorted({t for m in members for t in names.get(m, "").split() if t.startswith("ch")},
                           key=lambda t: (int("".join(ch for ch in t if ch.isdigit()) or 0), t))
            label += f": channels {' '.join(terms)}" if terms else ""
        labels.append(label)
    return labels
