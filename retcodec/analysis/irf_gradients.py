"""Input gradients ``∂y_k/∂x`` of retina CNN outputs, batched, through the first layer's transpose.

The engine behind :func:`retcodec.analysis.irf.irf` (see that module's docstring for the
computation): :class:`InputGradients` runs an affine first layer once per batch of windows,
one batched backward pass to its output for all requested cells, and the layer's transpose
(:func:`first_layer_transpose`) on the smallest box holding every cell's support.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retcodec.devices import resolve_device
from retcodec.errors import ConfigurationError
from retcodec.io.architectures import LinearStackedConv2d

__all__ = ["InputGradients", "first_layer_transpose", "affine_first_layer", "TRANSPOSE_METHODS"]

#: how the first layer's transpose is applied (see :func:`first_layer_transpose`)
TRANSPOSE_METHODS = ("auto", "collapsed", "stacked")


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


def affine_first_layer(net: nn.Module) -> nn.Module | None:
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


class InputGradients:
    """``∂y_k/∂x`` for a batch of windows and a fixed set of output positions (model outputs ``k``).

    The model is copied (eval mode, no parameter gradients) to ``device`` in ``dtype``;
    ``transpose`` is the method of :func:`first_layer_transpose`.
    """

    def __init__(self, model: nn.Module, positions: np.ndarray, device: Any, dtype: torch.dtype,
                 transpose: str = "auto") -> None:
        self.device, self.dtype = resolve_device(device), dtype
        self.net = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.positions = torch.as_tensor(positions, device=self.device)
        first = affine_first_layer(self.net)
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
