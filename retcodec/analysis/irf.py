"""Instantaneous receptive fields (IRF) and their rank-1 space-time filters (``docs/method.md`` §7).

The IRF of cell ``k`` at window ``t`` is the gradient of the model rate with
respect to the stimulus window, ``IRF_k(t) = ∂y_k / ∂x (x_t)``: a
``(lag, y, x)`` sensitivity in Hz per z-scored stimulus unit.

Lag convention
--------------
``lag`` is the time before the predicted bin, in seconds, stored **ascending**
(``0.01, 0.02, …, 0.40``). Window frame ``j`` (``0`` = oldest, ``39`` = most
recent) has lag ``(40 − j) · 0.01``, so ``irf.isel(lag=i)`` is window frame
``39 − i``: the frames are reversed relative to the model input. This matches
the ``lag`` coordinate of the rest of retcodec and keeps ``lag`` a sorted index
(``irf.sel(lag=slice(0, 0.1))`` is the most recent 100 ms).

Computation
-----------
When the model's first module is the affine layer ``conv0`` (a convolution, or
a stack of bias-free 3x3 convolutions as in the published models), ``h₀ = W x +
b`` and ``∂y/∂x = Wᵀ ∂y/∂h₀``. Per batch of windows ``conv0`` runs once, one
backward pass to ``h₀`` serves all requested cells at once
(``torch.autograd.grad(..., is_grads_batched=True)`` over one-hot output
gradients) and the first layer's transpose maps the ``(B·n_cells, C, h, w)``
gradients to the input in one call. The transpose is
``conv_transpose2d`` with the collapsed ``k x k`` kernel or, when cheaper, the
stacked 3x3 kernels applied in reverse order (the same linear map; see
:func:`first_layer_transpose`). As a ganglion cell reads one location of its
map, its gradient on ``h₀`` vanishes outside its receptive field: the
transpose runs on the smallest box holding every cell's non-zero gradients
(exact, since the transpose of a valid convolution commutes with shifts).
Other models take the plain path: the batched backward pass goes all the way
to the input. No parameter gradients are
computed (the model is copied with ``requires_grad_(False)``).

Memory
------
The full result is ``n_times × n_cells × 40 × 50 × 50`` values (400 kB per
window and cell in float32). :func:`irf` refuses results above ``max_bytes``
unless ``out=`` names a netCDF file, written batch by batch and renamed into
place when complete; :func:`iter_irf` yields one batch at a time for reductions
on the fly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from retcodec.analysis.irf_gradients import TRANSPOSE_METHODS, InputGradients, affine_first_layer
from retcodec.analysis.irf_inputs import (WindowSource, read_windows, resolve_cells, resolve_stimulus, resolve_times,
                                          torch_dtype, window_shape)
# defined in irf_inputs, irf_gradients and rank1 since the split, re-exported where they were:
from retcodec.analysis.irf_gradients import first_layer_transpose  # noqa: F401
from retcodec.analysis.irf_inputs import model_cells  # noqa: F401
from retcodec.analysis.rank1 import rank1, rank1_matrices  # noqa: F401
from retcodec.defaults import DT
from retcodec.errors import ConfigurationError, ShapeError
from retcodec.io.provenance import provenance_attrs
from retcodec._version import __version__
from retcodec.io.storage import atomic_path, check_output_file
from retcodec.engine.probe import check_module

__all__ = ["irf", "iter_irf", "iter_paired_irf", "rank1", "first_layer_transpose", "IRF_UNITS", "DT",
           "DEFAULT_MAX_BYTES", "DEFAULT_BATCH_SIZE", "DEFAULT_PAIRED_BATCH_SIZE"]

IRF_UNITS = "Hz per z-scored stimulus unit"
#: results larger than this need ``out=`` (bytes)
DEFAULT_MAX_BYTES = 1 << 30
#: windows per batch (a batch holds ``batch_size × n_cells`` input-sized gradients)
DEFAULT_BATCH_SIZE = 16
#: (window, cell) pairs per batch of :func:`iter_paired_irf` (one input-sized gradient each)
DEFAULT_PAIRED_BATCH_SIZE = 32
_LAG_DOC = ("time before the predicted bin; lag index i is window frame (n_frames - 1 - i), "
            "i.e. frames reversed relative to the model input")


# =========================================================================== plan and batches
@dataclass
class _Plan:
    source: WindowSource
    times: np.ndarray             # window positions
    positions: np.ndarray         # model output positions
    cells: np.ndarray             # cell ids
    batch_size: int
    device: Any
    dtype: np.dtype
    transpose: str
    model: nn.Module
    window_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.times.size, self.cells.size, *self.window_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _plan(model: nn.Module, stimulus: Any, cells: Any, times: Any, batch_size: int, device: Any,
          dtype: Any, transpose: str = "auto") -> _Plan:
    check_module(model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if transpose not in TRANSPOSE_METHODS:
        raise ConfigurationError(f"transpose must be one of {TRANSPOSE_METHODS}, got {transpose!r}")
    torch_dtype(dtype)
    source = resolve_stimulus(model, stimulus)
    if len(source) == 0:
        raise ShapeError("the stimulus holds no windows")
    positions, ids = resolve_cells(model, cells)
    return _Plan(source, resolve_times(times, len(source)), positions, ids, int(batch_size),
                 device, np.dtype(dtype), transpose, model, window_shape(source))



def _batches(plan: _Plan, progress: bool = False,
             into: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """``(slice into plan.times, IRF block (b, n_cells, lag, y, x) with ascending lag)``.

    With ``into`` (the full result array, zero-filled), each block is written
    into its slice (on the CPU directly, without an intermediate copy) and that
    slice is yielded.
    """
    from tqdm.auto import tqdm

    engine = InputGradients(plan.model, plan.positions, plan.device, torch_dtype(plan.dtype),
                        plan.transpose)
    starts = range(0, plan.times.size, plan.batch_size)
    for start in tqdm(starts, disable=not progress, desc="irf", unit="batch"):
        sl = slice(start, min(start + plan.batch_size, plan.times.size))
        target = None if into is None else into[sl]
        direct = target is not None and engine.device.type == "cpu"
        grads = engine(read_windows(plan.source, plan.times[sl]),
                       out=torch.from_numpy(target) if direct else None, out_is_zero=direct)
        block = grads.cpu().numpy()
        if target is not None and not np.shares_memory(block, target):
            target[...] = block
        yield sl, target if target is not None else block


def _coords(plan: _Plan, sl: slice = slice(None)) -> dict[str, Any]:
    n_frames, height, width = plan.window_shape
    times = plan.times[sl]
    return {
        "time": ("time", plan.source.time[times], {"units": plan.source.time_units}),
        "window": ("time", times, {"long_name": "window position in the stimulus"}),
        "cell": ("cell", plan.cells),
        "lag": ("lag", np.arange(1, n_frames + 1) * DT, {"units": "s", "long_name": _LAG_DOC}),
        "y": ("y", np.arange(height), {"units": "stimulus pixels"}),
        "x": ("x", np.arange(width), {"units": "stimulus pixels"}),
    }


def _attrs(plan: _Plan) -> dict[str, Any]:
    meta = getattr(plan.model, "meta", {}) or {}
    provenance = meta.get("provenance") or {}
    fast = affine_first_layer(plan.model) is not None
    params = {"batch_size": plan.batch_size, "device": str(plan.device), "dtype": str(plan.dtype),
              "transpose": plan.transpose if fast else "none"}
    return {"units": IRF_UNITS, "long_name": "instantaneous receptive field d rate / d stimulus",
            "computation": ("first layer once per window, batched backward to its output, "
                            "first-layer transpose to the input" if fast
                            else "batched backward to the input"),
            **provenance_attrs(params, method="irf", model=provenance.get("path") or "in memory",
                               model_sha256=provenance.get("sha256") or "unknown")}


def _block_dataarray(plan: _Plan, sl: slice, block: np.ndarray, attrs: dict[str, Any]) -> xr.DataArray:
    return xr.DataArray(block, dims=("time", "cell", "lag", "y", "x"), coords=_coords(plan, sl),
                        name="irf", attrs=attrs)


# =========================================================================== public API
def iter_irf(model: nn.Module, stimulus: Any, cells: Sequence[int] | None = None,
             times: Sequence[int] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
             device: str | torch.device = "cpu", dtype: Any = np.float32,
             transpose: str = "auto", progress: bool = False) -> Iterator[xr.DataArray]:
    """Yield the IRFs of :func:`irf` one batch of windows at a time.

    Each item is a ``DataArray (time, cell, lag, y, x)`` of at most
    ``batch_size`` windows, in the order of ``times``; use it to reduce IRFs
    (averages, rank-1 filters) without holding them all.
    """
    plan = _plan(model, stimulus, cells, times, batch_size, device, dtype, transpose)
    attrs = _attrs(plan)
    for sl, block in _batches(plan, progress):
        yield _block_dataarray(plan, sl, block, attrs)


def iter_paired_irf(model: nn.Module, stimulus: Any, times: Sequence[int], cells: Sequence[int], *,
                    batch_size: int = DEFAULT_PAIRED_BATCH_SIZE, device: str | torch.device = "cpu",
                    dtype: Any = np.float32, transpose: str = "auto",
                    progress: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
    """IRFs of one cell per window: ``(times[i], cells[i])`` pairs, a batch at a time.

    Yields ``(slice into the pairs, block (b, lag, y, x))`` with ascending lag,
    the same values :func:`irf` gives for that window and cell, at the cost of
    one IRF per pair instead of one per window and cell.
    """
    times, cells = np.asarray(times, dtype=np.int64), np.asarray(cells)
    if times.shape != cells.shape or times.ndim != 1:
        raise ShapeError(f"times and cells must be two 1-d sequences of one length, got shapes "
                         f"{times.shape} and {cells.shape}")
    plan = _plan(model, stimulus, np.unique(cells), times, batch_size, device, dtype, transpose)
    index = np.searchsorted(plan.cells, cells)
    engine = InputGradients(plan.model, plan.positions, plan.device, torch_dtype(plan.dtype), plan.transpose)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, times.size, plan.batch_size), disable=not progress, desc="irf", unit="batch"):
        sl = slice(start, min(start + plan.batch_size, times.size))
        yield sl, engine.paired(read_windows(plan.source, plan.times[sl]), index[sl]).cpu().numpy()


def irf(model: nn.Module, stimulus: Any, cells: Sequence[int] | None = None,
        times: Sequence[int] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device = "cpu", out: str | Path | None = None, dtype: Any = np.float32,
        max_bytes: int = DEFAULT_MAX_BYTES, transpose: str = "auto",
        progress: bool = False) -> xr.DataArray:
    """Instantaneous receptive fields ``∂ rate_k / ∂ stimulus`` at stimulus windows.

    Parameters
    ----------
    model : RetinaCNN
        Copied, put in eval mode; the caller's model is not modified.
    stimulus : array or tensor ``(n, 40, 50, 50)`` of z-scored windows,
        :class:`retcodec.io.recordings.Windows`, or a recording Dataset (windowed
        with ``model.meta['norm_stats']``).
    cells : cell ids of the model's ``cell`` coordinate (``model.meta['cells']``;
        default all, in model order).
    times : window positions (ints, default all windows).
    batch_size : windows per batch; a batch holds ``batch_size × n_cells``
        input-sized gradients (400 kB each in float32).
    device, dtype : where and in which float type (float32/float64) to compute.
    out : netCDF file written batch by batch (h5netcdf) and renamed into place
        when complete; the result is then opened lazily from it.
    max_bytes : without ``out``, results larger than this raise
        :class:`~retcodec.errors.ConfigurationError`.
    transpose : how the first layer's transpose is applied (see
        :func:`first_layer_transpose`).
    progress : tqdm bar over batches.

    Returns
    -------
    xarray.DataArray ``irf (time, cell, lag, y, x)``
        In Hz per z-scored stimulus unit. ``time``: recording time of the
        predicted bin (s) for recordings and Windows, the window index for
        arrays; ``window (time)``: the window positions; ``lag``: seconds before
        the predicted bin, ascending (frames reversed, see the module doc);
        ``y``, ``x``: stimulus pixels.

    Raises
    ------
    CellMismatchError : a requested cell is not a model cell (the valid ids are listed).
    ConfigurationError : over ``max_bytes`` without ``out``; bad ``times``, ``batch_size``, ``dtype``.
    ShapeError, NonFiniteError : windows of the wrong shape or with NaN/Inf.
    """
    if out is not None:             # before any work; never replaces a file retcodec did not write
        out = check_output_file(out, "out", own_only=True)
    plan = _plan(model, stimulus, cells, times, batch_size, device, dtype, transpose)
    if out is not None:
        return _write_irf(plan, Path(out), progress)
    if plan.nbytes > max_bytes:
        raise ConfigurationError(
            f"the IRFs of {plan.times.size} windows x {plan.cells.size} cells would take "
            f"{plan.nbytes / 2**30:.2f} GiB (max_bytes={max_bytes / 2**30:.2f} GiB): select windows "
            f"with times=, write them to a file with out='irf.nc', reduce them batch by batch "
            f"with iter_irf, or raise max_bytes")
    data = np.zeros(plan.shape, dtype=plan.dtype)       # pages are zeroed lazily by the OS
    for _ in _batches(plan, progress, into=data):
        pass
    return _block_dataarray(plan, slice(None), data, _attrs(plan))


# =========================================================================== file output
def _write_irf(plan: _Plan, path: Path, progress: bool) -> xr.DataArray:
    """Stream the IRFs into ``path`` (netCDF4/HDF5) and open it lazily."""
    import h5netcdf

    dims = ("time", "cell", "lag", "y", "x")
    coords = _coords(plan)
    with atomic_path(path) as tmp:
        with h5netcdf.File(tmp, "w") as nc:
            nc.attrs["retcodec_version"] = __version__
            nc.dimensions = dict(zip(dims, plan.shape))
            for name, (dim, values, *attrs) in coords.items():
                var = nc.create_variable(name, (dim,), data=np.asarray(values))
                var.attrs.update(attrs[0] if attrs else {})
            chunks = (1, 1, *plan.window_shape)
            var = nc.create_variable("irf", dims, plan.dtype, chunks=chunks)
            var.attrs.update({**_attrs(plan), "coordinates": "window"})
            for sl, block in _batches(plan, progress):
                var[sl] = block
    return xr.open_dataarray(path, engine="h5netcdf")
