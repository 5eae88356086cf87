"""Cell-type figure: correlation of every cell's rate with every mode's loadings, rows grouped by cluster."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from retcodec.errors import ShapeError
from retcodec.report.figstyle import (DIVERGING, FULL_WIDTH, coord_values, label_rows, per_cell, pretty_label,
                                      require_dims, symmetric_norm, type_colors)

__all__ = ["plot_mode_cell_matrix", "cluster_strip"]


def plot_mode_cell_matrix(corr: xr.DataArray, labels: Sequence[Any] | xr.DataArray | None = None,
                          linkage: np.ndarray | None = None,
                          true_types: Sequence[Any] | xr.DataArray | None = None, *,
                          layer: str | None = None) -> Figure:
    """Correlation of every cell's rate with every mode's loadings, rows grouped by cluster.

    Parameters
    ----------
    corr
        ``(cell, mode)`` correlations (e.g. standardised per mode).
    labels
        Cluster label per cell (``(cell,)``), drawn as a colour strip.
    linkage
        A scipy linkage matrix ``(n_cells - 1, 4)`` of the cells; rows follow
        its dendrogram, drawn on the left. Without it rows are sorted by
        ``labels``.
    true_types
        True cell type per cell (in-silico data), a second colour strip.

    layer
        Named in the title.

    Returns
    -------
    Figure: [dendrogram] [cluster strip] [type strip] heat map (diverging,
    centred on 0) with its colour bar. The cluster strip names each cluster
    in place (alternating greys); the type strip uses the cell-type colours
    of every other figure, named in a legend below.
    """
    from scipy.cluster.hierarchy import dendrogram, leaves_list

    corr = require_dims(corr, ("cell", "mode"), "corr").transpose("cell", "mode")
    n_cells = corr.sizes["cell"]
    labels = None if labels is None else per_cell(labels, n_cells, "labels")
    true_types = None if true_types is None else per_cell(true_types, n_cells, "true_types")
    if linkage is not None:
        linkage = np.asarray(linkage, dtype=float)
        if linkage.shape != (n_cells - 1, 4):
            raise ShapeError(f"linkage must be a scipy linkage matrix ({n_cells - 1}, 4) for "
                             f"{n_cells} cells, got {linkage.shape}")
        order = leaves_list(linkage)
    elif labels is not None:
        order = np.argsort(labels, kind="stable")
    else:
        order = np.arange(n_cells)
    strips = [(name, values[order]) for name, values in (("cluster", labels), ("true type", true_types))
              if values is not None]
    widths = ([1.2] if linkage is not None else []) + [0.25] * len(strips) + [6.0, 0.2]
    fig = Figure(figsize=(FULL_WIDTH * 0.8, 1.0 + 0.2 * n_cells), layout="constrained")
    grid = fig.add_gridspec(1, len(widths), width_ratios=widths, wspace=0.02)
    column = 0
    if linkage is not None:
        ax = fig.add_subplot(grid[0, column])
        dendrogram(linkage, ax=ax, orientation="left", no_labels=True, color_threshold=0,
                   above_threshold_color="0.3")
        ax.set_ylim(0, 10 * n_cells)                       # leaves sit at 5, 15, 25, ...
        ax.set_axis_off()
        column += 1
    legends = []
    for name, values in strips:
        ax = fig.add_subplot(grid[0, column])
        if name == "cluster":
            cluster_strip(ax, values)
        else:
            legends.append(_color_strip(ax, name, values))
        column += 1
    ax = fig.add_subplot(grid[0, column])
    data = corr.values[order]
    image = ax.imshow(data, aspect="auto", origin="lower", cmap=DIVERGING, norm=symmetric_norm(data),
                      interpolation="nearest")
    modes = coord_values(corr, "mode")
    step = max(1, int(np.ceil(len(modes) / 16)))           # at most ~16 tick labels
    ticks = np.arange(0, len(modes), step)
    ax.set_xticks(ticks, [str(modes[i]) for i in ticks], fontsize="small")
    ax.set_xlabel("mode")
    ax.yaxis.tick_right()
    ax.yaxis.set_label_position("right")
    label_rows(ax, coord_values(corr, "cell")[order], max_labels=60)
    ax.tick_params(axis="y", labelsize="small")
    ax.set_ylabel("cell (rows ordered by the clustering)" if linkage is not None or labels is not None
                  else "cell")
    layer = layer or corr.attrs.get("layer")
    ax.set_title((f"{layer}: " if layer else "") + "correlation of each cell's rate with each mode's loading",
                 fontsize="medium")
    fig.colorbar(image, cax=fig.add_subplot(grid[0, column + 1]), label="Pearson r")
    for title, handles in legends:
        fig.legend(handles=handles, title=title, loc="outside lower center", ncols=min(4, len(handles)),
                   fontsize="small", title_fontsize="small")
    return fig


def cluster_strip(ax: Axes, clusters: np.ndarray, name: str = "cluster") -> None:
    """Consecutive runs of one cluster in alternating greys, each run named by its cluster label."""
    starts = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1]])
    stops = np.r_[starts[1:], clusters.size]
    shade = np.zeros(clusters.size)
    for k, (a, b) in enumerate(zip(starts, stops)):
        shade[a:b] = k % 2
        ax.text(0, (a + b - 1) / 2, str(clusters[a]), ha="center", va="center", fontsize="small",
                color="white" if k % 2 else "k")
    ax.imshow(shade[:, None], aspect="auto", origin="lower", cmap="Greys", vmin=-0.6, vmax=1.4,
              interpolation="nearest")
    ax.set_xticks([0], [name], rotation=90)
    ax.set_yticks([])


def _color_strip(ax: Axes, name: str, values: np.ndarray) -> tuple[str, list[Patch]]:
    """A one-column strip coloured by category; returns the legend title and handles."""
    colors = type_colors(values)
    index = {c: i for i, c in enumerate(colors)}
    cmap = ListedColormap(list(colors.values()))
    ax.imshow(np.array([index[v] for v in values])[:, None], aspect="auto", origin="lower",
              cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, interpolation="nearest")
    ax.set_xticks([0], [name], rotation=90)
    ax.set_yticks([])
    return name, [Patch(color=c, label=pretty_label(k)) for k, c in colors.items()]
