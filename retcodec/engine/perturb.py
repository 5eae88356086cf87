"""Silencing hidden channels: a model's rates with whole channels set to zero (or to their mean).

A silenced interneuron transmits nothing, so a channel is silenced where the
next layer reads it:

* retcodec's retina CNNs (``model.layers`` = ``conv0``, ``conv1`` -> their
  pre-batch-norm convolutions): the output of the layer's **ReLU**, after batch
  norm (zeroing the pre-batch-norm output, or the convolution weights, would
  leave the batch-norm shift). A dotted module path (``"sequential.3"``) names
  any other point.
* any other ``nn.Module``: the output of the module named by its dotted path
  (or by its name in ``model.layers`` when the model has that mapping).

``how="zero"`` sets the channels to 0; ``how="mean"`` clamps each to its mean
map (per channel and position) over the analysed windows. ``keep=True`` keeps
only the listed channels of each named layer and silences the others (the
preservation control).

:class:`Silencer` evaluates many channel sets over the same windows. For
models built as one ``nn.Sequential`` (the retina CNNs) it runs the network up
to the first silenced layer once and caches the activations there; the
affine read-out after the last silenced layer (ganglion convolution and unit
read-out) is reduced to a matrix, and per-channel drives through it are cached,
so silencing sets of the last hidden layer cost almost nothing. Other models
run the whole network with forward hooks. Both give the rates of the network
with those channels replaced, to floating-point rounding.

Shared by the retina experiments and the classifier controls:
:func:`silenced` (hooks), :func:`dose_sets`, :func:`curve_auc`, :func:`specificity`.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from retcodec.defaults import FORWARD_BATCH
from retcodec.errors import ConfigurationError, NonFiniteError, ShapeError
from retcodec.engine.dose import KINDS, check_fractions, curve_auc, dose_sets, specificity
from retcodec.engine.model_inputs import model_input
from retcodec.engine.probe import check_module, probe_model
from retcodec.io.validation import as_flag, as_int, check_model_input

__all__ = ["silence", "Silencer", "Transform", "SilencePoint", "silence_points", "silenced", "channel_mask",
           "check_channels", "check_fractions", "model_input", "dose_sets", "curve_auc", "specificity",
           "HOWS", "KINDS", "DEFAULT_BATCH_SIZE", "MAX_READOUT_ENTRIES", "MAX_DECOMPOSED_ENTRIES"]

#: ways to silence a channel
HOWS = ("zero", "mean")
#: windows per forward pass
DEFAULT_BATCH_SIZE = FORWARD_BATCH
#: the largest affine read-out (inputs x outputs) reduced to a matrix
MAX_READOUT_ENTRIES = 1 << 24
#: the largest per-channel cache of an affine segment (channels x windows x outputs)
MAX_DECOMPOSED_ENTRIES = 1 << 25
#: modules that are affine (in eval mode) and keep the sample axis first
_AFFINE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Flatten, nn.Identity, nn.Dropout)

Channels = Mapping[str, Sequence[int]]
#: a replacement of a layer's output: ``f(output, channel_axis) -> output`` (same shape)
Transform = Callable[[torch.Tensor, int], torch.Tensor]


# =========================================================================== silence points
@dataclass(frozen=True)
class SilencePoint:
    """Where a layer's channels are silenced.

    ``name``: the name the caller used; ``module``: the module whose output is
    replaced; ``index``: its position in ``model.sequential`` (None when the
    model is not one sequential stack); ``n_channels``; ``layout``:
    ``"channels"`` (dim 1) or ``"tokens"`` (last dim).
    """

    name: str
    module: nn.Module
    index: int | None
    n_channels: int
    layout: str = "channels"

    def channel_axis(self, ndim: int) -> int:
        return ndim - 1 if self.layout == "tokens" else 1


def _sequential(model: nn.Module) -> nn.Sequential | None:
    seq = getattr(model, "sequential", None)
    return seq if isinstance(seq, nn.Sequential) else None


def _relu_after(model: nn.Module, name: str) -> tuple[nn.Module, int] | None:
    """For a retina CNN layer name: the ReLU following it in ``model.sequential`` (before the next layer)."""
    index = getattr(model, "layer_index", None)
    seq = _sequential(model)
    if not isinstance(index, Mapping) or seq is None or name not in index:
        return None
    start = int(index[name])
    later = [int(i) for i in index.values() if int(i) > start]
    stop = min(later) if later else len(seq)
    for i in range(start + 1, stop):
        if isinstance(seq[i], nn.ReLU):
            return seq[i], i
    hidden = [n for n in index if _has_relu_after(seq, int(index[n]), index)]
    raise ConfigurationError(f"layer {name!r} has no ReLU after it (it is not a hidden layer); "
                             f"silence one of {hidden} or name a module by its dotted path")


def _has_relu_after(seq: nn.Sequential, start: int, index: Mapping[str, int]) -> bool:
    later = [int(i) for i in index.values() if int(i) > start]
    stop = min(later) if later else len(seq)
    return any(isinstance(seq[i], nn.ReLU) for i in range(start + 1, stop))


def _module_by_name(model: nn.Module, name: str) -> nn.Module:
    layers = getattr(model, "layers", None)
    if isinstance(layers, Mapping) and name in layers and not hasattr(model, "layer_index"):
        return layers[name]
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    known = list(getattr(model, "layer_index", None) or layers or [])
    shown = [n for n in modules if n][:30]
    raise ConfigurationError(f"unknown layer {name!r}: use one of {known} or a dotted module path "
                             f"of the model (e.g. {shown})")


def _index_in(seq: nn.Sequential | None, module: nn.Module) -> int | None:
    if seq is None:
        return None
    for i, m in enumerate(seq):
        if m is module:
            return i
    return None


def silence_points(model: nn.Module, names: Sequence[str], probe: torch.Tensor) -> dict[str, SilencePoint]:
    """Resolve layer names to :class:`SilencePoint` (channel counts from one probe pass).

    ``probe``: one or two input windows on the model's device, in its dtype.
    """
    seq = _sequential(model)
    found: dict[str, tuple[nn.Module, int | None]] = {}
    for name in names:
        relu = _relu_after(model, str(name))
        if relu is not None:
            found[name] = relu
        else:
            module = _module_by_name(model, str(name))
            found[name] = (module, _index_in(seq, module))
    modules = [m for m, _ in found.values()]
    if len({id(m) for m in modules}) != len(modules):
        raise ConfigurationError(f"layers {list(names)} name the same module twice")
    shapes = probe_model(model, probe, {n: m for n, (m, _) in found.items()})
    layouts = getattr(model, "layer_layouts", {}) or {}
    points = {}
    for name, (module, index) in found.items():
        shape = shapes[name]
        layout = layouts.get(name, "channels")
        if len(shape) < 2:
            raise ShapeError(f"layer {name!r} outputs shape {tuple(shape)}; silencing needs "
                             f"(batch, channel, ...)")
        n = int(shape[-1] if layout == "tokens" else shape[1])
        points[name] = SilencePoint(str(name), module, index, n, layout)
    return points


def check_channels(points: Mapping[str, SilencePoint], channels: Channels) -> dict[str, np.ndarray]:
    """``channels`` as sorted unique int arrays; errors for unknown layers and out-of-range channels."""
    if not isinstance(channels, Mapping):
        raise ConfigurationError(f"channels must map layer names to channel lists, e.g. "
                                 f"{{'conv1': [2, 4]}}, got {type(channels).__name__}")
    out = {}
    for name, chans in channels.items():
        if name not in points:
            raise ConfigurationError(f"unknown layer {name!r} in channels; silencing is set up for "
                                     f"{list(points)}")
        try:
            values = np.atleast_1d(np.asarray(chans))
        except (TypeError, ValueError):
            values = np.asarray([repr(chans)])
        if values.ndim != 1:
            raise ConfigurationError(f"channels of layer {name!r} must be a flat list of channel indices, "
                                     f"got an array of shape {values.shape}")
        if values.size and values.dtype.kind not in "iu":
            raise ConfigurationError(f"channels of layer {name!r} must be integers, got {values.tolist()}")
        arr = np.unique(values.astype(np.int64))
        n = points[name].n_channels
        bad = arr[(arr < 0) | (arr >= n)]
        if bad.size:
            raise ConfigurationError(f"channels {bad.tolist()} of layer {name!r} are out of range: "
                                     f"it has channels 0..{n - 1}")
        out[name] = arr
    return out


def channel_mask(n_channels: int, channels: Sequence[int] | np.ndarray, keep: bool = False) -> np.ndarray:
    """Bool ``(n_channels,)``: True where a channel is silenced (``channels``, or all others with ``keep``)."""
    mask = np.zeros(n_channels, dtype=bool)
    mask[np.asarray(channels, dtype=np.int64)] = True
    return ~mask if keep else mask


def _replace(output: torch.Tensor, silenced: torch.Tensor, axis: int,
             fill: torch.Tensor | None) -> torch.Tensor:
    """``output`` with the channels where ``silenced`` is True set to 0 or to ``fill`` (channel, ...)."""
    shape = [1] * output.ndim
    shape[axis] = -1
    m = silenced.to(output.device).view(shape)
    if fill is None:
        return output.masked_fill(m, 0)
    f = fill.to(output.device, output.dtype)
    if axis != 1:
        f = f.movedim(0, axis - 1)
    return torch.where(m, f.unsqueeze(0).expand_as(output), output)


@contextlib.contextmanager
def silenced(points: Mapping[str, SilencePoint], masks: Mapping[str, np.ndarray],
             fills: Mapping[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Forward hooks replacing channels while the block runs.

    ``masks``: layer -> bool ``(n_channels,)`` (True = silenced); ``fills``:
    layer -> ``(channel, ...)`` mean maps for ``how="mean"`` (zero otherwise).
    """
    handles = []
    try:
        for name, mask in masks.items():
            point = points[name]
            m = torch.as_tensor(np.asarray(mask, dtype=bool))
            fill = None if fills is None else fills.get(name)
            handles.append(point.module.register_forward_hook(_hook(m, point, fill)))
        yield
    finally:
        for h in handles:
            h.remove()


def _hook(mask: torch.Tensor, point: SilencePoint, fill: torch.Tensor | None):
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return _replace(output, mask, point.channel_axis(output.ndim), fill)
    return hook


# =========================================================================== the engine
def _as_device(device: str | torch.device) -> torch.device:
    """The device, checked to exist here (:class:`~retcodec.errors.DeviceError` otherwise)."""
    from retcodec.devices import resolve_device
    return resolve_device(device)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class Silencer:
    """Rates of ``model`` over fixed windows under many channel sets.

    The model is used in eval mode on ``device`` and in its own dtype; its
    device and train state are restored after each call.

    Parameters
    ----------
    model : a retina CNN or any ``nn.Module`` mapping ``(batch, ...)`` inputs to ``(batch, n_out)``.
    windows : sliceable inputs (an array ``(n, ...)``, a tensor, or
        :class:`retcodec.io.recordings.Windows`).
    layers : names of the layers that will be silenced (see the module docstring).
    index : optional 1-D window indices to use (a subsample); default all.
    how : ``"zero"`` or ``"mean"`` (mean map per channel and position over the used windows).
    batch_size, device, progress : windows per pass, where to compute, a tqdm bar.
    """

    def __init__(self, model: nn.Module, windows: Any, layers: Sequence[str], index: Any = None,
                 how: str = "zero", batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | torch.device = "cpu", progress: bool = False) -> None:
        if not isinstance(how, str) or how not in HOWS:
            raise ConfigurationError(f"how must be one of {HOWS}, got {how!r:.40}")
        batch_size = as_int(batch_size, "batch_size", low=1)
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        names = [layers] if isinstance(layers, str) else [str(n) for n in layers]
        if not names:
            raise ConfigurationError("layers is empty: name at least one layer to silence")
        self.model, self.windows, self.how = model, windows, how
        self.batch_size, self.device, self.progress = int(batch_size), _as_device(device), progress
        self.index = np.arange(len(windows)) if index is None else np.asarray(index, dtype=np.int64)
        if self.index.ndim != 1 or self.index.size == 0:
            raise ConfigurationError("index must be a non-empty 1-D array of window indices")
        if self.index.min() < 0 or self.index.max() >= len(windows):
            raise ConfigurationError(f"window indices must lie in 0..{len(windows) - 1}")
        self.dtype = _model_dtype(model)
        with self._running():
            self.points = silence_points(model, names, self._batch(self.index[:1]))
        seq = _sequential(model)
        self.staged = seq is not None and all(p.index is not None for p in self.points.values())
        self._cache: dict[str, torch.Tensor] = {}
        self._means: dict[str, torch.Tensor] = {}
        self._drive: torch.Tensor | None = None      # (channel, time, out) through the read-out
        self._readout: tuple[torch.Tensor, torch.Tensor] | None = None
        self._intact: np.ndarray | None = None
        self._parts: dict[str, tuple | None] = {}
        self._order = sorted(self.points, key=lambda n: self.points[n].index or 0)

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        home = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.to(self.device).eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.to(home).train(was_training)

    def _batch(self, idx: np.ndarray) -> torch.Tensor:
        w = self.windows
        if isinstance(w, torch.Tensor):
            x = w[torch.as_tensor(idx)]
        else:
            x = torch.as_tensor(np.asarray(w[idx]))
        x = x.to(device=self.device, dtype=self.dtype)
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"windows {int(idx[0])}..{int(idx[-1])} hold NaN or Inf")
        check_model_input(x.cpu().numpy(), f"windows {int(idx[0])}..{int(idx[-1])}")
        return x

    def _chunks(self) -> Iterator[np.ndarray]:
        from tqdm.auto import tqdm
        starts = range(0, self.index.size, self.batch_size)
        for s in tqdm(starts, disable=not self.progress, desc="silence", unit="batch"):
            yield self.index[s:s + self.batch_size]

    @property
    def n_time(self) -> int:
        return int(self.index.size)

    # ------------------------------------------------------------------ staged (sequential) path
    def _prepare(self) -> None:
        """One intact pass: cache every silence point's output, the mean maps and the read-out."""
        if self._intact is not None:
            return
        if not self.staged:
            self._prepare_hooked()
            return
        seq = _sequential(self.model)
        last = self.points[self._order[-1]].index
        cuts = [self.points[n].index for n in self._order]
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in self._order}
        rates = []
        with self._running():
            for idx in self._chunks():
                x = self._batch(idx)
                pos = 0
                for name, cut in zip(self._order, cuts):
                    x = seq[pos:cut + 1](x)
                    pos = cut + 1
                    parts[name].append(x)
                rates.append(seq[pos:](x))
            self._cache = {n: torch.cat(v) for n, v in parts.items()}
            self._means = {n: v.mean(dim=0) for n, v in self._cache.items()}
            self._readout = self._affine_readout(seq, last + 1, self._cache[self._order[-1]][:1])
            if self._readout is not None:
                self._drive = self._channel_drives(self._order[-1])
        self._intact = torch.cat(rates).cpu().numpy()

    def _affine_readout(self, seq: nn.Sequential, start: int, probe: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(J (out, in), b (out,))`` of the affine modules after ``start`` when small enough."""
        stop = start
        while stop < len(seq) and _is_affine(seq[stop]):
            stop += 1
        if stop == start:
            return None
        part = seq[start:stop]
        n_in = probe[0].numel()
        zero = torch.zeros_like(probe)
        b = part(zero).reshape(-1)
        if b.numel() * n_in > MAX_READOUT_ENTRIES or b.numel() >= n_in:
            return None
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.zeros((b.numel(), *probe.shape[1:]), device=probe.device, dtype=probe.dtype,
                            requires_grad=True)
            y = part(x).reshape(b.numel(), -1)
            (jac,) = torch.autograd.grad(torch.diagonal(y).sum(), x)
        self._readout_stop = stop
        self._readout_shape = tuple(part(zero).shape[1:])
        return jac.reshape(b.numel(), -1).detach(), b.detach()

    def _channel_drives(self, name: str) -> torch.Tensor:
        """Per-channel drive of the last point through the read-out: ``(channel, time, out)``."""
        J, _ = self._readout
        h = self._cache[name]
        C = h.shape[1]
        Jc = J.reshape(J.shape[0], C, -1)                   # (out, channel, positions)
        return torch.einsum("tcp,ocp->cto", h.reshape(h.shape[0], C, -1), Jc)

    def _finish(self, x: torch.Tensor, pos: int | None = None) -> torch.Tensor:
        """Rates from the input ``x`` of module ``pos`` (default: after the last silence point)."""
        seq = _sequential(self.model)
        start = self.points[self._order[-1]].index + 1
        if pos is not None and pos != start:
            return seq[pos:](x)
        if self._readout is None:
            return seq[start:](x)
        J, b = self._readout
        y = x.reshape(x.shape[0], -1) @ J.T + b
        return seq[self._readout_stop:](y.reshape(-1, *self._readout_shape))

    def _staged_rates(self, masks: Mapping[str, np.ndarray]) -> np.ndarray:
        seq = _sequential(self.model)
        active = [n for n in self._order if masks.get(n) is not None and masks[n].any()]
        if not active:
            return self._intact.copy()
        last = self._order[-1]
        fills = self._means if self.how == "mean" else {}
        if active == [last] and self._drive is not None:
            return self._last_layer_rates(masks[last])
        first = active[0]
        later = self._order[self._order.index(first) + 1:]
        out = []
        with self._running():
            parts = self._decomposed(first)
            cache = self._cache[first]
            for s in range(0, cache.shape[0], self.batch_size):
                if parts is not None:       # affine segment after `first` as a sum over its channels
                    x, pos = self._segment_sum(parts, masks[first], s), parts[2]
                else:
                    x = _replace(cache[s:s + self.batch_size], torch.as_tensor(masks[first]), 1,
                                 fills.get(first))
                    pos = self.points[first].index + 1
                for name in later:
                    cut = self.points[name].index
                    x = seq[pos:cut + 1](x)
                    if masks.get(name) is not None and masks[name].any():
                        x = _replace(x, torch.as_tensor(masks[name]), 1, fills.get(name))
                    pos = cut + 1
                out.append(self._finish(x, pos))
        return torch.cat(out).cpu().numpy()

    def _decomposed(self, name: str) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """Per-channel outputs ``(channel, time, ...)`` of the affine modules after a (non-last) point.

        ``seg(h) = seg(0) + sum_c (seg(h_c e_c) - seg(0))``: silencing channels
        of this point then costs a sum instead of a forward pass. Built on first
        use when it fits in :data:`MAX_DECOMPOSED_ENTRIES`; None otherwise.
        """
        if name in self._parts:
            return self._parts[name]
        self._parts[name] = None
        seq = _sequential(self.model)
        start = self.points[name].index + 1
        stop = start
        while stop < len(seq) and _is_affine(seq[stop]):
            stop += 1
        later = [self.points[n].index for n in self._order if self.points[n].index >= start]
        stop = min([stop, *later])
        if stop == start:
            return None
        h = self._cache[name]
        seg = seq[start:stop]
        zero = seg(torch.zeros_like(h[:1]))
        C = h.shape[1]
        if C * h.shape[0] * zero[0].numel() > MAX_DECOMPOSED_ENTRIES:
            return None
        per = torch.empty((C, h.shape[0], *zero.shape[1:]), device=h.device, dtype=h.dtype)
        eye = torch.eye(C, device=h.device, dtype=torch.bool)
        ones = (1,) * (h.ndim - 2)
        for c in range(C):
            for s in range(0, h.shape[0], self.batch_size):
                x = h[s:s + self.batch_size].masked_fill(~eye[c].view(1, -1, *ones), 0)
                per[c, s:s + self.batch_size] = seg(x) - zero
        fill = None
        if self.how == "mean":
            m = self._means[name]
            fill = torch.stack([seg((m * eye[c].view(-1, *ones)).unsqueeze(0))[0] - zero[0]
                                for c in range(C)])
        self._parts[name] = (per, zero[0], stop, fill, per.sum(dim=0) + zero[0])
        return self._parts[name]

    def _segment_sum(self, parts: tuple, mask: np.ndarray, s: int) -> torch.Tensor:
        """The segment's output for windows ``s...`` with the ``mask`` channels silenced."""
        per, zero, _, fill, total = parts
        sl = slice(s, s + self.batch_size)
        silenced = np.flatnonzero(mask)
        if len(silenced) <= len(mask) // 2:          # intact total minus the silenced channels
            x = total[sl].clone()
            for c in silenced:
                x -= per[c, sl]
        else:                                        # sum of the kept channels
            x = zero.expand_as(per[0, sl]).clone()
            for c in np.flatnonzero(~mask):
                x += per[c, sl]
        if fill is not None:
            for c in silenced:
                x += fill[c]
        return x

    def _last_layer_rates(self, mask: np.ndarray) -> np.ndarray:
        """Silencing only the last point: sum the cached per-channel drives."""
        seq = _sequential(self.model)
        J, b = self._readout
        keep = torch.as_tensor(~mask, device=self._drive.device)
        y = self._drive[keep].sum(dim=0) + b
        if self.how == "mean" and mask.any():
            m = self._means[self._order[-1]]
            C = m.shape[0]
            Jc = J.reshape(J.shape[0], C, -1)
            sel = torch.as_tensor(mask, device=m.device)
            y = y + torch.einsum("cp,ocp->o", m.reshape(C, -1)[sel], Jc[:, sel])
        with self._running():
            return seq[self._readout_stop:](y.reshape(-1, *self._readout_shape)).cpu().numpy()

    # ------------------------------------------------------------------ hooked (generic) path
    def _prepare_hooked(self) -> None:
        sums: dict[str, torch.Tensor] = {}
        handles = [p.module.register_forward_hook(_sum_hook(n, sums)) for n, p in self.points.items()]
        rates = []
        try:
            with self._running():
                for idx in self._chunks():
                    rates.append(self.model(self._batch(idx)))
        finally:
            for h in handles:
                h.remove()
        self._means = {n: _to_channel_first(v / self.n_time, self.points[n]) for n, v in sums.items()}
        self._intact = torch.cat(rates).cpu().numpy()

    def _hooked_rates(self, masks: Mapping[str, np.ndarray]) -> np.ndarray:
        fills = self._means if self.how == "mean" else None
        rates = []
        with self._running(), silenced(self.points, masks, fills):
            for idx in self._chunks():
                rates.append(self.model(self._batch(idx)))
        return torch.cat(rates).cpu().numpy()

    # ------------------------------------------------------------------ public
    def intact(self) -> np.ndarray:
        """Rates without silencing, ``(time, out)`` (float in the model's dtype)."""
        self._prepare()
        return self._intact.copy()

    def masks(self, channels: Channels, keep: bool = False) -> dict[str, np.ndarray]:
        """Bool masks (True = silenced) per layer for ``channels`` (validated)."""
        checked = check_channels(self.points, channels)
        return {n: channel_mask(self.points[n].n_channels, c, keep) for n, c in checked.items()}

    def rates(self, channels: Channels, keep: bool = False) -> np.ndarray:
        """Rates ``(time, out)`` with ``channels`` (layer -> list) silenced, or only them kept."""
        masks = self.masks(channels, keep)
        self._prepare()
        return self._staged_rates(masks) if self.staged else self._hooked_rates(masks)

    def transformed_rates(self, transforms: Mapping[str, Transform]) -> np.ndarray:
        """Rates ``(time, out)`` with each named layer's output ``h`` replaced by ``transforms[name](h, axis)``.

        ``axis``: the channel axis of ``h`` (batch first). Layers run in model
        order, so a later layer sees the transformed earlier ones (e.g.
        :func:`retcodec.engine.directions.projection`).
        """
        unknown = [n for n in transforms if n not in self.points]
        if unknown:
            raise ConfigurationError(f"unknown layer(s) {unknown}; silencing is set up for {list(self.points)}")
        self._prepare()
        if not transforms:
            return self._intact.copy()
        if not self.staged:
            rates = []
            handles = [self.points[n].module.register_forward_hook(_transform_hook(f, self.points[n]))
                       for n, f in transforms.items()]
            try:
                with self._running():
                    rates = [self.model(self._batch(idx)) for idx in self._chunks()]
            finally:
                for h in handles:
                    h.remove()
            return torch.cat(rates).cpu().numpy()
        seq = _sequential(self.model)
        active = [n for n in self._order if n in transforms]
        first, out = active[0], []
        with self._running():
            cache = self._cache[first]
            for s in range(0, cache.shape[0], self.batch_size):
                x, pos = transforms[first](cache[s:s + self.batch_size], 1), self.points[first].index + 1
                for name in self._order[self._order.index(first) + 1:]:
                    x = seq[pos:self.points[name].index + 1](x)
                    pos = self.points[name].index + 1
                    if name in transforms:
                        x = transforms[name](x, 1)
                out.append(self._finish(x, pos))
        return torch.cat(out).cpu().numpy()

    def activity(self, layer: str) -> np.ndarray:
        """Intact output of a silence point summed over positions: ``(time, channel)`` (staged models)."""
        self._prepare()
        if layer not in self._cache:
            raise ConfigurationError(f"no cached activity for {layer!r}; have {list(self._cache)}")
        h = self._cache[layer]
        return h.reshape(h.shape[0], h.shape[1], -1).sum(dim=-1).cpu().numpy()


def _is_affine(module: nn.Module) -> bool:
    """Affine in eval mode, sample axis first (convolutions, linear maps, eval batch norms, reshapes)."""
    from retcodec.io.architectures import (AbsBatchNorm, GaussianNoise, Flatten, GrabUnits,
                                           LinearStackedConv2d, Reshape)
    if isinstance(module, (GaussianNoise, AbsBatchNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return not module.training
    return isinstance(module, _AFFINE + (GrabUnits, LinearStackedConv2d, Flatten, Reshape))


def _transform_hook(transform: Transform, point: SilencePoint):
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return transform(output, point.channel_axis(output.ndim))
    return hook


def _sum_hook(name: str, store: dict[str, torch.Tensor]):
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        s = output.sum(dim=0)
        store[name] = s if name not in store else store[name] + s
    return hook


def _to_channel_first(mean: torch.Tensor, point: SilencePoint) -> torch.Tensor:
    return mean.movedim(-1, 0) if point.layout == "tokens" else mean


# =========================================================================== one call
def silence(model: nn.Module, windows: Any, channels: Channels, how: str = "zero",
            keep: bool = False, device: str | torch.device = "cpu",
            batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False):
    """The model's rates with whole hidden channels silenced: ``xr.DataArray (time, cell)``.

    Parameters
    ----------
    model : a retina CNN (layers ``conv0``, ``conv1``: silenced after their
        batch norm and ReLU) or any ``nn.Module`` (layers by dotted module path).
    windows : what :func:`retcodec.predict` accepts (array, Windows, recording Dataset).
    channels : layer -> channel indices, e.g. ``{"conv1": [2, 4]}``.
    how : ``"zero"``, or ``"mean"`` (each silenced channel clamped to its mean
        map over these windows, per channel and position).
    keep : keep only the listed channels of each named layer, silence the rest.
    device, batch_size, progress : where to compute, windows per pass, a progress bar.

    Returns
    -------
    Rates in Hz aligned like :func:`retcodec.predict`'s output (same ``time``
    and ``cell`` coordinates), with the perturbation in the attrs.

    Raises
    ------
    ConfigurationError : unknown layer, channel out of range, bad ``how``.
    """
    import xarray as xr

    from retcodec.io.provenance import provenance_attrs

    check_module(model)
    keep = as_flag(keep, "keep")
    if not isinstance(channels, Mapping) or not channels:
        raise ConfigurationError(f"channels must map layer names to channel lists, e.g. {{'conv1': [2, 4]}}, "
                                 f"got {type(channels).__name__} {channels!r:.60}")
    source, time, units, cells = model_input(model, windows)
    engine = Silencer(model, source, list(channels), how=how, batch_size=batch_size, device=device,
                      progress=progress)
    rates = engine.rates(channels, keep=keep)
    if rates.ndim != 2:
        raise ShapeError(f"the model returns shape {rates.shape[1:]} per window, not (n_out,)")
    if len(cells) != rates.shape[1]:
        cells = np.arange(rates.shape[1])
    spec = {k: [int(c) for c in np.atleast_1d(v)] for k, v in channels.items()}
    return xr.DataArray(
        rates, dims=("time", "cell"),
        coords={"time": ("time", np.asarray(time), {"units": units}), "cell": ("cell", cells)},
        name="rate_silenced",
        attrs={"units": "Hz", "long_name": "model firing rate with channels silenced",
               "silenced_channels": json.dumps(spec), "how": how, "keep": int(keep),
               **provenance_attrs({"channels": spec, "how": how, "keep": keep,
                                   "batch_size": batch_size}, method="silence")})
