"""Checks of a model checkpoint's contents: weights, state dict, centres, cells and norm stats.

Used by :mod:`retcodec.io.models` while it rebuilds a model: each check raises
:class:`~retcodec.errors.InvalidModelError` or :class:`~retcodec.errors.CheckpointError`
naming the checkpoint (:func:`describe_source`) and what to fix.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from retcodec.errors import CheckpointError, InvalidModelError
from retcodec.io.architectures import GrabUnits, RetinaCNN, map_sizes
from retcodec.io.validation import MIN_STIMULUS_STD

__all__ = ["describe_source", "check_weights", "check_blank_response", "listing", "checked_state_dict",
           "image_shape", "n_units_from_state", "centers_array", "cells_list", "take_grab_coords",
           "normalize_norm_stats", "INTEGER_SUFFIXES"]

#: state-dict entries that hold integers (counters, read-out coordinates), not weights
INTEGER_SUFFIXES = (".num_batches_tracked", ".coords")


def describe_source(source: str | Path | None) -> str:
    return repr(str(source)) if source is not None else "(in memory)"


def check_weights(model: nn.Module, source: str | Path | None = None) -> None:
    """Refuse weights no trained model has: NaN/Inf anywhere, a negative batch-norm variance.

    Raises :class:`~retcodec.errors.InvalidModelError` naming the entries.
    """
    state = model.state_dict()
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise InvalidModelError(
            f"the weights of {describe_source(source)} hold NaN or Inf in {listing(nonfinite)}: the "
            f"checkpoint is damaged or training diverged; use another epoch's checkpoint or a clean copy")
    negative = [k for k, v in state.items() if k.endswith("running_var") and (v < 0).any()]
    if negative:
        raise InvalidModelError(
            f"batch-norm running variances of {describe_source(source)} are negative in {listing(negative)}; "
            f"a variance cannot be negative, so the checkpoint is damaged or was edited. Use a clean copy")


def check_blank_response(model: RetinaCNN, source: str | Path | None,
                          max_elements: int = 10_000_000) -> None:
    """One forward pass on a blank (all-zero, i.e. mean-grey) window must give finite rates."""
    if int(np.prod(model.img_shape)) > max_elements:
        return
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *model.img_shape))
    finally:
        model.train(was_training)
    if not torch.isfinite(out).all():
        raise InvalidModelError(
            f"the model of {describe_source(source)} returns NaN or Inf for a blank (mean-grey) stimulus: its "
            f"weights overflow float32 although each is finite. The checkpoint is damaged or was "
            f"edited; use a clean copy or another epoch")


def listing(items: list[str], limit: int = 6) -> str:
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def checked_state_dict(state: Any, source: str | Path | None) -> "OrderedDict[str, torch.Tensor]":
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'model_state_dict' of {describe_source(source)} is not a mapping of "
                              f"names to tensors")
    for key, value in state.items():
        if value.layout != torch.strided or value.is_quantized or value.device.type != "cpu":
            raise InvalidModelError(f"'model_state_dict' entry {key!r} of {describe_source(source)} is a "
                                    f"{value.layout} / quantized / {value.device} tensor; a model's "
                                    f"weights are dense CPU tensors. Re-save them with .cpu() and "
                                    f".to_dense()")
        integer = str(key).endswith(INTEGER_SUFFIXES)
        if (not integer and not value.is_floating_point()) or (integer and value.is_complex()):
            raise InvalidModelError(f"'model_state_dict' entry {key!r} of {describe_source(source)} has dtype "
                                    f"{value.dtype}; weights must be real floating point (float32). "
                                    f"The checkpoint is damaged or was edited")
    out = OrderedDict((str(k), v) for k, v in state.items())
    if out and all(k.startswith("module.") for k in out):      # saved from DataParallel
        out = OrderedDict((k[len("module."):], v) for k, v in out.items())
    return out


def image_shape(hyps: Mapping[str, Any]) -> tuple[int, int]:
    """``(H, W)`` of the model input from ``img_shape`` (default 50 x 50)."""
    try:
        shape = [int(v) for v in hyps.get("img_shape", (40, 50, 50))]
        return shape[-2], shape[-1]
    except (TypeError, ValueError, IndexError):
        raise CheckpointError(f"hyps['img_shape'] must be (history, height, width) integers, got "
                              f"{hyps.get('img_shape')!r:.80}") from None


def n_units_from_state(state: Mapping[str, torch.Tensor]) -> int:
    stats = [k for k in state if k.endswith("running_mean")]
    if not stats:
        raise CheckpointError("hyps lack 'n_units' and the state dict has no batch-norm to count "
                              "the cells from; add n_units to the checkpoint's hyps")
    return int(state[stats[-1]].numel())


def centers_array(centers: Any) -> np.ndarray:
    try:
        arr = np.asarray(centers.cpu() if isinstance(centers, torch.Tensor) else centers)
        arr = arr.astype(np.int64).reshape(-1, 2)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"'centers' must be (n_cells, 2) integer pixel coordinates: {err}") from err
    return arr


def cells_list(cells: Any) -> list[int] | None:
    """Cells as a list of ints; None for ``"all"`` / None."""
    if cells is None or isinstance(cells, str):
        if cells not in (None, "all"):
            raise CheckpointError(f"'cells' must be 'all' or a list of cell indices, got {cells!r}")
        return None
    try:
        values = np.asarray(cells.cpu() if isinstance(cells, torch.Tensor) else cells).ravel()
        listed = [int(c) for c in values]
    except (TypeError, ValueError, OverflowError) as err:
        raise CheckpointError(f"'cells' must be 'all' or a list of cell indices: {err}") from err
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.array_equal(values, listed)):
        raise CheckpointError(f"'cells' must be 'all' or a list of whole cell indices, got {cells!r:.80}")
    if any(c < 0 for c in listed) or len(set(listed)) != len(listed):
        raise CheckpointError(f"'cells' must list distinct non-negative cell indices (cell numbers in "
                              f"the recording file), got {listed[:20]}")
    return listed


def take_grab_coords(model: nn.Module,
                      state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """Stored GrabUnits ``coords`` (some code versions kept them) replace the rebuilt ones."""
    for name, module in model.named_modules():
        key = f"{name}.coords"
        if isinstance(module, GrabUnits) and key in state:
            stored = state.pop(key)
            if stored.is_floating_point() and not torch.isfinite(stored).all():
                raise InvalidModelError(f"{key} (GrabUnits read-out coordinates) holds NaN or Inf")
            coords = stored.to(torch.long).reshape(-1, 2)
            if coords.shape != module.coords.shape:
                raise CheckpointError(f"{key} has shape {tuple(coords.shape)} but the model reads "
                                      f"{tuple(module.coords.shape)} units")
            size = map_sizes(model.img_shape, model.ksizes)[-1]
            if coords.numel() and (coords.min() < 0 or coords.max() >= size):
                raise InvalidModelError(f"{key} (GrabUnits read-out coordinates) must lie in 0..{size - 1} "
                                        f"on the {size}x{size} ganglion map, got "
                                        f"{coords.min().item()}..{coords.max().item()}; the checkpoint "
                                        f"is damaged or was edited")
            module.coords = coords.to(module.coords.device)
    return state


def normalize_norm_stats(norm_stats: Any) -> dict[str, float] | None:
    """``{'mean', 'std'}`` dict, ``[mean, std]`` or None -> ``{'mean': float, 'std': float}`` or None."""
    if norm_stats is None:
        return None
    if np.ndim(norm_stats) > 0 and np.size(norm_stats) != 2 and not isinstance(norm_stats, Mapping):
        raise InvalidModelError(f"norm_stats must be {{'mean': m, 'std': s}} or [m, s] scalars, got "
                                f"{type(norm_stats).__name__} of {np.size(norm_stats)} values")
    try:
        if isinstance(norm_stats, Mapping):
            mean, std = norm_stats["mean"], norm_stats["std"]
        else:
            mean, std = list(norm_stats)
        mean, std = float(mean), float(std)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"norm_stats must be {{'mean': m, 'std': s}} or [m, s] scalars, "
                              f"got {norm_stats!r}") from err
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise InvalidModelError(f"norm_stats need a finite mean and a positive std, got mean={mean}, "
                                f"std={std}; set them to the training stimulus's global mean and std")
    if std <= MIN_STIMULUS_STD * max(1.0, abs(mean)):
        raise InvalidModelError(f"norm_stats std={std:.3g} (mean={mean:.6g}) is the std of a constant "
                                f"stimulus: z-scoring with it would blow inputs up by 1/std. Set them to "
                                f"the training stimulus's global mean and std")
    return {"mean": mean, "std": std}
