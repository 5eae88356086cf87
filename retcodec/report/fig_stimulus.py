"""Stimulus-aligned view (the paper's Fig. 8B): stimulus frames, rates, mode loadings, IRFs at marked moments."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure

from retcodec.report.figstyle import (DIVERGING, FULL_WIDTH, as_dataset, pretty_label, require_variable,
                                      symmetric_norm, type_colors)

__all__ = ["plot_stimulus_view"]


def _frames(view: xr.Dataset, n_frames: int) -> np.ndarray:
    return np.unique(np.linspace(0, view.sizes["time"] - 1, n_frames).round().astype(int))


def _distinct_moments(view: xr.Dataset, max_maps: int, spacing: float = 0.06) -> list[int]:
    """The first moment of each distinct (layer, combination) in time order, at most ``max_maps``.

    A moment closer than ``spacing`` of the stretch to one already chosen in
    the same layer is passed over, so that the numbers marking them never overlap.
    """
    seen, chosen = set(), []
    t = view["time"].values
    gap = spacing * float(t[-1] - t[0]) if t.size > 1 else 0.0
    for m in range(view.sizes.get("moment", 0)):
        layer = str(view["moment_layer"].values[m])
        key = (layer, str(view["moment_combination"].values[m]))
        at = float(view["moment_time"].values[m])
        near = any(str(view["moment_layer"].values[c]) == layer
                   and abs(float(view["moment_time"].values[c]) - at) < gap for c in chosen)
        if key not in seen and not near:
            seen.add(key)
            chosen.append(m)
    return chosen[:max_maps]


def plot_stimulus_view(view: xr.Dataset, irfs: Mapping[str, xr.Dataset] | None = None, n_frames: int = 8,
                       max_maps: int = 6) -> Figure:
    """Stimulus, rates and mode loadings of one stretch, with the moments whose IRFs were computed.

    ``view`` is the Dataset of :func:`~retcodec.analysis.stimulus_view.stimulus_view`.
    Rows: ``n_frames`` stimulus frames evenly spaced in the stretch; each shown
    cell's rate (model: solid, in its cell type's colour; recorded trial
    average: grey), scaled to the larger peak of the two and stacked; per
    layer, the mode loadings (one line per mode) with triangles at the IRF
    moments of that layer, numbered; and the rank-1 spatial IRFs (``irfs``:
    layer -> IRF Dataset with ``spatial (combination, cell, y, x)``) of the
    first moment of each distinct combination, titled with its number, time,
    cell and combination of active modes (mode ids as in the modes figure).
    """
    view = as_dataset(view, "view")
    rate = require_variable(view, "model_rate", "view").transpose("time", "cell")
    t = view["time"].values
    layers = [name[len("loadings_"):] for name in view.data_vars if name.startswith("loadings_")]
    maps = _distinct_moments(view, max_maps) if irfs else []
    n_cells = rate.sizes["cell"]
    panel_heights = [0.32 * n_cells + 0.4] + [1.0] * len(layers)
    heights = [1.0, sum(panel_heights) + 0.4] + ([1.25] if maps else [])
    fig = Figure(figsize=(FULL_WIDTH, sum(heights) + 0.6), layout="constrained")
    rows = fig.subfigures(len(heights), 1, height_ratios=heights)
    _draw_frames(rows[0], view, _frames(view, n_frames))
    axes = rows[1].subplots(len(panel_heights), 1, sharex=True, height_ratios=panel_heights, squeeze=False)[:, 0]
    _draw_rates(axes[0], view, rate, t)
    number = {m: i + 1 for i, m in enumerate(maps)}
    for k, layer in enumerate(layers):
        _draw_loadings(axes[1 + k], view, layer, t, number)
    axes[-1].set_xlabel("time (s) — the model's predicted bin")
    if maps:
        _draw_irf_maps(rows[-1], view, irfs, maps, number)
    total = view.attrs.get("total_seconds")
    fig.suptitle(f"stimulus-aligned view: {t[0]:.2f}–{t[-1]:.2f} s"
                 + (f" of {total:.0f} s" if total else "")
                 + ("; stretch with the most IRF moments" if view.sizes.get("moment", 0) else ""),
                 fontsize="medium")
    return fig


def _draw_frames(sub, view: xr.Dataset, index: np.ndarray) -> None:
    stim = view["stimulus"].values.astype(float)
    lo, hi = np.percentile(stim, [1, 99])
    axes = sub.subplots(1, len(index))
    for ax, i in zip(np.atleast_1d(axes), index):
        ax.imshow(stim[i], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{view['time'].values[i]:.2f} s", fontsize="x-small")
    sub.suptitle("stimulus frames (as shown; grey scale 1st-99th percentile of the stretch)", fontsize="small",
                 x=0.01, ha="left")


def _draw_rates(ax, view: xr.Dataset, rate: xr.DataArray, t: np.ndarray) -> None:
    types = view["cell_type"].values.astype(str) if "cell_type" in view.coords else None
    colors = type_colors(types) if types is not None else {}
    recorded = view["recorded_rate"].transpose("time", "cell").values if "recorded_rate" in view else None
    labels = []
    for k in range(rate.sizes["cell"]):
        model = rate.values[:, k]
        peak = max(np.nanmax(model), np.nanmax(recorded[:, k]) if recorded is not None else 0.0, 1e-9)
        offset = rate.sizes["cell"] - 1 - k
        if recorded is not None:
            ax.plot(t, offset + 0.9 * recorded[:, k] / peak, color="0.6", lw=0.9)
        color = colors.get(types[k], "k") if types is not None else "k"
        ax.plot(t, offset + 0.9 * model / peak, color=color, lw=1.1)
        cell = rate["cell"].values[k]
        labels.append((offset, (f"{pretty_label(types[k])}\n" if types is not None else "")
                       + f"cell {cell} (peak {peak:.0f} Hz)", color))
    ax.set_yticks([o + 0.4 for o, _, _ in labels], [text for _, text, _ in labels], fontsize="x-small")
    for tick, (_, _, color) in zip(ax.get_yticklabels(), labels):
        tick.set_color(color)
    ax.set_ylim(-0.15, rate.sizes["cell"])
    ax.set_title("rates, each scaled to its peak: model (colour) and recorded trial average (grey)",
                 fontsize="small", loc="left")


def _draw_loadings(ax, view: xr.Dataset, layer: str, t: np.ndarray, number: dict) -> None:
    z = view[f"loadings_{layer}"].values
    modes = view[f"mode_{layer}"].values
    cmap = colormaps["tab10"]
    for j in range(z.shape[1]):
        if np.any(z[:, j] != 0):
            ax.plot(t, z[:, j], lw=1.0, color=cmap(j % 10), label=f"mode {modes[j]}")
    top = float(np.nanmax(z)) if np.isfinite(z).any() else 1.0
    sel = np.flatnonzero(view["moment_layer"].values.astype(str) == layer) if "moment_layer" in view else []
    for m in sel:
        x = float(view["moment_time"].values[m])
        ax.plot(x, top * 1.08, marker="v", color="k" if m in number else "0.7", ms=4, clip_on=False,
                zorder=4 if m in number else 3)
        if m in number:
            ax.annotate(str(number[m]), (x, top * 1.08), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize="x-small", fontweight="bold")
    ax.set_ylim(min(0.0, float(np.nanmin(z))), top * 1.25 if top > 0 else 1)
    ax.set_ylabel("loading", fontsize="small")
    ax.set_title(f"{layer} mode loadings (triangles: IRF moments of the shown cells; numbered: maps below)",
                 fontsize="small", loc="left")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.05), frameon=False,
              ncols=2 if z.shape[1] > 4 else 1, handlelength=1.0, columnspacing=0.8)


def _crop(image: np.ndarray, half: int = 10) -> tuple[slice, slice]:
    """Rows and columns of a ``2 half + 1`` square around the peak of ``|image|``, inside the image."""
    filled = np.nan_to_num(np.abs(image))
    iy, ix = np.unravel_index(int(np.argmax(filled)), filled.shape)
    y0 = int(np.clip(iy - half, 0, max(filled.shape[0] - 2 * half - 1, 0)))
    x0 = int(np.clip(ix - half, 0, max(filled.shape[1] - 2 * half - 1, 0)))
    return slice(y0, y0 + 2 * half + 1), slice(x0, x0 + 2 * half + 1)


def _draw_irf_maps(sub, view: xr.Dataset, irfs: Mapping[str, xr.Dataset], chosen: list[int],
                   number: dict) -> None:
    axes = np.atleast_1d(sub.subplots(1, len(chosen)))
    images = []
    for ax, m in zip(axes, chosen):
        layer = str(view["moment_layer"].values[m])
        combo = str(view["moment_combination"].values[m])
        cell = view["moment_cell"].values[m]
        spatial = irfs[layer]["spatial"].sel(combination=combo, cell=cell).values
        rows, cols = _crop(spatial)
        images.append((spatial[rows, cols], rows, cols))
        ax.set_title(f"{number[m]}: {float(view['moment_time'].values[m]):.2f} s, cell {cell}\n"
                     f"{layer} modes {combo}", fontsize="x-small")
    norm = symmetric_norm(*[np.nan_to_num(i) for i, _, _ in images])
    shown = None
    for ax, (image, rows, cols) in zip(axes, images):
        shown = ax.imshow(image, cmap=DIVERGING, norm=norm, interpolation="nearest",
                          extent=(cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5))
        ax.tick_params(labelsize="xx-small")
    sub.colorbar(shown, ax=list(axes), shrink=0.8, label="IRF (a.u.)")
    sub.suptitle("rank-1 spatial IRFs at the numbered moments (21 px around the peak; stimulus px; "
                 "red = ON)", fontsize="small", x=0.01, ha="left")
