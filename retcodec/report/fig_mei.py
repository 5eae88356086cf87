"""Input-space view of modes: each mode's most-exciting input as a spatial map and a temporal profile."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from retcodec.report.figstyle import DIVERGING, FULL_WIDTH, coord_values, require_variable, symmetric_norm

__all__ = ["plot_meis"]


def _crop(image: np.ndarray, half: int) -> tuple[slice, slice]:
    iy, ix = np.unravel_index(int(np.argmax(np.abs(image))), image.shape)
    y0 = int(np.clip(iy - half, 0, max(image.shape[0] - 2 * half - 1, 0)))
    x0 = int(np.clip(ix - half, 0, max(image.shape[1] - 2 * half - 1, 0)))
    return slice(y0, y0 + 2 * half + 1), slice(x0, x0 + 2 * half + 1)


def plot_meis(meis: Mapping[str, xr.Dataset], half: int = 12, title: str | None = None) -> Figure:
    """One column per mode: the rank-1 spatial profile of its most-exciting input and its temporal profile.

    ``meis`` maps a mode's name (e.g. ``"conv0 mode 0 (ch3+ ch2+)"``) to the
    Dataset of :func:`~retcodec.analysis.mei.most_exciting_input`. Maps are
    cropped to ``2 half + 1`` px around their peak (axes in stimulus px), on
    one diverging scale per map (sign: the temporal profile is positive at its
    peak lag, so red = the mode is driven by brightening there). Below, the
    temporal profiles (s before the response).
    """
    names = list(meis)
    n = len(names)
    cols = min(n, 7)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(FULL_WIDTH, 2.45 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[1.0, 0.6] * rows)
    for k, name in enumerate(names):
        ds = meis[name]
        spatial = require_variable(ds, "spatial", name).values
        temporal = require_variable(ds, "temporal", name)
        r, c = divmod(k, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        rows_sl, cols_sl = _crop(spatial, half)
        ax.imshow(spatial[rows_sl, cols_sl], cmap=DIVERGING, norm=symmetric_norm(spatial), interpolation="nearest",
                  extent=(cols_sl.start - 0.5, cols_sl.stop - 0.5, rows_sl.stop - 0.5, rows_sl.start - 0.5))
        ax.set_title(name.replace(" (", "\n("), fontsize="x-small")
        if "rank1_share" in ds:
            ax.set_xlabel(f"rank-1 share {float(ds['rank1_share']):.2f}", fontsize="xx-small")
        ax.tick_params(labelsize="xx-small")
        ax_t = fig.add_subplot(grid[2 * r + 1, c])
        ax_t.plot(coord_values(temporal, "lag", 0.01), temporal.values, color="k", lw=1)
        ax_t.axhline(0, color="0.6", lw=0.5)
        ax_t.tick_params(labelsize="xx-small")
        ax_t.set_yticks([])
        if r == rows - 1:
            ax_t.set_xlabel("lag (s)", fontsize="x-small")
    fig.suptitle((f"{title}: " if title else "") + "most-exciting input of each mode (gradient ascent on its "
                 "loading at a fixed RMS contrast)\nrank-1 spatial map (stimulus px; red = brightening drives the "
                 "mode) and temporal profile", fontsize="small")
    return fig
