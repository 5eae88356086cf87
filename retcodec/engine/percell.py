"""Contributions of hidden channels to every cell's own rate, all cells in one batched pass.

For cell ``k`` the target is its rate ``y_k`` (:class:`~retcodec.engine.targets.CellRate`).
Instead of one backward pass per cell, :func:`per_cell_contributions` runs the
network once per batch of path points and takes one batched vector-Jacobian
product with the ``n`` unit vectors ``e_k`` as cotangents
(``torch.autograd.grad(..., is_grads_batched=True)``), giving ``∂y_k/∂h`` for
every cell and every requested hidden layer at once.

Methods (as :func:`retcodec.engine.contributions.contributions`, per cell):

* ``"ig"``: integrated gradients on the trapezoid rule with ``steps`` intervals
  along the straight input path from the baseline (on the fast path the affine
  ``conv0`` runs once per window);
  ``C_{k,h} ≈ Σ_j ½ [g_{k,h}(α_{j−1}) + g_{k,h}(α_j)] [h(α_j) − h(α_{j−1})]``,
  so that ``Σ_h C_{k,h} ≈ y_k(x) − y_k(x₀)`` (completeness).
* ``"actgrad"``: ``C_{k,h} = h(x) ∂y_k/∂h(x)``, one point per window.

Each unit's contribution is split into its negative and positive parts (I and E)
and summed over space per channel, as for the population target.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from retcodec.defaults import DEVICE, LAYERS
from retcodec.devices import resolve_device
from retcodec.errors import ConfigurationError
from retcodec.engine.network import (SIGNS, FastNetwork, PlainNetwork, layer_layouts, layer_modules,
                                     space_sum, to_numpy)
from retcodec.engine.quadrature import quadrature_rule
from retcodec.engine.store import StimulusSource, baseline_array, baseline_attr
from retcodec.io.provenance import provenance_attrs
from retcodec.memory import RELEASE_ABOVE, release_memory

__all__ = ["per_cell_contributions", "PerCellEngine", "PER_CELL_METHODS"]

PER_CELL_METHODS = ("ig", "actgrad")
DEFAULT_PER_CELL_STEPS = 10


class PerCellEngine:
    """Per-cell contributions for batches of windows (model copied, eval mode, no parameter grads).

    ``compute(x)`` maps windows ``(B, T, H, W)`` to ``output (B, n)``,
    ``<layer>.contribution (B, n, C, 2)`` (sign: neg, pos) and
    ``<layer>.completeness_residual (B, n)``.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], method: str = "ig",
                 steps: int = DEFAULT_PER_CELL_STEPS, baseline: np.ndarray | float = 0.0,
                 device: str | torch.device = DEVICE, dtype: torch.dtype = torch.float32,
                 fast: bool = True) -> None:
        self.device, self.dtype = resolve_device(device), dtype
        self.layers, self.method, self.steps = tuple(layers), method, int(steps)
        work = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval()
        work.requires_grad_(False)
        self.fast = bool(fast) and FastNetwork.applicable(work)
        self.net = FastNetwork(work, self.layers) if self.fast else PlainNetwork(work, self.layers)
        self.layouts = layer_layouts(work, self.layers)
        shape = tuple(getattr(model, "img_shape", ()) or ())
        base = np.asarray(baseline, dtype=np.float64)
        if base.ndim < 4 and shape:
            base = baseline_array(base, shape)
        self.baseline = torch.as_tensor(base, dtype=dtype, device=self.device)
        with torch.no_grad():
            self.e0 = self.net.entry(self.baseline)
            self.out0 = self.net.run(self.e0)[0]                 # (1, n)

    def _cell_grads(self, e: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                     dict[str, torch.Tensor]]:
        """Outputs ``(N, n)``, hidden values ``(N, ...)`` and ``∂y_k/∂h`` ``(n, N, ...)`` per layer."""
        with torch.enable_grad():
            e = e.detach().requires_grad_(True).view_as(e)
            out, hidden, _ = self.net.run(e)
            n = out.shape[1]
            eye = torch.eye(n, dtype=out.dtype, device=out.device)
            cot = eye[:, None, :].expand(n, out.shape[0], n)
            grads = torch.autograd.grad(out, [hidden[name] for name in self.layers], cot,
                                        is_grads_batched=True)
        return (out.detach(), {name: hidden[name].detach() for name in self.layers},
                dict(zip(self.layers, grads)))

    def compute(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.no_grad():
            e_x = self.net.entry(x)
        if self.method == "actgrad":
            out, hidden, grads = self._cell_grads(e_x)
            contrib = {name: hidden[name].unsqueeze(0) * grads[name] for name in self.layers}
        else:
            out, contrib = self._integrated(e_x)
        delta = (out - self.out0).T.double()                      # (n, B)
        res: dict[str, np.ndarray] = {"output": to_numpy(out)}
        for name in self.layers:
            c = contrib[name]                                     # (n, B, ...)
            flat = c.flatten(0, 1)
            split = torch.stack([space_sum(flat.clamp(max=0), self.layouts[name]),
                                 space_sum(flat.clamp(min=0), self.layouts[name])], dim=-1)
            split = split.unflatten(0, c.shape[:2]).transpose(0, 1)        # (B, n, C, 2)
            res[f"{name}.contribution"] = to_numpy(split)
            res[f"{name}.completeness_residual"] = to_numpy((c.flatten(2).sum(2).double() - delta).T)
        return res

    def _integrated(self, e_x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        alphas, _ = quadrature_rule("trapezoid", self.steps)
        p, b = len(alphas), len(e_x)
        diff = e_x - self.e0
        path = torch.cat([self.e0 + float(a) * diff for a in alphas])          # (P * B, ...)
        if path.ndim == 4:                                   # channels-last: faster convolutions on CPU
            path = path.contiguous(memory_format=torch.channels_last)
        out, hidden, grads = self._cell_grads(path)
        contrib = {}
        for name in self.layers:
            g = grads[name].unflatten(1, (p, b))                   # (n, P, B, ...)
            if self.fast and name == "conv0":                       # straight hidden path
                # Σ_j ½(g_{j-1} + g_j) = Σ_j g_j − ½(g_0 + g_m), without cell-sized temporaries
                trapezoid = g.sum(1) - 0.5 * (g[:, 0] + g[:, -1])
                contrib[name] = diff.unsqueeze(0) * trapezoid / self.steps
                continue
            contrib[name] = _trapezoid_path_sum(g, hidden[name].unflatten(0, (p, b)))
        return out.unflatten(0, (p, b))[-1], contrib


def _trapezoid_path_sum(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``Σ_j ½(g_{j−1} + g_j)(h_j − h_{j−1})`` for gradients ``g (n, P, ...)`` and values ``h (P, ...)``.

    Rearranged as ``Σ_j g_j w_j`` with ``w_j = ½(Δh_j + Δh_{j+1})`` (``Δh`` zero
    beyond the ends), accumulated point by point: no ``(n, P, ...)`` temporaries.
    """
    dh = h[1:] - h[:-1]                                        # (P - 1, ...)
    total = torch.zeros_like(g[:, 0])
    for j in range(h.shape[0]):
        w = 0.5 * ((dh[j - 1] if j > 0 else 0) + (dh[j] if j < len(dh) else 0))
        total.add_(g[:, j] * w)
    return total


def per_cell_contributions(model: nn.Module, stimulus: Any, layers: Sequence[str] | str = LAYERS,
                           method: str = "ig", steps: int = DEFAULT_PER_CELL_STEPS,
                           baseline: float | np.ndarray = 0.0, *, window_index: Sequence[int] | None = None,
                           batch_size: int = 4, device: str | torch.device = DEVICE,
                           dtype: str = "float32", fast: bool = True,
                           progress: bool = False) -> xr.DataTree:
    """Contributions of each hidden channel to each cell's own rate, for every window.

    Parameters
    ----------
    model : a retina CNN with ``model.layers`` (copied, eval mode, not modified).
    stimulus : windows ``(n, T, H, W)``, a tensor, a recording Dataset or ``Windows``
        (as :func:`retcodec.engine.contributions.contributions`).
    layers : hidden layers (names in ``model.layers``).
    method : ``"ig"`` (trapezoid, ``steps`` intervals) or ``"actgrad"``.
    baseline : scalar or one window, ``x₀`` (z-scored stimulus units).
    window_index : indices of the windows to use (e.g. a subsample); default all.
    batch_size : windows per batch; one batch holds ``batch_size × (steps + 1) × n_cells``
        gradient maps per layer.
    device, dtype : where and in which float type to compute.

    Returns
    -------
    xarray.DataTree
        Root: ``output (time, cell)``, the model's rates ``y(x)``, and
        ``output_baseline (cell)`` = ``y(x₀)``. One child per layer:
        ``contribution (time, cell, channel, sign)`` (units of the rate; sign
        ``neg`` = I, ``pos`` = E) and ``completeness_residual (time, cell)``
        (sum of the unit contributions minus ``y_k(x) − y_k(x₀)``).
    """
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    valid = list(layer_modules(model))
    if not layers or any(name not in valid for name in layers) or len(set(layers)) != len(layers):
        named = list(getattr(model, "layers", {}) or {})
        raise ConfigurationError(f"layers {list(layers)} are not valid: each must be one of {named} (or a "
                                 f"submodule's dotted path), at least one, no repeats")
    layers = tuple(sorted(layers, key=valid.index))
    if method not in PER_CELL_METHODS:
        raise ConfigurationError(f"unknown per-cell method {method!r}; use one of {list(PER_CELL_METHODS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigurationError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if dtype not in ("float32", "float64"):
        raise ConfigurationError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    source = StimulusSource(stimulus, model)
    index = np.arange(source.n) if window_index is None else np.asarray(window_index, dtype=np.int64)
    if index.ndim != 1 or index.size < 1 or index.min() < 0 or index.max() >= source.n:
        raise ConfigurationError(f"window_index must hold indices in 0..{source.n - 1}, at least one")
    base = baseline_array(baseline, source.window_shape)
    engine = PerCellEngine(model, layers, method, int(steps), base, device, getattr(torch, dtype), fast)
    parts = []
    from tqdm.auto import tqdm
    for s in tqdm(range(0, index.size, batch_size), disable=not progress, desc="per-cell", unit="batch"):
        sel = index[s:s + batch_size]
        x = np.concatenate([source.read(int(i), int(i) + 1) for i in sel])
        parts.append(engine.compute(torch.as_tensor(x, dtype=engine.dtype, device=engine.device)))
        release_memory(RELEASE_ABOVE)                 # batch temporaries fragment the heap
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return _assemble(data, source, index, engine, model, layers, method, int(steps), base, device)


def _assemble(data: dict[str, np.ndarray], source: StimulusSource, index: np.ndarray,
              engine: PerCellEngine, model: nn.Module, layers: tuple[str, ...], method: str, steps: int,
              base: np.ndarray, device: Any) -> xr.DataTree:
    n_cells = data["output"].shape[1]
    meta = getattr(model, "meta", {}) or {}
    cells = meta.get("cells")
    cells = np.asarray(cells) if cells is not None and np.ndim(cells) == 1 and len(cells) == n_cells \
        else (source.cells if source.cells is not None else np.arange(n_cells))
    time = xr.Variable("time", source.time[index], source.time_attrs)
    root = xr.Dataset(
        {"output": (("time", "cell"), data["output"], {"long_name": "model rate y(x)"}),
         "output_baseline": ("cell", to_numpy(engine.out0[0]), {"long_name": "model rate y(x0)"})},
        coords={"time": time, "cell": cells},
        attrs=provenance_attrs({"layers": list(layers), "method": method, "steps": steps,
                                "baseline": baseline_attr(base), "device": str(device),
                                "path": engine.net.kind},
                               target="cell_rate (every cell, its own rate)",
                               computation="one batched vector-Jacobian product over cells"))
    children = {}
    for name in layers:
        contrib = data[f"{name}.contribution"]
        children[name] = xr.Dataset(
            {"contribution": (("time", "cell", "channel", "sign"), contrib, {
                "long_name": f"contribution to the cell's own rate ({method}), split into negative and "
                             f"positive parts per unit, summed over space per channel",
                "units": "units of the rate"}),
             "completeness_residual": (("time", "cell"), data[f"{name}.completeness_residual"], {
                 "long_name": "sum of contributions minus (y_k(x) - y_k(x0))"})},
            coords={"time": time, "cell": cells, "channel": np.arange(contrib.shape[2]), "sign": list(SIGNS)},
            attrs={"layer": name, "method": method})
    return xr.DataTree.from_dict({"/": root, **children})
