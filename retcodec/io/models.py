"""Models in and out: published checkpoints -> :class:`~retcodec.architectures.RetinaCNN`, and back.

* :func:`load_model` reads a checkpoint safely (:func:`retcodec.io.checkpoint.load_checkpoint`),
  rebuilds its layout (:func:`retcodec.io.architectures.build_model`), loads the
  weights strictly and fills ``model.meta``.
* :func:`save_model` writes the published layout, atomically.
* :func:`predict` runs a model over stimulus windows, batched, and returns
  rates as a labelled ``(time, cell)`` DataArray.

Tolerances where the published files vary (``docs/formats.md``):
hyps under ``hyps``, ``model_hyps``, ``hyperparams.json`` next to the file, or
only as top-level copies; ``cells`` as ``"all"`` (resolved with
:data:`PUBLISHED_CELLS` when the dataset is known and the count agrees),
a list or an array; ``img_shape`` as tuple or list; ``norm_stats`` as
``{'mean', 'std'}`` or ``[mean, std]``; missing ``centers`` taken from
:data:`PUBLISHED_CENTERS`; missing ``n_units`` counted from the last batch-norm;
missing ``sigma`` (GaussianNoise) and ``num_batches_tracked`` keys filled with
the model's values; state-dict keys renamed (a different prefix) mapped by structure
and shape, whatever their stored order, and refused when ambiguous; GrabUnits ``coords`` stored
in the state dict override the ones rebuilt from the centres.

The checks of a checkpoint's contents live in :mod:`retcodec.io.model_checks`;
``check_weights`` and ``normalize_norm_stats`` are re-exported here.
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from retcodec.defaults import FORWARD_BATCH
from retcodec._version import __version__
from retcodec.devices import resolve_device
from retcodec.io.architectures import (GrabUnits, LinearStackedConv2d, RetinaCNN, build_model,
                                       centers_to_coords, check_centers)
from retcodec.io.checkpoint import disallowed_globals, load_checkpoint, resolve_checkpoint_path
from retcodec.errors import (CellMismatchError, CheckpointError, ConfigurationError, InvalidModelError,
                             NonFiniteError, OutputPathError, ShapeError)
from retcodec.io.model_checks import (cells_list, centers_array, check_blank_response, check_weights,
                                     checked_state_dict, describe_source, image_shape,
                                     n_units_from_state, normalize_norm_stats, take_grab_coords)
from retcodec.io.provenance import provenance_attrs, sha256
from retcodec.io.recordings import window_batch
from retcodec.io.published import PUBLISHED_CELLS, PUBLISHED_CENTERS
from retcodec.io.storage import atomic_path, check_output_file
from retcodec.io.validation import check_input_dtype, warn_unscaled_input

__all__ = ["published_cells", "published_centers", "load_model", "model_from_checkpoint", "check_weights", "normalize_norm_stats", "save_model", "predict",
           "is_retcodec_checkpoint", "check_checkpoint_output", "CHECKPOINT_KEYS", "METRIC_KEYS"]


#: checkpoint keys that are not top-level copies of hyps
CHECKPOINT_KEYS = ("model_type", "model_state_dict", "retcodec_version", "optim_state_dict", "hyps", "model_hyps",
                   "norm_stats", "zero_dict", "y_stats", "cur_lr")
#: training metrics recorded in ``meta['provenance']`` when present
METRIC_KEYS = ("epoch", "loss", "val_loss", "val_acc", "test_pearson")
#: hyps a loader may take from the top-level copies when ``hyps`` lacks them
_ARCHITECTURE_KEYS = ("dataset", "cells", "stim_type", "img_shape", "n_units", "centers", "chans",
                      "ksizes", "stackconvs", "convgc", "bnorm_d", "bias", "gc_bias", "drop_p",
                      "noise", "bn_moment", "softplus", "stack_ksizes", "stack_chans")
#: state-dict entries a checkpoint may lack: the model's own values are kept
_OPTIONAL_SUFFIXES = (".sigma", ".num_batches_tracked")
#: a model's hyps may describe at most this many times the parameters its state dict holds
_PARAMETER_SLACK = 2


# --------------------------------------------------------------------------- published tables
def published_cells(dataset: str | None, n_cells: int | None = None) -> list[int] | None:
    """``PUBLISHED_CELLS[dataset]`` (a copy), or None when unknown or of another length."""
    cells = PUBLISHED_CELLS.get(str(dataset)) if dataset is not None else None
    if cells is None or (n_cells is not None and len(cells) != n_cells):
        return None
    return list(cells)


def published_centers(dataset: str | None, cells: Sequence[int] | str = "all") -> np.ndarray | None:
    """Centres ``(n, 2)`` of ``cells`` (original ids, or ``"all"``) from the published tables."""
    table = PUBLISHED_CENTERS.get(str(dataset)) if dataset is not None else None
    if table is None:
        return None
    if isinstance(cells, str):
        return table.copy()
    order = PUBLISHED_CELLS[str(dataset)]
    if any(int(c) not in order for c in cells):
        return None
    return table[[order.index(int(c)) for c in cells]].copy()


# --------------------------------------------------------------------------- loading
def load_model(path: str | Path, device: str | torch.device = "cpu") -> RetinaCNN:
    """Load a published (or retcodec-saved) checkpoint as an eval-mode model.

    Parameters
    ----------
    path
        Checkpoint file, or a training folder (its last ``*_epoch_N`` file).
    device
        Where to put the model (``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    RetinaCNN
        In eval mode, parameters with ``requires_grad=False``, ``zero_dict``
        applied, and ``model.meta`` = dict(dataset, cells, stim_type, img_shape,
        norm_stats, centers, model_type, hyps, provenance).

    Raises
    ------
    DeviceError
        ``device`` is unknown or absent on this machine (checked before reading).
    MissingDataError, UnreadableFileError, UnsafeCheckpointError, CorruptCheckpointError
        See :func:`retcodec.io.checkpoint.load_checkpoint`.
    InvalidModelError
        Weights that are not finite, a negative batch-norm variance, centres
        outside the image, out-of-range ``zero_dict`` channels or read-out
        coordinates, weights that are not real floating-point tensors.
    CheckpointError, UnknownModelTypeError
        Hyps and weights that do not describe a known layout.
    """
    target = resolve_device(device)
    file = resolve_checkpoint_path(path)
    if file.suffix.lower() == ".ckpt":
        raise CheckpointError(f"{str(file)!r} is a Lightning checkpoint (an openretina model?), not a published "
                              f"Baccus checkpoint; load it with retcodec.io.openretina.model.load_openretina_model("
                              f"path, session=...) or run `retcodec run --model {file.name} --session <id>`")
    return model_from_checkpoint(load_checkpoint(file), device=target, source=file)


def model_from_checkpoint(checkpoint: Mapping[str, Any], device: str | torch.device = "cpu",
                          source: str | Path | None = None) -> RetinaCNN:
    """Build the model a checkpoint dict describes (see :func:`load_model`).

    ``source`` is the file it came from (for ``hyperparams.json`` and provenance).
    """
    device = resolve_device(device)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {describe_source(source)} is a {type(checkpoint).__name__}, not "
                              f"the dict torch.save wrote")
    if "model_state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {describe_source(source)} has no 'model_state_dict' "
                              f"(keys: {sorted(map(str, checkpoint))})")
    state = checked_state_dict(checkpoint["model_state_dict"], source)
    model_type = str(checkpoint.get("model_type", "VaryModel"))
    hyps = _complete_hyps(_read_hyps(checkpoint, source), state, source)
    model = _build_checked(model_type, hyps, state, source)
    renamed = _load_state(model, state, source)
    check_weights(model, source)
    try:
        model.apply_zero_dict(checkpoint.get("zero_dict"))
    except ConfigurationError as err:
        raise InvalidModelError(f"'zero_dict' of {describe_source(source)} cannot be applied: {err}") from err
    model.meta = _meta(model, model_type, checkpoint, source)
    check_blank_response(model, source)
    if renamed:
        model.meta["provenance"]["renamed_state_keys"] = True
    model.eval().requires_grad_(False)
    return model.to(device)


def _build_checked(model_type: str, hyps: dict[str, Any], state: Mapping[str, torch.Tensor],
                   source: str | Path | None) -> RetinaCNN:
    """Build the layout, first on the meta device to check its size against the weights."""
    try:
        with torch.device("meta"):
            skeleton = build_model(model_type, hyps)
        described = sum(t.numel() for t in skeleton.state_dict().values())
        stored = sum(t.numel() for t in state.values())
        if described > _PARAMETER_SLACK * stored + 1024:
            raise CheckpointError(
                f"the hyps of {describe_source(source)} describe a {model_type} with {described} weights but "
                f"its state dict holds {stored}; check n_units, chans, ksizes and img_shape in the hyps")
        return build_model(model_type, hyps)
    except CheckpointError:
        raise
    except ConfigurationError as err:
        raise CheckpointError(f"cannot rebuild the {model_type} of {describe_source(source)}: {err}") from err
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RuntimeError) as err:
        raise CheckpointError(f"cannot rebuild the {model_type} of {describe_source(source)} from its hyps "
                              f"({type(err).__name__}: {err}); check model_type, chans, ksizes, "
                              f"img_shape and n_units in the checkpoint") from err


def _read_hyps(checkpoint: Mapping[str, Any], source: str | Path | None) -> dict[str, Any]:
    """hyps, else model_hyps, else hyperparams.json beside the file; then top-level copies."""
    for key in ("hyps", "model_hyps"):
        if isinstance(checkpoint.get(key), Mapping):
            hyps = dict(checkpoint[key])
            break
    else:
        hyps = _hyperparams_json(source)
    for key in _ARCHITECTURE_KEYS:
        if key not in hyps and key in checkpoint:
            hyps[key] = checkpoint[key]
    return hyps


def _hyperparams_json(source: str | Path | None) -> dict[str, Any]:
    if source is None:
        return {}
    candidate = Path(source).parent / "hyperparams.json"
    if not candidate.is_file():
        return {}
    try:
        return dict(json.loads(candidate.read_text()))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{str(candidate)!r} is not a JSON object of hyper-parameters: {err}") from err


def _complete_hyps(hyps: dict[str, Any], state: Mapping[str, torch.Tensor],
                   source: str | Path | None = None) -> dict[str, Any]:
    """Fill ``n_units`` and ``centers`` where the file lacks them; check and normalise ``centers``."""
    if "n_units" not in hyps:
        hyps["n_units"] = n_units_from_state(state)
    for key in ("dataset", "stim_type"):
        value = hyps.get(key)
        if value is not None and not isinstance(value, str):
            raise CheckpointError(f"hyps[{key!r}] of {describe_source(source)} must be a string such as "
                                  f"'15-10-07' / 'naturalscene', got {type(value).__name__} {value!r:.60}")
    dataset = hyps.get("dataset")
    if hyps.get("centers") is None:
        centers = published_centers(dataset, cells_list(hyps.get("cells", "all")) or "all")
        if centers is not None and len(centers) == int(hyps["n_units"]):
            hyps["centers"] = centers
    if hyps.get("centers") is not None:
        try:
            hyps["centers"] = check_centers(hyps["centers"], image_shape(hyps))
        except ConfigurationError as err:
            raise InvalidModelError(f"checkpoint {describe_source(source)}: {err}") from None
    return hyps


# --------------------------------------------------------------------------- state dict
def _load_state(model: nn.Module, state: "OrderedDict[str, torch.Tensor]",
                source: str | Path | None) -> bool:
    """Load ``state`` strictly, with the published tolerances; True when keys were renamed."""
    state = take_grab_coords(model, OrderedDict(state))
    expected = model.state_dict()
    filled = OrderedDict(state)
    for key in expected:
        if key not in filled and key.endswith(_OPTIONAL_SUFFIXES):
            filled[key] = expected[key]
    if _fits(filled, expected):
        model.load_state_dict(_ordered_like(filled, expected), strict=True)
        return False
    renamed = _rename_in_order(state, expected)
    if renamed is not None:
        model.load_state_dict(renamed, strict=True)
        return True
    raise CheckpointError(_mismatch_message(model, filled, expected, source))


def _fits(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> bool:
    return set(state) == set(expected) and all(state[k].shape == expected[k].shape for k in expected)


def _ordered_like(state: Mapping[str, torch.Tensor],
                  expected: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, state[k]) for k in expected)


def _rename_in_order(state: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor] | None":
    """Renamed keys mapped by structure and shape, never by position alone.

    Each stored entry goes to the model entry of the same shape whose dotted name shares
    the longest tail with it (``seq.1.running_mean`` -> ``sequential.1.running_mean``),
    whatever order the file stores them in. The mapping is used only when it is one to
    one and every entry has a single best match; otherwise (e.g. opaque names with several
    entries of one shape) the checkpoint is refused as ambiguous. None when nothing maps.
    """
    required = [k for k in expected if not k.endswith(_OPTIONAL_SUFFIXES)]
    if len(state) not in (len(expected), len(required)):
        return None
    pool = list(expected) if len(state) == len(expected) else required
    mapping: dict[str, str] = {}
    for key, value in state.items():
        candidates = [k for k in pool if expected[k].shape == value.shape]
        if not candidates:
            return None
        scores = {k: _shared_tail(key, k) for k in candidates}
        best = max(scores.values())
        winners = [k for k, v in scores.items() if v == best]
        if len(winners) != 1:
            raise CheckpointError(
                f"state-dict key {key!r} {tuple(value.shape)} could be any of {winners[:6]}: the checkpoint's "
                f"keys are renamed so that their structure no longer tells which weight is which. Restore "
                f"the original key names (e.g. {list(expected)[:3]}) before loading")
        mapping[key] = winners[0]
    if len(set(mapping.values())) != len(mapping):
        taken = [k for k in mapping.values() if list(mapping.values()).count(k) > 1]
        raise CheckpointError(f"renamed state-dict keys map twice onto {sorted(set(taken))[:6]}; the "
                              f"checkpoint is ambiguous. Restore the original key names before loading")
    renamed = OrderedDict((mapping[k], v) for k, v in state.items())
    for key in expected:
        renamed.setdefault(key, expected[key])
    return _ordered_like(renamed, expected)


def _shared_tail(a: str, b: str) -> int:
    """How many trailing dotted components ``a`` and ``b`` share (leaf name first)."""
    n = 0
    for x, y in zip(reversed(a.split(".")), reversed(b.split("."))):
        if x != y:
            break
        n += 1
    return n


def _mismatch_message(model: nn.Module, state: Mapping[str, torch.Tensor],
                      expected: Mapping[str, torch.Tensor], source: str | Path | None,
                      limit: int = 8) -> str:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]

    def listing(items: list[str]) -> str:
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = [f"missing keys: {listing(missing)}" if missing else "",
             f"unexpected keys: {listing(unexpected)}" if unexpected else "",
             f"shape mismatches: {listing(shapes)}" if shapes else ""]
    hyps = getattr(model, "hyps", {})
    return (f"the weights of checkpoint {describe_source(source)} do not fit the {type(model).__name__} "
            f"its hyps describe (chans={hyps.get('chans')}, ksizes={hyps.get('ksizes')}, "
            f"n_units={hyps.get('n_units')}, stackconvs={hyps.get('stackconvs')}); "
            + "; ".join(p for p in parts if p)
            + ". Check model_type and hyps against the state dict.")


# --------------------------------------------------------------------------- meta
def _meta(model: RetinaCNN, model_type: str, checkpoint: Mapping[str, Any],
          source: str | Path | None) -> dict[str, Any]:
    hyps = model.hyps
    dataset = hyps.get("dataset")
    centers = hyps.get("centers")
    return {
        "dataset": None if dataset is None else str(dataset),
        "cells": _resolve_cells(hyps.get("cells", "all"), dataset, model.n_cells),
        "stim_type": None if hyps.get("stim_type") is None else str(hyps["stim_type"]),
        "img_shape": model.img_shape,
        "norm_stats": normalize_norm_stats(checkpoint.get("norm_stats")),
        "centers": None if centers is None else centers_array(centers),
        "model_type": model_type,
        "hyps": dict(hyps),
        "provenance": _provenance(checkpoint, source),
    }


def _resolve_cells(cells: Any, dataset: Any, n_cells: int) -> list[int] | str:
    """List of original cell ids; ``"all"`` resolved by the published table, else kept."""
    listed = cells_list(cells)
    if listed is not None:
        if len(listed) != n_cells:
            raise CheckpointError(f"'cells' lists {len(listed)} cells but the model has {n_cells} outputs")
        return listed
    resolved = published_cells(dataset, n_cells)
    if resolved is None and dataset in PUBLISHED_CELLS:
        warnings.warn(f"cells='all' for dataset {dataset!r} names {len(PUBLISHED_CELLS[dataset])} "
                      f"cells but the model has {n_cells} outputs; keeping cells='all'",
                      RuntimeWarning, stacklevel=4)
    return resolved if resolved is not None else "all"


def _provenance(checkpoint: Mapping[str, Any], source: str | Path | None) -> dict[str, Any]:
    prov: dict[str, Any] = {"path": None if source is None else str(Path(source).resolve()),
                            "sha256": None if source is None else sha256(source),
                            "retcodec_version": __version__}
    for key in METRIC_KEYS:
        value = checkpoint.get(key)
        scalar_tensor = isinstance(value, torch.Tensor) and value.numel() == 1
        if isinstance(value, (int, float, np.number)) or scalar_tensor:
            number = value.item() if hasattr(value, "item") else value
            if isinstance(number, complex) or not np.isfinite(float(number)):
                continue                         # a metric that is not a number is not provenance
            prov[key] = int(number) if key == "epoch" else float(number)
    return prov


# --------------------------------------------------------------------------- saving
def save_model(model: RetinaCNN, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` as a published-layout checkpoint, atomically; return the path.

    The dict holds ``model_type``, ``model_state_dict`` (CPU tensors), ``hyps``,
    ``norm_stats`` (``{'mean', 'std'}`` as ``np.float32``, or ``np.float64``
    where float32 would round), ``zero_dict``, top-level copies of every hyps
    key (``centers`` as an ndarray) and ``extra`` (e.g. ``epoch``, ``val_loss``).
    ``meta`` values (dataset, cells, stim_type, img_shape, centers) are written
    into the hyps. A collapsed stacked model is saved as ``stackconvs=False``.
    ``load_model(save_model(m, p))`` reproduces the weights and ``meta`` exactly
    (all but ``meta['provenance']``).

    Raises
    ------
    ConfigurationError
        ``extra`` would overwrite a checkpoint key or a different hyps copy, or
        holds values :func:`~retcodec.checkpoint.load_checkpoint` could not read back.
    """
    hyps = _hyps_for_saving(model)
    checkpoint: dict[str, Any] = dict(hyps)
    for key, value in extra.items():
        if key in CHECKPOINT_KEYS:
            raise ConfigurationError(f"extra key {key!r} would overwrite the checkpoint's own {key!r}")
        if key in hyps and not _same_value(hyps[key], value):
            raise ConfigurationError(f"extra key {key!r}={value!r} differs from hyps[{key!r}]="
                                     f"{hyps[key]!r}, whose top-level copy it would replace")
        checkpoint[key] = value
    meta = getattr(model, "meta", {}) or {}
    checkpoint.update({
        "model_type": str(meta.get("model_type") or model.model_type),
        "model_state_dict": _state_for_saving(model),
        "hyps": hyps,
        "norm_stats": _norm_stats_for_saving(meta.get("norm_stats")),
        "zero_dict": {str(k): set(int(c) for c in v) for k, v in getattr(model, "zero_dict", {}).items()},
    })
    checkpoint["retcodec_version"] = __version__          # marks the file as retcodec's own (replaceable)
    path = check_checkpoint_output(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
        unreadable = disallowed_globals(tmp)
        if unreadable:
            raise ConfigurationError(
                f"the checkpoint would hold {', '.join(unreadable)}, which load_checkpoint refuses; "
                f"pass plain numbers, strings, lists, dicts, numpy arrays or tensors as extra keys")
    return path


def is_retcodec_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint :func:`save_model` wrote (read with the safe reader)."""
    try:
        ckpt = load_checkpoint(path)
    except Exception:           # not a checkpoint, damaged, unsafe: not provably ours
        return False
    hyps = ckpt.get("hyps") if isinstance(ckpt.get("hyps"), Mapping) else {}
    return "retcodec_version" in ckpt or "centers_source" in hyps      # 0.2.0's fits carry centers_source


def check_checkpoint_output(path: str | Path, what: str = "checkpoint") -> Path:
    """Check, before any work, that a checkpoint can be written at ``path``; returns it expanded.

    Besides :func:`~retcodec.io.storage.check_output_file`'s checks, an existing file that
    retcodec did not write (a published checkpoint, any other file) is never replaced:
    :class:`~retcodec.errors.OutputPathError`.
    """
    path = check_output_file(path, what)
    if path.exists() and not is_retcodec_checkpoint(path):
        raise OutputPathError(f"{what} {path} exists and was not written by retcodec; retcodec replaces only "
                              f"its own checkpoints. Move it or choose another name")
    return path


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


def _hyps_for_saving(model: RetinaCNN) -> dict[str, Any]:
    hyps = dict(model.hyps)
    meta = getattr(model, "meta", {}) or {}
    for key in ("dataset", "stim_type"):
        if meta.get(key) is not None:
            hyps[key] = meta[key]
    if meta.get("img_shape") is not None and tuple(meta["img_shape"]) != model.img_shape:
        hyps["img_shape"] = list(meta["img_shape"])
    if hyps.get("centers") is not None:         # the architecture's centres win over meta
        hyps["centers"] = centers_array(hyps["centers"])
    elif meta.get("centers") is not None:
        hyps["centers"] = centers_array(meta["centers"])
    cells = meta.get("cells")
    stored = _resolve_cells(hyps.get("cells", "all"), hyps.get("dataset"), model.n_cells)
    if cells is not None and cells != stored:
        hyps["cells"] = cells if isinstance(cells, str) else [int(c) for c in cells]
    if hyps.get("stackconvs", True) and not any(isinstance(m, LinearStackedConv2d) for m in model.modules()):
        hyps["stackconvs"] = False          # collapsed: plain convs under the same indices
    return hyps


def _state_for_saving(model: RetinaCNN) -> "OrderedDict[str, torch.Tensor]":
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    img = model.img_shape
    ksizes = [int(k) for k in model.hyps.get("ksizes", [15, 11, 11])]
    for name, module in model.named_modules():
        if isinstance(module, GrabUnits):
            rebuilt = centers_to_coords(model.hyps["centers"], ksizes, img)
            if not np.array_equal(module.coords.cpu().numpy(), rebuilt):
                state[f"{name}.coords"] = module.coords.detach().cpu().clone()
    return state


def _norm_stats_for_saving(norm_stats: Any) -> dict[str, np.floating] | None:
    stats = normalize_norm_stats(norm_stats)
    if stats is None:
        return None
    return {key: np.float32(v) if float(np.float32(v)) == v else np.float64(v) for key, v in stats.items()}


# --------------------------------------------------------------------------- prediction
def predict(model: RetinaCNN, windows_or_recording: Any, batch_size: int = FORWARD_BATCH,
            device: str | torch.device | None = None, progress: bool = False):
    """Model firing rates for stimulus windows: ``xr.DataArray (time, cell)`` in Hz.

    Parameters
    ----------
    model
        A :class:`RetinaCNN` (its train/eval state is restored afterwards).
    windows_or_recording
        * array or tensor ``(n, 40, 50, 50)`` of z-scored windows: ``time`` is
          the window index (attr ``units="window index"``);
        * a :class:`retcodec.io.recordings.Windows` (``len``, slicing to float32
          arrays, ``.time`` in s, ``.cells``);
        * an ``xarray.Dataset`` recording: windowed with
          ``retcodec.io.recordings.windows(recording, norm_stats=model.meta['norm_stats'],
          history=img_shape[0])`` after selecting the model's cells when the
          recording has more.
    batch_size
        Windows per forward pass.
    device
        Where to compute (default: the model's device); the model is moved
        back afterwards.
    progress
        Show a tqdm bar over batches.

    Raises
    ------
    CellMismatchError
        The recording's cells do not match the model's outputs.
    ShapeError, NonFiniteError, ConfigurationError
    """
    import xarray as xr

    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a whole number >= 1, got {batch_size!r:.40}")
    if not isinstance(model, RetinaCNN):
        raise ConfigurationError(f"predict needs a retina model from load_model (a RetinaCNN), got "
                                 f"{type(model).__name__}")
    source, time, time_units, cells = _prediction_input(model, windows_or_recording)
    rates = _run_batches(model, source, batch_size, device, progress)
    cell_coord = np.asarray(cells if cells is not None else _model_cells(model))
    meta = getattr(model, "meta", {}) or {}
    provenance = meta.get("provenance") or {}
    return xr.DataArray(
        rates, dims=("time", "cell"),
        coords={"time": ("time", np.asarray(time), {"units": time_units}),
                "cell": ("cell", cell_coord)},
        name="rate_model",
        attrs={"units": "Hz", "long_name": "model firing rate",
               **provenance_attrs({"batch_size": batch_size}, method="predict",
                                  model=provenance.get("path") or "in memory",
                                  model_sha256=provenance.get("sha256") or "unknown")})


def _model_cells(model: RetinaCNN) -> np.ndarray:
    cells = (getattr(model, "meta", {}) or {}).get("cells")
    if cells is None or isinstance(cells, str):
        return np.arange(model.n_cells)
    return np.asarray(cells, dtype=np.int64)


def _prediction_input(model: RetinaCNN, data: Any) -> tuple[Any, np.ndarray, str, np.ndarray | None]:
    """(sliceable windows, time coordinate, its units, cell ids or None)."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        data = _recording_windows(model, data)
    if isinstance(data, xr.DataArray):
        time = data["time"].values if "time" in data.coords else np.arange(data.shape[0])
        units = "s" if "time" in data.coords else "window index"
        return _check_windows_array(model, data.values), time, units, None
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return _check_windows_array(model, data), np.arange(data.shape[0]), "window index", None
    if all(hasattr(data, attr) for attr in ("__len__", "__getitem__", "time", "cells")):
        if data.cells is None:                 # windows of a bare stimulus
            return data, np.asarray(data.time), "s", None
        cells = np.asarray(data.cells)
        _check_cells(model, cells)
        return data, np.asarray(data.time), "s", cells
    raise ConfigurationError(
        f"predict needs an array (n, 40, 50, 50), a retcodec.recordings.Windows or an xarray "
        f"Dataset recording, got {type(data).__name__}")


def _check_windows_array(model: RetinaCNN, array: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    check_input_dtype(array, "windows")
    if array.ndim != 4 or tuple(array.shape[1:]) != model.img_shape:
        raise ShapeError(f"windows must be (n, {', '.join(map(str, model.img_shape))}) for this model, "
                         f"got {tuple(array.shape)}")
    first = array[:1].detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array[:1])
    warn_unscaled_input(first, "the first window")
    return array


def _check_cells(model: RetinaCNN, cells: np.ndarray) -> None:
    if len(cells) != model.n_cells:
        raise CellMismatchError(f"the model predicts {model.n_cells} cells but the recording's windows "
                                f"hold {len(cells)} ({cells.tolist()}); load the recording with the "
                                f"model's cells ({_model_cells(model).tolist()})")
    known = (getattr(model, "meta", {}) or {}).get("cells")
    if known is not None and not isinstance(known, str) and list(map(int, cells)) != list(map(int, known)):
        raise CellMismatchError(f"the recording's cells {cells.tolist()} are not the model's cells "
                                f"{list(known)} (same order required)")


def _recording_windows(model: RetinaCNN, recording: Any) -> Any:
    from . import recordings  # written alongside; imported only when a recording is given

    norm_stats = (getattr(model, "meta", {}) or {}).get("norm_stats")
    if norm_stats is None:
        raise ConfigurationError("model.meta['norm_stats'] is not set: a recording must be z-scored "
                                 "with the training stimulus statistics; set it to {'mean': m, 'std': s}")
    return recordings.windows(_select_model_cells(model, recording), norm_stats=norm_stats,
                              history=model.img_shape[0])


def _select_model_cells(model: RetinaCNN, recording: Any) -> Any:
    """The recording restricted to the model's cells, when it has a ``cell`` coordinate holding them."""
    cells = (getattr(model, "meta", {}) or {}).get("cells")
    if cells is None or isinstance(cells, str) or "cell" not in recording.coords:
        return recording
    have = [int(c) for c in recording["cell"].values]
    if have == list(cells):
        return recording
    missing = [c for c in cells if c not in have]
    if missing:
        raise CellMismatchError(f"the recording lacks the model's cells {missing} (it has {have})")
    return recording.sel(cell=list(cells))


def _run_batches(model: RetinaCNN, windows: Any, batch_size: int,
                 device: str | torch.device | None, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    home = model.device
    target = home if device is None else resolve_device(device)
    was_training = model.training
    model.to(target).eval()
    outputs: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            starts = range(0, len(windows), batch_size)
            for start in tqdm(starts, disable=not progress, desc="predict", unit="batch"):
                batch = window_batch(windows, slice(start, start + batch_size)).to(device=target)
                out = model(batch)
                if not torch.isfinite(out).all():
                    raise NonFiniteError(
                        f"the model returned NaN or Inf for windows {start}..{start + len(batch) - 1} "
                        f"(finite inputs): its weights overflow; check them with "
                        f"retcodec.io.models.check_weights or use another checkpoint")
                outputs.append(out.cpu().numpy())
    finally:
        model.to(home).train(was_training)
    if not outputs:
        return np.zeros((0, model.n_cells), dtype=np.float32)
    return np.concatenate(outputs)
