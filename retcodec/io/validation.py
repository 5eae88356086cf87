"""Value and dtype checks of recording data: numeric dtypes, plausible rates and counts, window settings.

Shared by the recording and interneuron readers and writers
(:mod:`retcodec.io.recordings`, :mod:`retcodec.io.interneurons`) and the model
loader; each check raises a specific :class:`~retcodec.errors.RetcodecError`
that says what to fix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from retcodec.errors import ConfigurationError, NonFiniteError, RecordingValueError

if TYPE_CHECKING:
    import h5py

__all__ = ["MAX_RATE_HZ", "MIN_STIMULUS_STD", "MAX_STORAGE_RATIO", "check_numeric_dtype",
           "check_rates", "check_counts", "check_history", "parse_norm_stats", "check_written"]

#: largest plausible firing rate (Hz): ten times the ~1000 Hz ceiling that a neuron's ~1 ms
#: refractory period sets; larger values mean the file holds something other than rates in Hz
MAX_RATE_HZ = 10_000.0
#: a train stimulus whose population std is below ``MIN_STIMULUS_STD * max(1, |mean|)`` is
#: constant: z-scoring it would blow the windows up to ~1e9
MIN_STIMULUS_STD = 1e-6


def check_numeric_dtype(dset: h5py.Dataset | np.ndarray, what: str, kinds: str = "biuf") -> None:
    """Refuse a dataset or array whose dtype is not real numbers (bytes, strings, complex, compound)."""
    dtype = dset.dtype
    if dtype.kind not in kinds:
        name = {"S": "bytes", "U": "text", "O": "Python objects / variable-length strings",
                "c": "complex numbers", "V": "compound records", "M": "dates", "m": "time spans"}
        raise RecordingValueError(
            f"{what} has dtype {dtype} ({name.get(dtype.kind, dtype.kind)}); it must hold real "
            f"numbers (uint8 or float frames, float rates). Re-export it as numbers")


def check_rates(values: np.ndarray, rows: np.ndarray, what: str, limit: float = MAX_RATE_HZ) -> None:
    """Refuse negative rates and rates above ``limit`` Hz (:data:`MAX_RATE_HZ`), naming the cells."""
    if not values.size:
        return
    filled = np.nan_to_num(values, nan=0.0)          # NaN pads missing repeats
    negative = filled.min(axis=-1) < 0
    huge = filled.max(axis=-1) > limit
    while negative.ndim > 1:                      # repeats: (repeat, cell, time) -> per cell
        negative, huge = negative.any(axis=0), huge.any(axis=0)
    if negative.any():
        raise RecordingValueError(
            f"{what} holds negative values (min {filled.min():.4g}) for cells "
            f"{rows[negative].tolist()}; firing rates are >= 0 Hz. Fix the file or drop those cells")
    if huge.any():
        raise RecordingValueError(
            f"{what} holds values up to {filled.max():.4g} for cells {rows[huge].tolist()}, above "
            f"the plausible limit of {limit:g} Hz (retcodec.io.recordings.MAX_RATE_HZ); rates must be "
            f"spikes/s in 10 ms bins. Check the file's units or drop those cells")


#: declared bytes per stored byte above which a stimulus to scan is taken as mostly unwritten
#: (gzip/deflate cannot compress beyond about 1000:1; unwritten HDF5 chunks take no space)
MAX_STORAGE_RATIO = 10_000.0


def check_written(dset: h5py.Dataset, what: str) -> None:
    """A stimulus to scan in full must hold its frames: refuse declared-but-unwritten data."""
    stored = dset.id.get_storage_size()
    if dset.nbytes and (stored == 0 or dset.nbytes / stored > MAX_STORAGE_RATIO):
        raise RecordingValueError(
            f"{what} declares {dset.shape[0]} frames ({dset.nbytes / 2**30:.3g} GiB) but the file "
            f"stores only {stored} bytes of them: the frames were never written (an interrupted "
            f"export?). Export the recording again")


def check_counts(counts: np.ndarray, rows: np.ndarray, what: str) -> None:
    """Spike counts: finite and >= 0."""
    if counts.dtype.kind == "f" and not np.isfinite(counts).all():
        bad = rows[~np.isfinite(counts).all(axis=1)].tolist()
        raise NonFiniteError(f"{what} holds NaN or Inf for cells {bad}; spike counts must be finite")
    if counts.size and counts.dtype.kind in "if" and counts.min() < 0:
        bad = rows[(counts < 0).any(axis=1)].tolist()
        raise RecordingValueError(f"{what} holds negative spike counts for cells {bad}; counts are >= 0")


def check_history(history: Any) -> int:
    """``history`` (frames per window) as a positive int; ConfigurationError otherwise."""
    if isinstance(history, (bool, np.bool_)) or not isinstance(history, (int, np.integer)) or history < 1:
        raise ConfigurationError(f"history must be a whole number of frames >= 1 (the model's "
                                 f"img_shape[0], 40 for the published models), got {history!r:.40}")
    return int(history)


def parse_norm_stats(norm_stats: Any) -> dict[str, float]:
    """``{'mean', 'std'}`` floats from a dict or a ``[mean, std]`` pair."""
    if isinstance(norm_stats, Mapping):
        if not {"mean", "std"} <= set(norm_stats):
            raise ConfigurationError(f"norm_stats needs keys 'mean' and 'std', got {sorted(norm_stats)}")
        mean, std = norm_stats["mean"], norm_stats["std"]
    else:
        try:
            mean, std = norm_stats
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"norm_stats must be a dict {{'mean', 'std'}} or [mean, std], got {norm_stats!r}") from None
    try:
        mean, std = float(np.asarray(mean)), float(np.asarray(std))
    except (TypeError, ValueError):
        raise ConfigurationError(f"norm_stats mean and std must be numbers, got mean={mean!r:.40}, "
                                 f"std={std!r:.40}") from None
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise NonFiniteError(f"norm_stats must be finite, got mean={mean}, std={std}")
    if std <= 0:
        raise ConfigurationError(f"norm_stats std must be > 0, got {std}")
    return {"mean": mean, "std": std}
