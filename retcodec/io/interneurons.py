"""Intracellular interneuron recordings in the published layout, as an xarray DataTree.

A published interneuron file (``bipolars_late_2012.h5``, ``amacrines_early_2012.h5``,
…; ``docs/formats.md``) has one top-level group per stimulus type::

    <stim_type>/stimuli                        raw stimulus, time first
    <stim_type>/detrended_membrane_potential   (n_cells, T)

In-silico files add a top-level ``truth`` group (``cell_type`` (n_cells,) and
other per-cell arrays), which is not a stimulus type.

Each stimulus is prepared as the published comparison did, to a ``(T, 50, 50)``
model input that is *not* z-scored with the model's norm stats:

* ``boxes`` (T, 38, 38) in {0, 1} -> ``2 s - 1`` (±1), zero-padded centrally;
* ``lines`` (T, W): averaged over adjacent pairs (smoothing ``[0.5, 0.5]`` then
  decimation by 2), tiled to ``(T, W/2, W/2)`` (bars along x), zero-padded;
* ``flashes`` (T,): broadcast to ``(T, 38, 38)``, zero-padded.

``Vm[:, history + k]`` pairs with window ``k`` (frames ``k … k+history-1``), the
same alignment as the ganglion-cell recordings; :func:`interneuron_windows`
returns both, aligned.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import h5py
import numpy as np
import xarray as xr

from retcodec.errors import (ConfigurationError, MissingDataError, NonFiniteError, RecordingError,
                             RecordingValueError, ShapeError, UnreadableFileError)
from retcodec.io.paths import user_path
from retcodec.io.provenance import provenance_attrs, to_attr
from retcodec.io.recordings import (smallest_exact, DEFAULT_HISTORY, DT, FRAME_RATE, RecordingShapeError, Windows,
                         open_h5, read_values, require_dataset,
                         check_history, check_numeric_dtype, windows)
from retcodec.io.truth import truth_coordinates, write_truth
from retcodec.io.storage import atomic_path, check_output_file

__all__ = ["load_interneurons", "write_interneurons", "interneuron_windows",
           "prepare_interneuron_stimulus", "cell_class_from_name", "MODEL_FRAME",
           "INTERNEURON_NORM_STATS", "MAX_ABS_VALUE", "check_interneuron_values"]

#: spatial size of the model input (pixels)
MODEL_FRAME = 50
#: size of the boxes / flashes frames in the published files (pixels)
BOX_FRAME = 38
#: the prepared stimuli are fed as they are: no z-scoring with the model's stats
INTERNEURON_NORM_STATS = {"mean": 0.0, "std": 1.0}
#: largest plausible magnitude of a stimulus value or a membrane potential: stimuli are
#: contrasts (about +-1) or 8-bit intensities, and 1e6 is a kilovolt in mV, a volt in uV
MAX_ABS_VALUE = 1e6

LAYOUT = ("expected layout: <stim_type>/stimuli (time first) and "
          "<stim_type>/detrended_membrane_potential (n_cells, T) per stimulus type "
          "(docs/formats.md)")

_CELL_CLASSES = {"bipolar": "bipolar", "amacrine": "amacrine", "horizontal": "horizontal"}


def cell_class_from_name(path: str | os.PathLike) -> str:
    """``'bipolar'``, ``'amacrine'``, ``'horizontal'`` or ``'unknown'`` from a file name."""
    prefix = Path(path).stem.split("_")[0].lower()
    return _CELL_CLASSES.get(prefix.removesuffix("s"), "unknown")


# --------------------------------------------------------------------------- preparation
def _pad_center(stim: np.ndarray, size: int = MODEL_FRAME) -> np.ndarray:
    """Zero-pad (T, h, w) frames centrally to (T, size, size)."""
    n_time, h, w = stim.shape
    if h > size or w > size:
        raise ShapeError(f"frames of {h}x{w} pixels do not fit the {size}x{size} model input")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n_time, size, size), dtype=np.float32)
    out[:, top:top + h, left:left + w] = stim
    return out


def _prepare_boxes(raw: np.ndarray) -> tuple[np.ndarray, str]:
    if raw.ndim != 3:
        raise ShapeError(f"boxes must be (T, y, x), got shape {raw.shape}")
    values = np.unique(raw)
    if np.isin(values, (0, 1)).all():
        signed = raw.astype(np.float32)
        signed *= 2
        signed -= 1
        return _pad_center(signed), "boxes {0,1} -> 2s-1 (+-1), zero-padded centrally"
    if np.isin(values, (-1, 1)).all():
        return _pad_center(raw), "boxes already +-1 (kept), zero-padded centrally"
    raise RecordingError(f"boxes must hold 0/1 (or +-1) values, found {values[:6].tolist()}"
                         f"{' ...' if values.size > 6 else ''}")


def _prepare_lines(raw: np.ndarray) -> tuple[np.ndarray, str]:
    if raw.ndim != 2:
        raise ShapeError(f"lines must be (T, W), got shape {raw.shape}")
    # smoothing with [0.5, 0.5] ('valid') then keeping every 2nd value
    smoothed = 0.5 * (raw[:, :-1] + raw[:, 1:])
    bars = smoothed[:, ::2].astype(np.float32)
    tiled = np.broadcast_to(bars[:, None, :], (raw.shape[0], bars.shape[1], bars.shape[1]))
    return _pad_center(tiled), ("lines smoothed [0.5,0.5], decimated by 2, tiled to "
                                "(T, W/2, W/2) bars along x, zero-padded centrally; values as stored")


def _prepare_flashes(raw: np.ndarray) -> tuple[np.ndarray, str]:
    if raw.ndim != 1:
        raise ShapeError(f"flashes must be (T,), got shape {raw.shape}")
    full = np.broadcast_to(raw.astype(np.float32)[:, None, None], (raw.size, BOX_FRAME, BOX_FRAME))
    return _pad_center(full), (f"flashes broadcast to (T, {BOX_FRAME}, {BOX_FRAME}), "
                               f"zero-padded centrally; values as stored")


_PREPARERS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, str]]] = {
    "boxes": _prepare_boxes, "lines": _prepare_lines, "flashes": _prepare_flashes}


def check_interneuron_values(values: np.ndarray, what: str, per_cell: bool = False,
                             allow_constant: bool = False) -> None:
    """Real numbers, finite, ``|x| <= MAX_ABS_VALUE`` and not constant (per row when ``per_cell``).

    Raises :class:`RecordingValueError` (or :class:`NonFiniteError`) saying what to fix.
    """
    check_numeric_dtype(values, what)
    if values.size == 0:
        return
    numbers = values if values.dtype.kind in "iuf" else values.astype(np.float64)   # no copy of numbers
    if numbers.dtype.kind == "f" and not np.isfinite(numbers).all():
        raise NonFiniteError(f"{what} holds NaN or Inf; every sample must be finite")
    largest = max(abs(float(numbers.min())), abs(float(numbers.max())))
    if largest > MAX_ABS_VALUE:
        raise RecordingValueError(
            f"{what} holds values up to {largest:.4g} in magnitude, beyond the plausible "
            f"{MAX_ABS_VALUE:g} (retcodec.io.interneurons.MAX_ABS_VALUE); check the file's units")
    if allow_constant:
        return
    rows = numbers.reshape(numbers.shape[0], -1) if per_cell else numbers.reshape(1, -1)
    flat = np.flatnonzero(rows.max(axis=1) == rows.min(axis=1))
    if flat.size:
        which = f" for cells {flat.tolist()}" if per_cell else ""
        raise RecordingValueError(
            f"{what} is constant{which}: nothing varies, so no correlation with model units can be "
            f"computed. Drop {'those cells' if per_cell else 'this stimulus type'} or fix the file")


def prepare_interneuron_stimulus(stim_type: str, raw: np.ndarray) -> tuple[np.ndarray, str]:
    """Published preparation of a raw interneuron stimulus -> ``((T, 50, 50) float32, note)``."""
    if stim_type not in _PREPARERS:
        raise ConfigurationError(f"no preparation for stimulus type {stim_type!r}; "
                                 f"supported: {sorted(_PREPARERS)}")
    raw = np.asarray(raw)
    check_interneuron_values(raw, f"the {stim_type} stimulus", allow_constant=True)
    return _PREPARERS[stim_type](raw)


# --------------------------------------------------------------------------- loading
def _stim_node(h5: h5py.File, stim_type: str, source: Path, history: int,
               truth_coords: dict, compact: bool = False) -> xr.Dataset:
    raw = read_values(require_dataset(h5, f"{stim_type}/stimuli", source, LAYOUT))
    vm_dset = require_dataset(h5, f"{stim_type}/detrended_membrane_potential", source, LAYOUT)
    if vm_dset.ndim != 2:
        raise RecordingShapeError(f"{source}: '{vm_dset.name}' has shape {vm_dset.shape}, "
                                  f"expected (n_cells, T); {LAYOUT}")
    check_numeric_dtype(vm_dset, f"{source}: '{vm_dset.name}'")
    vm = read_values(vm_dset).astype(float)
    try:
        stim, note = prepare_interneuron_stimulus(stim_type, raw)
    except (RecordingError, NonFiniteError, ShapeError) as err:
        raise type(err)(f"{source}: {err}") from None
    if vm.shape[1] != stim.shape[0]:
        raise RecordingShapeError(f"{source}: {stim_type} has {stim.shape[0]} stimulus frames "
                                  f"but {vm.shape[1]} membrane-potential samples")
    if not np.isfinite(vm).all():
        raise NonFiniteError(f"{source}: '{vm_dset.name}' holds NaN or Inf")
    check_interneuron_values(vm, f"{source}: '{vm_dset.name}'", per_cell=True)
    check_interneuron_values(raw, f"{source}: '{stim_type}/stimuli'")
    if compact:
        stim = smallest_exact(stim)
    n_time, n_cells = stim.shape[0], vm.shape[0]
    coords = {"time": ("time", np.arange(n_time) * DT, {"units": "s"}),
              "cell": ("cell", np.arange(n_cells), {"long_name": "cell index in the file"}),
              "y": ("y", np.arange(MODEL_FRAME), {"units": "pixel"}),
              "x": ("x", np.arange(MODEL_FRAME), {"units": "pixel"})}
    for name, (dim, values) in truth_coords.items():
        if values.shape[0] != n_cells:
            raise RecordingShapeError(f"{source}: truth/{name} has {values.shape[0]} entries, "
                                      f"{stim_type} {n_cells} cells")
        coords[name] = (dim, values)
    data = {"stimulus": (("time", "y", "x"), stim,
                         {"long_name": "prepared model input (not z-scored)"}),
            "membrane_potential": (("cell", "time"), vm,
                                   {"long_name": "detrended membrane potential (as stored)"})}
    attrs = {"stim_type": stim_type, "preparation": note, "raw_shape": np.asarray(raw.shape),
             "history": history, "frame_rate": FRAME_RATE, "dt": DT,
             "norm_mean": INTERNEURON_NORM_STATS["mean"], "norm_std": INTERNEURON_NORM_STATS["std"]}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def load_interneurons(path: str | os.PathLike, stim_types: list[str] | None = None,
                      history: int = DEFAULT_HISTORY, *, compact: bool = False) -> xr.DataTree:
    """Load a published interneuron file as a DataTree, one node per stimulus type.

    Parameters
    ----------
    path : e.g. ``bipolars_late_2012.h5``.
    stim_types : stimulus types to load; default every supported one in the
        file (``boxes``, ``lines``, ``flashes``; others are skipped, see the
        ``notes`` attr).
    history : frames per model window, stored in each node's attrs for
        :func:`interneuron_windows`.
    compact : hold each prepared stimulus in the smallest type that keeps every value
        exactly (int8 for -1/0/1 boxes: a quarter of float32's memory); windows
        read from it are float32 all the same.

    Returns
    -------
    DataTree; root attrs ``cell_class``, ``source_file``, ``stim_types``,
    ``notes`` (and ``truth_circuit`` for in-silico files). Node
    ``<stim_type>`` holds ``stimulus (time, y, x)`` float32 (50x50, prepared,
    not z-scored; see ``compact``), ``membrane_potential (cell, time)``; coords ``time`` (s),
    ``cell`` (index in the file), ``y``, ``x`` and per-cell truth such as
    ``cell_type``. Everything is read into memory and the file is closed.
    """
    history = check_history(history)
    path = user_path(path, "interneuron file")
    if path.exists() and not path.is_file():
        raise UnreadableFileError(f"interneuron file {path} is not a regular file (a folder, FIFO, "
                                  f"device or socket); pass the .h5 file itself")
    if not path.is_file():
        raise MissingDataError(f"interneuron file {path} does not exist")
    path = path.resolve()
    with open_h5(path) as h5:
        present = [k for k, v in h5.items() if isinstance(v, h5py.Group) and k != "truth"]
        chosen, notes = _choose_stim_types(present, stim_types, path)
        n_cells = _n_cells(h5, chosen, path)
        rows = np.arange(n_cells)
        truth_coords, truth_attrs, truth_notes = (
            truth_coordinates(h5, n_cells, rows, path) if n_cells is not None else ({}, {}, []))
        nodes = {s: _stim_node(h5, s, path, history, truth_coords, compact) for s in chosen}
    root_attrs = {"cell_class": cell_class_from_name(path), "source_file": str(path),
                  "stim_types": ",".join(chosen), "history": history,
                  "notes": "; ".join(notes + truth_notes), **truth_attrs}
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=root_attrs), **nodes})


def _choose_stim_types(present: list[str], requested: list[str] | None,
                       source: Path) -> tuple[list[str], list[str]]:
    if requested is None:
        chosen = [s for s in present if s in _PREPARERS]
        skipped = [s for s in present if s not in _PREPARERS]
        if not chosen:
            raise RecordingError(f"{source} holds no supported stimulus type (found {present}, "
                                 f"supported {sorted(_PREPARERS)}); {LAYOUT}")
        return chosen, ([f"skipped stimulus types without a preparation: {skipped}"]
                        if skipped else [])
    if isinstance(requested, str):
        requested = [requested]
    if not isinstance(requested, (list, tuple)) or not all(isinstance(s, str) for s in requested):
        raise ConfigurationError(f"stim_types must be a list of stimulus type names such as "
                                 f"['boxes', 'lines'], got {requested!r:.80}")
    missing = [s for s in requested if s not in present]
    if missing:
        raise RecordingError(f"{source} has no stimulus group(s) {missing} (it has {present}); "
                             f"{LAYOUT}")
    unsupported = [s for s in requested if s not in _PREPARERS]
    if unsupported:
        raise ConfigurationError(f"no preparation for stimulus types {unsupported}; "
                                 f"supported: {sorted(_PREPARERS)}")
    return list(requested), []


def _n_cells(h5: h5py.File, stim_types: list[str], source: Path) -> int | None:
    """Cell count shared by all chosen stimulus types (RecordingError if they differ)."""
    counts = {}
    for s in stim_types:
        dset = require_dataset(h5, f"{s}/detrended_membrane_potential", source, LAYOUT)
        counts[s] = dset.shape[0] if dset.ndim else None
    if len(set(counts.values())) > 1:
        raise RecordingShapeError(f"{source}: stimulus types hold different cell counts {counts}")
    return next(iter(counts.values()), None)


def interneuron_windows(node: xr.DataTree | xr.Dataset,
                        history: int | None = None) -> tuple[Windows, xr.DataArray]:
    """Model windows of one stimulus node and the membrane potential aligned with them.

    Returns ``(w, vm)``: ``w[k]`` = prepared frames ``k … k+history-1`` (no
    z-scoring), ``vm`` = ``membrane_potential`` at bins ``history …`` as
    ``(time, cell)``, so row ``k`` of ``vm`` pairs with window ``k`` and
    ``vm.time`` equals ``w.time``.
    """
    ds = node.to_dataset() if isinstance(node, xr.DataTree) else node
    if not isinstance(ds, xr.Dataset) or "membrane_potential" not in ds:
        raise RecordingError("the node has no 'membrane_potential'; pass a stimulus node of "
                             "load_interneurons, e.g. tree['boxes']")
    history = check_history(ds.attrs.get("history", DEFAULT_HISTORY) if history is None else history)
    w = windows(ds, norm_stats=INTERNEURON_NORM_STATS, history=history)
    vm = ds["membrane_potential"].isel(time=slice(history, None)).transpose("time", "cell")
    return w, vm


# --------------------------------------------------------------------------- writing
_EXPECTED_NDIM = {"boxes": 3, "lines": 2, "flashes": 1}


def _checked_stimulus(stim_type: str, pair: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw, vm = pair
    except (TypeError, ValueError):
        raise ConfigurationError(f"stimuli[{stim_type!r}] must be a pair "
                                 f"(stimulus, membrane_potential)") from None
    raw, vm = np.asarray(raw), np.asarray(vm)
    check_numeric_dtype(raw, f"{stim_type} stimulus")
    check_numeric_dtype(vm, f"{stim_type} membrane potential")
    vm = vm.astype(float)
    ndim = _EXPECTED_NDIM.get(stim_type)
    if ndim is not None and raw.ndim != ndim:
        raise ShapeError(f"{stim_type} stimulus must be {ndim}-D (time first), got {raw.shape}")
    if vm.ndim != 2 or vm.shape[1] != raw.shape[0]:
        raise ShapeError(f"{stim_type} membrane potential must be (n_cells, {raw.shape[0]}), "
                         f"got {vm.shape}")
    if not np.isfinite(vm).all():
        raise NonFiniteError(f"{stim_type} membrane potential holds NaN or Inf")
    check_interneuron_values(raw, f"{stim_type} stimulus")
    check_interneuron_values(vm, f"{stim_type} membrane potential", per_cell=True)
    return raw, vm


def write_interneurons(path: str | os.PathLike, stimuli: Mapping[str, tuple[Any, Any]],
                       truth: Mapping[str, Any] | None = None,
                       attrs: Mapping[str, Any] | None = None) -> Path:
    """Write an interneuron file in the published layout, atomically; returns the path.

    ``stimuli`` maps a stimulus type to ``(raw_stimulus, vm)``: raw ``boxes``
    (T, 38, 38) in {0, 1}, ``lines`` (T, W) or ``flashes`` (T,), and ``vm``
    (n_cells, T). ``truth`` (``cell_type`` (n_cells,), other 1-D per-cell
    arrays, optional ``circuit``) becomes the top-level ``truth`` group.
    Name the file like the published ones (``bipolars_….h5``) so that
    :func:`load_interneurons` infers the cell class.
    """
    if not stimuli:
        raise ConfigurationError("stimuli is empty; give at least one stimulus type")
    if "truth" in stimuli:
        raise ConfigurationError("'truth' is reserved for the ground-truth group; rename "
                                 "that stimulus type")
    checked = {s: _checked_stimulus(s, pair) for s, pair in stimuli.items()}
    counts = {s: vm.shape[0] for s, (_, vm) in checked.items()}
    if len(set(counts.values())) > 1:
        raise ShapeError(f"every stimulus type must hold the same cells, got counts {counts}")
    path = check_output_file(path, "interneuron file", own_only=True)    # never over a file retcodec did not write
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in {**provenance_attrs(), **dict(attrs or {})}.items():
            h5.attrs[key] = to_attr(value)
        for stim_type, (raw, vm) in checked.items():
            group = h5.create_group(stim_type)
            group.create_dataset("stimuli", data=raw, compression="gzip")
            group.create_dataset("detrended_membrane_potential", data=vm)
        if truth is not None:
            write_truth(h5, truth, next(iter(counts.values())))
    return path

