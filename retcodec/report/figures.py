"""Paper figures of a CODEC analysis, drawn from retcodec's labelled xarray outputs.

Every ``plot_*`` function takes xarray objects with named dimensions, checks
them, and returns a :class:`matplotlib.figure.Figure`. Axes are labelled in
physical units (time and lag in s, space in stimulus pixels, rates in Hz).
Figures are built with the object-oriented API (``Figure``), never with
``pyplot``: no global state, no GUI backend, nothing is shown. Write them with
:func:`save_figure` (PNG and SVG, atomically).

Figures are sized for a report about 900-1100 px wide (7 in at 200 dpi shown
at ~150 px per inch): tick labels are thinned or grouped so they never
overlap, each cell type keeps one colour in every figure (:func:`type_colors`)
and modes are named by their main channels (:func:`mode_names`, e.g.
``ch5+ ch1+``: the positive contributions of channels 5 and 1).

Bad input (a missing dimension or variable, mismatched lengths) raises
:class:`~retcodec.errors.ShapeError` or
:class:`~retcodec.errors.ConfigurationError` with a message that names what is
missing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.io.storage import atomic_path

__all__ = ["save_figure", "plot_contribution_heatmap", "plot_mode_cell_matrix", "plot_modes",
           "plot_irf_filters", "plot_interneuron_matches", "plot_sparsity", "plot_fit_quality",
           "mode_names", "combination_labels", "type_colors"]

#: seconds per bin when a time or lag axis has no coordinate (the recordings' 10 ms bins)
DT = 0.01
#: colours of the two contribution signs (red = positive, blue = negative, as in the diverging maps)
SIGN_COLORS = {"pos": "#b2182b", "neg": "#2166ac"}
DIVERGING = "RdBu_r"
#: width of a two-column figure, inches
FULL_WIDTH = 7.0


# --------------------------------------------------------------------------- saving
def save_figure(fig: Figure, path_stem: str | os.PathLike, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 200) -> list[Path]:
    """Write ``fig`` as ``<path_stem>.png`` and ``<path_stem>.svg`` atomically; returns the paths.

    ``path_stem`` is used as given, with ``.<format>`` appended (a stem such as
    ``figs/fig3.v2`` keeps its dot). Parent folders are created. Each file
    appears only once it is completely written.
    """
    if not isinstance(fig, Figure):
        raise ConfigurationError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}")
    if not formats:
        raise ConfigurationError("formats is empty; give e.g. ('png', 'svg')")
    stem = Path(path_stem)
    paths = []
    for fmt in formats:
        final = stem.with_name(f"{stem.name}.{fmt}")
        # SVG without a date: the same figure gives the same file
        metadata = {"Date": None} if fmt == "svg" else None
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        paths.append(final)
    return paths


# --------------------------------------------------------------------------- input checks
def _as_dataset(node: Any, what: str) -> xr.Dataset:
    if isinstance(node, xr.DataTree):
        ds = node.to_dataset()
        return ds.assign_attrs(layer=ds.attrs.get("layer", node.name))
    if isinstance(node, xr.Dataset):
        return node
    raise ConfigurationError(f"{what} must be an xarray Dataset (or DataTree node), "
                             f"got {type(node).__name__}")


def _variable(ds: xr.Dataset, name: str, what: str) -> xr.DataArray:
    if name not in ds:
        raise ConfigurationError(f"{what} has no variable {name!r} (it has {sorted(ds.data_vars)})")
    return ds[name]


def _require_dims(da: Any, dims: Iterable[str], what: str,
                  optional: Iterable[str] = ()) -> xr.DataArray:
    """``da`` as a DataArray with exactly ``dims`` (plus any of ``optional``)."""
    if not isinstance(da, xr.DataArray):
        raise ConfigurationError(f"{what} must be an xarray DataArray with dims {tuple(dims)}, "
                                 f"got {type(da).__name__}")
    dims, optional = tuple(dims), tuple(optional)
    missing = [d for d in dims if d not in da.dims]
    extra = [d for d in da.dims if d not in dims + optional]
    if missing or extra:
        allowed = f" (optionally {optional})" if optional else ""
        raise ShapeError(f"{what} must have dims {dims}{allowed}, got {da.dims}"
                         + (f"; missing {missing}" if missing else "")
                         + (f"; unexpected {extra}" if extra else ""))
    if any(da.sizes[d] == 0 for d in da.dims):
        raise ShapeError(f"{what} is empty: sizes {dict(da.sizes)}")
    return da


def _coord(da: xr.DataArray, dim: str, step: float | None = None) -> np.ndarray:
    """Values of ``dim``: its coordinate, else ``index * step`` (or the index)."""
    if dim in da.coords:
        return np.asarray(da[dim].values)
    index = np.arange(da.sizes[dim])
    return index * step if step is not None else index


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


# --------------------------------------------------------------------------- drawing helpers
def _edges(centres: np.ndarray, default_step: float = 1.0) -> tuple[float, float]:
    """Outer edges of evenly spaced bins with these centres (for ``imshow`` extents)."""
    centres = np.asarray(centres, dtype=float)
    step = float(np.median(np.diff(centres))) if centres.size > 1 else default_step
    return centres[0] - step / 2, centres[-1] + step / 2


def _symmetric_norm(*arrays: Any) -> Normalize:
    """Colour limits ``±max|value|`` (a diverging map centred on 0)."""
    vmax = max(float(np.nanmax(np.abs(np.asarray(a)))) if np.size(a) else 0.0 for a in arrays)
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    return Normalize(-vmax, vmax)


def _label_rows(ax: Axes, labels: Sequence[Any], max_labels: int = 24) -> None:
    """Tick rows with their labels: all of them when few, else every k-th (at most ``max_labels``)."""
    n = len(labels)
    step = max(1, int(np.ceil(n / max(1, max_labels))))
    ticks = np.arange(0, n, step)
    ax.set_yticks(ticks, [str(labels[i]) for i in ticks])


def _label_groups(ax: Axes, groups: np.ndarray) -> None:
    """Rows sorted into consecutive groups: one tick label per group at its centre, white separators."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    stops = np.r_[starts[1:], groups.size]
    ax.set_yticks((starts + stops - 1) / 2, [f"{_pretty(groups[a])} ({b - a})" for a, b in zip(starts, stops)],
                  fontsize="small")
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
    t0, t1 = _edges(_coord(data, "time", DT), DT)
    image = ax.imshow(data.values, aspect="auto", origin="lower", cmap=cmap, norm=norm,
                      extent=(t0, t1, -0.5, data.sizes[row_dim] - 0.5), interpolation="nearest")
    if groups is not None:
        _label_groups(ax, groups)
    else:
        _label_rows(ax, _coord(data, row_dim), max_labels=max_labels)
    ax.tick_params(axis="y", labelsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize="medium")
    if cbar_label is not None:
        fig.colorbar(image, ax=ax, label=cbar_label, pad=0.01)
    return image


def _category_colors(values: Sequence[Any]) -> dict[Any, Any]:
    """A distinct colour per category (tab10, or tab20 for more than 10)."""
    categories = list(dict.fromkeys(values))
    cmap = colormaps["tab10" if len(categories) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(categories)}


# --------------------------------------------------------------------------- contributions
def plot_contribution_heatmap(contrib_node: xr.Dataset | xr.DataTree,
                              rates: xr.DataArray | None = None,
                              loadings: xr.DataArray | None = None,
                              time_slice: slice | tuple[float, float] | None = None, *,
                              cell_types: Sequence[Any] | xr.DataArray | None = None,
                              target: str | None = None) -> Figure:
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

    Returns
    -------
    Figure with stacked panels sharing the time axis (s): ``C+`` and ``C-``
    per channel (one diverging colour scale, centred on 0, symmetric, shared
    by both), then rates and loadings. Each panel has its colour bar; panel
    heights grow with their number of rows so that row labels never overlap.
    """
    ds = _as_dataset(contrib_node, "contrib_node")
    contribution = _require_dims(_variable(ds, "contribution", "contrib_node"),
                                 ("time", "channel", "sign"), "contribution")
    signs = [s for s in ("pos", "neg") if s in contribution["sign"].values] \
        if "sign" in contribution.coords else []
    if not signs:
        raise ShapeError("contribution's sign coordinate must hold 'pos' and/or 'neg'")
    window = _time_window(time_slice)
    contribution = _select_time(contribution, window, "contribution")
    panels: list[tuple[str, Any]] = [(s, contribution.sel(sign=s)) for s in signs]
    groups = None
    if rates is not None:
        rates = _select_time(_require_dims(rates, ("time", "cell"), "rates"), window, "rates")
        types = _cell_types(rates, cell_types)
        if types is not None:
            order = np.argsort(types, kind="stable")
            rates, groups = rates.isel(cell=order), types[order]
        panels.append(("rates", rates))
    if loadings is not None:
        panels.append(("loadings", _select_time(_require_dims(loadings, ("time", "mode"), "loadings"),
                                                window, "loadings")))
    heights = [min(max(1.3, 0.13 * da.sizes[dim]), 3.2) for (kind, da), dim in
               zip(panels, [{"rates": "cell", "loadings": "mode"}.get(k, "channel") for k, _ in panels])]
    fig = Figure(figsize=(FULL_WIDTH, sum(heights) + 0.4 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    layer = ds.attrs.get("layer")
    target = target or ds.attrs.get("target")
    norm = _symmetric_norm(contribution.values)
    for ax, (kind, da), height in zip(axes, panels, heights):
        rows = int(height * 72 / 9)                      # tick labels at least ~9 pt apart
        if kind in ("pos", "neg"):
            sign = "positive contributions (C+)" if kind == "pos" else "negative contributions (C\u2212)"
            image = _time_heatmap(fig, ax, da, "channel", cmap=DIVERGING, norm=norm, ylabel="channel",
                                  cbar_label=None, title=(f"{layer} channels: " if layer else "") + sign,
                                  max_labels=rows)
        elif kind == "rates":
            _time_heatmap(fig, ax, da, "cell", cmap="viridis", norm=Normalize(0, float(da.max()) or 1),
                          ylabel="cell type (cells)" if groups is not None else "cell",
                          cbar_label="rate (Hz)", title="model firing rates", groups=groups, max_labels=rows)
        else:
            signed = float(da.min()) < 0
            _time_heatmap(fig, ax, da, "mode", cmap=DIVERGING if signed else "Purples",
                          norm=_symmetric_norm(da.values) if signed else Normalize(0, float(da.max()) or 1),
                          ylabel="mode", cbar_label="loading", title="mode loadings (how much each mode "
                          "is used), in the modes figure's order", max_labels=rows)
        if kind in ("rates", "loadings"):
            ax.invert_yaxis()                            # first cell type / first mode on top
    fig.colorbar(image, ax=list(axes[:len(signs)]), pad=0.01, shrink=0.9,
                 label=f"contribution to {target}" if target else "contribution")
    axes[-1].set_xlabel("time (s)")
    return fig


# --------------------------------------------------------------------------- modes and cell types
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

    corr = _require_dims(corr, ("cell", "mode"), "corr").transpose("cell", "mode")
    n_cells = corr.sizes["cell"]
    labels = None if labels is None else _per_cell(labels, n_cells, "labels")
    true_types = None if true_types is None else _per_cell(true_types, n_cells, "true_types")
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
            _cluster_strip(ax, values)
        else:
            legends.append(_color_strip(ax, name, values))
        column += 1
    ax = fig.add_subplot(grid[0, column])
    data = corr.values[order]
    image = ax.imshow(data, aspect="auto", origin="lower", cmap=DIVERGING, norm=_symmetric_norm(data),
                      interpolation="nearest")
    modes = _coord(corr, "mode")
    step = max(1, int(np.ceil(len(modes) / 16)))           # at most ~16 tick labels
    ticks = np.arange(0, len(modes), step)
    ax.set_xticks(ticks, [str(modes[i]) for i in ticks], fontsize="small")
    ax.set_xlabel("mode")
    ax.yaxis.tick_right()
    ax.yaxis.set_label_position("right")
    _label_rows(ax, _coord(corr, "cell")[order], max_labels=60)
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


def _cluster_strip(ax: Axes, clusters: np.ndarray) -> None:
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
    ax.set_xticks([0], ["cluster"], rotation=90)
    ax.set_yticks([])


def _per_cell(values: Any, n_cells: int, what: str) -> np.ndarray:
    array = np.asarray(values.values if isinstance(values, xr.DataArray) else values)
    if array.ndim != 1 or array.size != n_cells:
        raise ShapeError(f"{what} must hold one value per cell ({n_cells}), got shape {array.shape}")
    return array


def _color_strip(ax: Axes, name: str, values: np.ndarray) -> tuple[str, list[Patch]]:
    """A one-column strip coloured by category; returns the legend title and handles."""
    colors = type_colors(values)
    index = {c: i for i, c in enumerate(colors)}
    cmap = ListedColormap(list(colors.values()))
    ax.imshow(np.array([index[v] for v in values])[:, None], aspect="auto", origin="lower",
              cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, interpolation="nearest")
    ax.set_xticks([0], [name], rotation=90)
    ax.set_yticks([])
    return name, [Patch(color=c, label=_pretty(k)) for k, c in colors.items()]


#: glyphs of the two contribution signs in mode names (C+ and C-)
SIGN_GLYPHS = {"pos": "+", "neg": "\u2212"}


def mode_names(modes: xr.DataArray, max_terms: int = 3, share: float = 0.8) -> list[str]:
    """A short name per mode from its largest weights, e.g. ``"ch3+ ch5\u2212"``.

    ``modes`` is ``(mode, channel, sign)`` (contribution modes: ``+`` names a
    channel's positive contributions C+, ``\u2212`` its negative ones C-) or
    ``(mode, channel)`` (signed weights, e.g. activation modes: the glyph is the
    weight's sign). Terms are listed by decreasing |weight| until they hold
    ``share`` of the mode's squared norm, at most ``max_terms``; a mode without
    weight is ``"empty"``. A ``name`` coordinate along ``mode`` is used as is.
    """
    modes = _require_dims(modes, ("mode", "channel"), "modes", optional=("sign",))
    if "name" in modes.coords and modes["name"].dims == ("mode",):
        return [str(v) for v in modes["name"].values]
    if "sign" in modes.dims:
        modes = modes.transpose("mode", "channel", "sign")
        glyphs = [SIGN_GLYPHS.get(str(s), str(s)) for s in _coord(modes, "sign")]
        weights = modes.values.reshape(modes.sizes["mode"], -1)
        terms = [f"ch{c}{g}" for c in _coord(modes, "channel") for g in glyphs]
        signed = [terms] * len(weights)
    else:
        weights = modes.transpose("mode", "channel").values
        signed = [[f"ch{c}{'+' if w >= 0 else SIGN_GLYPHS['neg']}" for c, w in zip(_coord(modes, "channel"), row)]
                  for row in weights]
    names = []
    for row, labels in zip(np.abs(np.nan_to_num(weights)), signed):
        energy = row ** 2
        if energy.sum() <= 1e-12 * max(1.0, float(np.abs(weights).max(initial=0.0)) ** 2):
            names.append("empty")
            continue
        order = np.argsort(-energy, kind="stable")
        held = np.cumsum(energy[order]) / energy.sum()
        n_terms = min(max_terms, int(np.searchsorted(held, share - 1e-9)) + 1)
        names.append(" ".join(labels[i] for i in order[:n_terms]))
    return names


def _energy_coord(modes: xr.DataArray) -> xr.DataArray | None:
    """A per-mode coordinate holding the explained energy (name containing 'energy'), if any."""
    for name, coord in modes.coords.items():
        if "energy" in str(name) and coord.dims == ("mode",) and np.issubdtype(coord.dtype, np.number):
            return coord
    return None


def plot_modes(modes: xr.DataArray, max_modes: int | None = None, layer: str | None = None, *,
               energy: xr.DataArray | Sequence[float] | None = None, relative: bool = True) -> Figure:
    """The mode dictionary as one heat map: a row per mode, a column per channel and sign.

    ``modes`` is ``(mode, channel, sign)`` (``sign`` in ``["neg", "pos"]``) or
    ``(mode, channel)`` (e.g. activation modes). Rows keep the given order
    (modes ordered by explained energy) and are named by :func:`mode_names`.
    With a ``sign`` dim, C+ weights are drawn red and C- weights blue (as
    negative values of one diverging scale), each channel's two columns side
    by side; weights of at least 5 % of the largest are written in the cells.
    With ``relative`` each row is divided by its largest ``|weight|`` (a
    mode's scale is shared with its loadings; its importance is the energy),
    so that every row reads as "which channels, in which proportions". The share of energy per mode (``energy``, one value per mode, e.g. the
    ``energy`` variable of a modes file; or a per-mode coordinate whose name
    contains ``energy``) is drawn as bars at the right. ``max_modes`` keeps
    the first modes only (the title says how many are shown).
    """
    modes = _require_dims(modes, ("mode", "channel"), "modes", optional=("sign",))
    if max_modes is not None and max_modes < 1:
        raise ConfigurationError(f"max_modes must be >= 1 or None, got {max_modes}")
    n_total = modes.sizes["mode"]
    if energy is not None:
        values = np.asarray(energy.values if isinstance(energy, xr.DataArray) else energy, dtype=float)
        if values.shape != (n_total,):
            raise ShapeError(f"energy must hold one value per mode ({n_total}), got shape {values.shape}")
        modes = modes.assign_coords(energy=("mode", values))
    if max_modes is not None:
        modes = modes.isel(mode=slice(0, max_modes))
    names = mode_names(modes)
    matrix, columns, groups = _mode_matrix(modes)
    signed = "sign" in modes.dims
    hidden = _empty_sign_columns(matrix, columns) if signed else np.zeros(len(columns), bool)
    matrix, groups = matrix[:, ~hidden], _kept_groups(groups, hidden)
    columns = [c for c, h in zip(columns, hidden) if not h]
    if relative:
        peak = np.nanmax(np.abs(matrix), axis=1, keepdims=True, initial=0.0)
        matrix = np.divide(matrix, peak, out=np.zeros_like(matrix), where=peak > 0)
    n_modes = len(names)
    energy = _energy_coord(modes)
    fig = Figure(figsize=(FULL_WIDTH, max(2.8, 1.5 + 0.26 * n_modes)), layout="constrained")
    widths = [max(4.0, 0.3 * len(columns))] + ([1.0] if energy is not None else [])
    grid = fig.add_gridspec(1, len(widths), width_ratios=widths)
    ax = fig.add_subplot(grid[0, 0])
    one_sided = signed and float(np.nanmin(matrix)) >= 0          # only C+ columns left
    norm = Normalize(0, float(np.nanmax(matrix)) or 1.0) if one_sided else _symmetric_norm(matrix)
    image = ax.imshow(matrix, aspect="auto", cmap="Reds" if one_sided else DIVERGING, norm=norm,
                      interpolation="nearest")
    _annotate_weights(ax, matrix, norm.vmax, absolute=signed)
    ax.set_yticks(np.arange(n_modes), [f"{m}: {n}" for m, n in zip(_coord(modes, "mode"), names)],
                  fontsize="small")
    ax.set_ylabel("mode: main channels")
    ax.set_xticks(np.arange(len(columns)), columns, fontsize="small")
    for start in groups[1:]:
        ax.axvline(start - 0.5, color="0.75", lw=0.6)
    xlabel = "channel and contribution sign (+: C+, \u2212: C\u2212)" if signed else "channel"
    if hidden.any():
        xlabel += f"\n{_hidden_note(hidden, modes)} not shown: no weight in any mode"
    ax.set_xlabel(xlabel)
    label = ("C+ weight" if one_sided else "weight (red: C+, blue: C\u2212)") if signed \
        else "weight (red: positive, blue: negative)"
    label += ", relative to the mode's largest" if relative else ""
    fig.colorbar(image, ax=ax, label=label, location="top", shrink=0.5, aspect=30, pad=0.01)
    if energy is not None:
        bar_ax = fig.add_subplot(grid[0, 1], sharey=ax)
        values = np.asarray(energy.values, dtype=float)
        share = np.nanmax(values) <= 1.0
        bar_ax.barh(np.arange(n_modes), values * 100 if share else values, color="0.45", height=0.7)
        bar_ax.set_xlabel("energy (%)" if share else str(energy.name))
        bar_ax.tick_params(labelleft=False)
        bar_ax.set_title("explained", fontsize="small")
    shown = f"first {n_modes} of {n_total} modes" if n_modes < n_total else f"{n_modes} modes"
    layer = layer or modes.attrs.get("layer")
    what = "contribution modes" if signed else "modes"
    fig.suptitle((f"{layer} " if layer else "") + f"{what} ({shown}): weight on each channel",
                 fontsize="medium")
    return fig


def _empty_sign_columns(matrix: np.ndarray, columns: list[str], tol: float = 0.01) -> np.ndarray:
    """The columns of a sign (``+`` or ``\u2212``) that no mode weights on any channel (never all columns).

    A weight below ``tol`` of the largest counts as none. Single empty
    channels stay: that no mode uses a channel is worth seeing.
    """
    peak = np.nanmax(np.abs(matrix), axis=0, initial=0.0)
    empty = peak < tol * max(float(peak.max(initial=0.0)), 1e-300)
    hidden = np.zeros(len(columns), bool)
    for glyph in set(SIGN_GLYPHS.values()):
        sign = np.array([c.endswith(glyph) for c in columns])
        if sign.any() and empty[sign].all():
            hidden |= sign
    return hidden if not hidden.all() else np.zeros_like(hidden)


def _kept_groups(starts: list[int], hidden: np.ndarray) -> list[int]:
    """Column index of each channel group's first kept column, after dropping ``hidden`` ones."""
    new_index = np.cumsum(~hidden) - 1
    bounds = list(starts) + [hidden.size]
    kept = [int(new_index[a:b][~hidden[a:b]][0]) for a, b in zip(bounds[:-1], bounds[1:]) if (~hidden[a:b]).any()]
    return kept


def _hidden_note(hidden: np.ndarray, modes: xr.DataArray) -> str:
    """Which (channel, sign) columns were left out, said briefly."""
    signs = [s for s in ("pos", "neg") if s in [str(v) for v in _coord(modes, "sign")]]
    per_sign = hidden.reshape(-1, len(signs)) if hidden.size % len(signs) == 0 else None
    if per_sign is not None:
        whole = [s for j, s in enumerate(signs) if per_sign[:, j].all()]
        if len(whole) == 1 and hidden.sum() == per_sign.shape[0]:
            return f"C{SIGN_GLYPHS[whole[0]]} of every channel"
    return f"{int(hidden.sum())} columns"


def _mode_matrix(modes: xr.DataArray) -> tuple[np.ndarray, list[str], list[int]]:
    """(mode, column) weights in contribution signs, column labels and the first column of each channel.

    ``neg`` entries are C- weights, stored <= 0 (contribution signs); entries
    given as magnitudes (all >= 0) are negated so that C- is always drawn blue.
    """
    channels = _coord(modes, "channel")
    if "sign" not in modes.dims:
        return modes.transpose("mode", "channel").values, [str(c) for c in channels], \
            list(range(len(channels)))
    modes = modes.transpose("mode", "channel", "sign")
    signs = [str(s) for s in _coord(modes, "sign")]
    order = [signs.index(s) for s in ("pos", "neg") if s in signs] + \
        [j for j, s in enumerate(signs) if s not in ("pos", "neg")]
    values = modes.values[:, :, order].astype(float)     # (mode, channel, sign)
    for k, j in enumerate(order):
        column = values[:, :, k]
        if signs[j] == "neg" and (np.nan_to_num(column) >= 0).all() and (column > 0).any():
            values[:, :, k] = -column                        # magnitudes |C-|: back to signs
    matrix = values.reshape(values.shape[0], -1)
    columns = [f"{c}{SIGN_GLYPHS.get(signs[j], signs[j])}" for c in channels for j in order]
    return matrix, columns, list(range(0, matrix.shape[1], len(order)))


def _annotate_weights(ax: Axes, matrix: np.ndarray, vmax: float, absolute: bool,
                      min_share: float = 0.05) -> None:
    """Write each weight of at least ``min_share`` of the largest into its cell (``|w|`` if ``absolute``)."""
    if matrix.size > 600:                            # too many cells to read numbers
        return
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value) and abs(value) >= min_share * vmax:
            shown = abs(value) if absolute else value
            ax.text(column, row, _short_number(shown), ha="center", va="center", fontsize=6.5,
                    color="white" if abs(value) > 0.6 * vmax else "0.15")


def _short_number(value: float) -> str:
    """Two significant digits without exponent: 0.093, 0.48, 1.4, 35, 2400."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.1f}" if magnitude < 10 else f"{value:.0f}"
    return f"{value:.2g}"


# --------------------------------------------------------------------------- receptive fields
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
    spatial = _require_dims(spatial, ("combination", "y", "x"), "spatial", optional=("cell",))
    temporal = _require_dims(temporal, ("combination", "lag"), "temporal", optional=("cell",))
    if max_cells < 1:
        raise ConfigurationError(f"max_cells must be >= 1, got {max_cells}")
    combos = _coord(spatial, "combination")
    if temporal.sizes["combination"] != len(combos) or (
            "combination" in temporal.coords and "combination" in spatial.coords
            and not np.array_equal(temporal["combination"].values, combos)):
        raise ShapeError(f"spatial and temporal must hold the same combinations, got {list(combos)} "
                         f"and {list(_coord(temporal, 'combination'))}")
    spatial = spatial.expand_dims(cell=[None]) if "cell" not in spatial.dims else spatial
    spatial = spatial.transpose("combination", "cell", "y", "x")
    temporal = temporal.transpose("combination", "cell", "lag") if "cell" in temporal.dims else \
        temporal.expand_dims(cell=[None]).transpose("combination", "cell", "lag")
    types = _cell_types(spatial, cell_types)
    columns = _representative_cells(spatial.values, types, max_cells)
    maps = spatial.values[:, columns]
    lines = temporal.values[:, columns] if temporal.sizes["cell"] == spatial.sizes["cell"] \
        else np.repeat(temporal.values[:, :1], len(columns), axis=1)
    cells = _coord(spatial, "cell")[columns]
    shown_types = None if types is None else types[columns]
    colors = type_colors(types) if types is not None else {}
    column_colors = [colors.get(t, "0.2") for t in shown_types] if shown_types is not None \
        else [colormaps["tab10"](k % 10) for k in range(len(columns))]
    headers = combination_labels(combos, modes)
    n_rows, n_img = len(combos), len(columns)
    norm = _symmetric_norm(np.nan_to_num(maps))
    ys, xs = _coord(spatial, "y"), _coord(spatial, "x")
    extent = (*_edges(xs), *_edges(ys)[::-1])
    windows, side = _crop_windows(maps, ys, xs)
    lag = _coord(temporal, "lag", DT)
    # the first row carries the cell titles, the last the lag label: taller, so all maps match
    ratios = [1.0] * n_rows
    ratios[0] += 0.2
    ratios[-1] += 0.12
    fig = Figure(figsize=(FULL_WIDTH, 1.35 * sum(ratios) + 0.9), layout="constrained")
    rows = fig.subfigures(n_rows + 1, 1, height_ratios=ratios + [0.5])
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
                    title = f"{_pretty(shown_types[c])}\n{title}"
                ax.set_title(title, fontsize="small", color=column_colors[c])
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
            ax.set_title("temporal filters (unit norm)", fontsize="small")
        if r == n_rows - 1:
            ax.set_xlabel("lag before the response (s)", fontsize="small")
    _scale_bar(scale_ax, side)
    if image is not None:
        cax = rows[-1].add_axes((0.2, 0.62, 0.6, 0.14))
        cbar = rows[-1].colorbar(image, cax=cax, orientation="horizontal")
        cbar.ax.tick_params(labelsize="small")
        cbar.set_label(f"spatial filter weight (unit-norm filters); each map shows {side:g} × {side:g} "
                       "stimulus px around its cell's receptive field", fontsize="small")
    fig.suptitle((f"{layer}: " if layer else "") + "instantaneous receptive fields while a mode combination "
                 "is active", fontsize="medium")
    return fig


def _pretty(label: Any) -> str:
    """A category label for people: ``on_off_transient`` -> ``on off transient``."""
    return str(label).replace("_", " ")


def type_colors(types: Sequence[Any] | np.ndarray) -> dict[Any, Any]:
    """One colour per cell type, the same in every figure (types in sorted order, tab10/tab20)."""
    return _category_colors(sorted(set(np.asarray(types).tolist()), key=str))


def _cell_types(da: xr.DataArray, cell_types: Any) -> np.ndarray | None:
    """Per-cell types from ``cell_types`` or a ``cell_type`` coordinate of ``da`` (None if neither)."""
    n_cells = da.sizes["cell"]
    if cell_types is not None:
        return _per_cell(cell_types, n_cells, "cell_types").astype(str)
    if "cell_type" in da.coords and da["cell_type"].dims == ("cell",):
        return da["cell_type"].values.astype(str)
    return None


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
    (y_lo, y_hi), (x_lo, x_hi) = _edges(ys), _edges(xs)
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
        names = {str(m): n for m, n in zip(_coord(modes, "mode"), mode_names(modes))}
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


# --------------------------------------------------------------------------- interneurons
def plot_interneuron_matches(match: xr.Dataset, n_maps: int = 4, alpha: float = 0.05) -> Figure:
    """Held-out correlation of every interneuron with its best model unit, against chance.

    ``match`` is the Dataset of :func:`~retcodec.interneuron_match.match_interneurons`.
    Top: per interneuron, the held-out r (filled dot, coloured by true type
    when known, else by class), the in-sample r of the same unit (open
    diamond, biased upward) and the chance band (grey, from the shift mean to
    its 95th percentile); ``*`` marks ``p_value < alpha``. Bottom: the
    all-data correlation map of the best channel for the ``n_maps`` cells with
    the highest held-out r, in stimulus pixels, with the best unit marked.
    """
    for name in ("heldout_correlation", "chance_mean", "chance_p95"):
        _require_dims(_variable(match, name, "match"), ("interneuron",), name)
    n_cells = match.sizes["interneuron"]
    order = _interneuron_order(match)
    groups, group_name = _interneuron_groups(match)
    colors = type_colors(groups)
    n_maps = max(0, min(int(n_maps), n_cells)) if _has_maps(match) else 0
    fig = Figure(figsize=(FULL_WIDTH, 5.2 if n_maps else 3.2), layout="constrained")
    grid = fig.add_gridspec(2 if n_maps else 1, max(n_maps, 1) + (1 if n_maps else 0),
                            height_ratios=[1.4, 1] if n_maps else None,
                            width_ratios=[1] * n_maps + [0.08] if n_maps else None)
    ax = fig.add_subplot(grid[0, :])
    _draw_match_summary(ax, match, order, groups, colors, alpha)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=_pretty(g)) for g, c in colors.items()]
    handles += [Line2D([], [], ls="", marker="D", mfc="none", color="0.3", label="in-sample (biased)"),
                Patch(color="0.85", label="chance (mean to 95th pct)")]
    if "p_value" in match:
        handles.append(Line2D([], [], ls="", marker="$*$", color="k", label=_p_value_note(match, alpha)))
    ax.legend(handles=handles, title=group_name, fontsize="small", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    if n_maps:
        best = np.argsort(-match["heldout_correlation"].values, kind="stable")[:n_maps]
        _draw_best_maps(fig, [fig.add_subplot(grid[1, i]) for i in range(n_maps)],
                        fig.add_subplot(grid[1, n_maps]), match, best)
    return fig


def _p_value_note(match: xr.Dataset, alpha: float) -> str:
    """Legend text of the significance mark: the test's smallest possible p and no correction."""
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
    if "p_value" in match:
        for xi, r, p in zip(x, heldout, match["p_value"].values[order]):
            if p < alpha:
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
        maps.append((cmap.values, offset))
        marks.append((int(row["best_y"]) + offset, int(row["best_x"]) + offset, layer, channel,
                      float(row["heldout_correlation"])))
    norm = _symmetric_norm(*[m for m, _ in maps])
    for ax, (values, offset), (y, x, layer, channel, r), i in zip(axes, maps, marks, cells):
        n_y, n_x = values.shape
        image = ax.imshow(values, cmap=DIVERGING, norm=norm, origin="upper", interpolation="nearest",
                          extent=(offset - 0.5, offset + n_x - 0.5, offset + n_y - 0.5, offset - 0.5))
        ax.plot(x, y, marker="+", color="k", ms=8, mew=1.2)
        ident = match["interneuron"].values[i] if "interneuron" in match.coords else i
        ax.set_title(f"{ident}\n{layer} channel {channel}\nheld-out r = {r:.2f}", fontsize="x-small")
        ax.set_xlabel("x (stimulus px)", fontsize="small")
        ax.tick_params(labelsize="x-small")
    axes[0].set_ylabel("y (stimulus px)", fontsize="small")
    fig.colorbar(image, cax=cax, label="r (all time points)")


# --------------------------------------------------------------------------- statistics
def plot_sparsity(stats: xr.Dataset, contribution: str = "contribution_sparsity",
                  activation: str = "activation_sparsity") -> Figure:
    """Hoyer sparsity across channels of contributions vs activations, per layer.

    ``stats`` holds the two variables (names configurable; the defaults are
    those of :func:`retcodec.analysis.statistics.layer_statistics`) over ``layer``:
    either ``(layer, time)`` per-window values, drawn as paired box plots
    (NaN windows left out), or ``(layer,)`` summaries, drawn as paired bars.
    Hoyer sparsity is 0 for a flat vector and 1 for a single non-zero entry.
    """
    stats = _as_dataset(stats, "stats")
    values = {}
    for label, name in (("contributions", contribution), ("activations", activation)):
        da = _variable(stats, name, "stats")
        if "layer" not in da.dims or da.ndim > 2:
            raise ShapeError(f"{name} must have dims (layer,) or (layer, sample), got {da.dims}")
        values[label] = da.transpose("layer", ...)
    layers = _coord(values["contributions"], "layer")
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
    evaluation = _as_dataset(evaluation, "evaluation")
    if x is None:
        x = "ceiling" if "ceiling" in evaluation else "oracle"
    r = _require_dims(_variable(evaluation, y, "evaluation"), ("cell",), y)
    ref = _require_dims(_variable(evaluation, x, "evaluation"), ("cell",), x)
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
                           label=f"{_pretty(t)} ({int((types == t).sum())})" if filled else None)
    if not reliable.all():
        ax.scatter([], [], s=46, facecolors="none", edgecolors="0.3", label="unreliable cell")
    if label_cells:
        _label_outliers(ax, _coord(r, "cell"), types, xv, yv, max_labels, hi - lo)
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
