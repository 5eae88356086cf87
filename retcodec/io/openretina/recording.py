"""The published Baccus-lab recordings as distributed, read into retcodec's labelled layout.

The distributed files (``ganglion_cell_data/<session>/<stim_type>.h5``, the files
openretina's ``maheswaranathan_2023`` loaders read) hold, per split::

    <split>/stimulus                         (T, H, W)      frames at 100 Hz
    <split>/response/firing_rate_{5,10,20}ms (n_cells, T)   rates in Hz, one value per frame
    <split>/response/binned                  (n_cells, T)   spike counts (optional here)
    test/repeats/cellNN                      (repeats, T)   single trials, or
    test/repeats/firing_rate_{5,10,20}ms     (repeats, n_cells, T)

The ``5/10/20 ms`` in a rate's name is the width of the filter the spike train was
smoothed with; every rate is sampled once per frame, so the time step of the returned
data is the frame interval (recorded as ``dt``) and the width is recorded as
``rate_width_s`` with the variable's name in ``response``. A rate stored with a
different number of samples than the stimulus is refused (retcodec's windows need
one rate per frame).

:func:`load_published_recording` returns the Dataset layout of
:func:`retcodec.io.recordings.load_recording` (``stimulus`` lazily, ``rate``,
``spikes`` where ``binned`` is stored, ``repeats``; coords ``time``, ``cell``, ``y``,
``x``, ``repeat``; the same attrs), so every retcodec stage takes it as it is.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import xarray as xr
from xarray.backends import CachingFileManager
from xarray.core import indexing

from retcodec.defaults import DT
from retcodec.errors import ConfigurationError, MissingDataError, NonFiniteError, RecordingError, ShapeError
from retcodec.io.h5access import H5LazyArray, open_h5, read_values, require_dataset
from retcodec.io.openretina.tree import session_file, tree_root
from retcodec.io.recordings import stimulus_norm_stats, train_stimulus_dtype
from retcodec.io.truth import truth_coordinates
from retcodec.io.validation import check_counts, check_numeric_dtype, check_rates

__all__ = ["load_published_recording", "rate_names", "RATE_PATTERN", "DEFAULT_RESPONSE"]

#: the rates of the distributed files: ``firing_rate_<width>ms``
RATE_PATTERN = re.compile(r"^firing_rate_(\d+(?:\.\d+)?)ms$")
#: the rate read unless another is asked for (the one retcodec's models are fitted to)
DEFAULT_RESPONSE = "firing_rate_10ms"


def rate_names(path: str | os.PathLike, split: str = "test") -> list[str]:
    """The ``firing_rate_*ms`` rates stored for ``split`` of the file, by width."""
    with open_h5(Path(path)) as h5:
        group = h5.get(f"{split}/response")
        names = [n for n in (group.keys() if isinstance(group, h5py.Group) else []) if RATE_PATTERN.match(n)]
    return sorted(names, key=lambda n: float(RATE_PATTERN.match(n).group(1)))


def _resolve(path: str | os.PathLike, session: str | None, stim_type: str | None) -> tuple[Path, str, str]:
    path = Path(path).expanduser()
    if path.is_dir() or tree_root(path) is not None:
        if session is None:
            raise ConfigurationError(f"{str(path)!r} is a dataset folder; name the session (session=)")
        file = session_file(path, session, stim_type)
    elif path.is_file():
        file = path
    else:
        raise MissingDataError(f"{str(path)!r} does not exist")
    return file, session or file.parent.name, stim_type or file.stem


def _width(response: str) -> float:
    match = RATE_PATTERN.match(response)
    if match is None:
        raise ConfigurationError(f"response must be a 'firing_rate_<width>ms' rate such as "
                                 f"{DEFAULT_RESPONSE!r}, got {response!r}")
    return float(match.group(1)) / 1000.0


def _trim_to(n_values: int, n_time: int, name: str, file: Path) -> int:
    """Bins to drop at the end: 0, or 1 for the one-bin-longer white-noise test response."""
    if n_values in (n_time, n_time + 1):
        return n_values - n_time
    raise ShapeError(f"{file}: '{name}' has {n_values} samples but the stimulus {n_time} frames; retcodec "
                     f"needs one rate per frame (the distributed layout)")


def _repeats(h5: h5py.File, split: str, response: str, rows: np.ndarray, n_time: int,
             file: Path) -> tuple[np.ndarray | None, str]:
    """``(repeat, cell, time)`` single trials and the layout they were stored in."""
    group = h5.get(f"{split}/repeats")
    if not isinstance(group, h5py.Group):
        return None, "none"
    if response in group:
        dset = require_dataset(h5, f"{split}/repeats/{response}", file)
        check_numeric_dtype(dset, f"{file}: '{dset.name}'")
        if dset.ndim != 3:
            raise ShapeError(f"{file}: '{dset.name}' must be (repeats, cells, time), got shape {dset.shape}")
        _trim_to(dset.shape[2], n_time, dset.name, file)
        return read_values(dset)[:, rows, :n_time].astype(float), f"{split}/repeats/{response}"
    cells = {int(m.group(1)) - 1: name for name in group
             if (m := re.fullmatch(r"cell(\d+)", name)) and isinstance(group[name], h5py.Dataset)}
    if not cells:
        return None, "none"
    trials = {}
    for i, row in enumerate(rows):
        if int(row) in cells:
            dset = group[cells[int(row)]]
            check_numeric_dtype(dset, f"{file}: '{dset.name}'")
            if dset.ndim != 2:
                raise ShapeError(f"{file}: '{dset.name}' must be (repeats, time), got shape {dset.shape}")
            _trim_to(dset.shape[1], n_time, dset.name, file)
            trials[i] = read_values(dset)[:, :n_time].astype(float)
    if not trials:
        return None, "none"
    out = np.full((max(t.shape[0] for t in trials.values()), rows.size, n_time), np.nan)
    for i, t in trials.items():
        out[:t.shape[0], i] = t
    return out, f"{split}/repeats/cellNN"


def load_published_recording(path: str | os.PathLike, session: str | None = None, stim_type: str | None = None,
                             split: str = "test", response: str = DEFAULT_RESPONSE,
                             cells: Sequence[int] | None = None) -> xr.Dataset:
    """One split of a distributed recording as retcodec's labelled Dataset.

    Parameters
    ----------
    path : a recording file, or the dataset folder holding ``ganglion_cell_data``
        (then ``session`` names the session folder and ``stim_type`` the file stem).
    split : ``"train"`` or ``"test"``.
    response : which ``firing_rate_<width>ms`` to read (:func:`rate_names` lists them).
    cells : cell indices of the file (default: all).

    Returns
    -------
    Dataset as :func:`retcodec.io.recordings.load_recording`: ``stimulus (time, y, x)``
    (stored dtype, lazy), ``rate (cell, time)`` Hz, ``spikes`` (where ``binned`` is
    stored), ``repeats (repeat, cell, time)`` from either layout; attrs add
    ``response``, ``rate_width_s``, ``repeats_layout`` and ``session``.
    """
    if split not in ("train", "test"):
        raise ConfigurationError(f"split must be 'train' or 'test', not {split!r}")
    width = _width(response)
    file, session, stim_type = _resolve(path, session, stim_type)
    manager = CachingFileManager(h5py.File, file, mode="r")
    try:
        with manager.acquire_context() as h5:
            ds = _dataset(h5, manager, file, split, response, width, cells, session, stim_type)
    except BaseException:
        manager.close()
        raise
    ds.set_close(manager.close)
    return ds


def _dataset(h5: h5py.File, manager: CachingFileManager, file: Path, split: str, response: str, width: float,
             cells: Sequence[int] | None, session: str, stim_type: str) -> xr.Dataset:
    stim = require_dataset(h5, f"{split}/stimulus", file)
    if stim.ndim != 3:
        raise ShapeError(f"{file}: '{stim.name}' must be (time, y, x) frames, got shape {stim.shape}")
    check_numeric_dtype(stim, f"{file}: '{stim.name}'")
    name = f"{split}/response/{response}"
    if name not in h5:
        raise RecordingError(f"{file} has no '{name}'; its rates are {rate_names(file, split)}")
    rate_dset = require_dataset(h5, name, file)
    check_numeric_dtype(rate_dset, f"{file}: '{name}'")
    if rate_dset.ndim != 2:
        raise ShapeError(f"{file}: '{name}' must be (cells, time), got shape {rate_dset.shape}")
    n_time, n_cells = stim.shape[0], rate_dset.shape[0]
    trim = _trim_to(rate_dset.shape[1], n_time, name, file)
    rows = np.arange(n_cells) if cells is None else np.asarray(cells, dtype=np.int64)
    if rows.size == 0 or rows.min() < 0 or rows.max() >= n_cells:
        raise ConfigurationError(f"cells {np.asarray(cells).tolist()} are outside the {n_cells} cells of {file}")
    rate = read_values(rate_dset)[rows, :n_time].astype(float)
    if not np.isfinite(rate).all():
        raise NonFiniteError(f"{file}: '{name}' holds NaN or Inf")
    check_rates(rate, rows, f"{file}: '{name}'")
    data: dict[str, Any] = {
        "stimulus": xr.Variable(("time", "y", "x"), indexing.LazilyIndexedArray(
            H5LazyArray(manager, stim.name, stim.shape, stim.dtype)),
            attrs={"long_name": "stimulus frames as stored (z-score with retcodec.windows)"}),
        "rate": (("cell", "time"), rate, {"long_name": f"firing rate ({response}: spikes filtered at "
                                                        f"{width * 1000:g} ms, one value per frame)",
                                          "units": "Hz"})}
    if f"{split}/response/binned" in h5:
        binned = require_dataset(h5, f"{split}/response/binned", file)
        spikes = read_values(binned)[rows, :n_time]
        check_counts(spikes, rows, f"{file}: '{binned.name}'")
        data["spikes"] = (("cell", "time"), spikes, {"long_name": "spike count per frame", "units": "count"})
    repeats, layout = _repeats(h5, split, response, rows, n_time, file)
    dt = float(np.median(np.diff(h5[f"{split}/time"][:2]))) if f"{split}/time" in h5 and \
        h5[f"{split}/time"].shape[0] > 1 else DT
    coords: dict[str, Any] = {"time": ("time", np.arange(n_time) * DT, {"units": "s"}),
                              "cell": ("cell", rows, {"long_name": "cell index in the file"}),
                              "y": ("y", np.arange(stim.shape[1]), {"units": "pixel"}),
                              "x": ("x", np.arange(stim.shape[2]), {"units": "pixel"})}
    if repeats is not None:
        data["repeats"] = (("repeat", "cell", "time"), repeats,
                           {"long_name": f"single-trial responses ({layout})"})
        coords["repeat"] = np.arange(repeats.shape[0])
    truth, truth_attrs, notes = truth_coordinates(h5, n_cells, rows, file)
    coords.update(truth)
    norm = stimulus_norm_stats(file, "train")
    if trim:
        notes.insert(0, f"{name} had {trim} sample more than the stimulus (published white-noise test quirk): "
                        f"last sample trimmed")
    attrs = {"experiment": session, "session": session, "stim_type": stim_type, "split": split,
             "frame_rate": 1.0 / DT, "dt": DT, "source_file": str(file), "norm_mean": norm["mean"],
             "norm_std": norm["std"], "norm_stats_source": "train split stimulus: global mean, population std + 1e-7",
             "n_cells_in_file": int(n_cells), "cells_selection": "all" if cells is None else "given",
             "stimulus_dtype": str(stim.dtype), "norm_stimulus_dtype": train_stimulus_dtype(h5, stim),
             "trimmed_bins": trim, "response": response,
             "rate_width_s": width, "repeats_layout": layout, "file_time_step_s": dt,
             "notes": "; ".join(notes), **truth_attrs}
    return xr.Dataset(data, coords=coords, attrs=attrs)
