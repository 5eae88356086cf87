"""Silencing a direction of a layer's activity instead of whole channels.

A recorded interneuron need not correspond to one model channel: its best
model counterpart can be a weighted combination of channels (of one or
several layers). *Silencing* such a direction ``w`` (a weight per channel) at
a layer removes the component of the layer's output along ``w`` at every
position:

``h'[c, y, x] = h[c, y, x] - w_c * sum_k w_k h[k, y, x] / |w|^2``

so that the read-out ``sum_c w_c h'[c, y, x]`` is zero everywhere while every
activity orthogonal to ``w`` is untouched. A direction with one non-zero
weight is exactly the whole-channel silencing of
:class:`retcodec.engine.perturb.Silencer`. Directions over several layers are
projected out of each layer in model order (a later layer sees the earlier
ones already projected). The output is left as it is (it may be negative where
``w`` mixes channels): the perturbation is linear, like setting a channel to 0.

:func:`projection` builds the replacement for
:meth:`retcodec.engine.perturb.Silencer.transformed_rates`;
:func:`direction_rates` silences directions of several layers at once.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from retcodec.engine.perturb import Silencer, Transform
from retcodec.errors import ConfigurationError, ShapeError

__all__ = ["projection", "project_out", "direction_rates", "check_direction"]


def check_direction(weights: np.ndarray, n_channels: int, layer: str) -> np.ndarray:
    """``weights`` as a finite float vector of ``n_channels`` entries (all zero allowed: nothing silenced)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_channels,):
        raise ShapeError(f"the direction of layer {layer!r} has shape {w.shape}; the layer has "
                         f"{n_channels} channels")
    if not np.isfinite(w).all():
        raise ConfigurationError(f"the direction of layer {layer!r} holds NaN or Inf")
    return w


def project_out(h: torch.Tensor, weights: torch.Tensor, axis: int = 1,
                loadings: torch.Tensor | None = None) -> torch.Tensor:
    """``h - a (w . h)`` on the channel ``axis`` (at every other index), ``w = weights``.

    ``a = loadings``, default ``w / |w|^2``: the orthogonal projection of ``w`` out of ``h``.
    """
    norm = float((weights * weights).sum())
    if norm == 0:
        return h
    shape = [1] * h.ndim
    shape[axis] = -1
    w = weights.to(h.device, h.dtype).view(shape)
    a = w / norm if loadings is None else loadings.to(h.device, h.dtype).view(shape)
    return h - a * (h * w).sum(dim=axis, keepdim=True)


def projection(weights: np.ndarray, loadings: np.ndarray | None = None, clip: bool = False) -> Transform:
    """A layer replacement (``f(output, channel_axis)``) removing the direction ``weights``.

    ``loadings``: how much of the read-out ``w . h`` each channel carries (default: the
    orthogonal projection); ``clip``: keep the result non-negative, like the ReLU before it.
    """
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    a = None if loadings is None else torch.as_tensor(np.asarray(loadings, dtype=np.float64))

    def transform(h: torch.Tensor, axis: int) -> torch.Tensor:
        if h.shape[axis] != w.numel():
            raise ShapeError(f"a direction of {w.numel()} channels cannot be projected out of an output "
                             f"with {h.shape[axis]} channels")
        out = project_out(h, w, axis, a)
        return out.clamp_min(0) if clip else out
    return transform


def direction_rates(silencer: Silencer, directions: Mapping[str, np.ndarray],
                    loadings: Mapping[str, np.ndarray] | None = None, clip: bool = False) -> np.ndarray:
    """Rates ``(time, out)`` of ``silencer``'s windows with each layer's direction removed.

    ``directions``: layer -> weights ``(channel,)``; layers with all-zero weights are left
    intact. ``loadings``, ``clip``: as in :func:`projection`.
    """
    transforms = {}
    for layer, weights in directions.items():
        if layer not in silencer.points:
            raise ConfigurationError(f"a direction for layer {layer!r}, but silencing is set up for "
                                     f"{list(silencer.points)}")
        n = silencer.points[layer].n_channels
        w = check_direction(weights, n, layer)
        a = None if loadings is None or layer not in loadings else check_direction(loadings[layer], n, layer)
        if np.any(w != 0):
            transforms[layer] = projection(w, a, clip)
    return silencer.transformed_rates(transforms)
