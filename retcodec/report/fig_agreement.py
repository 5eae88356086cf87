"""Layer agreement of cell-type clusterings (the paper's Fig. 8C): contingency matrices."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from retcodec.report.figstyle import FULL_WIDTH, require_dims

__all__ = ["plot_layer_agreement"]


def plot_layer_agreement(tables: Mapping[str, xr.DataArray]) -> Figure:
    """One contingency matrix per feature family: cells per (first-layer cluster, second-layer cluster).

    ``tables`` maps a title (e.g. the feature family) to a 2-D count matrix of
    :func:`~retcodec.analysis.agreement.contingency` (columns ordered so that
    matched clusters are on the diagonal). Counts are written in the cells;
    the title gives the adjusted Rand index and the share of cells on the
    matched diagonal.
    """
    tables = {k: require_dims(v, tuple(v.dims), f"table {k!r}") for k, v in tables.items()}
    n = len(tables)
    fig = Figure(figsize=(min(FULL_WIDTH, 3.2 * n + 0.6), 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    image = None
    for ax, (title, table) in zip(axes, tables.items()):
        dim_a, dim_b = table.dims
        counts = table.values
        image = ax.imshow(counts, cmap="Greys", vmin=0, vmax=max(int(counts.max()), 1), aspect="equal")
        for (i, j), v in np.ndenumerate(counts):
            if v:
                ax.text(j, i, str(int(v)), ha="center", va="center", fontsize="small",
                        color="white" if v > counts.max() / 2 else "k")
        ax.set_xticks(np.arange(counts.shape[1]), [str(v) for v in table[dim_b].values], fontsize="small")
        ax.set_yticks(np.arange(counts.shape[0]), [str(v) for v in table[dim_a].values], fontsize="small")
        ax.set_xlabel(dim_b.replace("_", " "), fontsize="small")
        ax.set_ylabel(dim_a.replace("_", " "), fontsize="small")
        ari, matched = table.attrs.get("ari"), table.attrs.get("matched")
        ax.set_title(f"{title}\nARI {ari:.2f}; {100 * matched:.0f} % of cells on the matched diagonal"
                     if ari is not None and matched is not None else title, fontsize="small")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="cells")
    fig.suptitle("do the two layers' clusterings agree? (rows: first layer, columns: second; "
                 "matched clusters on the diagonal)", fontsize="small")
    return fig
