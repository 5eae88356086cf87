"""Interneuron figure: held-out correlation of recorded interneurons with their best model unit."""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from retcodec.errors import ConfigurationError
from retcodec.report.figstyle import (DIVERGING, FULL_WIDTH, pretty_label, require_dims, require_variable,
                                      symmetric_norm, type_colors)

__all__ = ["plot_interneuron_matches"]


def plot_interneuron_matches(match: xr.Dataset, n_maps: int = 4, alpha: float = 0.05) -> Figure:
    """Held-out correlation of every interneuron with its best model unit, against chance.

    ``match`` is the Dataset of :func:`~retcodec.interneuron_match.match_interneurons`.
    Top: per interneuron, the held-out r (filled dot, coloured by true type
    when known, else by class), the in-sample r of the same unit (open
    diamond, biased upward) and the chance band (grey, from the shift mean to
    its 95th percentile); ``*`` marks ``significant`` (Holm-adjusted p <=
    alpha, the same correction as the report's table), or ``p_value < alpha``
    for a match without it. Bottom: the
    all-data correlation map of the best channel for the ``n_maps`` cells with
    the highest held-out r, in stimulus pixels, with the best unit marked.
    """
    for name in ("heldout_correlation", "chance_mean", "chance_p95"):
        require_dims(require_variable(match, name, "match"), ("interneuron",), name)
    n_cells = match.sizes["interneuron"]
    order = _interneuron_order(match)
    groups, group_name = _interneuron_groups(match)
    colors = type_colors(groups, kind="interneuron")
    n_maps = max(0, min(int(n_maps), n_cells)) if _has_maps(match) else 0
    fig = Figure(figsize=(FULL_WIDTH, 5.2 if n_maps else 3.2), layout="constrained")
    grid = fig.add_gridspec(2 if n_maps else 1, max(n_maps, 1) + (1 if n_maps else 0),
                            height_ratios=[1.4, 1] if n_maps else None,
                            width_ratios=[1] * n_maps + [0.08] if n_maps else None)
    ax = fig.add_subplot(grid[0, :])
    _draw_match_summary(ax, match, order, groups, colors, alpha)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=pretty_label(g)) for g, c in colors.items()]
    handles += [Line2D([], [], ls="", marker="D", mfc="none", color="0.3", label="in-sample (biased)"),
                Patch(color="0.85", label="chance (mean to 95th pct)")]
    if "significant" in match or "p_value" in match:
        handles.append(Line2D([], [], ls="", marker="$*$", color="k", label=_p_value_note(match, alpha)))
    ax.legend(handles=handles, title=group_name, fontsize="small", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    if n_maps:
        best = np.argsort(-match["heldout_correlation"].values, kind="stable")[:n_maps]
        _draw_best_maps(fig, [fig.add_subplot(grid[1, i]) for i in range(n_maps)],
                        fig.add_subplot(grid[1, n_maps]), match, best)
    return fig


def _p_value_note(match: xr.Dataset, alpha: float) -> str:
    """Legend text of the significance mark: which p, which correction (the report's table uses the same)."""
    if "significant" in match:
        shifts = match["exact_n_shifts"].values if "exact_n_shifts" in match else np.zeros(0)
        shifts = shifts[shifts > 0]
        text = f"Holm-adjusted p ≤ {alpha:g}\n(over {match.sizes['interneuron']} interneurons"
        if shifts.size:
            text += f";\nexact null, ≥ {int(shifts.min()):,} shifts"
        return text + ")"
    note = f"p < {alpha:g}"
    n_shifts = match.attrs.get("n_shifts")
    if n_shifts:
        note += f"\n(smallest possible p with\n{int(n_shifts)} shifts: {1 / (int(n_shifts) + 1):.3f};"
        note += f"\nnot corrected for {match.sizes['interneuron']} tests)"
    return note


def _interneuron_order(match: xr.Dataset) -> np.ndarray:
    """By class, then by decreasing held-out correlation."""
    heldout = match["heldout_correlation"].values
    classes = match["cell_class"].values.astype(str) if "cell_class" in match.coords \
        else np.zeros(heldout.size, str)
    return np.lexsort((-heldout, classes))


def _interneuron_groups(match: xr.Dataset) -> tuple[np.ndarray, str]:
    if "cell_type" in match.coords and (match["cell_type"].values.astype(str) != "unknown").any():
        return match["cell_type"].values.astype(str), "true type"
    if "cell_class" in match.coords:
        return match["cell_class"].values.astype(str), "class"
    return np.full(match.sizes["interneuron"], "interneuron"), "cells"


def _draw_match_summary(ax: Axes, match: xr.Dataset, order: np.ndarray, groups: np.ndarray,
                        colors: dict, alpha: float) -> None:
    x = np.arange(order.size)
    mean, p95 = match["chance_mean"].values[order], match["chance_p95"].values[order]
    ax.bar(x, p95 - mean, bottom=mean, width=0.7, color="0.85", zorder=1)
    ax.hlines(mean, x - 0.35, x + 0.35, color="0.55", lw=1, zorder=2)
    heldout = match["heldout_correlation"].values[order]
    point_colors = [colors[g] for g in groups[order]]
    if "insample_correlation" in match:
        ax.scatter(x, match["insample_correlation"].values[order], marker="D", facecolors="none",
                   edgecolors=point_colors, s=22, zorder=3)
    ax.scatter(x, heldout, c=point_colors, s=28, zorder=4)
    if "significant" in match:
        marks = match["significant"].values.astype(bool)[order]
    elif "p_value" in match:
        marks = match["p_value"].values[order] < alpha
    else:
        marks = np.zeros(order.size, bool)
    for xi, r, mark in zip(x, heldout, marks):
        if mark:
            ax.annotate("*", (xi, r), textcoords="offset points", xytext=(5, -4), ha="left")
    ax.axhline(0, color="0.5", lw=0.6)
    ids = np.array([str(i) for i in (match["interneuron"].values if "interneuron" in match.coords
                                     else np.arange(order.size))])[order]
    classes = match["cell_class"].values.astype(str)[order] if "cell_class" in match.coords else None
    files, short = _split_ids(ids, classes)
    if classes is not None:
        _mark_classes(ax, classes, files)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.18 * (high - low))            # headroom: block names above the points
    if order.size <= 40:
        if files is not None:
            ax.set_xticks(x, short, fontsize="small")
        else:
            ax.set_xticks(x, ids, rotation=90, fontsize="x-small")
    ax.set_xlabel("interneuron (index in its recording)" if files is not None else "interneuron")
    ax.set_ylabel("Pearson r with best unit")
    ax.set_title("recorded interneurons: held-out correlation with their best model unit, vs chance",
                 loc="left", fontsize="medium")


def _split_ids(ids: np.ndarray, classes: np.ndarray | None) -> tuple[list[str] | None, list[str]]:
    """``"<recording>/<index>"`` ids as (recording per class block, index): shorter tick labels.

    Only when every id has that form and each block of one class comes from
    one recording; else ``(None, ids)``.
    """
    parts = [i.rsplit("/", 1) for i in ids]
    if classes is None or any(len(p) != 2 for p in parts):
        return None, list(ids)
    starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
    stops = np.r_[starts[1:], classes.size]
    files = []
    for a, b in zip(starts, stops):
        names = {parts[k][0] for k in range(a, b)}
        if len(names) != 1:
            return None, list(ids)
        files.append(names.pop())
    return files, [p[1] for p in parts]


def _mark_classes(ax: Axes, classes: np.ndarray, files: list[str] | None = None) -> None:
    """Dotted lines between consecutive blocks of one class, each block named at the top."""
    starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
    stops = np.r_[starts[1:], classes.size]
    for k, (start, stop) in enumerate(zip(starts, stops)):
        if start > 0:
            ax.axvline(start - 0.5, color="0.6", lw=0.8, ls=":")
        label = classes[start] + (f"\n({files[k]})" if files is not None else "")
        ax.text((start + stop - 1) / 2, 0.98, label, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize="small", color="0.3")


def _has_maps(match: xr.Dataset) -> bool:
    needed = ("best_layer", "best_channel", "best_y", "best_x")
    return all(n in match for n in needed) and any(str(v).startswith("correlation_map_")
                                                   for v in match.data_vars)


def _draw_best_maps(fig: Figure, axes: list[Axes], cax: Axes, match: xr.Dataset,
                    cells: np.ndarray) -> None:
    maps, marks = [], []
    for i in cells:
        row = match.isel(interneuron=int(i))
        layer, channel = str(row["best_layer"].values), int(row["best_channel"])
        name = f"correlation_map_{layer}"
        if name not in match:
            raise ConfigurationError(f"match has no {name!r} for best_layer {layer!r}")
        cmap = row[name].isel({f"channel_{layer}": channel})
        offset = float(match[name].attrs.get("stimulus_pixel_offset", 0.0))
        stride = int(match[name].attrs.get("stimulus_pixel_stride", 1))      # stimulus px per map px
        maps.append((cmap.values, offset, stride))
        marks.append((stride * int(row["best_y"]) + offset, stride * int(row["best_x"]) + offset, layer, channel,
                      float(row["heldout_correlation"])))
    norm = symmetric_norm(*[m for m, _, _ in maps])
    for ax, (values, offset, stride), (y, x, layer, channel, r), i in zip(axes, maps, marks, cells):
        n_y, n_x = values.shape
        lo = offset - stride / 2
        image = ax.imshow(values, cmap=DIVERGING, norm=norm, origin="upper", interpolation="nearest",
                          extent=(lo, lo + stride * n_x, lo + stride * n_y, lo))
        ax.plot(x, y, marker="+", color="k", ms=8, mew=1.2)
        ident = match["interneuron"].values[i] if "interneuron" in match.coords else i
        ax.set_title(f"{ident}\n{layer} channel {channel}\nheld-out r = {r:.2f}", fontsize="x-small")
        ax.set_xlabel("x (stimulus px)", fontsize="small")
        ax.tick_params(labelsize="x-small")
    axes[0].set_ylabel("y (stimulus px)", fontsize="small")
    fig.colorbar(image, cax=cax, label="r (all time points)")
