"""Shared style and helpers of retcodec's figures: constants, saving, input checks, colours, names.

The figure modules (``fig_contributions``, ``fig_modes``, ``fig_cells``,
``fig_irfs``, ``fig_interneurons``, ``fig_stats``) draw with these helpers;
:mod:`retcodec.report.figures` re-exports the public figure API.
Constants: :data:`DT` (s per bin without a time coordinate), sign colours,
the diverging colour map, the two-column figure width (in).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.insilico.circuit import GANGLION_TYPES, INTERNEURON_TYPES
from retcodec.io.storage import atomic_path

__all__ = ["DT", "SIGN_COLORS", "DIVERGING", "FULL_WIDTH", "SIGN_GLYPHS", "save_figure",
           "as_dataset", "require_variable", "require_dims", "coord_values", "bin_edges",
           "symmetric_norm", "label_rows", "pretty_label", "type_colors", "per_cell",
           "per_cell_types", "mode_names", "KNOWN_TYPES", "PALETTES"]

#: seconds per bin when a time or lag axis has no coordinate (the recordings' 10 ms bins)
DT = 0.01
#: colours of the two contribution signs (red = positive, blue = negative, as in the diverging maps)
SIGN_COLORS = {"pos": "#b2182b", "neg": "#2166ac"}
#: diverging colour map of signed values (red > 0, blue < 0)
DIVERGING = "RdBu_r"
#: width of a two-column figure, inches
FULL_WIDTH = 7.0
#: glyphs of the two contribution signs in mode names (C+ and C-)
SIGN_GLYPHS = {"pos": "+", "neg": "\u2212"}


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
def as_dataset(node: Any, what: str) -> xr.Dataset:
    if isinstance(node, xr.DataTree):
        ds = node.to_dataset()
        return ds.assign_attrs(layer=ds.attrs.get("layer", node.name))
    if isinstance(node, xr.Dataset):
        return node
    raise ConfigurationError(f"{what} must be an xarray Dataset (or DataTree node), "
                             f"got {type(node).__name__}")


def require_variable(ds: xr.Dataset, name: str, what: str) -> xr.DataArray:
    if name not in ds:
        raise ConfigurationError(f"{what} has no variable {name!r} (it has {sorted(ds.data_vars)})")
    return ds[name]


def require_dims(da: Any, dims: Iterable[str], what: str,
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


def coord_values(da: xr.DataArray, dim: str, step: float | None = None) -> np.ndarray:
    """Values of ``dim``: its coordinate, else ``index * step`` (or the index)."""
    if dim in da.coords:
        return np.asarray(da[dim].values)
    index = np.arange(da.sizes[dim])
    return index * step if step is not None else index


def per_cell(values: Any, n_cells: int, what: str) -> np.ndarray:
    array = np.asarray(values.values if isinstance(values, xr.DataArray) else values)
    if array.ndim != 1 or array.size != n_cells:
        raise ShapeError(f"{what} must hold one value per cell ({n_cells}), got shape {array.shape}")
    return array


def per_cell_types(da: xr.DataArray, cell_types: Any) -> np.ndarray | None:
    """Per-cell types from ``cell_types`` or a ``cell_type`` coordinate of ``da`` (None if neither)."""
    n_cells = da.sizes["cell"]
    if cell_types is not None:
        return per_cell(cell_types, n_cells, "cell_types").astype(str)
    if "cell_type" in da.coords and da["cell_type"].dims == ("cell",):
        return da["cell_type"].values.astype(str)
    return None


# --------------------------------------------------------------------------- drawing helpers
def bin_edges(centres: np.ndarray, default_step: float = 1.0) -> tuple[float, float]:
    """Outer edges of evenly spaced bins with these centres (for ``imshow`` extents)."""
    centres = np.asarray(centres, dtype=float)
    step = float(np.median(np.diff(centres))) if centres.size > 1 else default_step
    return centres[0] - step / 2, centres[-1] + step / 2


def symmetric_norm(*arrays: Any) -> Normalize:
    """Colour limits ``±max|value|`` (a diverging map centred on 0)."""
    vmax = max(float(np.nanmax(np.abs(np.asarray(a)))) if np.size(a) else 0.0 for a in arrays)
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    return Normalize(-vmax, vmax)


def label_rows(ax: Axes, labels: Sequence[Any], max_labels: int = 24) -> None:
    """Tick rows with their labels: all of them when few, else every k-th (at most ``max_labels``)."""
    n = len(labels)
    step = max(1, int(np.ceil(n / max(1, max_labels))))
    ticks = np.arange(0, n, step)
    ax.set_yticks(ticks, [str(labels[i]) for i in ticks])


# --------------------------------------------------------------------------- labels and colours
def pretty_label(label: Any) -> str:
    """A category label for people: ``on_off_transient`` -> ``on off transient``."""
    return str(label).replace("_", " ")


#: the known types of each kind, in palette order: a type keeps its colour whatever else a figure shows
KNOWN_TYPES = {"cell": GANGLION_TYPES, "interneuron": INTERNEURON_TYPES + ("bipolar", "amacrine")}
#: colour lists of each kind: cell types and interneuron types never share a palette
PALETTES = {"cell": "tab10",
            "interneuron": ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
                            "#1f4e79", "#666666"]}       # Dark2 and navy: no colour of the cell palette
#: colour of a missing or unknown type
UNKNOWN_COLOR = (0.55, 0.55, 0.55, 1.0)


def type_colors(types: Sequence[Any] | np.ndarray, kind: str = "cell") -> dict[Any, Any]:
    """One colour per type of ``kind`` (``"cell"`` or ``"interneuron"``), the same in every figure.

    Known types (:data:`KNOWN_TYPES`) take fixed places in the kind's palette
    (:data:`PALETTES`), so a figure that shows a subset of the types colours
    each as every other figure does; other types follow in sorted order
    (after the known ones). ``unknown``/``none`` types are grey. Returns the
    types present, in sorted order.
    """
    if kind not in PALETTES:
        raise ConfigurationError(f"kind must be one of {sorted(PALETTES)}, got {kind!r}")
    present = sorted(set(np.asarray(types).astype(str).tolist()), key=str)
    known = list(KNOWN_TYPES[kind])
    extra = sorted(t for t in present if t not in known and t not in ("unknown", "none"))
    order = known + extra
    palette = PALETTES[kind]
    colors = [to_rgba(c) for c in palette] if not isinstance(palette, str) else \
        [colormaps[palette](i) for i in range(colormaps[palette].N)]
    if len(order) > len(colors):
        colors = [colormaps["tab20"](i) for i in range(20)]
    return {t: UNKNOWN_COLOR if t in ("unknown", "none") else colors[order.index(t) % len(colors)] for t in present}


def mode_names(modes: xr.DataArray, max_terms: int = 3, share: float = 0.8) -> list[str]:
    """A short name per mode from its largest weights, e.g. ``"ch3+ ch5\u2212"``.

    ``modes`` is ``(mode, channel, sign)`` (contribution modes: ``+`` names a
    channel's positive contributions C+, ``\u2212`` its negative ones C-) or
    ``(mode, channel)`` (signed weights, e.g. activation modes: the glyph is the
    weight's sign). Terms are listed by decreasing |weight| until they hold
    ``share`` of the mode's squared norm, at most ``max_terms``; a mode without
    weight is ``"empty"``. A ``name`` coordinate along ``mode`` is used as is.
    """
    modes = require_dims(modes, ("mode", "channel"), "modes", optional=("sign",))
    if "name" in modes.coords and modes["name"].dims == ("mode",):
        return [str(v) for v in modes["name"].values]
    if "sign" in modes.dims:
        modes = modes.transpose("mode", "channel", "sign")
        glyphs = [SIGN_GLYPHS.get(str(s), str(s)) for s in coord_values(modes, "sign")]
        weights = modes.values.reshape(modes.sizes["mode"], -1)
        terms = [f"ch{c}{g}" for c in coord_values(modes, "channel") for g in glyphs]
        signed = [terms] * len(weights)
    else:
        weights = modes.transpose("mode", "channel").values
        channels = coord_values(modes, "channel")
        signed = [[f"ch{c}{'+' if w >= 0 else SIGN_GLYPHS['neg']}" for c, w in zip(channels, row)]
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
