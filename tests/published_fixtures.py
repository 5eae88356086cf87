"""Checkpoint files in the published Baccus-lab layout, built from the specification.

Written from the published checkpoint layout (docs/formats.md) only: state dicts are assembled key
by key with plain tensors and saved with plain ``torch.save`` of dicts; nothing
here uses retcodec, so tests that load these files check retcodec against an
independent reading of the specification. Other test modules import:

* :func:`published_hyps`, :func:`make_published_state_dict`,
  :func:`make_published_checkpoint`, :func:`write_published_checkpoint`;
* :func:`reference_forward`, the model output computed sub-convolution by
  sub-convolution with ``torch.nn.functional`` and the batch-norm formula;
* ``SPEC_CELLS`` / ``SPEC_CENTERS``, the tables of §3.2 and §3.3;
* ``SPEC_GRABUNITS_COORDS_15_11_21B``, the printed GrabUnits repr of §2.2.
"""
from __future__ import annotations

import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

SPEC_CELLS: dict[str, list[int]] = {
    "15-10-07": [0, 1, 2, 3, 4],
    "15-11-21a": [6, 10, 12, 13],
    "15-11-21b": [0, 1, 3, 5, 8, 9, 13, 14, 16, 17, 18, 20, 21, 22, 23, 24, 25],
    "16-01-07": [0, 2, 7, 10, 11, 12, 31],
    "16-01-08": [0, 3, 7, 9, 11],
    "16-05-31": [2, 3, 4, 14, 16, 18, 20, 25, 27],
}
SPEC_CENTERS: dict[str, list[list[int]]] = {
    "15-10-07": [[21, 18], [24, 20], [22, 18], [27, 18], [31, 20]],
    "15-11-21a": [[37, 3], [39, 6], [20, 15], [41, 2]],
    "15-11-21b": [[16, 13], [20, 12], [19, 7], [19, 3], [21, 7], [22, 6], [21, 7], [25, 3],
                  [23, 6], [26, 4], [24, 6], [26, 7], [27, 9], [26, 9], [27, 11], [26, 13],
                  [24, 10]],
}
#: GrabUnits coords printed by the fork's repr of 15-11-21b_naturalscene.pt (§2.2)
SPEC_GRABUNITS_COORDS_15_11_21B = [[0, 0], [2, 0], [1, 0], [1, 0], [3, 0], [4, 0], [3, 0], [7, 0],
                                   [5, 0], [8, 0], [6, 0], [8, 0], [9, 0], [8, 0], [9, 0], [8, 0],
                                   [6, 0]]
BN_EPS = 1e-3


# --------------------------------------------------------------------------- hyps
def published_hyps(dataset: str | None = "15-11-21b", model_type: str = "VaryModel",
                   n_cells: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Hyper-parameters as the training code stored them (§1), for ``model_type``.

    ``n_cells`` defaults to the dataset's cell count; ``centers`` to the
    dataset's table when the counts agree, else a deterministic diagonal.
    """
    if n_cells is None:
        n_cells = len(SPEC_CELLS[dataset]) if dataset in SPEC_CELLS else 3
    hyps: dict[str, Any] = {
        "exp_name": "convgc", "exp_num": 26, "seed": 1582290884,
        "dataset": dataset, "stim_type": "naturalscene", "cells": "all",
        "img_shape": [40, 50, 50], "n_units": n_cells, "centers": _default_centers(dataset, n_cells),
        "chans": [8, 8], "ksizes": [15, 11, 11], "n_layers": 3, "paddings": None,
        "stackconvs": True, "stack_ksizes": 3, "stack_chans": None, "drop_p": 0.05,
        "convgc": True, "bnorm_d": 2, "bias": True, "gc_bias": False, "noise": 0.05,
        "bn_moment": 0.01, "softplus": True, "inference_exp": False, "activ_fxn": "ReLU",
        "lossfxn": "PoissonNLLLoss", "log_poisson": False, "lr": 0.005, "l2": 1e-3,
        "l1": 1e-4, "batch_size": 2500,
    }
    if model_type == "BNCNN":
        hyps.update(exp_name="drone", stackconvs=False, convgc=False, bnorm_d=1, drop_p=0.0)
    hyps.update(overrides)
    return hyps


def _default_centers(dataset: str | None, n_cells: int) -> np.ndarray:
    if dataset in SPEC_CENTERS and len(SPEC_CENTERS[dataset]) == n_cells:
        return np.array(SPEC_CENTERS[dataset], dtype=np.int64)
    rows = np.linspace(12, 40, n_cells).round()
    cols = np.linspace(38, 10, n_cells).round()
    return np.stack([rows, cols], axis=1).astype(np.int64)


# --------------------------------------------------------------------------- state dicts
def make_published_state_dict(n_cells: int, seed: int = 0, model_type: str = "VaryModel",
                               hyps: Mapping[str, Any] | None = None,
                               include_sigma: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """Random float32 weights under the published key names and shapes (§2.3, §1 BNCNN).

    VaryModel: stacked (sub-convs at even indices when ``drop_p > 0``) or plain
    convs, AbsBatchNorm2d stats as parameters, ``sigma`` of the noise layers,
    a conv ganglion layer without bias and AbsBatchNorm1d. BNCNN: plain convs,
    ``nn.BatchNorm1d`` over ``C*H*W`` units (with ``num_batches_tracked``), a
    Linear ganglion layer. Scales are chosen so activations stay of order one;
    some batch-norm scales are negative, as ``|scale|`` is what counts.
    """
    h = dict(published_hyps(None, model_type, n_cells)) if hyps is None else dict(hyps)
    gen = torch.Generator().manual_seed(int(seed))
    if model_type == "BNCNN":
        return _bncnn_state(n_cells, h, gen, include_sigma)
    if model_type not in ("VaryModel", "LinearStackedBNCNN"):
        raise ValueError(f"no spec writer for model_type {model_type!r}")
    return _varymodel_state(n_cells, h, gen, include_sigma)


def _normal(gen: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * std


def _abs_bn_entries(prefix: str, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"{prefix}.running_mean": _normal(gen, n, std=0.3),
            f"{prefix}.running_var": 0.5 + torch.rand(n, generator=gen),
            f"{prefix}.scale": _normal(gen, n),
            f"{prefix}.shift": _normal(gen, n, std=0.3)}


def _varymodel_state(n_cells: int, h: Mapping[str, Any], gen: torch.Generator,
                     include_sigma: bool) -> "OrderedDict[str, torch.Tensor]":
    chans, ksizes = list(h["chans"]), list(h["ksizes"])
    in_chans = [int(h["img_shape"][0]), chans[0]]
    step = 2 if float(h.get("drop_p") or 0) > 0 else 1
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for layer, seq in enumerate((0, 4)):
        cin, cout, k = in_chans[layer], chans[layer], ksizes[layer]
        if h.get("stackconvs", True):
            n_sub = (k - 3) // 2 + 1
            for j in range(n_sub):
                c_in = cin if j == 0 else cout
                state[f"sequential.{seq}.convs.{j * step}.weight"] = _normal(
                    gen, cout, c_in, 3, 3, std=(c_in * 9) ** -0.5)
            state[f"sequential.{seq}.convs.{(n_sub - 1) * step}.bias"] = _normal(gen, cout, std=0.1)
        else:
            state[f"sequential.{seq}.weight"] = _normal(gen, cout, cin, k, k, std=(cin * k * k) ** -0.5)
            state[f"sequential.{seq}.bias"] = _normal(gen, cout, std=0.1)
        state.update(_abs_bn_entries(f"sequential.{seq + 1}", cout, gen))
        if include_sigma:
            state[f"sequential.{seq + 2}.sigma"] = torch.tensor([float(h.get("noise", 0.05))])
    k2 = ksizes[2]
    state["sequential.8.weight"] = _normal(gen, n_cells, chans[1], k2, k2, std=(chans[1] * k2 * k2) ** -0.5)
    state.update(_abs_bn_entries("sequential.10", n_cells, gen))
    return state


def _bncnn_state(n_cells: int, h: Mapping[str, Any], gen: torch.Generator,
                 include_sigma: bool) -> "OrderedDict[str, torch.Tensor]":
    chans, ksizes = list(h["chans"]), list(h["ksizes"])
    size = int(h["img_shape"][-1])
    cin = int(h["img_shape"][0])
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for seq, cout, k in ((0, chans[0], ksizes[0]), (6, chans[1], ksizes[1])):
        size = size - k + 1
        units = cout * size * size
        state[f"sequential.{seq}.weight"] = _normal(gen, cout, cin, k, k, std=(cin * k * k) ** -0.5)
        state[f"sequential.{seq}.bias"] = _normal(gen, cout, std=0.1)
        state.update(_plain_bn_entries(f"sequential.{seq + 2}", units, gen))
        if include_sigma:
            state[f"sequential.{seq + 4}.sigma"] = torch.tensor([float(h.get("noise", 0.05))])
        cin = cout
    state["sequential.13.weight"] = _normal(gen, n_cells, cin * size * size, std=(cin * size * size) ** -0.5)
    state.update(_plain_bn_entries("sequential.14", n_cells, gen))
    return state


def _plain_bn_entries(prefix: str, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 0.5 + torch.rand(n, generator=gen),
            f"{prefix}.bias": _normal(gen, n, std=0.3),
            f"{prefix}.running_mean": _normal(gen, n, std=0.3),
            f"{prefix}.running_var": 0.5 + torch.rand(n, generator=gen),
            f"{prefix}.num_batches_tracked": torch.tensor(1000, dtype=torch.long)}


# --------------------------------------------------------------------------- checkpoints
def make_published_checkpoint(n_cells: int | None = None, seed: int = 0,
                              model_type: str = "VaryModel", dataset: str | None = "15-11-21b",
                              *, hyps_key: str | None = "hyps", norm_stats_format: str = "dict",
                              include_sigma: bool = True, zero_dict: Mapping[str, set] | None = None,
                              top_level_copies: bool = True, **hyps_overrides: Any) -> dict[str, Any]:
    """The dict ``training.train_loop`` saved (§1): weights, hyps, norm stats, metrics.

    ``hyps_key`` is ``"hyps"``, ``"model_hyps"`` (older files) or None (hyps only
    as top-level copies). ``norm_stats_format``: ``"dict"`` ({'mean': np.float32,
    'std': np.float64}) or ``"list"`` ([mean, std]).
    """
    hyps = published_hyps(dataset, model_type, n_cells, **hyps_overrides)
    n = int(hyps["n_units"])
    state = make_published_state_dict(n, seed, model_type, hyps, include_sigma)
    mean, std = np.float32(121.25), np.float64(57.5) + 1e-7
    norm_stats: Any = {"mean": mean, "std": std} if norm_stats_format == "dict" else [mean, std]
    ckpt: dict[str, Any] = {}
    if top_level_copies:
        ckpt.update(hyps)
    ckpt.update({
        "model_type": model_type, "model_state_dict": state,
        "optim_state_dict": {"state": {}, "param_groups": [
            {"lr": 0.005, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-3,
             "amsgrad": False, "params": list(range(len(state)))}]},
        "norm_stats": norm_stats, "loss": 0.71, "val_loss": 0.73, "val_acc": 0.55,
        "test_pearson": 0.62, "epoch": 41,
    })
    if hyps_key:
        ckpt[hyps_key] = hyps
    if zero_dict is not None:
        ckpt["zero_dict"] = {k: set(v) for k, v in zero_dict.items()}
    return ckpt


def write_published_checkpoint(path: str | Path, checkpoint: Mapping[str, Any] | None = None, *,
                               legacy: bool = False, old_numpy_names: bool = False,
                               **make_kwargs: Any) -> dict[str, Any]:
    """``torch.save`` a published checkpoint dict to ``path``; return the dict written.

    ``legacy=True`` writes the pre-1.6 non-zip stream. ``old_numpy_names=True``
    pickles numpy objects under their numpy-1 names (``numpy.core.multiarray``),
    as files written in 2020 did.
    """
    ckpt = dict(checkpoint) if checkpoint is not None else make_published_checkpoint(**make_kwargs)
    kwargs: dict[str, Any] = {"_use_new_zipfile_serialization": not legacy}
    if old_numpy_names:
        kwargs["pickle_module"] = NUMPY1_PICKLE
    torch.save(ckpt, str(path), **kwargs)
    return ckpt


class _Numpy1Pickler(pickle._Pickler):
    """Pure-Python pickler that names ``numpy._core.*`` globals as numpy 1 did (``numpy.core.*``)."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "") or ""
        if self.proto >= 4 or not module.startswith("numpy._core"):
            return super().save_global(obj, name)
        old_module = "numpy.core" + module[len("numpy._core"):]
        qualname = name or obj.__qualname__
        self.write(pickle.GLOBAL + f"{old_module}\n{qualname}\n".encode("utf-8"))
        self.memoize(obj)


def _numpy1_dump(obj: Any, file: Any, protocol: int | None = None, **kwargs: Any) -> None:
    _Numpy1Pickler(file, protocol=protocol).dump(obj)


NUMPY1_PICKLE = types.ModuleType("numpy1_pickle")
NUMPY1_PICKLE.Pickler = _Numpy1Pickler
NUMPY1_PICKLE.dump = _numpy1_dump
NUMPY1_PICKLE.Unpickler = pickle.Unpickler
NUMPY1_PICKLE.load = pickle.load


# --------------------------------------------------------------------------- reference
def reference_forward(state_dict: Mapping[str, torch.Tensor], hyps: Mapping[str, Any],
                      x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Eval-mode output ``(batch, n_cells)`` of a published checkpoint, op by op.

    Convolutions are applied one sub-convolution at a time (``F.conv2d``) and
    batch norm as ``(x - mean) / sqrt(var + 1e-3) * |scale| + shift`` (AbsBN) or
    ``* weight + bias`` (BatchNorm1d). Computed in ``dtype`` (float64 default).
    """
    sd = {k: v.to(dtype) for k, v in state_dict.items()}
    x = torch.as_tensor(x).to(dtype)
    if "sequential.13.weight" in sd:
        return _reference_bncnn(sd, x)
    return _reference_varymodel(sd, hyps, x)


def _apply_convs(sd: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    subs = sorted(int(k.split(".")[-2]) for k in sd
                  if k.startswith(f"{prefix}.convs.") and k.endswith(".weight"))
    if not subs:
        return F.conv2d(x, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"))
    for j in subs:
        x = F.conv2d(x, sd[f"{prefix}.convs.{j}.weight"], sd.get(f"{prefix}.convs.{j}.bias"))
    return x


def _abs_bn(sd: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = sd[f"{prefix}.running_mean"].reshape(shape), sd[f"{prefix}.running_var"].reshape(shape)
    scale, shift = sd[f"{prefix}.scale"].reshape(shape), sd[f"{prefix}.shift"].reshape(shape)
    return (x - mean) / torch.sqrt(var + BN_EPS) * scale.abs() + shift


def _plain_bn(sd: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    return ((x - sd[f"{prefix}.running_mean"]) / torch.sqrt(sd[f"{prefix}.running_var"] + BN_EPS)
            * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"])


def spec_grab_coords(centers: Sequence[Sequence[int]], ksizes: Sequence[int],
                     img_size: int) -> np.ndarray:
    """Published GrabUnits rule: ``clip(center - 18, 0, 15)`` for kernels 15, 11, 11 on 50 px.

    In general: offset ``sum(k - 1) / 2 + 1``, upper bound the output map size minus one.
    """
    offset = sum(int(k) - 1 for k in ksizes) // 2 + 1
    last = img_size - sum(int(k) - 1 for k in ksizes) - 1
    return np.clip(np.asarray(centers, dtype=np.int64) - offset, 0, last)


def _reference_varymodel(sd: Mapping[str, torch.Tensor], hyps: Mapping[str, Any],
                         x: torch.Tensor) -> torch.Tensor:
    for seq in (0, 4):
        x = _apply_convs(sd, f"sequential.{seq}", x)
        x = torch.relu(_abs_bn(sd, f"sequential.{seq + 1}", x))
    x = F.conv2d(x, sd["sequential.8.weight"], sd.get("sequential.8.bias"))
    coords = spec_grab_coords(hyps["centers"], hyps["ksizes"], int(hyps["img_shape"][-1]))
    cells = torch.arange(len(coords))
    x = x[:, cells, torch.as_tensor(coords[:, 0]), torch.as_tensor(coords[:, 1])]
    return F.softplus(_abs_bn(sd, "sequential.10", x))


def _reference_bncnn(sd: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for seq in (0, 6):
        x = F.conv2d(x, sd[f"sequential.{seq}.weight"], sd.get(f"sequential.{seq}.bias"))
        shape = x.shape
        x = _plain_bn(sd, f"sequential.{seq + 2}", x.reshape(shape[0], -1)).reshape(shape)
        x = torch.relu(x)
    x = F.linear(x.reshape(x.shape[0], -1), sd["sequential.13.weight"], sd.get("sequential.13.bias"))
    return F.softplus(_plain_bn(sd, "sequential.14", x))
