"""Contributions of hidden units to a scalar target: the core of CODEC (``codec-method.md`` §2-3).

:func:`contributions` computes, for every stimulus window and every requested
hidden layer, each unit's contribution ``C_h`` to the target ``S(F(x))``, splits
it into its negative and positive parts (E/I) and sums those over space per
channel. The result is an :class:`xarray.DataTree` (root: targets and their
parameters; one child per layer), optionally streamed to a netCDF file.

Methods (``h``: units of layer ``l``; ``g_h = ∂S/∂h``; input path
``x(α) = x₀ + α (x − x₀)``):

* ``"ig"``: integrated gradients decomposed at the hidden layer,
  ``C_h = ∫₀¹ g_h(x(α)) dh(x(α))/dα dα``. ``quadrature="trapezoid"`` (the
  paper's rule, ``m + 1`` path points, ``α_k = k/m``):
  ``C_h ≈ Σ_k ½ [g_h(α_{k−1}) + g_h(α_k)] [h(α_k) − h(α_{k−1})]``.
  ``"gauss-legendre"`` / ``"simpson"``: ``C_h ≈ Σ_j w_j g_h(α_j) ḣ(α_j)`` with
  the tangent ``ḣ = dh/dα`` (forward-mode rules per module on the fast path,
  double backward on the plain path). On the published retina layout the ReLU
  kinks make every rule first order; see ``benchmarks/bench_contributions.py``.
* ``"actgrad"``: ``C_h = h(x) g_h(x)``.
* ``"inputgrad"``: ``C_h = Σ_p x_p ∂S/∂h ∂h/∂x_p = g_h(x) · (J_h(x) x)``, the
  directional derivative of ``h`` along ``x`` (for an affine first layer
  ``h = Wx + b`` this is ``(h − b) g_h``).
* ``"smoothgrad"``: the mean of ``h g_h`` over ``n_samples`` noisy copies
  ``x + ε``, ``ε ~ N(0, sigma²)`` (seeded per window, so results do not depend
  on chunking or backend).

Speed: when the model's first module is the affine layer ``conv0`` (a
convolution, or a stack of them without nonlinearity, as in the published
models), its output along the straight path is ``h₀(α) = h₀(x₀) + α (h₀(x) −
h₀(x₀))``: ``conv0`` runs once per window, only the rest of the network runs on
the path points (all windows × points in one batch), and gradients go back to
the hidden tensors only, never into the input (``fast=True``). ``fast=False``
(or a model without that structure) uses the plain path: every path point
through the whole model, hidden outputs captured by forward hooks. The fast
path runs many small convolutions: on a machine shared with other jobs, set
``OMP_WAIT_POLICY=PASSIVE`` before starting Python so that idle threads sleep
instead of spinning (4x faster with 2 threads on a loaded 2-core machine).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from retcodec.io.architectures import AbsBatchNorm, GaussianNoise, GrabUnits, LinearStackedConv2d
from retcodec.errors import ConfigurationError, NonFiniteError, ShapeError
from retcodec.io.provenance import provenance_attrs, to_attr
from retcodec.io.storage import atomic_path, write_netcdf_atomic
from retcodec.engine.targets import Surprisal, Target, make_target

__all__ = ["contributions", "METHODS", "QUADRATURES", "quadrature_rule"]

METHODS = ("ig", "actgrad", "inputgrad", "smoothgrad")
QUADRATURES = ("trapezoid", "gauss-legendre", "simpson")
SIGNS = ("neg", "pos")
COMPLETENESS_STATS = ("median", "p95", "max", "total")
DEFAULT_CHUNK_SIZE = 256


# =========================================================================== settings
@dataclass(frozen=True)
class Settings:
    """What to compute (everything but the model, the stimulus and the target)."""

    layers: tuple[str, ...]
    method: str = "ig"
    steps: int = 20
    quadrature: str = "trapezoid"
    maps: bool = False
    batch_size: int = 16
    n_samples: int = 20
    sigma: float = 0.1
    seed: int = 0
    dtype: str = "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def quadrature_rule(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Path points ``α`` in [0, 1] and weights of a quadrature rule with ``steps`` intervals.

    ``trapezoid``: ``steps + 1`` uniform points; ``simpson``: the same points
    (``steps`` even); ``gauss-legendre``: ``steps`` Gauss-Legendre nodes. The
    weights integrate over [0, 1] (they sum to 1).
    """
    m = int(steps)
    if name == "trapezoid":
        w = np.full(m + 1, 1.0 / m)
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, m + 1), w
    if name == "simpson":
        if m % 2:
            raise ConfigurationError(f"quadrature='simpson' needs an even number of steps, got {m}")
        w = np.ones(m + 1)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        return np.linspace(0.0, 1.0, m + 1), w / (3.0 * m)
    if name == "gauss-legendre":
        nodes, w = np.polynomial.legendre.leggauss(m)
        return (nodes + 1) / 2, w / 2
    raise ConfigurationError(f"unknown quadrature {name!r}; use one of {list(QUADRATURES)}")


# =========================================================================== networks
class _DenseReadout(nn.Module):
    """A convolution followed by :class:`GrabUnits`, as one matrix product.

    ``(B, C, H, W) -> (B, n)``: output ``i`` is channel ``i`` of the convolution
    at ``coords[i]``, i.e. the dot product of the map with a weight that is zero
    outside that cell's ``k x k`` patch. Only ``n`` outputs are computed (not the
    full ``n x H' x W'`` map), as one BLAS product, forward and backward.
    """

    def __init__(self, conv: nn.Conv2d, coords: torch.Tensor) -> None:
        super().__init__()
        self.conv = conv
        self.coords = coords.to(conv.weight.device)
        self._dense: dict[tuple[int, int], torch.Tensor] = {}

    def dense_weight(self, height: int, width: int) -> torch.Tensor:
        """``(n, H * W * C)``: the read-out weights laid out as a channels-last map."""
        key = (height, width)
        if key not in self._dense:
            w = self.conv.weight                                   # (n, C, kh, kw)
            n, c, kh, kw = w.shape
            dense = w.new_zeros(n, height, width, c)
            for i, (r, q) in enumerate(self.coords.tolist()):
                dense[i, r:r + kh, q:q + kw] = w[i].permute(1, 2, 0)
            self._dense[key] = dense.reshape(n, -1)
        return self._dense[key]

    def forward(self, h: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        flat = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)     # a view for channels-last maps
        out = flat @ self.dense_weight(h.shape[2], h.shape[3]).T
        bias = self.conv.bias
        return out + bias if (with_bias and bias is not None) else out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dense"] = {}
        return state

    @staticmethod
    def fusable(conv: nn.Module, grab: nn.Module) -> bool:
        return (isinstance(conv, nn.Conv2d) and isinstance(grab, GrabUnits)
                and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.dilation == (1, 1)
                and conv.groups == 1 and grab.coords.shape[0] == conv.out_channels)


class _ChannelAffine(nn.Module):
    """An eval-mode batch norm as ``(x − mean) · scale + shift`` per channel (dim 1)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.scale, self.shift = mean, scale, shift

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> "_ChannelAffine | None":
        """The affine map of an eval-mode batch norm; None for other modules."""
        if bn.training:
            return None
        if isinstance(bn, AbsBatchNorm):
            gain, shift = bn.scale.abs(), bn.shift
        elif isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_var is not None:
            ones = torch.ones_like(bn.running_var)
            gain = bn.weight if bn.weight is not None else ones
            shift = bn.bias if bn.bias is not None else torch.zeros_like(ones)
        else:
            return None
        scale = gain / torch.sqrt(bn.running_var + bn.eps)
        return cls(bn.running_mean.detach().clone(), scale.detach(), shift.detach().clone())

    def _shaped(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        return v.view(1, -1, *([1] * (ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shaped(self.shift, x.ndim), x - self._shaped(self.mean, x.ndim),
                             self._shaped(self.scale, x.ndim))

    def tangent(self, t: torch.Tensor) -> torch.Tensor:
        return t * self._shaped(self.scale, t.ndim)


def _is_identity_in_eval(module: nn.Module) -> bool:
    return isinstance(module, (nn.Identity, nn.Dropout, GaussianNoise)) and not module.training


def _is_affine_entry(module: nn.Module) -> bool:
    """True for a convolution or a stack of convolutions (and eval-mode dropout) only."""
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    if isinstance(module, LinearStackedConv2d):
        return all(isinstance(m, (nn.Conv2d, nn.Dropout)) and getattr(m, "padding_mode", "zeros") == "zeros"
                   for m in module.convs)
    return False


def _push_tangent(module: nn.Module, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward-mode derivative of an eval-mode ``module`` at ``inp`` along ``t``."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        return F.conv2d(t, module.weight, None, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, LinearStackedConv2d):
        for sub in module.convs:
            t = _push_tangent(sub, inp, t)
        return t
    if isinstance(module, _ChannelAffine):
        return module.tangent(t)
    if isinstance(module, _DenseReadout):
        return module(t, with_bias=False)
    if isinstance(module, nn.Linear):
        return F.linear(t, module.weight)
    if isinstance(module, (nn.Dropout, GaussianNoise, nn.Identity, nn.Flatten, GrabUnits)) \
            or type(module).__name__ in ("Flatten", "Reshape"):
        return module(t)
    if isinstance(module, nn.ReLU):
        return t * (inp > 0)
    affine = _ChannelAffine.from_batchnorm(module)
    if affine is not None:
        return affine.tangent(t)
    if isinstance(module, nn.Softplus):
        z = inp * module.beta
        return t * torch.where(z > module.threshold, torch.ones_like(z), torch.sigmoid(z))
    with warnings.catch_warnings():            # torch's forward-mode set-up warns about jit
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.func.jvp(module, (inp,), (t,))[1]


class _FastNetwork:
    """The model split at its affine first layer ``conv0``: ``entry`` once, ``rest`` on the path.

    ``run(e)`` maps ``conv0`` outputs to model outputs and captures the requested
    hidden layers (``conv0`` is ``e`` itself). A ganglion convolution read out by
    :class:`GrabUnits` is computed only at the read-out positions when its map
    is not requested (:class:`_DenseReadout`), eval-mode batch norms become plain
    per-channel affine maps and eval-mode noise/dropout is left out. Stacked 3x3
    convolutions are kept as they are: on the path batch, in channels-last
    layout, they cost half the arithmetic of the collapsed kernel and run
    faster on CPU.
    """

    kind = "fast"

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        index = dict(model.layer_index)
        modules = list(model.sequential)
        self.entry_module = modules[0]
        names = {i: name for name, i in index.items()}
        rest: list[tuple[nn.Module, str | None]] = []
        i = 1
        while i < len(modules):
            m, name = modules[i], names.get(i)
            if name is not None and name not in layers and i + 1 < len(modules) \
                    and _DenseReadout.fusable(m, modules[i + 1]):
                rest.append((_DenseReadout(m, modules[i + 1].coords), None))
                i += 2
                continue
            i += 1
            if name is None and _is_identity_in_eval(m):
                continue
            affine = _ChannelAffine.from_batchnorm(m) if name is None else None
            rest.append((affine or m, name if name in layers else None))
        self.rest = rest
        self.layers = tuple(layers)
        deepest = max((k for k, (_, n) in enumerate(rest) if n is not None), default=-1)
        self.tangent_depth = deepest + 1       # modules to run to reach the deepest layer

    @staticmethod
    def applicable(model: nn.Module) -> bool:
        seq, index = getattr(model, "sequential", None), getattr(model, "layer_index", None)
        return (isinstance(seq, nn.Sequential) and isinstance(index, Mapping)
                and index.get("conv0") == 0 and _is_affine_entry(seq[0]))

    def entry(self, x: torch.Tensor) -> torch.Tensor:
        return self.entry_module(x)

    def run(self, e: torch.Tensor, record: bool = False
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
        hidden = {"conv0": e} if "conv0" in self.layers else {}
        inputs: list[torch.Tensor] = []
        h = e
        for k, (module, name) in enumerate(self.rest):
            if record and k < self.tangent_depth:
                inputs.append(h.detach())
            h = module(h)
            if name is not None:
                hidden[name] = h
        return h, hidden, inputs

    def tangents(self, e: torch.Tensor, t: torch.Tensor, inputs: list[torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
        """``dh_l/dα`` for every requested layer given the entry tangent ``t``."""
        if inputs is None:
            with torch.no_grad():
                inputs = self.run(e, record=True)[2]
        out = {"conv0": t} if "conv0" in self.layers else {}
        with torch.no_grad():
            for k in range(self.tangent_depth):
                module, name = self.rest[k]
                t = _push_tangent(module, inputs[k], t)
                if name is not None:
                    out[name] = t
        return out


class _PlainNetwork:
    """The whole model on every path point; hidden layers captured by forward hooks."""

    kind = "plain"

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = tuple(layers)
        self._captured: dict[str, torch.Tensor] = {}
        for name in self.layers:
            model.layers[name].register_forward_hook(self._hook(name))

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._captured[name] = output
        return hook

    def entry(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def run(self, e: torch.Tensor, record: bool = False
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor], None]:
        self._captured = {}
        out = self.model(e)
        hidden, self._captured = self._captured, {}
        return out, hidden, None

    def tangents(self, e: torch.Tensor, t: torch.Tensor, inputs: Any = None) -> dict[str, torch.Tensor]:
        """``J_l(e) t`` for every layer by double backward: ``J t = ∂/∂u ⟨Jᵀ u, t⟩``."""
        names = list(self.layers)
        with torch.enable_grad():
            x = e.detach().requires_grad_(True)
            _, hidden, _ = self.run(x)
            dummies = [torch.zeros_like(hidden[n], requires_grad=True) for n in names]
            (vjp,) = torch.autograd.grad([hidden[n] for n in names], [x], dummies, create_graph=True)
            jvps = torch.autograd.grad(vjp, dummies, t, allow_unused=True)
        return {n: (torch.zeros_like(hidden[n]) if j is None else j.detach()) for n, j in zip(names, jvps)}


# =========================================================================== engine
class Engine:
    """Computes contributions for batches of windows; picklable (rebuilt from its arguments)."""

    def __init__(self, model: nn.Module, settings: Settings, baseline: np.ndarray,
                 device: str | torch.device = "cpu", fast: bool = True,
                 target: Target | None = None) -> None:
        self._args = (model, settings, baseline, str(device), fast)
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = settings.torch_dtype
        work = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        work.requires_grad_(False)
        self.fast = bool(fast) and _FastNetwork.applicable(work)
        self.net = _FastNetwork(work, settings.layers) if self.fast else _PlainNetwork(work, settings.layers)
        self.baseline = torch.as_tensor(baseline, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            self.e0 = self.net.entry(self.baseline)                        # (1, ...)
            self.e_zero = self.net.entry(torch.zeros_like(self.baseline))  # affine offset
        # per-layer layout of the hidden tensor: "channels" (B, C, ...) or "tokens" (B, tokens, C)
        self.layouts = _layer_layouts(work, settings.layers)
        self.target: Target | None = None
        if target is not None:
            self.set_target(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_engine, (self._args, self.target))

    def set_target(self, target: Target) -> None:
        self.target = target
        with torch.no_grad():
            self.s0 = self.target(self.net.run(self.e0)[0])[0]               # S(F(x0)), scalar

    # ------------------------------------------------------------------ no-grad passes
    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Model outputs ``F(x)``, ``(B, n_outputs)``, batched, without gradients."""
        parts = []
        with torch.no_grad():
            for xb in self._batches(x):
                parts.append(self.net.run(self.net.entry(xb))[0].cpu().numpy())
        return np.concatenate(parts)

    def _batches(self, x: np.ndarray) -> Iterable[torch.Tensor]:
        for s in range(0, len(x), self.settings.batch_size):
            yield torch.as_tensor(x[s:s + self.settings.batch_size], dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ contributions
    def compute(self, x: np.ndarray, index0: int = 0,
                on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Results for windows ``x (B, T, H, W)`` with global indices ``index0 ...``."""
        parts = []
        for b, xb in enumerate(self._batches(x)):
            parts.append(self._compute_batch(xb, index0 + b * self.settings.batch_size))
            if on_batch is not None:
                on_batch(len(xb))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _compute_batch(self, x: torch.Tensor, index0: int) -> dict[str, np.ndarray]:
        if self.target is None:
            raise ConfigurationError("the engine has no target; call set_target first")
        with torch.no_grad():
            e_x = self.net.entry(x)
            out_x, hid_x, _ = self.net.run(e_x)
            s_x = self.target(out_x)
        method = self.settings.method
        if method == "ig":
            contrib = self._integrated_gradients(e_x)
        elif method == "actgrad":
            contrib = self._actgrad(e_x)
        elif method == "inputgrad":
            contrib = self._inputgrad(e_x)
        else:
            contrib = self._smoothgrad(x, index0)
        delta = (s_x - self.s0).double()
        res: dict[str, np.ndarray] = {
            "output": _np(out_x), "target": _np(s_x),
            "target_baseline": _np(self.s0.expand(len(x)))}
        for name in self.settings.layers:
            c, layout = contrib[name], self.layouts[name]
            res[f"{name}.contribution"] = _np(torch.stack(
                [_space_sum(c.clamp(max=0), layout), _space_sum(c.clamp(min=0), layout)], dim=-1))
            res[f"{name}.activation"] = _np(_space_sum(hid_x[name], layout))
            res[f"{name}.completeness_residual"] = _np(c.flatten(1).sum(1).double() - delta)
            if self.settings.maps and c.ndim == 4 and layout == "channels":
                res[f"{name}.contribution_map"] = _np(c)
        return {k: v.astype(self._np_dtype, copy=False) for k, v in res.items()}

    @property
    def _np_dtype(self) -> np.dtype:
        return np.dtype(self.settings.dtype)

    def _grads(self, e: torch.Tensor, record: bool = False
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Any]:
        """Hidden values and ``∂S/∂h`` at every requested layer for entry points ``e``."""
        with torch.enable_grad():
            # a view, so that the graph's input is not the leaf (module hooks, e.g. of
            # torch.utils.flop_counter, refuse autograd.grad w.r.t. a leaf)
            e = e.detach().requires_grad_(True).view_as(e)
            out, hidden, inputs = self.net.run(e, record=record)
            layers = self.settings.layers
            grads = torch.autograd.grad(self.target(out).sum(), [hidden[n] for n in layers])
        return ({n: hidden[n].detach() for n in layers}, dict(zip(layers, grads)), inputs)

    def _path(self, e_x: torch.Tensor, alphas: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Entry values on the straight path, ``(P * B, ...)``, and ``e_x − e_0``."""
        diff = e_x - self.e0
        fmt = torch.channels_last if diff.ndim == 4 else torch.contiguous_format
        diff = diff.contiguous(memory_format=fmt)
        e0 = self.e0.expand_as(diff).contiguous(memory_format=fmt)
        b = len(e_x)
        path = torch.empty((len(alphas) * b, *diff.shape[1:]), dtype=diff.dtype, device=diff.device,
                           memory_format=fmt)
        for k, alpha in enumerate(alphas):
            torch.add(e0, diff, alpha=float(alpha), out=path[k * b:(k + 1) * b])
        return path, diff

    def _integrated_gradients(self, e_x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.settings
        alphas, weights = quadrature_rule(s.quadrature, s.steps)
        p, b = len(alphas), len(e_x)
        e_path, diff = self._path(e_x, alphas)
        hidden, grads, inputs = self._grads(e_path, record=s.quadrature != "trapezoid")
        out = {}
        if s.quadrature == "trapezoid":
            for name in s.layers:
                if self.fast and name == "conv0":     # straight hidden path: h_k − h_{k−1} = diff / m
                    out[name] = diff * _weighted_sum(weights, grads[name])
                    continue
                h = hidden[name].unflatten(0, (p, b))
                g = grads[name].unflatten(0, (p, b))
                out[name] = (0.5 * (g[1:] + g[:-1]) * (h[1:] - h[:-1])).sum(0)
            return out
        t_path = diff.unsqueeze(0).expand(p, *diff.shape).flatten(0, 1)
        if t_path.ndim == 4:
            t_path = t_path.contiguous(memory_format=torch.channels_last)
        tang = self.net.tangents(e_path, t_path, inputs)
        for name in s.layers:
            out[name] = _weighted_sum(weights, grads[name] * tang[name])
        return out

    def _actgrad(self, e_x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden, grads, _ = self._grads(e_x)
        return {n: hidden[n] * grads[n] for n in self.settings.layers}

    def _inputgrad(self, e_x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden, grads, inputs = self._grads(e_x, record=True)
        tang = self.net.tangents(e_x, e_x - self.e_zero, inputs)   # J_h(x) x
        return {n: grads[n] * tang[n] for n in self.settings.layers}

    def _smoothgrad(self, x: torch.Tensor, index0: int) -> dict[str, torch.Tensor]:
        s = self.settings
        noise = torch.stack([_window_noise(s.seed, index0 + i, (s.n_samples, *x.shape[1:]))
                             for i in range(len(x))], dim=1)          # (S, B, T, H, W)
        noisy = (x.unsqueeze(0) + s.sigma * noise.to(device=self.device, dtype=self.dtype)).flatten(0, 1)
        with torch.no_grad():
            e = self.net.entry(noisy)
        hidden, grads, _ = self._grads(e)
        return {n: (hidden[n] * grads[n]).unflatten(0, (s.n_samples, len(x))).mean(0)
                for n in s.layers}


def _rebuild_engine(args: tuple[Any, ...], target: Target | None) -> Engine:
    return Engine(*args, target=target)


def _weighted_sum(weights: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k x_k`` over the ``P`` blocks of ``x (P * B, ...)``, in place of a copy.

    Elementwise, so the result does not depend on the number of threads.
    """
    b = len(x) // len(weights)
    acc = x[:b] * float(weights[0])
    for k in range(1, len(weights)):
        acc.add_(x[k * b:(k + 1) * b], alpha=float(weights[k]))
    return acc


def _space_sum(t: torch.Tensor, layout: str = "channels") -> torch.Tensor:
    """``(B, C, ...) -> (B, C)``: the sum over the spatial dimensions, if any.

    ``layout="tokens"``: ``(B, tokens, C) -> (B, C)``, the sum over tokens (a
    transformer's hidden tensor; ``channel`` is then the embedding dimension).
    """
    if layout == "tokens":
        if t.ndim != 3:
            raise ShapeError(f"a 'tokens' layer must give (batch, tokens, dim), got {tuple(t.shape)}")
        return t.sum(dim=1)
    return t.sum(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


def _layer_layouts(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """Layout of each layer from the optional ``model.layer_layouts`` (default ``"channels"``)."""
    given = dict(getattr(model, "layer_layouts", None) or {})
    layouts = {name: str(given.get(name, "channels")) for name in layers}
    bad = {n: v for n, v in layouts.items() if v not in ("channels", "tokens")}
    if bad:
        raise ConfigurationError(f"model.layer_layouts must map layers to 'channels' or 'tokens', got {bad}")
    return layouts


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _window_noise(seed: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise for window ``index``: the same whatever the batching."""
    state = int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0])
    gen = torch.Generator().manual_seed(state)
    return torch.randn(shape, generator=gen)


# =========================================================================== stimulus
class _Source:
    """Uniform access to windows: an array ``(n, T, H, W)`` or a recordings ``Windows``."""

    def __init__(self, stimulus: Any, model: nn.Module) -> None:
        if isinstance(stimulus, (xr.Dataset, xr.DataArray, xr.DataTree)):
            from retcodec.io import recordings as recordings
            meta = getattr(model, "meta", {}) or {}
            shape = getattr(model, "img_shape", None)
            history = {"history": int(shape[0])} if shape else {}
            stimulus = recordings.windows(stimulus, norm_stats=meta.get("norm_stats"), **history)
        if isinstance(stimulus, torch.Tensor):
            stimulus = stimulus.detach().cpu().numpy()
        self.windows = stimulus
        self.is_array = isinstance(stimulus, np.ndarray)
        if not self.is_array and not (hasattr(stimulus, "__len__") and hasattr(stimulus, "__getitem__")):
            raise ConfigurationError(
                f"stimulus must be an array (n, T, H, W), a torch tensor, a recording Dataset or a "
                f"retcodec.io.recordings.Windows, got {type(stimulus).__name__}")
        self.n = len(stimulus)
        if self.n < 1:
            raise ShapeError("the stimulus holds no windows")
        expected = tuple(getattr(model, "img_shape", ()) or ())
        first = np.asarray(stimulus[0:1])
        if first.ndim != 4 or (expected and first.shape[1:] != expected):
            want = f"(n, {', '.join(map(str, expected))})" if expected else "(n, T, H, W)"
            got = stimulus.shape if self.is_array else ("n",) + first.shape[1:]
            raise ShapeError(f"stimulus windows must have shape {want} for this model, got {tuple(got)}")
        self.window_shape = first.shape[1:]
        time = getattr(stimulus, "time", None)
        if time is not None and not self.is_array:
            self.time = np.asarray(time, dtype=np.float64)
            self.time_attrs = {"long_name": "time of the predicted bin", "units": "s"}
        else:
            self.time = np.arange(self.n)
            self.time_attrs = {"long_name": "window index", "units": "1"}
        if len(self.time) != self.n:
            raise ShapeError(f"stimulus has {self.n} windows but {len(self.time)} times")
        cells = getattr(stimulus, "cells", None)
        self.cells = None if cells is None else np.asarray(cells)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Windows ``start:stop`` as float32 ``(k, T, H, W)``; NaN/Inf raise."""
        x = np.asarray(self.windows[start:stop], dtype=np.float32)
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise NonFiniteError(f"stimulus window {first} (and {int(bad.sum()) - 1} more in windows "
                                 f"{start}:{stop}) holds NaN or Inf; clean the stimulus first")
        return x

    def fingerprint(self, chunks: Sequence[tuple[int, int]]) -> str:
        """Hash of the times and of the first window of every chunk (identifies the stimulus)."""
        h = hashlib.sha256(np.ascontiguousarray(self.time).tobytes())
        h.update(repr((self.n, self.window_shape)).encode())
        for start, _ in chunks:
            h.update(np.ascontiguousarray(self.read(start, start + 1)).tobytes())
        h.update(np.ascontiguousarray(self.read(self.n - 1, self.n)).tobytes())
        return h.hexdigest()


def _baseline_array(baseline: Any, window_shape: tuple[int, ...]) -> np.ndarray:
    """The baseline window as ``(1, T, H, W)`` float64 (a scalar fills the window)."""
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.detach().cpu().numpy()
    arr = np.asarray(baseline, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    try:
        arr = np.broadcast_to(arr, window_shape)
    except ValueError:
        raise ShapeError(f"baseline must be a scalar or broadcast to one window {window_shape}, "
                         f"got shape {arr.shape}") from None
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError("the baseline holds NaN or Inf")
    return np.array(arr, dtype=np.float64, copy=True)[None]


def _baseline_attr(baseline: np.ndarray) -> float | str:
    flat = baseline.ravel()
    if np.all(flat == flat[0]):
        return float(flat[0])
    digest = hashlib.sha256(baseline.tobytes()).hexdigest()[:16]
    return f"array {baseline.shape[1:]} mean={flat.mean():.6g} sha256={digest}"


# =========================================================================== chunk stores
class _MemoryStore:
    """Chunk results kept in memory (no ``out`` file)."""

    def __init__(self) -> None:
        self.chunks: dict[int, dict[str, np.ndarray]] = {}

    def done(self) -> set[int]:
        return set(self.chunks)

    def save(self, index: int, result: Mapping[str, np.ndarray]) -> None:
        self.chunks[index] = dict(result)

    def load(self, index: int) -> dict[str, np.ndarray]:
        return self.chunks[index]

    def discard(self) -> None:
        self.chunks.clear()


class _PartialStore(_MemoryStore):
    """Chunk results streamed to ``<out>.partial/`` (one ``.npz`` per chunk, each written atomically).

    ``params.json`` identifies the run; a rerun with the same parameters skips
    the chunks already there. ``target.npz`` holds a fitted surprisal so that a
    resumed run reuses it.
    """

    def __init__(self, out: Path, params: Mapping[str, Any], resume: bool) -> None:
        super().__init__()
        self.dir = out.with_name(out.name + ".partial")
        self.params = json.loads(json.dumps(dict(params), default=str))
        if self.dir.exists():
            old = self._read_params()
            if not resume or old is None:
                shutil.rmtree(self.dir)
            elif old != self.params:
                diff = sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))
                raise ConfigurationError(
                    f"{self.dir} holds a partial run with different parameters ({', '.join(diff)}); "
                    f"rerun with the same parameters to resume it, or pass resume=False "
                    f"(or delete the folder) to start afresh")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "params.json").exists():
            with atomic_path(self.dir / "params.json") as tmp:
                tmp.write_text(json.dumps(self.params, indent=1, sort_keys=True))

    def _read_params(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / "params.json").read_text())
        except (OSError, ValueError):
            return None

    def _chunk_path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.npz"

    def done(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("chunk-*.npz")}

    def save(self, index: int, result: Mapping[str, np.ndarray]) -> None:
        with atomic_path(self._chunk_path(index)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **result)

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self._chunk_path(index)) as z:
            return {k: z[k] for k in z.files}

    def saved_surprisal(self) -> Surprisal | None:
        path = self.dir / "target.npz"
        if not path.exists():
            return None
        with np.load(path) as z:
            return Surprisal(z["mean"], z["sample_cov"], regularization=float(z["shrinkage"]),
                             method=str(z["method"]), n_samples=int(z["n_samples"]))

    def save_surprisal(self, target: Surprisal) -> None:
        with atomic_path(self.dir / "target.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=target.mean, sample_cov=target.sample_covariance,
                     shrinkage=target.shrinkage, method=target.method,
                     n_samples=target.n_samples or 0)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# =========================================================================== public API
def contributions(model: nn.Module, stimulus: Any, layers: Sequence[str] | str = ("conv0", "conv1"),
                  method: str = "ig", steps: int = 20, target: Any = "surprisal",
                  baseline: float | np.ndarray = 0.0, *, quadrature: str = "trapezoid",
                  batch_size: int = 16, device: str | torch.device = "cpu",
                  dtype: str = "float32", maps: bool = False, out: str | Path | None = None,
                  chunk_size: int | None = None, resume: bool = True, progress: bool = True,
                  backend: str = "serial", scheduler: Any = None, n_workers: int = 2,
                  fast: bool = True, n_samples: int = 20, sigma: float = 0.1, seed: int = 0,
                  shrinkage: float | str | None = "ledoit-wolf",
                  on_chunk: Callable[[int, int, int], None] | None = None) -> xr.DataTree:
    """Contributions of hidden units to a target, per window, split E/I and summed over space.

    Parameters
    ----------
    model : RetinaCNN
        A model with ``model.layers`` (name -> module whose output is the layer).
        It is copied, put in eval mode and not modified. An optional
        ``model.layer_layouts`` (name -> ``"channels"`` | ``"tokens"``) marks
        layers whose output is ``(B, tokens, dim)``: those are summed over
        tokens (``channel`` = ``dim``) instead of over dims >= 2.
    stimulus : array (n, T, H, W), torch.Tensor, recording Dataset or Windows
        z-scored windows (a recording Dataset/DataTree/DataArray is cut with
        ``retcodec.io.recordings.windows`` using ``model.meta['norm_stats']``).
    layers : names in ``model.layers``; all are computed in one pass.
    method : ``"ig"`` | ``"actgrad"`` | ``"inputgrad"`` | ``"smoothgrad"`` (see module doc).
    steps : ``m``, the number of integration intervals of ``"ig"``.
    target : ``"surprisal"`` (fitted to the model outputs over the whole stimulus,
        shrinkage ``shrinkage``), another name of :data:`retcodec.engine.targets.TARGET_NAMES`,
        a :class:`~retcodec.targets.Target` or a callable ``(B, n) -> (B,)``.
    baseline : scalar or array broadcastable to one window: ``x₀``.
    quadrature : ``"trapezoid"`` (the paper's), ``"gauss-legendre"`` or ``"simpson"``.
    batch_size : windows per batch (a batch holds ``batch_size × path points`` samples;
        about 15 MB per window at 21 points for the published layout).
    device, dtype : where and in which float type (``"float32"``/``"float64"``) to compute.
    maps : also return the unsplit ``contribution_map (time, channel, y, x)``.
    out : netCDF file to write; chunks stream to ``<out>.partial/`` and the file
        appears (atomically) only once complete. A rerun resumes a partial run
        with the same parameters (``resume=False`` discards it); a partial run
        with different parameters raises :class:`~retcodec.errors.ConfigurationError`.
    chunk_size : windows per chunk (unit of streaming, resuming and dask tasks).
    backend : ``"serial"`` or ``"dask"`` (chunks on ``dask.distributed`` workers:
        ``scheduler`` is a Client, a cluster, an address, or None for a
        ``LocalCluster(n_workers, threads_per_worker=1)``).
    fast : use the linear first layer when the model has one (``False``: plain path).
    n_samples, sigma, seed : ``"smoothgrad"`` noise (sigma in stimulus units).
    on_chunk : called as ``on_chunk(index, start, stop)`` after each newly computed chunk is stored.

    Returns
    -------
    xarray.DataTree
        Root: ``target (time)`` = S(F(x)), ``target_baseline (time)`` = S(F(x₀)),
        ``output (time, cell)`` = F(x), the target's parameters (surprisal:
        ``surprisal_mean (cell)``, ``surprisal_cov (cell, cell2)``) and
        ``completeness_error (layer, statistic)``: ``|Σ C − ΔS| / |ΔS|`` over
        windows (median, p95, max) and ``Σ|Σ C − ΔS| / Σ|ΔS|`` (total).
        One child per layer: ``contribution (time, channel, sign)``,
        ``activation (time, channel)`` (summed over space),
        ``completeness_residual (time)`` and, with ``maps``, ``contribution_map``.
    """
    settings = _settings(model, layers, method, steps, quadrature, maps, batch_size,
                         n_samples, sigma, seed, dtype)
    backend = _check_choice("backend", backend, ("serial", "dask"))
    source = _Source(stimulus, model)
    chunk_size = _chunk_size(chunk_size, source.n, backend, n_workers, batch_size)
    chunks = [(s, min(s + chunk_size, source.n)) for s in range(0, source.n, chunk_size)]
    base = _baseline_array(baseline, source.window_shape)
    engine = Engine(model, settings, base, device=device, fast=fast)
    cells = _cell_ids(model, source)

    store: _MemoryStore
    if out is not None:
        params = _run_params(model, source, chunks, settings, base, target, fast=engine.fast)
        params["shrinkage"] = str(shrinkage)
        store = _PartialStore(Path(out), params, resume)
    else:
        store = _MemoryStore()
    tgt = _resolve_target(target, engine, source, chunks, store, cells, shrinkage, progress)
    _warn_if_ill_conditioned(tgt, settings)
    engine.set_target(tgt)

    todo = [i for i in range(len(chunks)) if i not in store.done()]
    _run_chunks(engine, source, chunks, todo, store, backend, scheduler, n_workers, progress, on_chunk)
    tree = _assemble(store, chunks, source, cells, engine, tgt, settings, base, model, device)
    if out is not None:
        write_netcdf_atomic(tree, out)
        store.discard()
    return tree


# --------------------------------------------------------------------------- validation
def _check_choice(what: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ConfigurationError(f"unknown {what} {value!r}; use one of {list(allowed)}")
    return value.lower()


def _settings(model: nn.Module, layers: Sequence[str] | str, method: str, steps: int,
              quadrature: str, maps: bool, batch_size: int, n_samples: int, sigma: float,
              seed: int, dtype: str) -> Settings:
    method = _check_choice("method", method, METHODS)
    quadrature = _check_choice("quadrature", quadrature, QUADRATURES)
    dtype = _check_choice("dtype", str(dtype).replace("torch.", ""), ("float32", "float64"))
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    valid = list(getattr(model, "layers", {}) or {})
    unknown = [name for name in layers if name not in valid]
    if not layers or unknown or len(set(layers)) != len(layers):
        raise ConfigurationError(f"layers {list(layers)} are not valid: each must be one of "
                                 f"{valid}, at least one, no repeats")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigurationError(f"steps must be an integer >= 1, got {steps!r}")
    if method == "ig":
        quadrature_rule(quadrature, int(steps))        # e.g. odd steps with simpson
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ConfigurationError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ConfigurationError(f"sigma must be a finite number >= 0, got {sigma!r}")
    # ordered as the model orders them
    layers = tuple(sorted(layers, key=valid.index))
    return Settings(layers=layers, method=method, steps=int(steps), quadrature=quadrature,
                    maps=bool(maps), batch_size=int(batch_size), n_samples=int(n_samples),
                    sigma=float(sigma), seed=int(seed), dtype=dtype)


def _chunk_size(chunk_size: int | None, n: int, backend: str, n_workers: int, batch_size: int) -> int:
    if chunk_size is None:
        if backend == "dask":
            return max(batch_size, min(DEFAULT_CHUNK_SIZE, math.ceil(n / (4 * max(1, n_workers)))))
        return DEFAULT_CHUNK_SIZE
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    return int(chunk_size)


def _cell_ids(model: nn.Module, source: _Source) -> np.ndarray | None:
    meta = getattr(model, "meta", {}) or {}
    cells = meta.get("cells")
    if cells is not None and not isinstance(cells, str) and np.ndim(cells) == 1:
        return np.asarray(cells)
    return source.cells


def _warn_if_ill_conditioned(target: Target, settings: Settings) -> None:
    """float32 loses ~cond(Σ) × 6e-8 of the surprisal's relative accuracy."""
    if isinstance(target, Surprisal) and settings.dtype == "float32":
        cond = float(np.linalg.cond(target.covariance))
        if cond > 1e5:
            warnings.warn(f"the surprisal covariance has condition number {cond:.2g}: float32 "
                          f"contributions may be inaccurate; use dtype='float64' or more shrinkage",
                          RuntimeWarning, stacklevel=3)


def _model_hash(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__name__.encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _run_params(model: nn.Module, source: _Source, chunks: Sequence[tuple[int, int]],
                settings: Settings, baseline: np.ndarray, target: Any, fast: bool) -> dict[str, Any]:
    """What identifies a run, for matching a partial file to a rerun."""
    if isinstance(target, Target):
        tgt = f"{target.name}:{target.fingerprint()}"
    elif isinstance(target, str):
        tgt = target.lower()
    else:
        tgt = f"callable:{getattr(target, '__name__', type(target).__name__)}"
    return {**asdict(settings), "layers": list(settings.layers), "fast": fast,
            "model": _model_hash(model), "stimulus": source.fingerprint(chunks),
            "chunks": [list(c) for c in chunks], "target": tgt,
            "baseline": hashlib.sha256(baseline.tobytes()).hexdigest()}


def _resolve_target(target: Any, engine: Engine, source: _Source, chunks: Sequence[tuple[int, int]],
                    store: _MemoryStore, cells: np.ndarray | None, shrinkage: Any,
                    progress: bool) -> Target:
    cell_list = None if cells is None else list(cells.tolist())
    is_surprisal = isinstance(target, str) and target.lower() == "surprisal"
    if is_surprisal and isinstance(store, _PartialStore):
        saved = store.saved_surprisal()
        if saved is not None:
            return saved

    def outputs() -> np.ndarray:
        from tqdm.auto import tqdm
        parts = []
        with tqdm(total=source.n, disable=not progress, desc="model outputs", unit="win") as bar:
            for start, stop in chunks:
                parts.append(engine.outputs(source.read(start, stop)))
                bar.update(stop - start)
        return np.concatenate(parts)

    tgt = make_target(target, cells=cell_list, outputs=outputs, shrinkage=shrinkage)
    if is_surprisal and isinstance(store, _PartialStore):
        store.save_surprisal(tgt)
    return tgt


# --------------------------------------------------------------------------- running
def _run_chunks(engine: Engine, source: _Source, chunks: Sequence[tuple[int, int]], todo: list[int],
                store: _MemoryStore, backend: str, scheduler: Any, n_workers: int, progress: bool,
                on_chunk: Callable[[int, int, int], None] | None) -> None:
    from tqdm.auto import tqdm
    n_todo = sum(chunks[i][1] - chunks[i][0] for i in todo)
    with tqdm(total=n_todo, disable=not progress, desc=f"contributions ({engine.settings.method})",
              unit="win") as bar:
        def finished(index: int, result: Mapping[str, np.ndarray]) -> None:
            store.save(index, result)
            if on_chunk is not None:
                on_chunk(index, *chunks[index])

        if backend == "dask":
            from retcodec.engine.dask_backend import run_chunks
            run_chunks(engine, source, chunks, todo, finished, scheduler=scheduler,
                       n_workers=n_workers, on_progress=bar.update)
            return
        for index in todo:
            start, stop = chunks[index]
            finished(index, engine.compute(source.read(start, stop), start, on_batch=bar.update))


# --------------------------------------------------------------------------- assembly
def _assemble(store: _MemoryStore, chunks: Sequence[tuple[int, int]], source: _Source,
              cells: np.ndarray | None, engine: Engine, target: Target, settings: Settings,
              baseline: np.ndarray, model: nn.Module, device: Any) -> xr.DataTree:
    parts = [store.load(i) for i in range(len(chunks))]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n_out = data["output"].shape[1]
    cell_coord = cells if cells is not None and len(cells) == n_out else np.arange(n_out)
    delta = data["target"].astype(np.float64) - data["target_baseline"]
    residuals = np.stack([data[f"{n}.completeness_residual"] for n in settings.layers])

    root = xr.Dataset(
        {"target": ("time", data["target"], {"long_name": f"S(F(x)), target {target.name}"}),
         "target_baseline": ("time", data["target_baseline"],
                             {"long_name": "S(F(x0)), the target at the baseline"}),
         "output": (("time", "cell"), data["output"], {"long_name": "model output F(x)"}),
         "completeness_error": (("layer", "statistic"), _completeness_summary(residuals, delta), {
             "long_name": "relative completeness error |sum C - (S(F(x)) - S(F(x0)))| / |S(F(x)) - "
                          "S(F(x0))| over windows (median, p95, max; windows with |dS| < 1e-9 max|dS| "
                          "left out) and sum|residual| / sum|dS| (total)"})},
        coords={"time": ("time", source.time, source.time_attrs), "cell": cell_coord,
                "layer": list(settings.layers), "statistic": list(COMPLETENESS_STATS)})
    for key, var in target.parameters().items():
        root[key] = var
    if "cell2" in root.dims:
        root = root.assign_coords(cell2=("cell2", cell_coord))
    root.attrs = _root_attrs(engine, target, settings, baseline, model, device)
    children = {name: _layer_dataset(name, data, settings) for name in settings.layers}
    return xr.DataTree.from_dict({"/": root, **children})


def _completeness_summary(residuals: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``(layers, 4)``: median, p95, max of ``|r| / |ΔS|`` and ``Σ|r| / Σ|ΔS|``."""
    absd = np.abs(delta)
    ok = absd > 1e-9 * (absd.max() if absd.size else 0.0)
    out = np.full((len(residuals), len(COMPLETENESS_STATS)), np.nan)
    for i, r in enumerate(np.abs(residuals.astype(np.float64))):
        if ok.any():
            rel = r[ok] / absd[ok]
            out[i, :3] = np.median(rel), np.percentile(rel, 95), rel.max()
        if absd.sum() > 0:
            out[i, 3] = r.sum() / absd.sum()
    return out


def _layer_dataset(name: str, data: Mapping[str, np.ndarray], settings: Settings) -> xr.Dataset:
    contrib = data[f"{name}.contribution"]
    ds = xr.Dataset(
        {"contribution": (("time", "channel", "sign"), contrib, {
            "long_name": f"contribution to the target ({settings.method}), split into its negative "
                         f"and positive parts per unit, then summed over space per channel",
            "units": "units of the target"}),
         "activation": (("time", "channel"), data[f"{name}.activation"], {
             "long_name": "hidden activation (pre batch-norm) summed over space"}),
         "completeness_residual": ("time", data[f"{name}.completeness_residual"], {
             "long_name": "sum of contributions minus (S(F(x)) - S(F(x0)))"})},
        coords={"channel": np.arange(contrib.shape[1]), "sign": list(SIGNS)},
        attrs={"layer": name, "method": settings.method})
    key = f"{name}.contribution_map"
    if key in data:
        cmap = data[key]
        ds["contribution_map"] = (("time", "channel", "y", "x"), cmap, {
            "long_name": "contribution of each unit (not split)", "units_y_x": "map pixels of the layer"})
        ds = ds.assign_coords(y=("y", np.arange(cmap.shape[2]), {"units": "map pixels"}),
                              x=("x", np.arange(cmap.shape[3]), {"units": "map pixels"}))
    return ds


def _root_attrs(engine: Engine, target: Target, settings: Settings, baseline: np.ndarray,
                model: nn.Module, device: Any) -> dict[str, Any]:
    s = settings
    params = {**asdict(s), "layers": list(s.layers), "baseline": _baseline_attr(baseline),
              "target": target.name, "device": str(device), "path": engine.net.kind}
    if s.method != "ig":
        quad = "none"
    elif s.quadrature == "trapezoid":
        quad = f"trapezoid on the hidden path, {s.steps} steps ({s.steps + 1} path points)"
    else:
        n_points = len(quadrature_rule(s.quadrature, s.steps)[0])
        quad = f"{s.quadrature}, {n_points} path points, with tangents dh/dalpha"
    attrs = provenance_attrs(params)
    attrs.update(method=s.method, steps=s.steps, quadrature=quad, baseline=_baseline_attr(baseline),
                 device=str(device), dtype=s.dtype, layers=list(s.layers),
                 computation=("fast: affine first layer computed once per window, the rest of the "
                              "network on the path points" if engine.fast
                              else "plain: every path point through the whole model"))
    if s.method == "smoothgrad":
        attrs.update(n_samples=s.n_samples, sigma=s.sigma, seed=s.seed)
    attrs.update({k: to_attr(v) for k, v in target.to_attrs().items()})
    meta = getattr(model, "meta", {}) or {}
    for key in ("dataset", "stim_type", "provenance", "model_type"):
        if meta.get(key) is not None:
            attrs[f"model_{key}"] = to_attr(meta[key])
    attrs["model_class"] = type(model).__name__
    return {k: to_attr(v) for k, v in attrs.items()}
