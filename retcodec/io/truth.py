"""Ground truth of simulated files: the ``truth`` group of recording and interneuron files.

Layout (documented in ``docs/insilico.md``; every entry is optional)::

    truth/                      group
      @circuit                  JSON of the circuit's parameters
      @<name>                   other scalar strings (e.g. ``adaptation``)
      cell_type  (n,)           str, the true type of each cell in the file
      center     (n, 2)         float, (row, col) pixels
      <name>     (n,)           any other per-cell 1-D array (gain, rf_sigma, ...)
      wiring/                   group: direct synapses
        weight           (n, k) signed weight of interneuron type j onto cell i
                                (+ excitation, - inhibition)
        interneuron_type (k,)   str
      silencing/                group: true effects of silencing each interneuron type
        effect           (k, n) (mean silenced rate - mean intact rate) / mean intact rate
        interneuron_type (k,)   str
        @stimulus               str, what the means were taken over

:func:`read_truth` returns all of it as one Dataset over ``cell`` and
``interneuron_type``; :func:`truth_coordinates` gives the per-cell entries as
``cell`` coordinates for the recording and interneuron loaders. Entries that do
not fit this layout are reported with a :class:`TruthLayoutWarning` (or a note)
and ignored: a foreign truth never stops a file from loading.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import xarray as xr

from retcodec.errors import MissingDataError, RecordingError, ShapeError

__all__ = ["TruthLayoutWarning", "write_truth", "read_truth", "truth_coordinates", "TRUTH_GROUP"]

#: name of the ground-truth group at the root of a file
TRUTH_GROUP = "truth"
#: sub-groups with an interneuron-type axis: name -> (array, its dims with n = cell, k = type)
_TYPED = {"wiring": ("weight", ("cell", "interneuron_type")),
          "silencing": ("effect", ("interneuron_type", "cell"))}


class TruthLayoutWarning(UserWarning):
    """A ``truth`` entry does not follow the documented layout and was ignored."""


# --------------------------------------------------------------------------- writing
def write_truth(h5: h5py.Group, truth: Mapping[str, Any], n_cells: int) -> h5py.Group:
    """Write ``truth`` as the ``truth`` group of an open HDF5 file; returns the group.

    ``truth`` maps names to: per-cell arrays ``(n_cells,)``; ``center``
    ``(n_cells, 2)``; strings (``circuit`` may also be a dict; both become
    attributes); and the sub-groups ``wiring`` (``weight`` (n_cells, k),
    ``interneuron_type`` (k,)) and ``silencing`` (``effect`` (k, n_cells),
    ``interneuron_type`` (k,), optional ``stimulus`` string).
    Raises :class:`ShapeError` naming the entry whose shape is wrong.
    """
    group = h5.create_group(TRUTH_GROUP)
    for name, value in truth.items():
        if name == "circuit" and not isinstance(value, str):
            value = json.dumps(value, default=str, sort_keys=True)
        if isinstance(value, str):
            group.attrs[name] = value
        elif name in _TYPED:
            _write_typed(group, name, value, n_cells)
        else:
            arr = np.asarray(value)
            expected = (n_cells, 2) if name == "center" else (n_cells,)
            if arr.shape != expected:
                raise ShapeError(f"truth[{name!r}] has shape {arr.shape}, expected {expected}")
            _dataset(group, name, arr)
    return group


def _write_typed(group: h5py.Group, name: str, value: Mapping[str, Any], n_cells: int) -> None:
    key, dims = _TYPED[name]
    if not isinstance(value, Mapping) or key not in value or "interneuron_type" not in value:
        raise ShapeError(f"truth[{name!r}] must be a dict with {key!r} and 'interneuron_type'")
    types = np.asarray(value["interneuron_type"]).astype(str)
    arr = np.asarray(value[key], dtype=float)
    expected = tuple(n_cells if d == "cell" else types.size for d in dims)
    if types.ndim != 1 or arr.shape != expected:
        raise ShapeError(f"truth[{name!r}][{key!r}] has shape {arr.shape}, expected {expected} "
                         f"({' x '.join(dims)})")
    sub = group.create_group(name)
    _dataset(sub, key, arr)
    _dataset(sub, "interneuron_type", types)
    for k, v in value.items():
        if k not in (key, "interneuron_type"):
            sub.attrs[k] = str(v)


def _dataset(group: h5py.Group, name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "UO":
        group.create_dataset(name, data=arr.astype(str).tolist(), dtype=h5py.string_dtype("utf-8"))
    else:
        group.create_dataset(name, data=arr)


# --------------------------------------------------------------------------- reading
def _values(dset: h5py.Dataset) -> np.ndarray:
    try:
        values = np.asarray(dset[()])
    except OSError as exc:
        raise RecordingError(f"cannot read '{dset.name}' from {dset.file.filename}: {exc}; "
                             f"the file may be truncated or corrupt") from exc
    if h5py.check_string_dtype(dset.dtype) is not None:
        values = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()],
                          dtype=str).reshape(values.shape)
    return values


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def truth_coordinates(h5: h5py.File, n_in_file: int, rows: np.ndarray, source: str | os.PathLike
                      ) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, Any], list[str]]:
    """Per-cell truth of an open file as ``cell`` coordinates for the selected ``rows``.

    Returns ``(coords, attrs, notes)``: ``coords`` maps names to ``("cell", values)``
    (``center`` becomes ``center_y``/``center_x``), ``attrs`` holds
    ``truth_circuit`` (and other string attributes as ``truth_<name>``), ``notes``
    says which entries were not exposed (sub-groups, arrays that are not per-cell).
    """
    group = h5.get(TRUTH_GROUP)
    if not isinstance(group, h5py.Group):
        return {}, {}, []
    coords: dict[str, tuple[str, np.ndarray]] = {}
    notes: list[str] = []
    for name, item in group.items():
        if isinstance(item, h5py.Group):
            if name not in _TYPED:
                notes.append(f"truth/{name} is not part of the truth layout; ignored")
            continue
        values = _values(item)
        if name == "center" and values.shape == (n_in_file, 2):
            coords["center_y"] = ("cell", values[rows, 0].astype(float))
            coords["center_x"] = ("cell", values[rows, 1].astype(float))
        elif values.ndim == 1 and values.shape[0] == n_in_file:
            coords[name] = ("cell", values[rows])
        else:
            notes.append(f"truth/{name} {values.shape} is not a per-cell array of the {n_in_file} "
                         f"cells in {Path(source).name}; not exposed")
    attrs = {("truth_circuit" if k == "circuit" else f"truth_{k}"): _attr_text(v)
             for k, v in group.attrs.items()}
    return coords, attrs, notes


def read_truth(path: str | os.PathLike) -> xr.Dataset:
    """The ``truth`` group of a recording or interneuron file as a Dataset.

    Dims ``cell`` (index in the file) and ``interneuron_type``. Variables: every
    per-cell array (``cell_type``, ``gain``, ...), ``center_y``/``center_x``
    (pixels) from ``center``, ``wiring (cell, interneuron_type)`` (signed direct
    synaptic weights) and ``silencing_effect (interneuron_type, cell)`` (true
    fractional change of each cell's mean rate when a type is silenced). Attrs:
    ``circuit`` (JSON) and the other string attributes, ``silencing_stimulus``,
    ``source_file``. A file without truth gives an empty Dataset; entries that
    do not follow the layout raise a :class:`TruthLayoutWarning` and are skipped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingDataError(f"{path} does not exist; give a recording or interneuron .h5 file")
    attrs: dict[str, Any] = {"source_file": str(path.resolve())}
    with h5py.File(path, "r") as h5:
        group = h5.get(TRUTH_GROUP)
        if not isinstance(group, h5py.Group):
            return xr.Dataset(attrs=attrs)
        attrs.update({k: _attr_text(v) for k, v in group.attrs.items()})
        n = _n_cells(h5, group)
        data: dict[str, Any] = {}
        for name, item in group.items():
            if isinstance(item, h5py.Group):
                data.update(_read_typed(name, item, n, path, attrs))
                continue
            values = _values(item)
            if name == "center" and values.shape == (n, 2):
                data["center_y"] = ("cell", values[:, 0].astype(float), {"units": "pixel"})
                data["center_x"] = ("cell", values[:, 1].astype(float), {"units": "pixel"})
            elif values.ndim == 1 and values.shape[0] == n:
                data[name] = ("cell", values)
            else:
                _warn(path, f"truth/{name} has shape {values.shape}, not ({n},) per cell")
    coords = {"cell": ("cell", np.arange(n), {"long_name": "cell index in the file"})} if n else {}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _n_cells(h5: h5py.File, group: h5py.Group) -> int:
    """Cells in the file: the responses' first axis, else the length of ``truth/cell_type``."""
    for key in ("train/response/firing_rate_10ms", "test/response/firing_rate_10ms"):
        if isinstance(h5.get(key), h5py.Dataset):
            return int(h5[key].shape[0])
    for name, item in h5.items():
        vm = item.get("detrended_membrane_potential") if isinstance(item, h5py.Group) else None
        if name != TRUTH_GROUP and isinstance(vm, h5py.Dataset) and vm.ndim == 2:
            return int(vm.shape[0])
    for name in ("cell_type", "center"):
        if isinstance(group.get(name), h5py.Dataset):
            return int(group[name].shape[0])
    return 0


def _read_typed(name: str, sub: h5py.Group, n: int, path: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    if name not in _TYPED:
        _warn(path, f"truth/{name} is not part of the truth layout")
        return {}
    key, dims = _TYPED[name]
    if not isinstance(sub.get(key), h5py.Dataset) or not isinstance(sub.get("interneuron_type"), h5py.Dataset):
        _warn(path, f"truth/{name} needs '{key}' and 'interneuron_type' datasets")
        return {}
    values, types = _values(sub[key]).astype(float), _values(sub["interneuron_type"]).astype(str)
    expected = tuple(n if d == "cell" else types.size for d in dims)
    if types.ndim != 1 or values.shape != expected or len(set(types)) != types.size:
        _warn(path, f"truth/{name}/{key} has shape {values.shape}, expected {expected} "
                    f"({' x '.join(dims)}) with distinct interneuron types")
        return {}
    var = "wiring" if name == "wiring" else "silencing_effect"
    long_name = ("signed synaptic weight of each interneuron type onto each cell" if name == "wiring" else
                 "(mean silenced rate - mean intact rate) / mean intact rate")
    for k, v in sub.attrs.items():
        attrs[f"{name}_{k}"] = _attr_text(v)
    da = xr.DataArray(values, dims=dims, coords={"interneuron_type": types}, attrs={"long_name": long_name})
    return {var: da}


def _warn(path: Path, message: str) -> None:
    warnings.warn(f"{path.name}: {message}; ignored (see docs/insilico.md for the truth layout)",
                  TruthLayoutWarning, stacklevel=3)
