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

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from retcodec.io.architectures import LinearStackedConv2d
from retcodec.errors import CellMismatchError, ConfigurationError, NonFiniteError, ShapeError
from retcodec.io.provenance import provenance_attrs
from retcodec._version import __version__
from retcodec.io.storage import atomic_path, check_output_file
from retcodec.io.validation import check_input_dtype
from retcodec.engine.probe import check_module
from retcodec.devices import resolve_device

__all__ = ["irf", "iter_irf", "iter_paired_irf", "rank1", "first_layer_transpose", "IRF_UNITS", "DT",
           "DEFAULT_MAX_BYTES", "DEFAULT_BATCH_SIZE", "DEFAULT_PAIRED_BATCH_SIZE"]

#: frame duration / bin width (s)
DT = 0.01
IRF_UNITS = "Hz per z-scored stimulus unit"
#: results larger than this need ``out=`` (bytes)
DEFAULT_MAX_BYTES = 1 << 30
#: windows per batch (a batch holds ``batch_size × n_cells`` input-sized gradients)
DEFAULT_BATCH_SIZE = 16
#: (window, cell) pairs per batch of :func:`iter_paired_irf` (one input-sized gradient each)
DEFAULT_PAIRED_BATCH_SIZE = 32
TRANSPOSE_METHODS = ("auto", "collapsed", "stacked")
_LAG_DOC = ("time before the predicted bin; lag index i is window frame (n_frames - 1 - i), "
            "i.e. frames reversed relative to the model input")


# =========================================================================== inputs
@dataclass
class _Source:
    """Sliceable z-scored windows and their time coordinate."""

    windows: Any                  # supports len() and [positions] -> (n, T, H, W)
    time: np.ndarray
    time_units: str

    def __len__(self) -> int:
        return len(self.time)


def resolve_stimulus(model: nn.Module, stimulus: Any) -> _Source:
    """Windows of any accepted input, checked against ``model.img_shape``."""
    if isinstance(stimulus, _Source):
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
        source = _Source(stimulus, np.asarray(stimulus.time), "s")
    else:
        raise ConfigurationError(
            f"stimulus must be an array (n, 40, 50, 50) of z-scored windows, a "
            f"retcodec.io.recordings.Windows or a recording Dataset, got {type(stimulus).__name__}")
    _check_window_shape(model, source)
    return source


def _array_source(array: np.ndarray | torch.Tensor) -> _Source:
    check_input_dtype(array, "windows")
    if array.ndim != 4:
        raise ShapeError(f"windows must be (n, frames, y, x), got shape {tuple(array.shape)}")
    return _Source(array, np.arange(array.shape[0]), "window index")


def _check_window_shape(model: nn.Module, source: _Source) -> None:
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


def _resolve_cells(model: nn.Module, cells: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(output positions, cell ids)`` of the requested cells (ids of the model's cell coordinate)."""
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


def _resolve_times(times: Any, n: int) -> np.ndarray:
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


def _torch_dtype(dtype: Any) -> torch.dtype:
    kind = np.dtype(dtype)
    if kind == np.float32:
        return torch.float32
    if kind == np.float64:
        return torch.float64
    raise ConfigurationError(f"dtype must be float32 or float64, got {kind}")


# =========================================================================== the first layer
def _conv_is_plain(conv: nn.Conv2d) -> bool:
    return (tuple(conv.stride) == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


def first_layer_transpose(layer: nn.Module, method: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """The transpose ``Wᵀ`` of an affine first layer ``h = W x + b``, as a function.

    It maps gradients at the layer output ``(N, C_out, h, w)`` to gradients at
    its input ``(N, C_in, H, W)``: ``∂y/∂x = Wᵀ ∂y/∂h``.

    Parameters
    ----------
    layer : ``nn.Conv2d`` (stride 1, one group) or :class:`LinearStackedConv2d`.
    method : for a stacked layer, ``"collapsed"`` (one ``conv_transpose2d`` with
        the collapsed ``k x k`` kernel), ``"stacked"`` (the 3x3 kernels'
        transposes in reverse order) or ``"auto"`` (the one with fewer
        multiply-adds per output pixel; stacked for the published 8-channel
        layers: 6.3k vs 72k).
    """
    if method not in TRANSPOSE_METHODS:
        raise ConfigurationError(f"method must be one of {TRANSPOSE_METHODS}, got {method!r}")
    if isinstance(layer, nn.Conv2d):
        if not _conv_is_plain(layer):
            raise ConfigurationError("only stride-1, single-group, zero-padded convolutions have a "
                                     "transpose here")
        weight, padding, dilation = layer.weight.detach(), layer.padding, layer.dilation
        return lambda g: F.conv_transpose2d(g, weight, padding=padding, dilation=dilation)
    if not isinstance(layer, LinearStackedConv2d):
        raise ConfigurationError(f"the first layer must be a Conv2d or a LinearStackedConv2d, "
                                 f"got {type(layer).__name__}")
    subs = layer.sub_convs()
    if method == "auto":
        stacked_cost = sum(c.in_channels * c.out_channels * c.weight[0, 0].numel() for c in subs)
        collapsed_cost = layer.in_channels * layer.out_channels * layer.kernel_size ** 2
        method = "stacked" if stacked_cost < collapsed_cost else "collapsed"
    if method == "collapsed":
        weight = layer.collapsed_weight()
        return lambda g: F.conv_transpose2d(g, weight)
    weights = [c.weight.detach() for c in reversed(subs)]

    def stacked(g: torch.Tensor) -> torch.Tensor:
        for w in weights:
            g = F.conv_transpose2d(g, w)
        return g
    return stacked


def _affine_first_layer(net: nn.Module) -> nn.Module | None:
    """``conv0`` when it is the model's first module and affine in the input, else None."""
    layers = getattr(net, "layers", None)
    sequential = getattr(net, "sequential", None)
    if not layers or "conv0" not in layers or sequential is None or sequential[0] is not layers["conv0"]:
        return None
    first = layers["conv0"]
    if isinstance(first, LinearStackedConv2d):
        return first
    if isinstance(first, nn.Conv2d) and _conv_is_plain(first):
        return first
    return None


class _Gradients:
    """``∂y_k/∂x`` for a batch of windows and a fixed set of output positions."""

    def __init__(self, model: nn.Module, positions: np.ndarray, device: Any, dtype: torch.dtype,
                 transpose: str = "auto") -> None:
        self.device, self.dtype = resolve_device(device), dtype
        self.net = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.positions = torch.as_tensor(positions, device=self.device)
        first = _affine_first_layer(self.net)
        self.fast = first is not None
        if self.fast:
            self.first = first
            self.rest = self.net.sequential[1:]
            self.transpose = first_layer_transpose(first, transpose)
            # a valid (unpadded, undilated) first layer: the transpose of a cropped
            # gradient is the cropped transpose, shifted
            self.croppable = isinstance(first, LinearStackedConv2d) or (
                tuple(first.padding) == (0, 0) and tuple(first.dilation) == (1, 1))

    def _one_hot(self, batch: int, n_out: int) -> torch.Tensor:
        n = self.positions.numel()
        eye = torch.zeros(n, batch, n_out, device=self.device, dtype=self.dtype)
        eye[torch.arange(n, device=self.device), :, self.positions] = 1.0
        return eye

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None,
                 out_is_zero: bool = False) -> torch.Tensor:
        """``(B, T, H, W)`` windows -> ``(B, n_cells, T, H, W)`` input gradients, frames reversed.

        ``out``: an optional tensor of that shape to write into (then returned);
        ``out_is_zero``: it holds zeros already (skips clearing it).
        """
        x = x.to(device=self.device, dtype=self.dtype)
        with torch.enable_grad():
            if not self.fast:
                x = x.detach().requires_grad_(True)
                result = self.net(x)
                grads, = torch.autograd.grad(result, x, self._one_hot(len(x), result.shape[1]),
                                             is_grads_batched=True)
                return _store(grads.flip(2).transpose(0, 1), out)
            with torch.no_grad():           # channels-last: faster convolutions on CPU
                h0 = self.first(x).contiguous(memory_format=torch.channels_last)
            h0.requires_grad_(True)
            result = self.rest(h0)
            grads, = torch.autograd.grad(result, h0, self._one_hot(len(x), result.shape[1]),
                                         is_grads_batched=True)
        with torch.no_grad():
            return self._to_input(grads, x.shape[1:], out, out_is_zero)

    def paired(self, x: torch.Tensor, cell_index: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` windows, one analysed-cell index per window -> ``(B, T, H, W)``.

        Window ``i``'s gradient of cell ``cell_index[i]``'s rate only (frames
        reversed): one backward pass for the batch, since windows are independent.
        """
        x = x.to(device=self.device, dtype=self.dtype)
        positions = self.positions[torch.as_tensor(cell_index, device=self.device)]
        with torch.enable_grad():
            if self.fast:
                with torch.no_grad():
                    start = self.first(x).contiguous(memory_format=torch.channels_last)
                start.requires_grad_(True)
                result = self.rest(start)
            else:
                start = x.detach().requires_grad_(True)
                result = self.net(start)
            pick = torch.zeros_like(result)
            pick[torch.arange(len(x), device=self.device), positions] = 1.0
            grads, = torch.autograd.grad(result, start, pick)
        with torch.no_grad():
            if not self.fast:
                return grads.flip(1)
            return self._to_input(grads.unsqueeze(1), x.shape[1:], None)[0]

    def _to_input(self, grads: torch.Tensor, window: torch.Size, out: torch.Tensor | None,
                  out_is_zero: bool = False) -> torch.Tensor:
        """``(n, B, C, h, w)`` gradients at ``h₀`` -> ``(B, n, T, H, W)`` at the input, frames reversed.

        Each cell's gradient is zero outside its receptive field on ``h₀`` (a
        convolutional readout reads one location): the transpose runs on the
        smallest box holding every cell's support and the result is placed
        back, which is exact and, for the published layouts, ~3x cheaper.
        """
        n, b, c, h, w = grads.shape
        grow_y, grow_x = window[1] - h, window[2] - w
        starts, (box_h, box_w) = _support_boxes(grads) if self.croppable else ([(0, 0)] * n, (h, w))
        crops = torch.stack([g[:, :, y:y + box_h, x:x + box_w] for g, (y, x) in zip(grads, starts)])
        crops = crops.reshape(n * b, c, box_h, box_w).contiguous(memory_format=torch.channels_last)
        local = self.transpose(crops).reshape(n, b, window[0], box_h + grow_y, box_w + grow_x)
        if (box_h, box_w) == (h, w):
            return _store(local.flip(2).transpose(0, 1), out)
        if out is None:
            out = grads.new_zeros((b, n, *window))
        elif not out_is_zero:
            out.zero_()
        for k, (y, x) in enumerate(starts):
            out[:, k, :, y:y + box_h + grow_y, x:x + box_w + grow_x] = local[k].flip(1)
        return out


def _store(values: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return values.contiguous()
    out.copy_(values)
    return out


def _support_boxes(grads: torch.Tensor) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Per cell the corner of a common-size box holding all its non-zero gradients, and the size."""
    n, _, _, h, w = grads.shape
    mask = grads.abs().amax(dim=(1, 2)) > 0                     # (n, h, w)
    spans = []
    for rows, cols in zip(mask.any(dim=2).cpu().numpy(), mask.any(dim=1).cpu().numpy()):
        r, c = np.flatnonzero(rows), np.flatnonzero(cols)
        spans.append((r[0], r[-1] + 1, c[0], c[-1] + 1) if r.size else (0, 1, 0, 1))
    box_h = max(b - a for a, b, _, _ in spans)
    box_w = max(d - c for _, _, c, d in spans)
    starts = [(int(min(a, h - box_h)), int(min(c, w - box_w))) for a, _, c, _ in spans]
    return starts, (int(box_h), int(box_w))


# =========================================================================== plan and batches
@dataclass
class _Plan:
    source: _Source
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
    _torch_dtype(dtype)
    source = resolve_stimulus(model, stimulus)
    if len(source) == 0:
        raise ShapeError("the stimulus holds no windows")
    positions, ids = _resolve_cells(model, cells)
    return _Plan(source, _resolve_times(times, len(source)), positions, ids, int(batch_size),
                 device, np.dtype(dtype), transpose, model, window_shape(source))


def window_shape(source: _Source) -> tuple[int, ...]:
    shape = getattr(source.windows, "shape", None)
    if shape is None:
        shape = np.shape(source.windows[0:1])
    return tuple(int(s) for s in shape[1:])


def _read_windows(source: _Source, positions: np.ndarray) -> torch.Tensor:
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


def _batches(plan: _Plan, progress: bool = False,
             into: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """``(slice into plan.times, IRF block (b, n_cells, lag, y, x) with ascending lag)``.

    With ``into`` (the full result array, zero-filled), each block is written
    into its slice (on the CPU directly, without an intermediate copy) and that
    slice is yielded.
    """
    from tqdm.auto import tqdm

    engine = _Gradients(plan.model, plan.positions, plan.device, _torch_dtype(plan.dtype),
                        plan.transpose)
    starts = range(0, plan.times.size, plan.batch_size)
    for start in tqdm(starts, disable=not progress, desc="irf", unit="batch"):
        sl = slice(start, min(start + plan.batch_size, plan.times.size))
        target = None if into is None else into[sl]
        direct = target is not None and engine.device.type == "cpu"
        grads = engine(_read_windows(plan.source, plan.times[sl]),
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
    fast = _affine_first_layer(plan.model) is not None
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
    engine = _Gradients(plan.model, plan.positions, plan.device, _torch_dtype(plan.dtype), plan.transpose)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, times.size, plan.batch_size), disable=not progress, desc="irf", unit="batch"):
        sl = slice(start, min(start + plan.batch_size, times.size))
        yield sl, engine.paired(_read_windows(plan.source, plan.times[sl]), index[sl]).cpu().numpy()


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


# =========================================================================== rank-1 filters
def rank1(irf: xr.DataArray | np.ndarray, block: int = 256) -> xr.Dataset:
    """Rank-1 space-time decomposition of IRFs: a spatial and a temporal filter each.

    For each IRF ``F`` (``lag × y × x``; any leading dims such as ``time``,
    ``cell`` are kept): remove its mean ``m`` (over all lags and pixels), take
    the SVD of the ``(lag, y·x)`` matrix ``F − m = Σ s_i u_i v_iᵀ`` and keep
    ``temporal = u₁``, ``spatial = v₁`` (both unit norm) and ``s₁`` (computed
    from the smaller Gram matrix, which gives the same triplet as the SVD).

    Sign: let ``p`` be the lag of the frame holding the largest ``|F − m|``;
    the pair is flipped so that ``spatial`` has a non-negative Pearson
    correlation over pixels with that frame ``(F − m)[p]`` (flipping both
    leaves the product unchanged). For a nearly separable IRF this makes
    ``temporal`` positive at the peak lag and ``spatial`` look like the peak
    frame (an OFF centre stays negative in ``spatial``).

    ``offset + singular_value · temporal ⊗ spatial`` is ``m`` plus the best
    rank-1 approximation of ``F − m``. An all-constant IRF has
    ``s₁ = 0``, zero filters and a NaN share.

    Parameters
    ----------
    irf : ``DataArray (..., lag, y, x)`` from :func:`irf` (or a numpy array whose
        last three axes are lag, y, x).
    block : IRFs per SVD call (about; whole rows of the first leading dim are
        read at a time, which bounds memory for lazily opened files).

    Returns
    -------
    xarray.Dataset
        ``spatial (..., y, x)``, ``temporal (..., lag)``, ``singular_value (...)``,
        ``singular_value_share (...)`` = ``s₁² / Σ s_i²``, ``offset (...)`` = ``m``
        and ``peak_lag (...)`` (s, or the lag index without a lag coordinate).
    """
    da = _as_irf_dataarray(irf)
    lead = [d for d in da.dims if d not in ("lag", "y", "x")]
    da = da.transpose(*lead, "lag", "y", "x")
    n_lag, height, width = (da.sizes[d] for d in ("lag", "y", "x"))
    lead_shape = tuple(da.sizes[d] for d in lead)
    parts = [rank1_matrices(m.reshape(-1, n_lag, height * width)) for m in _blocks(da, lead, block)]
    if not parts:                                   # a leading dim of size 0
        parts = [rank1_matrices(np.zeros((0, n_lag, height * width)))]
    out = dict(zip(("spatial", "temporal", "singular_value", "share", "offset", "peak"),
                   (np.concatenate(p) for p in zip(*parts))))
    lag_values = da["lag"].values if "lag" in da.coords else np.arange(n_lag)
    coords = {name: c for name, c in da.coords.items()}
    dtype = np.result_type(da.dtype, np.float32)
    ds = xr.Dataset(
        {"spatial": ((*lead, "y", "x"), out["spatial"].reshape(*lead_shape, height, width).astype(dtype),
                     {"long_name": "spatial filter (unit norm, sign: correlates positively with the "
                                   "peak frame)"}),
         "temporal": ((*lead, "lag"), out["temporal"].reshape(*lead_shape, n_lag).astype(dtype),
                      {"long_name": "temporal filter (unit norm)"}),
         "singular_value": (tuple(lead), out["singular_value"].reshape(lead_shape),
                            {"long_name": "first singular value s1", "units": da.attrs.get("units", "")}),
         "singular_value_share": (tuple(lead), out["share"].reshape(lead_shape),
                                  {"long_name": "s1^2 / sum s_i^2 (variance share of the rank-1 term)"}),
         "offset": (tuple(lead), out["offset"].reshape(lead_shape),
                    {"long_name": "mean of the IRF, removed before the SVD"}),
         "peak_lag": (tuple(lead), lag_values[out["peak"].astype(np.int64)].reshape(lead_shape),
                      {"long_name": "lag of the frame with the largest |IRF - mean| (sign reference)",
                       **({"units": "s"} if "lag" in da.coords else {})})},
        coords=coords,
        attrs=provenance_attrs({"block": int(block)}, method="rank1"))
    return ds


def _as_irf_dataarray(irf: Any) -> xr.DataArray:
    if isinstance(irf, xr.DataArray):
        missing = [d for d in ("lag", "y", "x") if d not in irf.dims]
        if missing:
            raise ShapeError(f"rank1 needs an IRF with dims lag, y, x; {missing} missing from {irf.dims}")
        return irf
    array = np.asarray(irf)
    if array.ndim < 3:
        raise ShapeError(f"rank1 needs an array whose last three axes are lag, y, x; got shape {array.shape}")
    lead = tuple(f"dim_{i}" for i in range(array.ndim - 3))
    return xr.DataArray(array, dims=(*lead, "lag", "y", "x"))


def _blocks(da: xr.DataArray, lead: list[str], block: int) -> Iterator[np.ndarray]:
    """float64 IRFs in blocks along the first leading dim (lazily stored data is read per block)."""
    if not lead:
        yield np.asarray(da.values, dtype=np.float64)[None]
        return
    per_step = int(np.prod([da.sizes[d] for d in lead[1:]], dtype=np.int64))
    step = max(int(block) // max(per_step, 1), 1)
    for start in range(0, da.sizes[lead[0]], step):
        yield np.asarray(da.isel({lead[0]: slice(start, start + step)}).values, dtype=np.float64)


def rank1_matrices(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rank-1 terms of ``(N, L, P)`` matrices: spatial, temporal, s1, share, offset, peak index.

    The first singular triplet comes from the eigen-decomposition of the smaller
    Gram matrix (``L x L`` for ``L <= P``): the same triplet as the SVD, at a
    fraction of its cost for 40 lags x 2500 pixels.
    """
    offset = m.mean(axis=(1, 2))
    centred = m - offset[:, None, None]
    temporal, s1, spatial = _first_singular_triplet(centred)
    energy = np.sum(centred * centred, axis=(1, 2))
    peak = np.abs(centred).max(axis=2).argmax(axis=1) if m.size else np.zeros(len(m), dtype=np.int64)
    peak_frame = centred[np.arange(len(m)), peak]
    sign = np.where(_rowwise_pearson(spatial, peak_frame) < 0, -1.0, 1.0)
    flat = ~(s1 > 0)
    sign[flat] = 0.0                                   # constant IRF: no filters
    share = np.where(flat, np.nan, s1 ** 2 / np.where(flat, 1.0, energy))
    return (spatial * sign[:, None], temporal * sign[:, None], np.where(flat, 0.0, s1), share,
            offset, peak)


def _first_singular_triplet(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u1, s1, v1)`` of each ``(L, P)`` matrix of ``a (N, L, P)`` via the smaller Gram matrix.

    For ``L <= P``: ``u1`` is the top eigenvector of ``A Aᵀ``, ``s1 = |Aᵀ u1|``
    and ``v1 = Aᵀ u1 / s1`` (and symmetrically for ``L > P``). A zero matrix
    gives ``s1 = 0`` and ``v1 = 0``.
    """
    n, rows, cols = a.shape
    if n == 0:
        return np.zeros((0, rows)), np.zeros(0), np.zeros((0, cols))
    wide = rows <= cols
    gram = a @ a.transpose(0, 2, 1) if wide else a.transpose(0, 2, 1) @ a
    top = np.linalg.eigh(gram)[1][:, :, -1]
    other = np.einsum("nlp,nl->np", a, top) if wide else np.einsum("nlp,np->nl", a, top)
    s1 = np.linalg.norm(other, axis=1)
    other = other * np.divide(1.0, s1, out=np.zeros_like(s1), where=s1 > 0)[:, None]
    return (top, s1, other) if wide else (other, s1, top)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows (0 where a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    return np.divide(np.sum(a * b, axis=1), denom, out=np.zeros(len(a)), where=denom > 0)
