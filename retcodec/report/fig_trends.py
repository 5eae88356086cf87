"""Contributions vs activations across layers (the paper's Fig. 3), with bootstrap intervals."""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from retcodec.report.figstyle import FULL_WIDTH, SIGN_COLORS, as_dataset, require_variable

__all__ = ["plot_layer_trends", "SOURCE_COLORS"]

#: colours of the two measured sources: contributions (red, as C+) and activations (grey)
SOURCE_COLORS = {"contributions": SIGN_COLORS["pos"], "activations": "0.45"}
_TITLES = {"sparsity": "sparsity (Hoyer, across channels)\n0: all equal, 1: one channel",
           "ei_correlation": "E/I correlation\nr(C+, |C\u2212|) over windows",
           "dimensionality": "dimensionality\nPCs for 95 % of variance"}


def plot_layer_trends(trends: xr.Dataset) -> Figure:
    """One panel per quantity of :func:`~retcodec.analysis.layer_trends.layer_trends`, layers on x.

    Contributions (red) and activations (grey) side by side: dot = estimate on
    all windows, bar = its block-bootstrap interval over windows, a line
    joining the layers. A quantity that does not apply to activations (E/I
    correlation) shows contributions only. The number of windows is in the
    title.
    """
    trends = as_dataset(trends, "trends")
    est = require_variable(trends, "trend", "trends").transpose("layer", "quantity", "source")
    low = require_variable(trends, "trend_low", "trends").transpose("layer", "quantity", "source")
    high = require_variable(trends, "trend_high", "trends").transpose("layer", "quantity", "source")
    layers = [str(v) for v in est["layer"].values]
    quantities = [str(v) for v in est["quantity"].values]
    fig = Figure(figsize=(FULL_WIDTH, 3.1), layout="constrained")
    axes = fig.subplots(1, len(quantities), squeeze=False)[0]
    x = np.arange(len(layers))
    sources = [str(v) for v in est["source"].values]
    for ax, q in zip(axes, quantities):
        shown = [s for s in sources if np.isfinite(est.sel(quantity=q, source=s).values).any()]
        for j, source in enumerate(shown):
            offset = (j - (len(shown) - 1) / 2) * 0.12
            e = est.sel(quantity=q, source=source).values
            lo, hi = low.sel(quantity=q, source=source).values, high.sel(quantity=q, source=source).values
            color = SOURCE_COLORS.get(source, "k")
            ax.errorbar(x + offset, e, yerr=[np.clip(e - lo, 0, None), np.clip(hi - e, 0, None)], fmt="o-",
                        color=color, ms=5, capsize=3, lw=1.2, label=source)
        ax.set_xticks(x, layers)
        ax.set_xlim(-0.5, len(layers) - 0.5)
        ax.set_title(_TITLES.get(q, q.replace("_", " ")), fontsize="small")
        ax.set_xlabel("layer")
        if q == "sparsity":
            ax.set_ylim(0, 1)
        elif q == "ei_correlation":
            ax.set_ylim(min(0.0, float(np.nanmin(low.sel(quantity=q).values)) - 0.05), 1)
            ax.axhline(0, color="0.6", lw=0.6)
        else:
            top = float(np.nanmax(high.sel(quantity=q).values))
            ax.set_ylim(0, (top if np.isfinite(top) else 1) + 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize="small")
    n = int(trends["n_windows"]) if "n_windows" in trends else None
    bars = str(trends["trend_low"].attrs.get("long_name", "95% block-bootstrap interval")).split(",")[0]
    fig.suptitle("contributions vs activations per layer" + (f" ({n} windows)" if n else "")
                 + f"\nbars: {bars} over windows", fontsize="medium")
    return fig
