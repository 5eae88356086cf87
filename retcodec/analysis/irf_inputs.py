"""The inputs of an IRF request: stimulus windows, cells and window positions, checked.

Shared by :mod:`retcodec.analysis.irf` and :mod:`retcodec.analysis.combinations`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from retcodec.errors import CellMismatchError, ConfigurationError, NonFiniteError, ShapeError
from retcodec.io.validation import check_input_dtype

__all__ = ["WindowSource", "resolve_stimulus", "model_cells", "resolve_cells", "resolve_times", "torch_dtype",
           "window_shape", "read_windows"]


@dataclass
class WindowSource:
    """Sliceable z-scored windows ``(n, T, H, W)`` and their time coordinate."""

    windows: Any                  # supports len() and [positions] -> (n, T, H, W)
    time: np.ndarray
    time_units: str

    def __len__(self) -> int:
        return len(self.time)


def resolve_stimulus(model: nn.Module, stimulus: Any) -> WindowSource:
    """Windows of any accepted input, checked against ``model.img_shape``."""
    if isinstance(stimulus, WindowSource):
        return stimulus
    if isinstance(stimulus, xr.Dataset):
        stimulus = _recording_windows(model, stimulus)
    if isinstance(stimulus, xr.DataArray):
        time = stimulus["time"] if "time" in stimulus.coords else None
        source = _array_source(stimulus.values)
        if time is not None:
            source.time, source.time_units = np.asarray(time.values), time.attrs.get("units", "s")
    elif isinstance(stimulus, (np.ndarray, torch.Tensor)):
        source = _array_source(stimulus)
    elif all(hasattr(stimulus, a) for a in ("__len__", "__getitem__", "time")):
        source = WindowSource(stimulus, np.asarray(stimulus.time), "s")
    else:
        raise ConfigurationError(
            f"stimulus must be an array (n, 40, 50, 50) of z-scored windows, a "
            f"retcodec.io.recordings.Windows or a recording Dataset, got {type(stimulus).__name__}")
    _check_window_shape(model, source)
    return source


def _array_source(array: np.ndarray | torch.Tensor) -> WindowSource:
    check_input_dtype(array, "windows")
    if array.ndim != 4:
        raise ShapeError(f"windows must be (n, frames, y, x), got shape {tuple(array.shape)}")
    return WindowSource(array, np.arange(array.shape[0]), "window index")


def _check_window_shape(model: nn.Module, source: WindowSource) -> None:
    expected = tuple(getattr(model, "img_shape", ()))
    shape = tuple(getattr(source.windows, "shape", ())[1:])
    if expected and shape and shape != expected:
        raise ShapeError(f"windows must be (n, {', '.join(map(str, expected))}) for this model, "
                         f"got (n, {', '.join(map(str, shape))})")


def _recording_windows(model: nn.Module, recording: xr.Dataset) -> Any:
    from retcodec.io.recordings import windows

    meta = getattr(model, "meta", {}) or {}
    if meta.get("norm_stats") is None:
        raise ConfigurationError(
            "model.meta['norm_stats'] is not set: a recording must be z-scored with the training "
            "stimulus statistics; set it to {'mean': m, 'std': s} or pass windows")
    history = tuple(getattr(model, "img_shape", (40,)))[0]
    return windows(recording, norm_stats=meta["norm_stats"], history=history)


def model_cells(model: nn.Module) -> np.ndarray:
    """The model's cell ids (``model.meta['cells']``; output positions when unset or a string)."""
    cells = (getattr(model, "meta", {}) or {}).get("cells")
    if cells is None or isinstance(cells, str):
        return np.arange(int(model.n_cells))
    return np.asarray(cells, dtype=np.int64)


def resolve_cells(model: nn.Module, cells: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(output positions, cell ids)`` of the requested cells (ids of the model's cell coordinate; None: all)."""
    known = model_cells(model)
    if cells is None:
        return np.arange(known.size), known
    wanted = np.atleast_1d(np.asarray(cells))
    if wanted.ndim != 1 or wanted.size == 0 or wanted.dtype.kind not in "iu":
        raise ConfigurationError(f"cells must be a non-empty 1-D list of cell ids (ints), got {cells!r}")
    lookup = {int(c): i for i, c in enumerate(known)}
    unknown = [int(c) for c in wanted if int(c) not in lookup]
    if unknown:
        raise CellMismatchError(f"cells {unknown} are not cells of the model; valid cell ids are "
                                f"{known.tolist()} (model.meta['cells'])")
    if np.unique(wanted).size != wanted.size:
        raise ConfigurationError(f"cells holds duplicates: {wanted.tolist()}")
    positions = np.array([lookup[int(c)] for c in wanted], dtype=np.int64)
    return positions, known[positions]


def resolve_times(times: Any, n: int) -> np.ndarray:
    """Window positions (ints in ``0..n-1``; negative counts from the end)."""
    if times is None:
        return np.arange(n, dtype=np.int64)
    idx = np.atleast_1d(np.asarray(times))
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ConfigurationError(f"times must be a 1-D list of window positions (ints), got {times!r}")
    idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ConfigurationError(f"times {bad.tolist()} are out of range for {n} windows "
                                 f"(valid positions 0..{n - 1})")
    return idx


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch float type of ``dtype`` (float32 or float64 only)."""
    kind = np.dtype(dtype)
    if kind == np.float32:
        return torch.float32
    if kind == np.float64:
        return torch.float64
    raise ConfigurationError(f"dtype must be float32 or float64, got {kind}")

def window_shape(source: WindowSource) -> tuple[int, ...]:
    """The shape ``(T, H, W)`` of one window of ``source``."""
    shape = getattr(source.windows, "shape", None)
    if shape is None:
        shape = np.shape(source.windows[0:1])
    return tuple(int(s) for s in shape[1:])


def read_windows(source: WindowSource, positions: np.ndarray) -> torch.Tensor:
    """The windows at ``positions`` as a tensor ``(len(positions), T, H, W)``, checked finite."""
    windows = source.windows
    if isinstance(windows, torch.Tensor):
        batch = windows[torch.as_tensor(positions)]
    elif isinstance(windows, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(windows[positions]))
    else:
        batch = torch.as_tensor(np.asarray(windows[positions]))
    if not torch.isfinite(batch).all():
        raise NonFiniteError(f"windows at positions {positions[0]}..{positions[-1]} hold NaN or Inf")
    return batch
