"""Input-space view of a mode: the stimulus that drives a mode most (most-exciting input, MEI).

:func:`most_exciting_input` runs projected gradient ascent on a stimulus window
``x (lag, y, x)`` to maximise a mode's *linear loading*: the projection of the
window's contributions at the mode's layer onto the mode's weights,

``J(x) = Σ_c w⁺_c C⁺_c(x) + Σ_c w⁻_c |C⁻_c(x)|``,

with ``C_c(x) = Σ_space a_c(x) ∂T/∂a_c(x)`` (activation × gradient, the
one-step contribution; ``a`` the layer's pre-batch-norm output, ``T`` the
target, e.g. the surprisal of the run) split into its positive and negative
parts. The thresholding of the fitted modes is left out: it is not
differentiable, and above the threshold it does not change the direction of
steepest ascent. Each step moves ``x`` along the normalised gradient and
projects it back onto the contrast budget ``‖x‖₂ = contrast · √(number of
pixels)`` (RMS contrast ``contrast`` in the units of the model's input, 1 = the
z-scored stimulus). The result is summarised by a rank-1 space-time split
(:func:`~retcodec.analysis.rank1.rank1_matrices`: temporal filter positive at
its peak lag, so the spatial map carries the polarity).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import xarray as xr

from retcodec.analysis.rank1 import rank1_matrices
from retcodec.defaults import DEVICE, DT
from retcodec.devices import resolve_device
from retcodec.engine.network import layer_modules
from retcodec.errors import ConfigurationError, ShapeError
from retcodec.io.provenance import provenance_attrs

__all__ = ["most_exciting_input", "MEI_STEPS", "MEI_CONTRAST"]

#: gradient-ascent steps
MEI_STEPS = 60
#: RMS contrast budget of the MEI (input units: 1 = the z-scored stimulus)
MEI_CONTRAST = 1.0


def _weights(mode_weights: xr.DataArray, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(w⁺, w⁻)`` per channel from ``(channel[, sign])`` weights."""
    if not isinstance(mode_weights, xr.DataArray) or "channel" not in mode_weights.dims:
        raise ShapeError(f"mode_weights must be a DataArray with a 'channel' dim, got "
                         f"{getattr(mode_weights, 'dims', type(mode_weights).__name__)}")
    if mode_weights.sizes["channel"] != n_channels:
        raise ShapeError(f"mode_weights has {mode_weights.sizes['channel']} channels, the layer {n_channels}")
    if "sign" in mode_weights.dims:
        pos = np.nan_to_num(mode_weights.sel(sign="pos").values.astype(float)) if "pos" in mode_weights["sign"] \
            else np.zeros(n_channels)
        neg = np.nan_to_num(mode_weights.sel(sign="neg").values.astype(float)) if "neg" in mode_weights["sign"] \
            else np.zeros(n_channels)
        return pos, neg
    w = np.nan_to_num(mode_weights.values.astype(float))
    return np.clip(w, 0, None), np.clip(-w, 0, None)


def _objective(model: torch.nn.Module, layer: str, target: Callable[[torch.Tensor], torch.Tensor],
               w_pos: torch.Tensor, w_neg: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    module = layer_modules(model)[layer]

    def loading(x: torch.Tensor) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(lambda m, a, out: captured.__setitem__("a", out))
        try:
            value = target(model(x)).sum()
        finally:
            handle.remove()
        a = captured["a"]
        (grad,) = torch.autograd.grad(value, a, create_graph=True)
        c = (a * grad).flatten(2)                                  # (1, channel, space)
        pos, neg = c.clamp(min=0).sum(-1)[0], (-c).clamp(min=0).sum(-1)[0]
        return (w_pos * pos).sum() + (w_neg * neg).sum()

    return loading


def most_exciting_input(model: torch.nn.Module, layer: str, mode_weights: xr.DataArray,
                        target: Callable[[torch.Tensor], torch.Tensor], window_shape: tuple[int, int, int], *,
                        n_steps: int = MEI_STEPS, contrast: float = MEI_CONTRAST, step: float = 0.1,
                        random_state: int = 0, device: str = DEVICE) -> xr.Dataset:
    """Most-exciting input of one mode under an RMS-contrast budget (see the module docstring).

    Parameters
    ----------
    layer : the mode's layer (``model.layers`` name).
    mode_weights : the mode's weights ``(channel[, sign])`` (a row of a modes file's ``modes``).
    target : the scalar target per window the contributions decompose (e.g.
        :class:`~retcodec.engine.targets.Surprisal`), called on the model output ``(1, cells)``.
    window_shape : ``(lag, y, x)`` of one model input window.
    n_steps, contrast, step : ascent steps, RMS contrast budget, step length as a share of the budget.

    Returns
    -------
    Dataset with ``mei (lag, y, x)`` (lag in s before the predicted bin, most
    recent frame first), ``spatial (y, x)`` and ``temporal (lag)`` (rank-1),
    ``loading (step)`` (the objective along the ascent) and attrs.
    """
    if n_steps < 1 or contrast <= 0 or not 0 < step <= 1:
        raise ConfigurationError(f"need n_steps >= 1, contrast > 0 and 0 < step <= 1; got {n_steps}, {contrast}, "
                                 f"{step}")
    if len(window_shape) != 3:
        raise ShapeError(f"window_shape must be (lag, y, x), got {window_shape}")
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            probe = torch.zeros((1, *window_shape), device=dev)
            captured: dict[str, torch.Tensor] = {}
            handle = layer_modules(model)[layer].register_forward_hook(
                lambda m, a, out: captured.__setitem__("a", out))
            model(probe)
            handle.remove()
        w_pos, w_neg = _weights(mode_weights, int(captured["a"].shape[1]))
        objective = _objective(model, layer, target, torch.as_tensor(w_pos, dtype=torch.float32, device=dev),
                               torch.as_tensor(w_neg, dtype=torch.float32, device=dev))
        budget = contrast * float(np.sqrt(np.prod(window_shape)))
        gen = torch.Generator().manual_seed(int(random_state))
        x = torch.randn((1, *window_shape), generator=gen).to(dev)
        x = x * (budget / x.norm())
        trace = np.empty(n_steps + 1)
        for k in range(n_steps):
            x.requires_grad_(True)
            with torch.enable_grad():
                value = objective(x)
                (g,) = torch.autograd.grad(value, x)
            trace[k] = float(value.detach())
            with torch.no_grad():
                norm = g.norm()
                x = x + step * budget * g / norm if norm > 0 else x
                x = x * (budget / x.norm())
        with torch.enable_grad():
            trace[-1] = float(objective(x.detach().requires_grad_(True)).detach())
    finally:
        for p, flag in zip(model.parameters(), params):
            p.requires_grad_(flag)
        model.train(was_training)
    return _mei_dataset(x.detach().cpu().numpy()[0], trace, layer, mode_weights, n_steps, contrast, step,
                        random_state)


def _mei_dataset(mei: np.ndarray, trace: np.ndarray, layer: str, mode_weights: xr.DataArray, n_steps: int,
                 contrast: float, step: float, random_state: int) -> xr.Dataset:
    n_lag, height, width = mei.shape
    flipped = mei[::-1]                                   # most recent frame first: lag 1 bin, 2 bins, ...
    spatial, temporal, _, share, _, _ = rank1_matrices(flipped.reshape(1, n_lag, height * width))
    lag = np.arange(1, n_lag + 1) * DT
    return xr.Dataset(
        {"mei": (("lag", "y", "x"), flipped, {"long_name": "most-exciting input (input units)"}),
         "spatial": (("y", "x"), spatial[0].reshape(height, width),
                     {"long_name": "rank-1 spatial profile (sign: temporal positive at its peak lag)"}),
         "temporal": ("lag", temporal[0], {"long_name": "rank-1 temporal profile"}),
         "rank1_share": ((), float(share[0]), {"long_name": "variance share of the rank-1 term"}),
         "loading": ("step", trace, {"long_name": "mode loading (linear) along the ascent"})},
        coords={"lag": ("lag", lag, {"units": "s"}), "y": np.arange(height), "x": np.arange(width),
                "step": np.arange(n_steps + 1)},
        attrs=provenance_attrs({"layer": layer, "n_steps": n_steps, "contrast": contrast, "step": step,
                                "random_state": random_state}, method="most_exciting_input",
                               mode=str(mode_weights.coords["mode"].values) if "mode" in mode_weights.coords
                               else ""))
