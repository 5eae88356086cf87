"""A stimulus-aligned stretch of a run (the paper's Fig. 8B): stimulus, rates, mode loadings, IRF moments.

:func:`stimulus_view` cuts one stretch of ``duration`` seconds out of a run's
labelled outputs and aligns them on the model's time axis (time of the
predicted bin, s):

* ``stimulus (time, y, x)``: the frames shown (as stored);
* ``model_rate`` and ``recorded_rate (time, cell)`` (Hz; the recording's
  trial-averaged rate) of a few cells, one per cell type when types are known;
* ``loadings_<layer> (time, mode_<layer>)`` of each layer's modes and
  ``combination_<layer> (time)``, the combination of active modes;
* the *IRF moments* inside the stretch: the windows whose instantaneous
  receptive fields were computed (``moment`` dim: ``moment_time``,
  ``moment_layer``, ``moment_combination``, ``moment_cell``).

By default the stretch is the one holding the most IRF moments of the shown
cells (ties: the earliest), so the reader sees modes combine where their
receptive fields were measured.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from retcodec.errors import ConfigurationError, ShapeError

__all__ = ["stimulus_view", "representative_cells", "VIEW_SECONDS"]

#: length of the stretch shown, s
VIEW_SECONDS = 3.0


def representative_cells(rates: xr.DataArray, cell_types: Sequence[Any] | None, max_cells: int = 6) -> np.ndarray:
    """Positions of up to ``max_cells`` cells: per type (sorted), the cell whose rate varies most."""
    spread = np.nanstd(rates.transpose("time", "cell").values, axis=0)
    if cell_types is None:
        return np.sort(np.argsort(-spread, kind="stable")[:max_cells])
    types = np.asarray(cell_types).astype(str)
    chosen = []
    for t in sorted(set(types.tolist())):
        members = np.flatnonzero(types == t)
        chosen.append(int(members[np.argmax(spread[members])]))
    return np.array(chosen[:max_cells], dtype=int)


def _moments(irfs: Mapping[str, xr.Dataset], cell_ids: np.ndarray) -> list[tuple[float, str, str, Any]]:
    """``(time, layer, combination, cell)`` of every IRF window of the chosen cells."""
    out = []
    for layer, node in irfs.items():
        if "selected_time" not in node:
            continue
        selected = node["selected_time"].transpose("combination", "cell", ...)
        cells = node["cell"].values if "cell" in node.coords else np.arange(node.sizes["cell"])
        for c, combo in enumerate(node["combination"].values):
            for k, cell in enumerate(cells):
                if cell not in cell_ids:
                    continue
                for t in np.asarray(selected.values[c, k]).ravel():
                    if np.isfinite(t):
                        out.append((float(t), str(layer), str(combo), cell))
    return sorted(out, key=lambda m: m[0])


def _best_start(times: np.ndarray, moments: list[tuple[float, str, str, Any]], duration: float) -> float:
    """The start whose stretch holds most moments (ties: the earliest); the first time without moments."""
    t0, t_end = float(times[0]), float(times[-1])
    if not moments or t_end - t0 <= duration:
        return t0
    at = np.array([m[0] for m in moments])
    starts = np.clip(at - 0.1 * duration, t0, t_end - duration)
    counts = [int(np.sum((s <= at) & (at < s + duration))) for s in starts]
    return float(starts[int(np.argmax(counts))])


def stimulus_view(stimulus: xr.DataArray, model_rate: xr.DataArray, loadings: Mapping[str, xr.DataArray], *,
                  recorded_rate: xr.DataArray | None = None, irfs: Mapping[str, xr.Dataset] | None = None,
                  combinations: Mapping[str, xr.DataArray] | None = None,
                  cell_types: Sequence[Any] | None = None, cells: Sequence[int] | None = None,
                  start: float | None = None, duration: float = VIEW_SECONDS, max_cells: int = 6) -> xr.Dataset:
    """One stretch of stimulus, rates, loadings and IRF moments on a common time axis.

    Parameters
    ----------
    stimulus : ``(time, y, x)`` frames (time in s).
    model_rate : ``(time, cell)`` the model's rates (Hz); its times define the axis.
    loadings : layer -> ``(time, mode)`` mode loadings on the same times.
    recorded_rate : ``(time, cell)`` or ``(cell, time)`` trial-averaged recorded rate (Hz), optional.
    irfs : layer -> IRF Dataset with ``selected_time (combination, cell, draw)``, optional.
    combinations : layer -> ``(time)`` combination label of each bin, optional.
    cell_types : one type per cell of ``model_rate`` (picks one cell per type).
    cells : cell positions to show (default :func:`representative_cells`).
    start, duration : the stretch, s (default start: the stretch with most IRF moments).
    """
    for name, da, dims in (("stimulus", stimulus, {"time", "y", "x"}), ("model_rate", model_rate, {"time", "cell"})):
        if not isinstance(da, xr.DataArray) or set(da.dims) != dims:
            raise ShapeError(f"{name} must be a DataArray with dims {sorted(dims)}, got "
                             f"{getattr(da, 'dims', type(da).__name__)}")
    if duration <= 0:
        raise ConfigurationError(f"duration must be > 0 s, got {duration}")
    model_rate = model_rate.transpose("time", "cell")
    times = model_rate["time"].values.astype(float)
    positions = np.asarray(cells if cells is not None else
                           representative_cells(model_rate, cell_types, max_cells), dtype=int)
    if positions.size == 0 or positions.min() < 0 or positions.max() >= model_rate.sizes["cell"]:
        raise ConfigurationError(f"cells must be positions in 0..{model_rate.sizes['cell'] - 1}, got {positions}")
    cell_ids = model_rate["cell"].values[positions]
    moments = _moments(irfs or {}, cell_ids)
    if start is None:
        start = _best_start(times, moments, duration)
    keep = (times >= start - 1e-9) & (times < start + duration - 1e-9)
    if not keep.any():
        raise ShapeError(f"no model time in [{start}, {start + duration}) s (times run {times[0]:g}..{times[-1]:g} s)")
    t = times[keep]
    out = xr.Dataset(coords={"time": ("time", t, {"units": "s"})})
    out["model_rate"] = model_rate.isel(time=np.flatnonzero(keep), cell=positions).assign_attrs(units="Hz")
    out["stimulus"] = stimulus.sel(time=t, method="nearest").transpose("time", "y", "x").assign_coords(time=t)
    if recorded_rate is not None:
        rec = recorded_rate.transpose("time", "cell")
        out["recorded_rate"] = (("time", "cell"), rec.sel(time=t, method="nearest").values[:, positions],
                                {"units": "Hz", "long_name": "recorded rate (trial average)"})
    if cell_types is not None:
        out = out.assign_coords(cell_type=("cell", np.asarray(cell_types).astype(str)[positions]))
    for layer, da in loadings.items():
        da = da.transpose("time", "mode")
        sel = da.sel(time=t, method="nearest")
        out[f"loadings_{layer}"] = ((("time", f"mode_{layer}")), sel.values, {"long_name": f"{layer} mode loadings"})
        out = out.assign_coords({f"mode_{layer}": da["mode"].values})
        if combinations and layer in combinations:
            out[f"combination_{layer}"] = ("time", combinations[layer].sel(time=t, method="nearest").values.astype(str))
    inside = [m for m in moments if t[0] - 1e-9 <= m[0] <= t[-1] + 1e-9]
    out = out.assign_coords(moment=np.arange(len(inside)))
    out["moment_time"] = ("moment", np.array([m[0] for m in inside], dtype=float), {"units": "s"})
    out["moment_layer"] = ("moment", np.array([m[1] for m in inside], dtype=str))
    out["moment_combination"] = ("moment", np.array([m[2] for m in inside], dtype=str))
    out["moment_cell"] = ("moment", np.array([m[3] for m in inside]))
    out.attrs.update(start=float(t[0]), duration=float(duration),
                     total_seconds=float(times[-1] - times[0] + (times[1] - times[0] if times.size > 1 else 0)),
                     n_moments_total=len(moments))
    return out
