"""The network side of the engine: fast (affine first layer) and plain paths, hidden-unit capture, the Engine."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retcodec.io.architectures import AbsBatchNorm, GaussianNoise, GrabUnits, LinearStackedConv2d
from retcodec.errors import ConfigurationError, ShapeError
from retcodec.engine.targets import Target
from retcodec.engine.quadrature import quadrature_rule, weighted_sum
from retcodec.devices import resolve_device
from retcodec.engine.quadrature import (AUTO, DEFAULT_MAX_STEPS, DEFAULT_TOL,
                                        adaptive_integrated_gradients)

__all__ = ["Settings", "Engine", "FastNetwork", "PlainNetwork", "rebuild_engine", "space_sum",
           "layer_layouts", "layer_modules", "to_numpy", "window_noise", "METHODS", "SIGNS"]

METHODS = ("ig", "actgrad", "inputgrad", "smoothgrad")
SIGNS = ("neg", "pos")


# =========================================================================== settings
@dataclass(frozen=True)
class Settings:
    """What to compute (everything but the model, the stimulus and the target)."""

    layers: tuple[str, ...]
    method: str = "ig"
    steps: int | str = 20            # or "auto" (then tol and max_steps apply)
    quadrature: str = "trapezoid"
    maps: bool = False
    batch_size: int = 16
    n_samples: int = 20
    sigma: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    tol: float = DEFAULT_TOL
    max_steps: int = DEFAULT_MAX_STEPS

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


# =========================================================================== networks
class DenseReadout(nn.Module):
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


class ChannelAffine(nn.Module):
    """An eval-mode batch norm as ``(x − mean) · scale + shift`` per channel (dim 1)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.scale, self.shift = mean, scale, shift

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> "ChannelAffine | None":
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


def is_identity_in_eval(module: nn.Module) -> bool:
    return isinstance(module, (nn.Identity, nn.Dropout, GaussianNoise)) and not module.training


def is_affine_entry(module: nn.Module) -> bool:
    """True for a convolution or a stack of convolutions (and eval-mode dropout) only."""
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    if isinstance(module, LinearStackedConv2d):
        return all(isinstance(m, (nn.Conv2d, nn.Dropout)) and getattr(m, "padding_mode", "zeros") == "zeros"
                   for m in module.convs)
    return False


def push_tangent(module: nn.Module, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward-mode derivative of an eval-mode ``module`` at ``inp`` along ``t``."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        return F.conv2d(t, module.weight, None, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, LinearStackedConv2d):
        for sub in module.convs:
            t = push_tangent(sub, inp, t)
        return t
    if isinstance(module, ChannelAffine):
        return module.tangent(t)
    if isinstance(module, DenseReadout):
        return module(t, with_bias=False)
    if isinstance(module, nn.Linear):
        return F.linear(t, module.weight)
    if isinstance(module, (nn.Dropout, GaussianNoise, nn.Identity, nn.Flatten, GrabUnits)) \
            or type(module).__name__ in ("Flatten", "Reshape"):
        return module(t)
    if isinstance(module, nn.ReLU):
        return t * (inp > 0)
    affine = ChannelAffine.from_batchnorm(module)
    if affine is not None:
        return affine.tangent(t)
    if isinstance(module, nn.Softplus):
        z = inp * module.beta
        return t * torch.where(z > module.threshold, torch.ones_like(z), torch.sigmoid(z))
    with warnings.catch_warnings():            # torch's forward-mode set-up warns about jit
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.func.jvp(module, (inp,), (t,))[1]


class FastNetwork:
    """The model split at its affine first layer ``conv0``: ``entry`` once, ``rest`` on the path.

    ``run(e)`` maps ``conv0`` outputs to model outputs and captures the requested
    hidden layers (``conv0`` is ``e`` itself). A ganglion convolution read out by
    :class:`GrabUnits` is computed only at the read-out positions when its map
    is not requested (:class:`DenseReadout`), eval-mode batch norms become plain
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
                    and DenseReadout.fusable(m, modules[i + 1]):
                rest.append((DenseReadout(m, modules[i + 1].coords), None))
                i += 2
                continue
            i += 1
            if name is None and is_identity_in_eval(m):
                continue
            affine = ChannelAffine.from_batchnorm(m) if name is None else None
            rest.append((affine or m, name if name in layers else None))
        self.rest = rest
        self.layers = tuple(layers)
        deepest = max((k for k, (_, n) in enumerate(rest) if n is not None), default=-1)
        self.tangent_depth = deepest + 1       # modules to run to reach the deepest layer

    @staticmethod
    def applicable(model: nn.Module) -> bool:
        seq, index = getattr(model, "sequential", None), getattr(model, "layer_index", None)
        return (isinstance(seq, nn.Sequential) and isinstance(index, Mapping)
                and index.get("conv0") == 0 and is_affine_entry(seq[0]))

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
                t = push_tangent(module, inputs[k], t)
                if name is not None:
                    out[name] = t
        return out


class PlainNetwork:
    """The whole model on every path point; hidden layers captured by forward hooks."""

    kind = "plain"

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = tuple(layers)
        self._captured: dict[str, torch.Tensor] = {}
        for name in self.layers:
            layer_modules(model)[name].register_forward_hook(self._hook(name))

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
        self.device = resolve_device(device)
        self.dtype = settings.torch_dtype
        work = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        work.requires_grad_(False)
        self.fast = bool(fast) and FastNetwork.applicable(work)
        self.net = FastNetwork(work, settings.layers) if self.fast else PlainNetwork(work, settings.layers)
        self.baseline = torch.as_tensor(baseline, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            self.e0 = self.net.entry(self.baseline)                        # (1, ...)
            self.e_zero = self.net.entry(torch.zeros_like(self.baseline))  # affine offset
        # per-layer layout of the hidden tensor: "channels" (B, C, ...) or "tokens" (B, tokens, C)
        self.layouts = layer_layouts(work, settings.layers)
        self.target: Target | None = None
        if target is not None:
            self.set_target(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild_engine, (self._args, self.target))

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
        per_window: dict[str, np.ndarray] = {}
        # windows equal to the baseline: a path of length zero, nothing to integrate
        still = (x == self.baseline).flatten(1).all(dim=1) if method == "ig" else None
        if still is not None and bool(still.any()):
            s_x = torch.where(still, self.s0.to(s_x.dtype), s_x)       # S(F(x)) = S(F(x0)) exactly
        if method == "ig" and self.settings.steps == AUTO:
            contrib, per_window = adaptive_integrated_gradients(self, e_x, still.cpu().numpy())
        elif method == "ig":
            contrib = self._integrated_gradients(e_x)
        elif method == "actgrad":
            contrib = self._actgrad(e_x)
        elif method == "inputgrad":
            contrib = self._inputgrad(e_x)
        else:
            contrib = self._smoothgrad(x, index0)
        if still is not None and bool(still.any()):
            contrib = {n: c.masked_fill(still.view(-1, *[1] * (c.ndim - 1)), 0) for n, c in contrib.items()}
        delta = (s_x - self.s0).double()
        res: dict[str, np.ndarray] = {
            "output": to_numpy(out_x), "target": to_numpy(s_x),
            "target_baseline": to_numpy(self.s0.expand(len(x)))}
        for name in self.settings.layers:
            c, layout = contrib[name], self.layouts[name]
            res[f"{name}.contribution"] = to_numpy(torch.stack(
                [space_sum(c.clamp(max=0), layout), space_sum(c.clamp(min=0), layout)], dim=-1))
            res[f"{name}.activation"] = to_numpy(space_sum(hid_x[name], layout))
            res[f"{name}.completeness_residual"] = to_numpy(c.flatten(1).sum(1).double() - delta)
            if self.settings.maps and c.ndim == 4 and layout == "channels":
                res[f"{name}.contribution_map"] = to_numpy(c)
        return {**{k: v.astype(self._np_dtype, copy=False) for k, v in res.items()}, **per_window}

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
                    out[name] = diff * weighted_sum(weights, grads[name])
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
            out[name] = weighted_sum(weights, grads[name] * tang[name])
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
        noise = torch.stack([window_noise(s.seed, index0 + i, (s.n_samples, *x.shape[1:]))
                             for i in range(len(x))], dim=1)          # (S, B, T, H, W)
        noisy = (x.unsqueeze(0) + s.sigma * noise.to(device=self.device, dtype=self.dtype)).flatten(0, 1)
        with torch.no_grad():
            e = self.net.entry(noisy)
        hidden, grads, _ = self._grads(e)
        return {n: (hidden[n] * grads[n]).unflatten(0, (s.n_samples, len(x))).mean(0)
                for n in s.layers}


def rebuild_engine(args: tuple[Any, ...], target: Target | None) -> Engine:
    return Engine(*args, target=target)


def space_sum(t: torch.Tensor, layout: str = "channels") -> torch.Tensor:
    """``(B, C, ...) -> (B, C)``: the sum over the spatial dimensions, if any.

    ``layout="tokens"``: ``(B, tokens, C) -> (B, C)``, the sum over tokens (a
    transformer's hidden tensor; ``channel`` is then the embedding dimension).
    """
    if layout == "tokens":
        if t.ndim != 3:
            raise ShapeError(f"a 'tokens' layer must give (batch, tokens, dim), got {tuple(t.shape)}")
        return t.sum(dim=1)
    return t.sum(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every hidden layer a caller can name: ``model.layers`` (retcodec's retina models:
    ``conv0``, ``conv1``, ... = the convolution outputs before batch norm) first, then
    every submodule by its dotted path (``"2"``, ``"features.3"``, ``"_blocks.5"``), whose
    output is the hidden layer, as in Captum."""
    named = dict(getattr(model, "layers", None) or {})
    for name, module in model.named_modules():
        if name and name not in named:
            named[name] = module
    return named


def layer_layouts(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """Layout of each layer from the optional ``model.layer_layouts`` (default ``"channels"``)."""
    given = dict(getattr(model, "layer_layouts", None) or {})
    layouts = {name: str(given.get(name, "channels")) for name in layers}
    bad = {n: v for n, v in layouts.items() if v not in ("channels", "tokens")}
    if bad:
        raise ConfigurationError(f"model.layer_layouts must map layers to 'channels' or 'tokens', got {bad}")
    return layouts


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def window_noise(seed: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise for window ``index``: the same whatever the batching."""
    state = int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0])
    gen = torch.Generator().manual_seed(state)
    return torch.randn(shape, generator=gen)
