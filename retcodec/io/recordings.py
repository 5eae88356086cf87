"""Ganglion-cell recordings in the published layout, as labelled xarray data.

A recording file is ``<root>/<experiment>/<stim_type>.h5``
(``docs/formats.md``) with, for each split ``train`` and ``test``::

    <split>/stimulus                    (T, 50, 50)      frames, e.g. uint8
    <split>/time                        (T,)             one entry per 10 ms bin
    <split>/response/firing_rate_10ms   (n_cells, T)     rate in Hz
    <split>/response/binned             (n_cells, T)     spike counts per bin
    test/repeats/cellNN                 (n_repeats, T)   single trials, NN 1-based
    train/stas/cellNN                   (optional)       spike-triggered averages

Bundled in-silico files add a top-level ``truth`` group (``cell_type``,
``center`` and other per-cell arrays, and a ``circuit`` JSON attribute) that
published readers ignore.

:func:`load_recording` returns an ``xarray.Dataset`` whose ``stimulus`` is read
lazily from the file; :func:`windows` turns it into the model input, the sliding
40-frame windows z-scored with one global mean and std; :func:`write_recording`
writes the layout atomically.

Alignment (``docs/formats.md``): window ``k`` holds frames ``k … k+h-1`` and
predicts the rate of bin ``k+h``, so ``Windows.time[k]`` is the time of bin
``k+h`` and ``rate.sel(time=w.time)`` lines up with the windows.

Value and dtype checks live in :mod:`retcodec.io.validation`, HDF5 access in
:mod:`retcodec.io.h5access`; the names this module used to define are re-exported.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import xarray as xr
from xarray.backends import CachingFileManager
from xarray.core import indexing

from retcodec.errors import (CellMismatchError, ConfigurationError, MissingDataError, NonFiniteError,
                             RecordingError, RecordingValueError, ShapeError, UnreadableFileError,
                             WindowIndexError)
from retcodec.io.h5access import (LAYOUT, H5LazyArray, h5_open_error, open_h5, read_rows, read_values,
                                  require_dataset)
from retcodec.io.published import PUBLISHED_CELLS
from retcodec.io.recording_writer import write_recording
from retcodec.io.paths import name_in_root, user_path
from retcodec.io.truth import truth_coordinates
from retcodec.io.validation import (MAX_RATE_HZ, MAX_STORAGE_RATIO, MIN_STIMULUS_STD, check_counts,
                                    check_history, check_input_dtype, check_model_input, check_numeric_dtype, check_rates,
                                    check_stimulus_values, check_written, parse_norm_stats,
                                    warn_stimulus_scale)

__all__ = ["train_stimulus_dtype", "smallest_exact", "window_batch", "load_recording", "windows", "Windows", "write_recording", "model_windows",
           "stimulus_norm_stats", "PUBLISHED_CELLS", "RecordingShapeError",
           "FRAME_RATE", "DT", "NORM_EPS", "DEFAULT_HISTORY", "MAX_RATE_HZ", "MIN_STIMULUS_STD",
           "h5_open_error", "check_numeric_dtype", "check_rates", "check_history", "MAX_STORAGE_RATIO"]

#: sampling rate of frames and response bins (Hz) and bin width (s)
FRAME_RATE = 100.0
DT = 0.01
#: added to the population std of the train stimulus (published ``loadexpt``)
NORM_EPS = 1e-7
#: frames per model input window (400 ms)
DEFAULT_HISTORY = 40
SPLITS = ("train", "test")


_STIM_BLOCK_PIXELS = 4_000_000   # pixels per block when scanning a stimulus


class RecordingShapeError(RecordingError, ShapeError):
    """A dataset inside a recording file has the wrong number of dimensions or length."""


# --------------------------------------------------------------------------- paths and files
def _resolve_path(path: str | os.PathLike, experiment: str | None,
                  stim_type: str | None) -> tuple[Path, str, str]:
    """``(file, experiment, stim_type)`` for a file path or a root folder.

    Under a root folder, ``experiment`` and ``stim_type`` must be plain names whose file
    lies inside the root (no ``..``, absolute paths or symbolic links out of it).
    """
    path = user_path(path, "recording path")
    if path.is_dir():
        if experiment is None:
            have = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise ConfigurationError(
                f"{path} is a folder: pass experiment= (one of {have}) and stim_type= "
                f"to pick <root>/<experiment>/<stim_type>.h5")
        stim_type = stim_type or "naturalscene"
        name_in_root(path, experiment, "experiment")
        file = name_in_root(path / experiment, stim_type, "stim_type", ".h5")
        if file.exists() and not file.resolve().is_relative_to(path.resolve()):
            raise ConfigurationError(f"recording {file} resolves outside the data root {path.resolve()}; "
                                     f"pass the file's path directly if you mean to read it")
        if not file.is_file():
            folder = path / experiment
            have = sorted(p.stem for p in folder.glob("*.h5")) if folder.is_dir() else []
            raise MissingDataError(
                f"no recording {file} (stimulus types found for {experiment!r}: {have})")
        return file.resolve(), experiment, stim_type
    if not path.is_file():
        if path.exists():
            raise UnreadableFileError(
                f"recording {path} is not a regular file (a FIFO, device or socket); pass the "
                f".h5 file itself")
        raise MissingDataError(
            f"recording file {path} does not exist; pass a file <root>/<experiment>/"
            f"<stim_type>.h5 or the root folder with experiment= and stim_type=")
    return path.resolve(), experiment or path.parent.name, stim_type or path.stem


def _check_ndim(dset: h5py.Dataset, ndim: int, meaning: str, source: Path) -> None:
    if dset.ndim != ndim:
        raise RecordingShapeError(
            f"{source}: '{dset.name.lstrip('/')}' has shape {dset.shape}, expected {ndim}-D "
            f"{meaning}; {LAYOUT}")


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


# --------------------------------------------------------------------------- cells
def _select_cells(cells: Any, n_in_file: int, experiment: str) -> tuple[np.ndarray, str]:
    """Indices of the requested cells and a label of how they were chosen."""
    valid = f"valid cell indices are 0..{n_in_file - 1} ({n_in_file} cells in the file)"
    if cells is None or (isinstance(cells, str) and cells == "all"):
        return np.arange(n_in_file), "all"
    if isinstance(cells, str):
        if cells != "published":
            raise ConfigurationError(f"cells must be None, 'all', 'published' or a list "
                                     f"of ints, not {cells!r}")
        if experiment not in PUBLISHED_CELLS:
            raise CellMismatchError(
                f"no published cell list for experiment {experiment!r} (known: "
                f"{sorted(PUBLISHED_CELLS)}); pass cells='all' or a list of indices")
        idx, how = np.asarray(PUBLISHED_CELLS[experiment]), "published"
    else:
        idx, how = np.asarray(cells), "list"
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ConfigurationError(f"cells must be a 1-D list of ints, got {cells!r}")
        idx = idx.astype(np.int64)
        if idx.size == 0:
            raise CellMismatchError(f"cells is empty; select at least one cell ({valid})")
    bad = idx[(idx < 0) | (idx >= n_in_file)]
    if bad.size:
        raise CellMismatchError(f"cells {bad.tolist()} are out of range: {valid}")
    if np.unique(idx).size != idx.size:
        raise CellMismatchError(f"cells {idx.tolist()} repeat an index; list each cell once")
    return idx, how


# --------------------------------------------------------------------------- norm stats
def _scan_blocks(dset: h5py.Dataset) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, frames)`` blocks of a (T, H, W) dataset, chunk-aligned, a few MB each."""
    frame_px = int(np.prod(dset.shape[1:])) or 1
    step = max(1, _STIM_BLOCK_PIXELS // frame_px)
    if dset.chunks:
        step = max(dset.chunks[0], step - step % dset.chunks[0])
    for start in range(0, dset.shape[0], step):
        yield start, read_values(dset, np.s_[start:start + step])


def _chunked_mean_std(dset: h5py.Dataset, what: str) -> tuple[float, float]:
    """Global mean and population std of a dataset, combining blocks (Chan et al.)."""
    n, mean, m2 = 0, 0.0, 0.0
    for start, block in _scan_blocks(dset):
        block = block.astype(np.float64)
        if not np.isfinite(block).all():
            raise NonFiniteError(
                f"{what} holds NaN or Inf in frames {start}..{start + len(block) - 1}; "
                f"the stimulus must be finite")
        if block.size:
            check_stimulus_values(float(np.abs(block).max()), f"{what} (frames {start}..{start + len(block) - 1})")
        nb, mb = block.size, float(block.mean())
        m2b = float(np.square(block - mb).sum())
        delta, total = mb - mean, n + nb
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
    if n == 0:
        raise RecordingShapeError(f"{what} is empty; cannot compute its mean and std")
    return mean, float(np.sqrt(m2 / n))


@functools.lru_cache(maxsize=32)
def _norm_stats_cached(path: str, mtime_ns: int, size: int, split: str) -> tuple[float, float]:
    with open_h5(Path(path)) as h5:
        dset = require_dataset(h5, f"{split}/stimulus", Path(path))
        _check_ndim(dset, 3, "(time, y, x) frames", Path(path))
        check_numeric_dtype(dset, f"{path}: '{split}/stimulus'")
        check_written(dset, f"{path}: '{split}/stimulus'")
        mean, std = _chunked_mean_std(dset, f"{path}: '{split}/stimulus'")
    if std <= MIN_STIMULUS_STD * max(1.0, abs(mean)):
        raise RecordingValueError(
            f"{path}: '{split}/stimulus' is constant (mean {mean:.6g}, std {std:.3g}); z-scoring with "
            f"its std would blow the model input up to ~1e9. The train stimulus must vary: check "
            f"that the right file was exported, or pass the model's norm_stats explicitly")
    return mean, std + NORM_EPS


def stimulus_norm_stats(path: str | os.PathLike, split: str = "train") -> dict[str, float]:
    """``{'mean', 'std'}`` of a split's stimulus as the published models used them.

    One global scalar mean and the population std + ``1e-7`` over all frames and
    pixels (docs/formats.md), computed block by block (never the whole
    file at once) and cached per ``(path, mtime, size)``.
    """
    path = user_path(path, "recording file").resolve()
    if not path.exists():
        raise MissingDataError(f"recording file {path} does not exist")
    if not path.is_file():
        raise UnreadableFileError(f"{path} is not a regular file (a folder, FIFO, device or socket); "
                                  f"pass the .h5 file itself")
    mean, std = _norm_stats_cached(*_file_key(path), split)
    return {"mean": mean, "std": std}


def _check_finite_stimulus(dset: h5py.Dataset, what: str) -> None:
    if dset.dtype.kind in "iub":
        return
    for start, block in _scan_blocks(dset):
        if not np.isfinite(block).all():
            raise NonFiniteError(f"{what} holds NaN or Inf in frames "
                                 f"{start}..{start + len(block) - 1}")


# --------------------------------------------------------------------------- loading
def _read_repeats(h5: h5py.File, split: str, rows: np.ndarray, n_time: int,
                  source: Path) -> tuple[np.ndarray | None, list[str]]:
    """``(repeat, cell, time)`` single trials from ``<split>/repeats/cellNN`` (NaN where absent)."""
    group = h5.get(f"{split}/repeats")
    if not isinstance(group, h5py.Group):
        return None, []
    trials: dict[int, np.ndarray] = {}
    for i, cell in enumerate(rows):
        name = f"{split}/repeats/cell{cell + 1:02d}"
        if name not in h5:
            continue
        dset = require_dataset(h5, name, source)
        _check_ndim(dset, 2, "(n_repeats, T) single trials", source)
        check_numeric_dtype(dset, f"{source}: '{name}'")
        if dset.shape[1] not in (n_time, n_time + 1):
            raise RecordingShapeError(
                f"{source}: '{name}' has {dset.shape[1]} bins, the stimulus {n_time}")
        trials[i] = read_values(dset)[:, :n_time].astype(float)
        if not np.isfinite(trials[i]).all():
            raise NonFiniteError(f"{source}: '{name}' holds NaN or Inf; single trials must be finite")
    if not trials:
        return None, []
    n_rep = max(t.shape[0] for t in trials.values())
    out = np.full((n_rep, rows.size, n_time), np.nan)
    for i, t in trials.items():
        out[:t.shape[0], i] = t
    notes = []
    missing = [int(c) for i, c in enumerate(rows) if i not in trials]
    if missing:
        notes.append(f"no repeats stored for cells {missing}: NaN")
    if len({t.shape[0] for t in trials.values()}) > 1:
        notes.append("cells have different numbers of repeats: padded with NaN")
    return out, notes


def _response_length(n_resp: int, n_time: int, name: str, source: Path) -> int:
    """Bins to trim from a response: 0, or 1 for the one-bin-longer white-noise test response."""
    if n_resp == n_time:
        return 0
    if n_resp == n_time + 1:
        return 1
    raise RecordingShapeError(
        f"{source}: '{name}' has {n_resp} time bins but the stimulus has {n_time} frames; "
        f"only a response one bin longer (the published white-noise test quirk) is "
        f"accepted and trimmed")


def load_recording(path: str | os.PathLike, split: str = "test", cells: Any = None,
                   experiment: str | None = None, stim_type: str | None = None,
                   *, validate: bool = False) -> xr.Dataset:
    """Load one split of a recording as a labelled Dataset, the stimulus lazily.

    Parameters
    ----------
    path : file ``<root>/<experiment>/<stim_type>.h5`` or the ``root`` folder
        (then ``experiment`` is required; ``stim_type`` defaults to
        ``"naturalscene"``). For a file, experiment and stim type default to the
        folder name and the file stem.
    split : ``"train"`` or ``"test"``.
    cells : ``None`` / ``"all"`` (every cell of the file), ``"published"`` (the
        experiment's :data:`PUBLISHED_CELLS`) or a list of cell indices.
    validate : also scan the split's stimulus (block by block) for NaN/Inf now.
        Without it, a non-finite float stimulus is caught by :class:`Windows`
        on the slices it reads, before anything reaches a model. The train
        stimulus is always scanned once for its norm stats.

    Returns
    -------
    Dataset with ``stimulus (time, y, x)`` (stored dtype, lazy: indexing reads
    only the selected frames), ``rate (cell, time)`` in Hz, ``spikes (cell,
    time)`` counts per bin, ``repeats (repeat, cell, time)`` where stored;
    coords ``time`` (s, bin k at ``k * 0.01``), ``cell`` (indices in the
    file), ``y``, ``x`` (pixels), plus per-cell ``truth`` arrays
    (``cell_type``, ``center_y``, ``center_x``, ...) for in-silico files.
    Attrs: ``experiment, stim_type, split, frame_rate, dt, source_file,
    norm_mean, norm_std`` (train stimulus), ``trimmed_bins``, ``notes``.

    The file stays open read-only (in xarray's file cache) for the lazy
    stimulus; ``ds.close()`` (or ``with load_recording(...) as ds:``) closes it,
    and a later read of ``ds.stimulus`` reopens it.
    """
    if split not in SPLITS:
        raise ConfigurationError(f"split must be 'train' or 'test', not {split!r}")
    file, experiment, stim_type = _resolve_path(path, experiment, stim_type)
    open_h5(file).close()   # a clear error for a corrupt file before the lazy manager
    manager = CachingFileManager(h5py.File, file, mode="r")
    try:
        with manager.acquire_context() as h5:
            ds = _build_dataset(h5, manager, file, split, cells, experiment, stim_type)
        if validate:
            with manager.acquire_context() as h5:
                _check_finite_stimulus(h5[f"{split}/stimulus"], f"{file}: '{split}/stimulus'")
    except BaseException:
        manager.close()
        raise
    ds.set_close(manager.close)
    return ds


def _build_dataset(h5: h5py.File, manager: CachingFileManager, file: Path, split: str,
                   cells: Any, experiment: str, stim_type: str) -> xr.Dataset:
    stim = require_dataset(h5, f"{split}/stimulus", file)
    _check_ndim(stim, 3, "(time, y, x) frames", file)
    check_numeric_dtype(stim, f"{file}: '{split}/stimulus'")
    rate_dset = require_dataset(h5, f"{split}/response/firing_rate_10ms", file)
    _check_ndim(rate_dset, 2, "(n_cells, T) firing rates", file)
    check_numeric_dtype(rate_dset, f"{file}: '{rate_dset.name}'")
    binned = require_dataset(h5, f"{split}/response/binned", file)
    check_numeric_dtype(binned, f"{file}: '{binned.name}'")
    if binned.shape != rate_dset.shape:
        raise RecordingShapeError(f"{file}: '{split}/response/binned' has shape {binned.shape}, "
                                  f"firing_rate_10ms {rate_dset.shape}; they must match")
    time_dset = require_dataset(h5, f"{split}/time", file)
    n_time = stim.shape[0]
    trim = _response_length(rate_dset.shape[1], n_time, rate_dset.name, file)
    if time_dset.shape not in ((n_time,), (rate_dset.shape[1],)):
        raise RecordingShapeError(f"{file}: '{split}/time' has shape {time_dset.shape}, the "
                                  f"stimulus {n_time} frames")
    rows, how = _select_cells(cells, rate_dset.shape[0], experiment)
    rate = read_rows(rate_dset, rows)[:, :n_time].astype(float, copy=False)
    if not np.isfinite(rate).all():
        bad = rows[~np.isfinite(rate).all(axis=1)].tolist()
        raise NonFiniteError(f"{file}: '{rate_dset.name}' holds NaN or Inf for cells {bad}")
    check_rates(rate, rows, f"{file}: '{rate_dset.name}'")
    spikes = read_rows(binned, rows)[:, :n_time]
    check_counts(spikes, rows, f"{file}: '{binned.name}'")
    repeats, notes = _read_repeats(h5, split, rows, n_time, file)
    if repeats is not None:
        check_rates(repeats, rows, f"{file}: '{split}/repeats'")
    truth_coords, truth_attrs, truth_notes = truth_coordinates(h5, rate_dset.shape[0], rows, file)
    notes += truth_notes
    if trim:
        notes.insert(0, f"response had {trim} bin more than the stimulus (published "
                        f"white-noise test quirk): last bin trimmed from rate/spikes/repeats")
    norm = stimulus_norm_stats(file, "train")

    stimulus = xr.Variable(("time", "y", "x"), indexing.LazilyIndexedArray(
        H5LazyArray(manager, stim.name, stim.shape, stim.dtype)),
        attrs={"long_name": "stimulus frames as stored (z-score with retcodec.windows)"})
    data = {
        "stimulus": stimulus,
        "rate": (("cell", "time"), rate, {"long_name": "firing rate in 10 ms bins", "units": "Hz"}),
        "spikes": (("cell", "time"), spikes, {"long_name": "spike count per 10 ms bin",
                                              "units": "count"}),
    }
    if repeats is not None:
        data["repeats"] = (("repeat", "cell", "time"), repeats,
                           {"long_name": "single-trial responses per 10 ms bin"})
    coords = {"time": ("time", np.arange(n_time) * DT, {"units": "s"}),
              "cell": ("cell", rows.astype(np.int64), {"long_name": "cell index in the file"}),
              "y": ("y", np.arange(stim.shape[1]), {"units": "pixel"}),
              "x": ("x", np.arange(stim.shape[2]), {"units": "pixel"}),
              **truth_coords}
    if repeats is not None:
        coords["repeat"] = np.arange(repeats.shape[0])
    attrs = {"experiment": experiment, "stim_type": stim_type, "split": split,
             "frame_rate": FRAME_RATE, "dt": DT, "source_file": str(file),
             "norm_mean": norm["mean"], "norm_std": norm["std"],
             "norm_stats_source": "train split stimulus: global mean, population std + 1e-7",
             "n_cells_in_file": int(rate_dset.shape[0]), "cells_selection": how,
             "stimulus_dtype": str(stim.dtype), "trimmed_bins": trim,
             "norm_stimulus_dtype": train_stimulus_dtype(h5, stim),
             "notes": "; ".join(notes), **truth_attrs}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def train_stimulus_dtype(h5: h5py.File, fallback: h5py.Dataset) -> str:
    """The dtype of the train split's stimulus (the one the norm stats come from)."""
    train = h5.get("train/stimulus")
    return str(train.dtype if isinstance(train, h5py.Dataset) else fallback.dtype)


# --------------------------------------------------------------------------- windows
def smallest_exact(values: np.ndarray) -> np.ndarray:
    """``values`` as int8 or float16 when that type holds every value exactly, else unchanged.

    Windows convert frames to float32 as they read them, so a stimulus of a few
    levels (e.g. -1/0/1 boxes) can be held in a quarter of the memory.
    """
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return values
    flat = values.reshape(-1)
    block = 1 << 20                                   # compare a block at a time: no full-size temporaries
    for dtype in (np.int8, np.float16):
        candidate = np.empty(flat.shape, dtype)
        exact = True
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, flat.size, block):
                part = flat[start:start + block]
                candidate[start:start + block] = part
                if not np.array_equal(candidate[start:start + block].astype(values.dtype), part):
                    exact = False
                    break
        if exact:
            return candidate.reshape(values.shape)
    return values


def window_batch(windows: Any, key: slice) -> Any:
    """Windows ``key`` as a float32 torch tensor ``(n, T, H, W)``.

    From a :class:`Windows` the tensor is channels-last (faster convolutions on
    CPU) and already checked (the reader refuses NaN or Inf frames); from an
    array or tensor, NaN or Inf raise :class:`NonFiniteError` here.
    """
    import torch

    if isinstance(windows, Windows):
        return torch.from_numpy(windows.channels_last(key)).permute(0, 3, 1, 2)
    check_input_dtype(windows, "stimulus windows")
    batch = windows[key] if isinstance(windows, torch.Tensor) else torch.as_tensor(np.asarray(windows[key]))
    batch = batch.to(dtype=torch.float32)
    check_model_input(batch.cpu().numpy(), f"stimulus windows {key.start}..{key.stop - 1}")
    return batch


class Windows:
    """The model input as a lazy sequence of z-scored stimulus windows.

    ``w[k]`` is a float32 array ``(history, H, W)`` holding frames
    ``k … k+history-1`` as ``(s - mean) / std``; ``w[a:b]`` and ``w[indices]``
    give ``(n, history, H, W)``. Only the frames a selection needs are read.
    ``w.time[k]`` is the time of bin ``k + history``, the bin window ``k``
    predicts. Build with :func:`windows`.

    Attributes
    ----------
    time : (n_windows,) seconds.
    cells : cell indices of the recording (``None`` for a bare stimulus).
    norm_stats : ``{'mean', 'std'}`` used.
    history : frames per window.
    recording : the Dataset it came from, or ``None``.
    """

    def __init__(self, stimulus: xr.Variable | np.ndarray, time: np.ndarray,
                 norm_stats: Mapping[str, float], history: int,
                 recording: xr.Dataset | None = None) -> None:
        self._stimulus = stimulus
        self.history = int(history)
        self.norm_stats = dict(norm_stats)
        self.recording = recording
        self.time = np.asarray(time)[self.history:]
        self.cells = (None if recording is None or "cell" not in recording.coords
                      else recording["cell"].values)
        #: where the norm stats come from, and that stimulus's dtype (named in the scale warning)
        self.scale_reference: tuple[str, Any] = ("the norm_stats given (e.g. the checkpoint's)", None)
        self.scale_what = "the stimulus"
        self._scale_checked = False

    # sequence protocol ---------------------------------------------------
    def __len__(self) -> int:
        return self.time.size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n_windows, history, H, W)``."""
        return (len(self), self.history, *self._stimulus.shape[1:])

    def __repr__(self) -> str:
        return (f"<Windows n={len(self)} history={self.history} frame={self.shape[2:]} "
                f"mean={self.norm_stats['mean']:.4g} std={self.norm_stats['std']:.4g}>")

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            k = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= k < len(self):
                raise WindowIndexError(f"window {key} out of range for {len(self)} windows")
            return self._gather(np.array([k]))[0]
        if isinstance(key, slice):
            return self._gather(np.arange(len(self))[key])
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise WindowIndexError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise WindowIndexError(f"windows are indexed by an int, a slice or 1-D ints, not {key!r}")
        idx = np.where(idx < 0, idx + len(self), idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise WindowIndexError(f"window indices out of range for {len(self)} windows")
        return self._gather(idx)

    def batches(self, batch_size: int = 500) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(slice, windows)`` over all windows in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, min(start + batch_size, len(self)))
            yield sl, self[sl]

    def channels_last(self, key: slice | np.ndarray) -> np.ndarray:
        """Windows ``key`` (a slice or 1-D ints) as ``(n, H, W, history)``: the memory order of a
        channels-last ``(n, history, H, W)`` tensor (``torch.from_numpy(a).permute(0, 3, 1, 2)``)."""
        idx = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return self._gather(idx, channels_last=True)

    def rate(self) -> xr.DataArray:
        """The recording's rate ``(time, cell)`` at :attr:`time`: row k pairs with window k."""
        if self.recording is None or "rate" not in self.recording:
            raise ConfigurationError("these windows have no recording with a 'rate' to align")
        rate = self.recording["rate"].isel(time=slice(self.history, None))
        return rate.transpose("time", "cell")

    # reading -------------------------------------------------------------
    def _frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as stored (reads only those from disk)."""
        block = self._stimulus[start:stop]
        return np.asarray(block.values if isinstance(block, xr.Variable) else block)

    def _gather(self, starts: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """Windows starting at ``starts``: read merged frame runs once, then index."""
        h = self.history
        if starts.size == 0:
            shape = self.shape[1:]
            return np.empty((0, *(shape[1:] + shape[:1] if channels_last else shape)), dtype=np.float32)
        first = np.unique(starts)
        # runs of frames [a, b) covering every window, overlapping windows merged
        breaks = np.flatnonzero(first[1:] > first[:-1] + h) + 1
        run_a = first[np.r_[0, breaks]]
        run_b = first[np.r_[breaks - 1, first.size - 1]] + h
        offsets = np.r_[0, np.cumsum(run_b - run_a)[:-1]]
        frames = np.concatenate([self._frames(a, b) for a, b in zip(run_a, run_b)])
        frames = self._normalize(frames, run_a, run_b)
        run = np.searchsorted(run_a, starts, side="right") - 1
        pos = offsets[run] + starts - run_a[run]
        if channels_last:
            by_pixel = np.ascontiguousarray(frames.transpose(1, 2, 0))          # (H, W, frames)
            runs = sliding_window_view(by_pixel, h, axis=2).transpose(2, 0, 1, 3)  # (start, H, W, h)
            return np.ascontiguousarray(runs[pos])
        return frames[pos[:, None] + np.arange(h)]

    def _normalize(self, frames: np.ndarray, run_a: np.ndarray, run_b: np.ndarray) -> np.ndarray:
        if not self._scale_checked:        # once, on the first frames read: the units of the stimulus
            self._scale_checked = True
            reference, reference_dtype = self.scale_reference
            warn_stimulus_scale(frames, self.norm_stats, self.scale_what, reference, dtype=frames.dtype,
                                reference_dtype=reference_dtype)
        if frames.dtype.kind == "f" and frames.size:
            with np.errstate(invalid="ignore"):
                peak = float(np.nanmax(np.abs(frames))) if not np.isnan(frames).all() else 0.0
            if np.isfinite(peak):
                check_stimulus_values(peak, f"{self.scale_what} (frames {', '.join(f'{a}..{b - 1}' for a, b in zip(run_a, run_b))})")
        with np.errstate(over="ignore", invalid="ignore"):
            out = (frames.astype(np.float32) - np.float32(self.norm_stats["mean"])) \
                / np.float32(self.norm_stats["std"])
        runs = ", ".join(f"{a}..{b - 1}" for a, b in zip(run_a, run_b))
        check_model_input(out, f"the stimulus among frames {runs}")
        return out


def _stimulus_and_time(recording: Any) -> tuple[xr.Variable | np.ndarray, np.ndarray, dict]:
    """The (time, y, x) stimulus, its time coordinate (s) and attrs of any accepted input."""
    if isinstance(recording, xr.Dataset):
        if "stimulus" not in recording:
            raise RecordingError(f"the Dataset has no 'stimulus' variable (it has "
                                 f"{sorted(recording.data_vars)}); load it with load_recording")
        recording = recording["stimulus"]
    if isinstance(recording, xr.DataArray):
        if set(recording.dims) == {"time", "y", "x"}:
            recording = recording.transpose("time", "y", "x")
        if recording.ndim != 3:
            raise ShapeError(f"stimulus must be (time, y, x), got dims {recording.dims}")
        dim = recording.dims[0]
        time = (recording[dim].values if dim in recording.coords
                else np.arange(recording.shape[0]) * DT)
        return recording.variable, time, dict(recording.attrs)
    if hasattr(recording, "detach"):                       # a torch tensor
        recording = recording.detach().cpu().numpy()
    if not isinstance(recording, (np.ndarray, h5py.Dataset)):
        recording = np.asarray(recording)
    if recording.ndim != 3:
        raise ShapeError(f"stimulus must be (time, y, x), got shape {recording.shape}")
    return recording, np.arange(recording.shape[0]) * DT, {}


def windows(recording: xr.Dataset | xr.DataArray | np.ndarray, norm_stats: Any = None,
            history: int = DEFAULT_HISTORY) -> Windows:
    """Sliding ``history``-frame windows of a recording's stimulus, z-scored, lazily.

    Parameters
    ----------
    recording : Dataset from :func:`load_recording` (or an interneuron node), a
        ``(time, y, x)`` DataArray, or a bare ``(T, H, W)`` array.
    norm_stats : the model's ``{'mean', 'std'}`` or ``[mean, std]``; default the
        train-split stats in the recording's ``norm_mean``/``norm_std`` attrs.
    history : frames per window (the model's ``img_shape[0]``).

    Returns
    -------
    :class:`Windows` of length ``T - history``; window ``k`` = frames
    ``k … k+history-1``, ``(s - mean) / std`` in float32, aligned with bin
    ``k + history`` (``w.time``).
    """
    history = check_history(history)
    given = norm_stats
    if isinstance(recording, xr.DataTree):
        recording = recording.to_dataset()
    stimulus, time, attrs = _stimulus_and_time(recording)
    check_numeric_dtype(stimulus, "the stimulus")
    source = recording if isinstance(recording, xr.Dataset) else None
    if norm_stats is None:
        attrs = source.attrs if source is not None else attrs
        if "norm_mean" not in attrs or "norm_std" not in attrs:
            raise ConfigurationError(
                "no norm_stats given and the input carries no norm_mean/norm_std attrs; "
                "pass the model's norm_stats (e.g. model.meta['norm_stats'])")
        norm_stats = {"mean": attrs["norm_mean"], "std": attrs["norm_std"]}
    if stimulus.shape[0] <= history:
        raise ShapeError(f"the stimulus has {stimulus.shape[0]} frames; windows of "
                         f"{history} frames need at least {history + 1}")
    w = Windows(stimulus, time, parse_norm_stats(norm_stats), history, source)
    attrs = source.attrs if source is not None else attrs
    if given is None and "norm_mean" in attrs:
        w.scale_reference = (f"the train split of {attrs.get('source_file', 'the recording')}",
                             attrs.get("norm_stimulus_dtype"))
    w.scale_what = " ".join(["the", str(attrs.get("split", "")), "stimulus"]).replace("  ", " ")
    return w


def model_windows(recording: xr.Dataset, model: Any, max_windows: int | None = None) -> "Windows":
    """The windows ``model`` reads from ``recording``: its history length and its norm stats.

    ``max_windows`` keeps the first N windows only (the recording is cut before
    windowing, so nothing more is read).
    """
    history = int(model.img_shape[0]) if hasattr(model, "img_shape") else DEFAULT_HISTORY
    if max_windows is not None:
        if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
            raise ConfigurationError(f"max_windows must be an integer >= 1, got {max_windows!r}")
        recording = recording.isel(time=slice(0, max_windows + history))
    meta = getattr(model, "meta", {}) or {}
    return windows(recording, norm_stats=meta.get("norm_stats"), history=history)
