"""Write a recording in the published layout (``write_recording``), atomically and validated.

Split out of :mod:`retcodec.io.recordings`, which re-exports ``write_recording``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from retcodec.defaults import DT
from retcodec.errors import ConfigurationError, NonFiniteError, ShapeError
from retcodec.io.provenance import provenance_attrs, to_attr
from retcodec.io.storage import atomic_path, check_output_file
from retcodec.io.truth import write_truth
from retcodec.io.validation import check_counts, check_numeric_dtype, check_rates, check_stimulus_values

__all__ = ["write_recording"]

_STIM_CHUNK_FRAMES = 128         # time chunk of a written stimulus (320 kB at 50x50 uint8)
_SPLIT_KEYS = {"stimulus", "firing_rate_10ms", "binned", "repeats", "stas"}


def _compact_stimulus(stimulus: Any, split: str) -> np.ndarray:
    """uint8 when the values are integers in 0..255 (losslessly), else float32."""
    arr = np.asarray(stimulus)
    if arr.ndim != 3:
        raise ShapeError(f"{split} stimulus must be (T, y, x), got shape {arr.shape}")
    check_numeric_dtype(arr, f"{split} stimulus")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise NonFiniteError(f"{split} stimulus holds NaN or Inf")
    if arr.size and arr.dtype.kind in "iuf":
        check_stimulus_values(float(np.abs(arr).max()), f"{split} stimulus")
    if arr.size and arr.dtype.kind in "iuf" and arr.min() >= 0 and arr.max() <= 255 \
            and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.uint8)
    return arr.astype(np.float32)


def _checked_split(name: str, split: Mapping[str, Any]) -> dict[str, Any]:
    """Validated arrays of one split dict (shapes, finiteness)."""
    unknown = set(split) - _SPLIT_KEYS
    missing = {"stimulus", "firing_rate_10ms", "binned"} - set(split)
    if unknown or missing:
        raise ConfigurationError(f"{name} split: missing keys {sorted(missing)}, unknown keys "
                                 f"{sorted(unknown)} (allowed: {sorted(_SPLIT_KEYS)})")
    out = {"stimulus": _compact_stimulus(split["stimulus"], name)}
    n_time = out["stimulus"].shape[0]
    for key in ("firing_rate_10ms", "binned"):
        check_numeric_dtype(np.asarray(split[key]), f"{name} {key}")
    rate = np.asarray(split["firing_rate_10ms"], dtype=np.float32)
    binned = np.asarray(split["binned"])
    # the published white-noise test response has one bin more than its stimulus;
    # writing that quirk is allowed so that readers can be tested against it
    n_resp = rate.shape[1] if rate.ndim == 2 else -1
    if rate.ndim != 2 or n_resp not in (n_time, n_time + 1) or binned.shape != rate.shape:
        raise ShapeError(f"{name}: firing_rate_10ms {rate.shape} and binned {binned.shape} "
                         f"must both be (n_cells, {n_time}) (or one bin longer, the published "
                         f"white-noise quirk)")
    if not np.isfinite(rate).all():
        raise NonFiniteError(f"{name} firing_rate_10ms holds NaN or Inf")
    check_rates(rate, np.arange(rate.shape[0]), f"{name} firing_rate_10ms")
    check_counts(binned, np.arange(binned.shape[0]), f"{name} binned")
    out["firing_rate_10ms"], out["binned"] = rate, binned
    if split.get("repeats") is not None:
        rep = np.asarray(split["repeats"], dtype=np.float32)
        if rep.ndim != 3 or rep.shape[0] != rate.shape[0] or rep.shape[2] != n_resp:
            raise ShapeError(f"{name} repeats must be (n_cells={rate.shape[0]}, n_repeats, "
                             f"{n_resp}), got {rep.shape}")
        out["repeats"] = rep
    if split.get("stas") is not None:
        stas = split["stas"]
        out["stas"] = ({int(k): np.asarray(v) for k, v in stas.items()} if isinstance(stas, Mapping)
                       else dict(enumerate(np.asarray(stas))))
    return out


def write_recording(path: str | os.PathLike, *, train: Mapping[str, Any], test: Mapping[str, Any],
                    attrs: Mapping[str, Any] | None = None, truth: Mapping[str, Any] | None = None,
                    compression: str | None = "gzip") -> Path:
    """Write a recording in the published layout, atomically; returns the path.

    Each split dict holds ``stimulus`` (T, H, W) (stored as uint8 when its
    values are integers 0..255, else float32; chunked and compressed),
    ``firing_rate_10ms`` (n_cells, T) in Hz, ``binned`` (n_cells, T) counts,
    optional ``repeats`` (n_cells, n_repeats, T) written to
    ``<split>/repeats/cellNN`` (1-based) and optional ``stas`` (an array with
    one entry per cell, or ``{cell: array}``) written to ``<split>/stas/cellNN``.
    ``attrs`` become root attributes; ``truth`` (``cell_type`` (n,),
    ``center`` (n, 2), other 1-D per-cell arrays, ``circuit`` dict or JSON)
    becomes the ``truth`` group. ``path`` is conventionally
    ``<root>/<experiment>/<stim_type>.h5``.
    """
    if compression not in ("gzip", "lzf", None):
        raise ConfigurationError(f"compression must be 'gzip', 'lzf' or None, not {compression!r}")
    splits = {"train": _checked_split("train", train), "test": _checked_split("test", test)}
    n_cells = {s: d["firing_rate_10ms"].shape[0] for s, d in splits.items()}
    if n_cells["train"] != n_cells["test"]:
        raise ShapeError(f"train has {n_cells['train']} cells, test {n_cells['test']}")
    opts = {"compression": compression, "compression_opts": 4 if compression == "gzip" else None}
    path = check_output_file(path, "recording", own_only=True)    # never over a file retcodec did not write
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in {**provenance_attrs(), **dict(attrs or {})}.items():
            h5.attrs[key] = to_attr(value)
        for name, split in splits.items():
            _write_split(h5.create_group(name), split, opts)
        if truth is not None:
            write_truth(h5, truth, n_cells["train"])
    return path


def _write_split(group: h5py.Group, split: Mapping[str, Any], opts: dict) -> None:
    stim = split["stimulus"]
    chunks = (min(max(stim.shape[0], 1), _STIM_CHUNK_FRAMES), *stim.shape[1:])
    group.create_dataset("stimulus", data=stim, chunks=chunks if stim.size else None,
                         **(opts if stim.size else {}))
    group.create_dataset("time", data=np.arange(stim.shape[0]) * DT)
    response = group.create_group("response")
    for name in ("firing_rate_10ms", "binned"):
        response.create_dataset(name, data=split[name], **(opts if split[name].size else {}))
    if "repeats" in split:
        rep = group.create_group("repeats")
        for cell, trials in enumerate(split["repeats"]):
            rep.create_dataset(f"cell{cell + 1:02d}", data=trials, **opts)
    if "stas" in split:
        stas = group.create_group("stas")
        for cell, sta in split["stas"].items():
            stas.create_dataset(f"cell{cell + 1:02d}", data=sta)
