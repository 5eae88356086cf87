"""The published Baccus-lab retina CNN layouts, rebuilt from their specification.

Two families are rebuilt so that the published ``model_state_dict`` keys load
unchanged (see ``docs/formats.md``, model checkpoints):

* ``VaryModel`` (the published ``convgc`` models): stacks of bias-free 3x3
  linear convolutions (:class:`LinearStackedConv2d`), :class:`AbsBatchNorm2d`,
  :class:`GaussianNoise`, ReLU, a convolutional ganglion layer read out at each
  cell's centre (:class:`GrabUnits`), :class:`AbsBatchNorm1d` and softplus.
* ``BNCNN`` (the Keras-era ``drone`` layout): plain convolutions, BatchNorm1d
  over the flattened units, a linear ganglion layer.

Every model is a :class:`RetinaCNN`: input ``(batch, 40, 50, 50)`` float32
z-scored windows, output ``(batch, n_cells)`` rates, with ``model.layers`` (an
ordered mapping ``conv0, conv1, conv2`` -> the modules whose outputs, before
batch-norm, are the hidden units) and ``model.meta`` (dataset, cells, stimulus
type, image shape, norm stats, centres, provenance).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retcodec.errors import CheckpointError, ConfigurationError

__all__ = ["LinearStackedConv2d", "compose_stacked_kernels", "AbsBatchNorm", "AbsBatchNorm1d", "AbsBatchNorm2d", "GaussianNoise", "GrabUnits", "Flatten", "Reshape", "map_sizes", "check_centers", "validate_hyps", "centers_to_coords", "RetinaCNN", "validate_zero_dict", "resolve_layer_name", "VaryModel", "BNCNN", "build_model", "LAYER_NAMES", "HYPS_LIMITS"]

LAYER_NAMES = ("conv0", "conv1", "conv2")


# --------------------------------------------------------------------------- modules
class LinearStackedConv2d(nn.Module):
    """A stack of 3x3 convolutions with no nonlinearity: one ``k x k`` convolution.

    ``n = (k - 3) // 2 + 1`` sub-convolutions; only the last has a bias. With
    ``drop_p > 0`` a Dropout follows every sub-convolution but the last, so the
    convolutions sit at the even indices of ``convs`` (published key names).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stack_ksize: int = 3, stack_chan: int | None = None,
                 bias: bool = True, drop_p: float = 0.0) -> None:
        super().__init__()
        if stack_ksize != 3 or (kernel_size - 3) % 2:
            raise ConfigurationError(
                f"stacked convolutions need 3x3 sub-kernels and an odd kernel >= 3, "
                f"got stack_ksize={stack_ksize}, kernel_size={kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        sc = stack_chan or out_channels
        n = (kernel_size - 3) // 2 + 1
        mods: list[nn.Module] = []
        for i in range(n):
            cin = in_channels if i == 0 else sc
            cout = out_channels if i == n - 1 else sc
            mods.append(nn.Conv2d(cin, cout, 3, bias=bias and i == n - 1))
            if drop_p > 0 and i < n - 1:
                mods.append(nn.Dropout(drop_p))
        self.convs = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)

    def sub_convs(self) -> list[nn.Conv2d]:
        return [m for m in self.convs if isinstance(m, nn.Conv2d)]

    @property
    def bias(self) -> torch.Tensor | None:
        return self.sub_convs()[-1].bias

    def collapsed_weight(self) -> torch.Tensor:
        """The single ``(out, in, k, k)`` kernel equal to the stack (exact composition)."""
        return compose_stacked_kernels([c.weight for c in self.sub_convs()])

    def collapse(self) -> nn.Conv2d:
        """An ``nn.Conv2d(in, out, k)`` computing exactly what the stack computes."""
        w = self.collapsed_weight()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         bias=self.bias is not None)
        conv = conv.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size} (stacked 3x3)"


def compose_stacked_kernels(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Compose cross-correlation kernels applied one after another (no bias in between).

    ``weights[0]`` is ``(C1, C0, k1, k1)``, then ``(C2, C1, k2, k2)``, ... The
    result ``(Cn, C0, K, K)`` with ``K = sum(k_i) - (n - 1)`` satisfies
    ``conv(x, W) == conv(...conv(conv(x, w0), w1)..., wn)`` exactly.
    Composition is itself a full convolution: ``W = conv_transpose(W_prev, w)``.
    """
    if not weights:
        raise ValueError("need at least one kernel to compose")
    with torch.no_grad():
        total = weights[0].detach()
        for w in weights[1:]:
            # total: (Q, R, a, a) maps R->Q; w: (S, Q, b, b) maps Q->S.
            # result[s, r] = sum_q full_corr(total[q, r], w[s, q]) laid out as conv_transpose.
            t = total.permute(1, 0, 2, 3)                      # (R, Q, a, a) as batch R, channels Q
            out = F.conv_transpose2d(t, w.detach().permute(1, 0, 2, 3))  # (R, S, a+b-1, ...)
            total = out.permute(1, 0, 2, 3).contiguous()        # (S, R, K, K)
    return total


class AbsBatchNorm(nn.Module):
    """Batch norm whose scale enters as ``|scale|``; running stats are Parameters.

    Registered in the published order ``running_mean, running_var, scale, shift``
    so that the published state dicts load; there is no ``num_batches_tracked``.
    Eval: ``(x - mean) / sqrt(var + eps) * |scale| + shift``.
    """

    def __init__(self, n_units: int, eps: float = 1e-3, momentum: float = 0.01) -> None:
        super().__init__()
        self.n_units, self.eps, self.momentum = n_units, eps, momentum
        self.running_mean = nn.Parameter(torch.zeros(n_units), requires_grad=False)
        self.running_var = nn.Parameter(torch.ones(n_units), requires_grad=False)
        self.scale = nn.Parameter(torch.ones(n_units))
        self.shift = nn.Parameter(torch.zeros(n_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean.data, self.running_var.data,
                            weight=self.scale.abs(), bias=self.shift,
                            training=self.training, momentum=self.momentum, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.n_units}, eps={self.eps}, momentum={self.momentum}"


class AbsBatchNorm1d(AbsBatchNorm):
    """:class:`AbsBatchNorm` over ``(batch, units)``."""


class AbsBatchNorm2d(AbsBatchNorm):
    """:class:`AbsBatchNorm` over ``(batch, channels, y, x)`` per channel."""


class GaussianNoise(nn.Module):
    """Adds ``sigma * N(0, 1)`` in training; the identity in eval. ``sigma`` is in the state dict."""

    def __init__(self, std: float = 0.05) -> None:
        super().__init__()
        self.sigma = nn.Parameter(torch.tensor([float(std)]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and float(self.sigma) != 0.0:
            return x + self.sigma * torch.randn_like(x)
        return x


class GrabUnits(nn.Module):
    """Reads ganglion cell ``i`` from channel ``i`` at its map coordinate: ``(B, n, H, W) -> (B, n)``."""

    def __init__(self, coords: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        coords = torch.as_tensor(np.asarray(coords), dtype=torch.long)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ConfigurationError(f"coords must be (n_cells, 2), got {tuple(coords.shape)}")
        # a buffer so that .to(device) moves it, but not persistent: published
        # state dicts do not hold it (it is rebuilt from the centres)
        self.register_buffer("coords", coords, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.coords.shape[0]
        idx = torch.arange(n, device=x.device)
        return x[:, idx, self.coords[:, 0], self.coords[:, 1]]

    def extra_repr(self) -> str:
        return f"n_cells={self.coords.shape[0]}"


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class Reshape(nn.Module):
    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


# --------------------------------------------------------------------------- geometry
def map_sizes(img_shape: Sequence[int], ksizes: Sequence[int]) -> list[int]:
    """Spatial size after each valid convolution: 50 -> 36 -> 26 -> 16 for ksizes 15, 11, 11."""
    sizes, s = [], int(img_shape[-1])
    for k in ksizes:
        s = s - int(k) + 1
        if s < 1:
            raise ConfigurationError(f"kernels {list(ksizes)} do not fit an image of {list(img_shape)}")
        sizes.append(s)
    return sizes


def check_centers(centers: Any, img_shape: Sequence[int]) -> np.ndarray:
    """Receptive-field centres as ``(n, 2)`` int64 ``(row, col)`` pixels inside the image.

    Raises :class:`ConfigurationError` for values that are not finite
    integers, a wrong shape, or centres outside ``0..H-1`` x ``0..W-1``
    (the published read-out would silently clip those onto the map's edge).
    """
    try:
        raw = np.asarray(centers.detach().cpu() if isinstance(centers, torch.Tensor) else centers)
        values = raw.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"'centers' must be (n_cells, 2) integer (row, col) pixels: {err}") from None
    if raw.dtype.kind not in "biuf" or values.ndim not in (1, 2) or values.size % 2 \
            or (values.ndim == 2 and values.shape[1] != 2):
        raise ConfigurationError(f"'centers' must be (n_cells, 2) integer (row, col) pixels, got "
                                 f"shape {raw.shape} of {raw.dtype}")
    values = values.reshape(-1, 2)
    if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
        raise ConfigurationError(f"'centers' must hold whole pixel numbers, got {values.tolist()[:4]}...")
    height, width = (int(img_shape[-2]), int(img_shape[-1]))
    outside = np.flatnonzero((values[:, 0] < 0) | (values[:, 0] >= height)
                             | (values[:, 1] < 0) | (values[:, 1] >= width))
    if outside.size:
        shown = ", ".join(f"cell {i}: {values[i].astype(int).tolist()}" for i in outside[:5])
        raise ConfigurationError(
            f"receptive-field centres outside the {height}x{width} image ({shown}); centres are "
            f"(row, col) pixels in 0..{height - 1} x 0..{width - 1}. Fix 'centers' in the "
            f"checkpoint's hyps (the read-out would otherwise clip them onto the map's edge)")
    return values.astype(np.int64)


#: largest values accepted for the architecture's size hyper-parameters
HYPS_LIMITS = {"n_units": 100_000, "chans": 4096, "ksizes": 255, "img_shape": 4096}


def validate_hyps(hyps: Mapping[str, Any]) -> None:
    """Check the size and option hyper-parameters a layout is built from.

    Raises :class:`ConfigurationError` naming the key and its accepted range
    (see :data:`HYPS_LIMITS`); nothing is allocated before this passes.
    """
    def ints(key: str, value: Any, count: int | None, low: int, high: int) -> list[int]:
        seq = list(value) if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)) else [value]
        ok = (count is None or len(seq) == count) and all(_whole_in(v, low, high) for v in seq)
        if not ok:
            many = "" if count is None else f"{count} "
            raise ConfigurationError(f"hyps[{key!r}] must be {many}integer(s) in {low}..{high}, got {value!r:.80}")
        return [int(v) for v in seq]

    if "n_units" in hyps:
        ints("n_units", hyps["n_units"], 1, 1, HYPS_LIMITS["n_units"])
    if hyps.get("chans") is not None:
        ints("chans", hyps["chans"], None, 1, HYPS_LIMITS["chans"])
    if hyps.get("ksizes") is not None:
        ints("ksizes", hyps["ksizes"], None, 1, HYPS_LIMITS["ksizes"])
    if hyps.get("img_shape") is not None:
        ints("img_shape", hyps["img_shape"], 3, 1, HYPS_LIMITS["img_shape"])
    for key, low, high in (("drop_p", 0.0, 0.999), ("noise", 0.0, 1e6), ("bn_moment", 0.0, 1.0)):
        value = hyps.get(key)
        if value is None or value is False:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not low <= number <= high:
            raise ConfigurationError(f"hyps[{key!r}] must be a number in {low}..{high}, got {value!r:.80}")
    if hyps.get("bnorm_d", 2) not in (1, 2):
        raise ConfigurationError(f"hyps['bnorm_d'] must be 1 or 2, got {hyps.get('bnorm_d')!r:.80}")


def _whole_in(value: Any, low: int, high: int) -> bool:
    """True when ``value`` is a whole number (not a bool) in ``low..high``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer, float, np.floating, torch.Tensor)) or np.ndim(value) != 0:
        return False
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return np.isfinite(number) and number == int(number) and low <= number <= high


def centers_to_coords(centers: np.ndarray, ksizes: Sequence[int], img_shape: Sequence[int]) -> np.ndarray:
    """Ganglion-map coordinates of cell centres, the published rule: ``clip(c - 18, 0, 15)``.

    The offset is half the combined receptive field plus one,
    ``sum(k - 1) / 2 + 1`` (18 for 15, 11, 11), clipped to the output map.
    """
    centers = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    offset = sum(int(k) - 1 for k in ksizes) // 2 + 1
    size = map_sizes(img_shape, ksizes)[-1]
    return np.clip(centers - offset, 0, size - 1)


# --------------------------------------------------------------------------- models
class RetinaCNN(nn.Module):
    """A retina CNN: ``sequential`` as published, plus ``layers`` and ``meta``."""

    model_type = "RetinaCNN"
    #: index in ``sequential`` of each hidden layer (set by subclasses)
    layer_index: dict[str, int] = {}

    def __init__(self, hyps: Mapping[str, Any]) -> None:
        super().__init__()
        self.hyps: dict[str, Any] = dict(hyps)
        self.meta: dict[str, Any] = {}
        self.zero_dict: dict[str, set[int]] = {}

    # hyps with the published defaults
    @property
    def img_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.hyps.get("img_shape", (40, 50, 50)))

    @property
    def n_cells(self) -> int:
        return int(self.hyps["n_units"])

    @property
    def chans(self) -> list[int]:
        """Channels of the two hidden layers (published default ``[8, 8]``)."""
        return [int(c) for c in self.hyps.get("chans", [8, 8])]

    @property
    def ksizes(self) -> list[int]:
        """Kernel sizes of the three convolutions (published default ``[15, 11, 11]``)."""
        return [int(k) for k in self.hyps.get("ksizes", [15, 11, 11])]

    @property
    def layers(self) -> "OrderedDict[str, nn.Module]":
        """Hidden layers by name: the modules whose outputs (pre batch-norm) are the units."""
        return OrderedDict((name, self.sequential[i]) for name, i in self.layer_index.items())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x)

    def collapse(self) -> "RetinaCNN":
        """In place: replace every stacked convolution by its exact single convolution.

        The published analyses use this form; ``sequential[0]``, ``[4]``, ``[8]``
        are then ``Conv2d(40, 8, 15)``, ``Conv2d(8, 8, 11)``, the ganglion conv.
        """
        for i, m in enumerate(self.sequential):
            if isinstance(m, LinearStackedConv2d):
                self.sequential[i] = m.collapse()
        return self

    def apply_zero_dict(self, zero_dict: Mapping[str, Any] | None) -> None:
        """Zero pruned channels as the published analyses do (their output weights and bias).

        ``zero_dict`` maps a layer (``conv0``.., or ``sequential.N``) to the output
        channels to zero. Raises :class:`ConfigurationError` (nothing zeroed) for
        an unknown layer or a channel that is not an integer in ``0..C-1``.
        """
        checked = validate_zero_dict(self, zero_dict)
        for name, chans in checked.items():
            if chans:
                _zero_output_channels(resolve_layer_name(self, name), sorted(chans))
        self.zero_dict = checked


def validate_zero_dict(model: "RetinaCNN", zero_dict: Any) -> dict[str, set[int]]:
    """``zero_dict`` as ``{layer name: set of channels}``, every channel checked against its layer."""
    if zero_dict is None:
        return {}
    if not isinstance(zero_dict, Mapping):
        raise ConfigurationError(f"zero_dict must map layer names to sets of channels, e.g. "
                                 f"{{'conv0': {{2}}}}, got {type(zero_dict).__name__}")
    checked: dict[str, set[int]] = {}
    for name, chans in zero_dict.items():
        layer = resolve_layer_name(model, str(name))
        n_out = _output_channels(layer)
        if isinstance(chans, (int, np.integer)) and not isinstance(chans, bool):
            chans = [chans]
        try:
            values = list(np.asarray(chans.cpu() if isinstance(chans, torch.Tensor) else list(chans),
                                     dtype=object).ravel()) if not isinstance(chans, str) else None
        except TypeError:
            values = None
        if values is None or not all(isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_))
                                     for c in values):
            raise ConfigurationError(f"zero_dict[{name!r}] must be a set of integer channel indices, "
                                     f"got {chans!r:.80}")
        bad = sorted(int(c) for c in values if not 0 <= int(c) < n_out)
        if bad:
            raise ConfigurationError(f"zero_dict[{name!r}] lists channels {bad}, but layer {name!r} "
                                     f"has {n_out} output channels (valid: 0..{n_out - 1}); fix or "
                                     f"remove those entries")
        checked[str(name)] = {int(c) for c in values}
    return checked


def _output_channels(layer: nn.Module) -> int:
    conv = layer.sub_convs()[-1] if isinstance(layer, LinearStackedConv2d) else layer
    weight = getattr(conv, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigurationError(f"cannot prune channels of {type(layer).__name__}: it has no weight; "
                                 f"name a convolution (conv0, conv1, conv2)")
    return int(weight.shape[0])


def _zero_output_channels(layer: nn.Module, chans: list[int]) -> None:
    with torch.no_grad():
        conv = layer.sub_convs()[-1] if isinstance(layer, LinearStackedConv2d) else layer
        if not hasattr(conv, "weight"):
            raise CheckpointError(f"cannot prune channels of {type(layer).__name__}")
        conv.weight[chans] = 0
        if getattr(conv, "bias", None) is not None:
            conv.bias[chans] = 0


def resolve_layer_name(model: RetinaCNN, name: str) -> nn.Module:
    """``conv0``/``conv1``/``conv2`` or a published name (``sequential.4``) -> module."""
    if name in model.layer_index:
        return model.sequential[model.layer_index[name]]
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    raise ConfigurationError(
        f"unknown layer {name!r}; this model has {list(model.layer_index)} "
        f"(or a module path such as 'sequential.{next(iter(model.layer_index.values()))}')")


def _conv(cin: int, cout: int, k: int, *, stacked: bool, bias: bool, drop_p: float,
          stack_ksize: int = 3, stack_chan: int | None = None) -> nn.Module:
    if stacked:
        return LinearStackedConv2d(cin, cout, k, stack_ksize=stack_ksize, stack_chan=stack_chan,
                                   bias=bias, drop_p=drop_p)
    return nn.Conv2d(cin, cout, k, bias=bias)


class VaryModel(RetinaCNN):
    """The published convgc layout (``bnorm_d=2``, ``convgc=True``, ``stackconvs=True``).

    Also builds the variants ``stackconvs=False`` (plain convs), ``convgc=False``
    (Flatten + Linear ganglion layer) and ``bnorm_d=1`` (Flatten, AbsBatchNorm1d
    over ``C*H*W``, Reshape), with the published module indices.
    """

    model_type = "VaryModel"

    def __init__(self, hyps: Mapping[str, Any]) -> None:
        super().__init__(hyps)
        h = self.hyps
        img, chans, ksizes = self.img_shape, self.chans, self.ksizes
        if len(chans) != 2 or len(ksizes) != 3:
            raise CheckpointError(f"VaryModel needs 2 chans and 3 ksizes, got chans={chans}, ksizes={ksizes}")
        n = self.n_cells
        stacked = bool(h.get("stackconvs", True))
        convgc = bool(h.get("convgc", True))
        bnorm_d = int(h.get("bnorm_d", 2))
        bias = bool(h.get("bias", True))
        gc_bias = bool(h.get("gc_bias", False) or False)
        drop_p = float(h.get("drop_p", 0.0) or 0.0)
        noise = float(h.get("noise", 0.05) or 0.0)
        mom = float(h.get("bn_moment", 0.01))
        stack_ksize = int(h.get("stack_ksizes", 3) or 3)
        stack_chans = h.get("stack_chans")
        if bnorm_d not in (1, 2):
            raise CheckpointError(f"bnorm_d must be 1 or 2, got {bnorm_d}")
        sizes = map_sizes(img, ksizes)
        mods: list[nn.Module] = []
        index: dict[str, int] = {}
        cin = img[0]
        for li, (cout, k, s) in enumerate(zip(chans, ksizes[:2], sizes[:2])):
            sc = stack_chans[li] if isinstance(stack_chans, (list, tuple)) else stack_chans
            index[f"conv{li}"] = len(mods)
            mods.append(_conv(cin, cout, k, stacked=stacked, bias=bias, drop_p=drop_p,
                              stack_ksize=stack_ksize, stack_chan=sc))
            if bnorm_d == 2:
                mods.append(AbsBatchNorm2d(cout, eps=1e-3, momentum=mom))
            else:
                mods += [Flatten(), AbsBatchNorm1d(cout * s * s, eps=1e-3, momentum=mom),
                         Reshape((cout, s, s))]
            mods += [GaussianNoise(noise), nn.ReLU()]
            cin = cout
        index["conv2"] = len(mods)
        if convgc:
            mods.append(nn.Conv2d(cin, n, ksizes[2], bias=gc_bias))
            centers = h.get("centers")
            if centers is None:
                raise CheckpointError("a convgc VaryModel needs 'centers' in its hyps (n_cells x 2)")
            centers = check_centers(centers, img)
            if len(centers) != n:
                raise CheckpointError(f"'centers' has {len(centers)} rows but n_units is {n}")
            mods.append(GrabUnits(centers_to_coords(centers, ksizes, img)))
        else:
            index["conv2"] = len(mods) + 1
            mods += [Flatten(), nn.Linear(cin * sizes[1] * sizes[1], n, bias=gc_bias)]
        mods.append(AbsBatchNorm1d(n, eps=1e-3, momentum=mom))
        if h.get("softplus", True):
            mods.append(nn.Softplus())
        self.sequential = nn.Sequential(*mods)
        self.layer_index = index


class BNCNN(RetinaCNN):
    """The Keras-era layout: conv -> BN1d over all units -> noise -> ReLU, twice; Linear; BN1d; softplus."""

    model_type = "BNCNN"

    def __init__(self, hyps: Mapping[str, Any]) -> None:
        super().__init__(hyps)
        h = self.hyps
        img, chans, ksizes = self.img_shape, self.chans, self.ksizes
        n = self.n_cells
        sizes = map_sizes(img, ksizes[:2])
        noise = float(h.get("noise", 0.05) or 0.0)
        mom = float(h.get("bn_moment", h.get("bnorm_momentum", 0.01)))
        bias = bool(h.get("bias", True))
        mods: list[nn.Module] = []
        index: dict[str, int] = {}
        cin = img[0]
        for li, (cout, k, s) in enumerate(zip(chans, ksizes[:2], sizes)):
            index[f"conv{li}"] = len(mods)
            mods += [nn.Conv2d(cin, cout, k, bias=bias), Flatten(),
                     nn.BatchNorm1d(cout * s * s, eps=1e-3, momentum=mom), Reshape((cout, s, s)),
                     GaussianNoise(noise), nn.ReLU()]
            cin = cout
        mods.append(Flatten())
        index["conv2"] = len(mods)
        mods += [nn.Linear(cin * sizes[-1] * sizes[-1], n, bias=bool(h.get("gc_bias", False) or False)),
                 nn.BatchNorm1d(n, eps=1e-3, momentum=mom)]
        if h.get("softplus", True):
            mods.append(nn.Softplus())
        self.sequential = nn.Sequential(*mods)
        self.layer_index = index


#: model_type string -> class; extend to support more published layouts
MODEL_TYPES: dict[str, type[RetinaCNN]] = {
    "VaryModel": VaryModel,
    "LinearStackedBNCNN": VaryModel,   # same layout, stacked convs
    "BNCNN": BNCNN,
}


def build_model(model_type: str, hyps: Mapping[str, Any]) -> RetinaCNN:
    """Instantiate the layout named ``model_type`` from its hyper-parameters."""
    cls = MODEL_TYPES.get(model_type)
    if cls is None:
        raise _unknown(model_type)
    hyps = dict(hyps)
    if model_type == "LinearStackedBNCNN":
        hyps.setdefault("stackconvs", True)
    if "n_units" not in hyps:
        raise CheckpointError("hyps lack 'n_units' (the number of ganglion cells)")
    validate_hyps(hyps)
    return cls(hyps)


def _unknown(model_type: str) -> Exception:
    from retcodec.errors import UnknownModelTypeError
    return UnknownModelTypeError(
        f"unknown model_type {model_type!r}; retcodec rebuilds {sorted(MODEL_TYPES)}. "
        f"Add a class to retcodec.architectures.MODEL_TYPES to support another layout.")
