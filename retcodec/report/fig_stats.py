"""Statistics figures: sparsity of contributions vs activations, and fit quality per cell."""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from retcodec.errors import ShapeError
from retcodec.report.figstyle import (SIGN_COLORS, as_dataset, coord_values, pretty_label, require_dims,
                                      require_variable, type_colors)

__all__ = ["plot_sparsity", "plot_fit_quality", "METRIC_LABELS", "TYPE_MARKERS"]


def plot_sparsity(stats: xr.Dataset, contribution: str = "contribution_sparsity",
                  activation: str = "activation_sparsity") -> Figure:
    """Hoyer sparsity across channels of contributions vs activations, per layer.

    ``stats`` holds the two variables (names configurable; the defaults are
    those of :func:`retcodec.analysis.statistics.layer_statistics`) over ``layer``:
    either ``(layer, time)`` per-window values, drawn as paired box plots
    (NaN windows left out), or ``(layer,)`` summaries, drawn as paired bars.
    Hoyer sparsity is 0 for a flat vector and 1 for a single non-zero entry.
    """
    stats = as_dataset(stats, "stats")
    values = {}
    for label, name in (("contributions", contribution), ("activations", activation)):
        da = require_variable(stats, name, "stats")
        if "layer" not in da.dims or da.ndim > 2:
            raise ShapeError(f"{name} must have dims (layer,) or (layer, sample), got {da.dims}")
        values[label] = da.transpose("layer", ...)
    layers = coord_values(values["contributions"], "layer")
    fig = Figure(figsize=(0.9 * len(layers) + 2.5, 3.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    colors = {"contributions": SIGN_COLORS["pos"], "activations": "0.45"}
    for j, (label, da) in enumerate(values.items()):
        pos = x + (j - 0.5) * 0.38
        if da.ndim == 1:
            ax.bar(pos, da.values, 0.36, color=colors[label], label=label)
        else:
            data = [row[np.isfinite(row)] for row in da.values]
            box = ax.boxplot(data, positions=pos, widths=0.32, patch_artist=True, showfliers=False,
                             medianprops={"color": "k"})
            for patch in box["boxes"]:
                patch.set(facecolor=colors[label], alpha=0.8)
            ax.plot([], [], color=colors[label], lw=6, label=label)
    ax.set_xticks(x, [str(v) for v in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("Hoyer sparsity across channels")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    ax.set_title("sparsity of contributions vs activations\n(Hoyer: 0 = all channels equal, "
                 "1 = a single channel)", fontsize="medium")
    return fig


#: axis labels of the fit metrics of :func:`~retcodec.analysis.evaluation.evaluate` (others: long_name or name)
METRIC_LABELS = {"correlation": "model correlation (Pearson r)",
                 "ceiling": "noise ceiling of r (trial average)",
                 "normalized_correlation": "normalised correlation (r / ceiling)",
                 "oracle": "oracle correlation (r between repeats)",
                 "feve": "FEVE (fraction of explainable variance explained)",
                 "fraction_of_oracle": "model r / oracle r"}
#: marker shapes of cell types, in type order
TYPE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _metric_label(da: xr.DataArray, name: str) -> str:
    label = da.attrs.get("long_name") or METRIC_LABELS.get(name, name.replace("_", " "))
    units = da.attrs.get("units")
    return f"{label} ({units})" if units and units not in ("1", "") else label


def plot_fit_quality(evaluation: xr.Dataset, label_cells: bool = True, *, x: str | None = None,
                     y: str = "correlation", max_labels: int = 5) -> Figure:
    """One fit metric against another per cell, identity line dashed.

    ``evaluation`` is the Dataset of :func:`~retcodec.evaluation.evaluate`
    (variables ``x`` and ``y`` over ``cell``; ``reliable`` and ``cell_type``
    are used when present). By default ``y`` is the model's correlation with
    the trial average and ``x`` its noise ceiling (``ceiling``; ``oracle``
    when there is no ceiling): both are measured against the trial average,
    so a cell on the identity line is predicted as well as the data allow. Each cell type has its own colour and marker
    shape, half-transparent so that overlapping cells stay visible;
    unreliable cells are open markers. Axes are zoomed to the data (equal
    scales). With ``label_cells``, only outliers are labelled: cells whose
    ``y - x`` departs from both their type's and all cells' median by more
    than 3 robust standard deviations (and 0.02), at most ``max_labels``.
    """
    evaluation = as_dataset(evaluation, "evaluation")
    if x is None:
        x = "ceiling" if "ceiling" in evaluation else "oracle"
    r = require_dims(require_variable(evaluation, y, "evaluation"), ("cell",), y)
    ref = require_dims(require_variable(evaluation, x, "evaluation"), ("cell",), x)
    reliable = evaluation["reliable"].values.astype(bool) if "reliable" in evaluation \
        else np.ones(r.size, bool)
    types = evaluation["cell_type"].values.astype(str) if "cell_type" in evaluation.coords \
        else np.full(r.size, "cell")
    colors = type_colors(types)
    fig = Figure(figsize=(5.6, 3.9), layout="constrained")
    ax = fig.add_subplot()
    xv, yv = ref.values.astype(float), r.values.astype(float)
    lo, hi = _zoom(np.r_[xv, yv])
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="identity (y = x)", zorder=1)
    for k, (t, c) in enumerate(colors.items()):
        marker = TYPE_MARKERS[k % len(TYPE_MARKERS)]
        for filled, mask in ((True, reliable), (False, ~reliable)):
            sel = mask & (types == t)
            if sel.any():
                ax.scatter(xv[sel], yv[sel], s=46, marker=marker, edgecolors=[c], linewidths=1.2,
                           facecolors=[(*c[:3], 0.35)] if filled else "none", zorder=3,
                           label=f"{pretty_label(t)} ({int((types == t).sum())})" if filled else None)
    if not reliable.all():
        ax.scatter([], [], s=46, facecolors="none", edgecolors="0.3", label="unreliable cell")
    if label_cells:
        _label_outliers(ax, coord_values(r, "cell"), types, xv, yv, max_labels, hi - lo)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(_metric_label(ref, x))
    ax.set_ylabel(_metric_label(r, y))
    keep = reliable if reliable.any() else np.ones(r.size, bool)
    title = (f"fit per cell ({r.size} cells): median {y.replace('_', ' ')} {np.nanmedian(yv[keep]):.2f}, "
             f"{x.replace('_', ' ')} {np.nanmedian(xv[keep]):.2f}")
    if "normalized_correlation" in evaluation and "normalized_correlation" not in (x, y):
        ratio = np.asarray(evaluation["normalized_correlation"].values, dtype=float)[keep]
        title += f"\nmedian normalised correlation (r / ceiling) {np.nanmedian(ratio):.2f}"
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), title="cell type",
              title_fontsize="small", borderaxespad=0)
    return fig


def _zoom(values: np.ndarray, pad: float = 0.08) -> tuple[float, float]:
    """Axis limits around the finite ``values`` with ``pad`` of their range (at least 0.1 wide)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, 0.1)
    centre = (lo + hi) / 2
    return centre - span * (0.5 + pad), centre + span * (0.5 + pad)


def _label_outliers(ax: Axes, cells: np.ndarray, types: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                    max_labels: int, span: float) -> None:
    """Label cells whose ``y - x`` departs from both their type's and all cells' median.

    The smaller of the two departures must exceed 3 robust SDs and 0.02 (a
    whole type offset, or a type split by two bad cells, labels nobody else).
    Furthest first, at most ``max_labels``, never two labels close together.
    """
    residual = yv - xv
    finite = np.isfinite(residual)
    if finite.sum() < 4 or max_labels < 1:
        return
    deviation = np.full(residual.shape, np.nan)
    overall = residual - np.median(residual[finite])
    for t in set(types.tolist()):
        sel = finite & (types == t)
        if sel.any():
            within = residual[sel] - np.median(residual[sel])
            deviation[sel] = np.where(np.abs(within) < np.abs(overall[sel]), within, overall[sel])
    mad = 1.4826 * float(np.median(np.abs(deviation[finite])))
    limit = max(3 * mad, 0.02)
    distance = np.where(finite, np.abs(deviation), -np.inf)
    placed: list[tuple[float, float]] = []
    for i in np.argsort(-distance):
        if len(placed) >= max_labels or distance[i] <= limit:
            break
        if any(abs(xv[i] - px) < 0.06 * span and abs(yv[i] - py) < 0.04 * span for px, py in placed):
            continue
        ax.annotate(f"cell {cells[i]}", (xv[i], yv[i]), textcoords="offset points", xytext=(6, -10),
                    fontsize="x-small", color="0.2")
        placed.append((xv[i], yv[i]))
