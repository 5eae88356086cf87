"""The primary cell types as a figure: their features, the consensus, each cell's confidence, the k evidence.

Input: the root of ``cell_types.nc`` (:func:`retcodec.analysis.celltypes.cell_types_primary`),
which holds ``drive_profile (cell, primary_feature)``, ``cluster (cell)`` and the
consensus evidence (``consensus (k, cell, cell2)``, ``pac (k)``, ``confidence (cell)``,
``alternative (cell)``), ``silhouette (k)`` and, when the truth is known,
``true_type (cell)``, ``ari_truth`` and ``ari_truth_interval (bound)``.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from retcodec.report.fig_cells import cluster_strip
from retcodec.report.figstyle import FULL_WIDTH, as_dataset, pretty_label, require_variable, type_colors

__all__ = ["plot_cell_types", "CONFIDENT"]

#: cells whose mean consensus with their own type is below this are marked uncertain
CONFIDENT = 0.8


def _order(ds: xr.Dataset) -> np.ndarray:
    """Cells grouped by type (types in label order), then by true type, then by index."""
    cluster = ds["cluster"].values
    truth = ds["true_type"].values.astype(str) if "true_type" in ds.coords else np.zeros(cluster.size, str)
    return np.lexsort((np.arange(cluster.size), truth, cluster))


def _strip(ax, values: np.ndarray, name: str) -> list[Patch]:
    colors = type_colors(values)
    index = {c: i for i, c in enumerate(colors)}
    ax.imshow(np.array([index[v] for v in values])[:, None], aspect="auto", cmap=ListedColormap(list(colors.values())),
              vmin=-0.5, vmax=len(colors) - 0.5, interpolation="nearest")
    ax.set_xticks([0], [name], rotation=90, fontsize="small")
    ax.set_yticks([])
    return [Patch(color=c, label=pretty_label(k)) for k, c in colors.items()]


def _boundaries(ax, clusters: np.ndarray, vertical: bool) -> None:
    for edge in np.flatnonzero(clusters[1:] != clusters[:-1]) + 0.5:
        ax.axhline(edge, color="w", lw=1.2)
        if vertical:
            ax.axvline(edge, color="w", lw=1.2)


def plot_cell_types(types: xr.Dataset | xr.DataTree, max_feature_labels: int = 40) -> Figure:
    """Four panels on one row of cells (grouped by type): features, consensus, confidence; and the k evidence.

    * features: the primary features of every cell (``drive_profile``), with the
      type and (when known) true-type strips;
    * consensus at the chosen k: how often two cells shared a type over the resamples;
    * confidence: each cell's mean consensus with its own type; below
      :data:`CONFIDENT` the cell is marked with its alternative type;
    * k evidence: the ambiguous-pair fraction and the silhouette for every k, the
      chosen k, the true k and ARI with its interval when known.
    """
    ds = as_dataset(types, "cell types")
    features = require_variable(ds, "drive_profile", "cell types")
    cluster = require_variable(ds, "cluster", "cell types").values
    order = _order(ds)
    k = int(ds["chosen_k"])
    x = features.transpose("cell", ...).values[order]
    fig = Figure(figsize=(FULL_WIDTH * 1.6, 4.6), layout="constrained")
    widths = [0.25, 0.25, 4.0, 0.15, 3.0, 1.3, 2.6]
    grid = fig.add_gridspec(1, len(widths), width_ratios=widths)
    strip = fig.add_subplot(grid[0, 0])
    cluster_strip(strip, cluster[order], "type")
    strip.invert_yaxis()                           # rows run top-down, as in the feature map
    handles = []
    if "true_type" in ds.coords:
        handles = _strip(fig.add_subplot(grid[0, 1]), ds["true_type"].values.astype(str)[order], "true type")
    ax = fig.add_subplot(grid[0, 2])
    signed = (x < 0).any()
    limit = float(np.abs(x).max()) or 1.0
    image = ax.imshow(x, aspect="auto", cmap="RdBu_r" if signed else "viridis", interpolation="nearest",
                      vmin=-limit if signed else 0.0, vmax=limit)
    names = [str(v) for v in features[features.dims[1]].values]
    step = max(1, -(-len(names) // max_feature_labels))
    ax.set_xticks(np.arange(0, len(names), step), names[::step], rotation=90, fontsize="x-small")
    ax.set_yticks(np.arange(len(order)), [str(c) for c in ds["cell"].values[order]], fontsize="x-small")
    ax.set_ylabel("cell (grouped by type)")
    _boundaries(ax, cluster[order], vertical=False)
    ax.set_title(f"primary features: {features.attrs.get('features', 'drive')}", fontsize="small")
    fig.colorbar(image, cax=fig.add_subplot(grid[0, 3]), label="fraction of the cell's drive")
    ax = fig.add_subplot(grid[0, 4])
    if "consensus" in ds:
        consensus = ds["consensus"].sel(k=k).values[np.ix_(order, order)]
        ax.imshow(consensus, cmap="Greys", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        _boundaries(ax, cluster[order], vertical=True)
        ax.set_title(f"consensus at k = {k}\n(black: always together)", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax = fig.add_subplot(grid[0, 5])
    if "confidence" in ds:
        conf = ds["confidence"].values[order]
        colors = ["#d95f02" if c < CONFIDENT else "#7f7f7f" for c in conf]
        ax.barh(np.arange(conf.size), conf, color=colors, height=0.8)
        for row, (c, alt) in enumerate(zip(conf, ds["alternative"].values[order])):
            if c < CONFIDENT and alt >= 0:
                ax.text(0.02, row, f"or {alt}", va="center", fontsize="x-small", color="w")
        ax.axvline(CONFIDENT, color="k", lw=0.6, ls=":")
        ax.set_ylim(conf.size - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_title("confidence", fontsize="small")
        ax.set_xlabel("mean consensus\nwith own type", fontsize="small")
    ax.set_yticks([])
    _k_evidence(fig.add_subplot(grid[0, 6]), ds, k)
    if handles:
        fig.legend(handles=handles, title="true type", loc="outside lower center", ncols=min(4, len(handles)),
                   fontsize="x-small", title_fontsize="x-small")
    return fig


def _k_evidence(ax, ds: xr.Dataset, k: int) -> None:
    ks = ds["k"].values
    if "pac" in ds:
        ax.plot(ks, ds["pac"].values, "o-", color="#d95f02", label="ambiguous pairs")
    if "silhouette" in ds:
        ax.plot(ks, ds["silhouette"].values, "s-", color="#1b9e77", label="silhouette")
    ax.axvline(k, color="k", lw=1.0, label=f"chosen k = {k}")
    if "true_type" in ds.coords:
        true_k = np.unique(ds["true_type"].values).size
        ax.axvline(true_k, color="#7570b3", lw=1.0, ls="--", label=f"true k = {true_k}")
    if "ari_truth" in ds:
        text = f"ARI vs truth {float(ds['ari_truth']):.2f}"
        if "ari_truth_interval" in ds:
            lo, hi = ds["ari_truth_interval"].values
            text += f"\n95% CI [{lo:.2f}, {hi:.2f}]"
        ax.set_title(f"k evidence ({ds.attrs.get('k_rule', '')} rule)\n{text.replace(chr(10), ', ')}",
                     fontsize="small")
    ax.set_xticks(ks)
    ax.set_xlabel("number of types k")
    ax.set_ylim(-0.02, 1.02)
    if "ari_truth" not in ds:
        ax.set_title(f"k evidence ({ds.attrs.get('k_rule', '')} rule)", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
