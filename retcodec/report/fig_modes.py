"""The mode dictionary as one heat map (a row per mode, a column per channel and sign), with energy bars."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.report.figstyle import (DIVERGING, FULL_WIDTH, SIGN_GLYPHS, coord_values, mode_names,
                                      require_dims, symmetric_norm)

__all__ = ["plot_modes", "plot_mode_sweep"]


def _energy_coord(modes: xr.DataArray) -> xr.DataArray | None:
    """A per-mode coordinate holding the explained energy (name containing 'energy'), if any."""
    for name, coord in modes.coords.items():
        if "energy" in str(name) and coord.dims == ("mode",) and np.issubdtype(coord.dtype, np.number):
            return coord
    return None


def plot_modes(modes: xr.DataArray, max_modes: int | None = None, layer: str | None = None, *,
               energy: xr.DataArray | Sequence[float] | None = None, relative: bool = True,
               fitted: str | None = None) -> Figure:
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
    the first modes only (the title says how many are shown). ``fitted`` (the
    ``sign`` attr of a modes file: ``"pos"`` or ``"both"``) says in the title
    what the modes were fitted on: C+ only (C− not modelled), or E and I.
    """
    modes = require_dims(modes, ("mode", "channel"), "modes", optional=("sign",))
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
    norm = Normalize(0, float(np.nanmax(matrix)) or 1.0) if one_sided else symmetric_norm(matrix)
    image = ax.imshow(matrix, aspect="auto", cmap="Reds" if one_sided else DIVERGING, norm=norm,
                      interpolation="nearest")
    _annotate_weights(ax, matrix, norm.vmax, absolute=signed)
    ax.set_yticks(np.arange(n_modes), [f"{m}: {n}" for m, n in zip(coord_values(modes, "mode"), names)],
                  fontsize="small")
    ax.set_ylabel("mode: main channels")
    ax.set_xticks(np.arange(len(columns)), columns, fontsize="small")
    for start in groups[1:]:
        ax.axvline(start - 0.5, color="0.75", lw=0.6)
    xlabel = "channel and contribution sign (+: C+, \u2212: C\u2212)" if signed else "channel"
    if hidden.any():
        reason = "not modelled" if fitted == "pos" else "no weight in any mode"
        xlabel += f"\n{_hidden_note(hidden, modes)} not shown: {reason}"
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
    basis = {"pos": "\nfitted on the excitatory part C+ only, as the paper (C\u2212 not modelled)",
             "both": "\nfitted on both parts: excitatory C+ (red) and inhibitory C\u2212 (blue)"}.get(str(fitted), "")
    fig.suptitle((f"{layer} " if layer else "") + f"{what} ({shown}): weight on each channel" + basis,
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
    signs = [s for s in ("pos", "neg") if s in [str(v) for v in coord_values(modes, "sign")]]
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
    channels = coord_values(modes, "channel")
    if "sign" not in modes.dims:
        return modes.transpose("mode", "channel").values, [str(c) for c in channels], \
            list(range(len(channels)))
    modes = modes.transpose("mode", "channel", "sign")
    signs = [str(s) for s in coord_values(modes, "sign")]
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


#: what each row of the sweep figure shows: variable, axis label
SWEEP_PANELS = (("stability", "stability to the\ndefault's modes"), ("r2", "R²"),
                ("l0", "L0 (active modes\nper bin)"), ("n_modes", "modes"))
PARAMETER_NAMES = {"threshold": "threshold θ", "multiplier": "dictionary size\n(× channels)",
                   "l1_dictionary": "dictionary L1", "random_state": "seed"}


def plot_mode_sweep(sweeps: Mapping[str, xr.Dataset], robust_stability: float | None = None) -> Figure:
    """The robustness sweep: stability to the default, R², L0 and count per setting, one colour per layer.

    ``sweeps`` maps layer names to :func:`~retcodec.modes.sweep.robustness_sweep`
    Datasets. Settings are grouped by parameter along x; the default value is
    drawn with a black edge; the dashed line is the stability a robust setting
    must keep.
    """
    if not sweeps:
        raise ConfigurationError("plot_mode_sweep needs at least one layer's sweep")
    first = next(iter(sweeps.values()))
    for layer, ds in sweeps.items():
        require_dims(ds["stability"], ("setting",), f"sweep of {layer}")
    parameters = list(dict.fromkeys(first["parameter"].values.tolist()))
    fig = Figure(figsize=(FULL_WIDTH, 6.2), layout="constrained")
    axes = fig.subplots(len(SWEEP_PANELS), len(parameters), sharey="row", squeeze=False)
    colours = ["C0", "C3", "C2", "C1", "C4"]
    for column, name in enumerate(parameters):
        for row, (variable, label) in enumerate(SWEEP_PANELS):
            ax = axes[row, column]
            for (layer, ds), colour in zip(sweeps.items(), colours):
                part = ds.where(ds["parameter"] == name, drop=True)
                x = np.arange(part.sizes["setting"])
                values = part[variable].values.astype(float)
                ax.plot(x, values, "-o", color=colour, ms=4, lw=1, label=layer if (row, column) == (0, 0) else None)
                default = part["is_default"].values.astype(bool)
                ax.plot(x[default], values[default], "o", ms=6, mfc="none", mec="k", mew=1.0)
            if variable == "stability" and robust_stability is not None:
                ax.axhline(robust_stability, color="0.5", ls="--", lw=0.8)
            if variable == "n_modes":
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xticks(x, part["value"].values.tolist(), fontsize="small")
                ax.set_xlabel(PARAMETER_NAMES.get(str(name), str(name)), fontsize="small")
            else:
                ax.tick_params(labelbottom=False)
            if column == 0:
                ax.set_ylabel(label, fontsize="small")
    fig.legend(fontsize="small", loc="outside lower center", ncols=len(sweeps))
    fig.suptitle("Robustness of the modes to their settings (one changed at a time; circled: the default)",
                 fontsize="medium")
    return fig
