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
           "check_rates", "check_counts", "check_history", "parse_norm_stats", "check_written",
           "MAX_MODEL_INPUT", "check_model_input", "check_input_dtype", "warn_stimulus_scale", "warn_unscaled_input",
           "scale_mismatch", "MAX_STIMULUS_VALUE", "check_stimulus_values", "as_int", "as_float", "as_flag"]

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


# --------------------------------------------------------------------------- model-input scale
#: largest magnitude of a model input (a z-scored stimulus is within a few tens): beyond it
#: the values are not a stimulus in the model's units (1e30 fill values, ±3e38, raw counts of
#: a wrong type) and float32 activations overflow
MAX_MODEL_INPUT = 1e6
#: largest magnitude of a stored stimulus value: beyond any unit of light intensity or contrast
#: (fill values such as 1e30, float32 extremes such as 3e38); z-scoring would hide such values
MAX_STIMULUS_VALUE = 1e12
#: a z-scored stimulus whose mean is further than this from 0, or whose std is more than
#: :data:`SCALE_RATIO` times off 1, is on another scale than the statistics it was z-scored with
MAX_Z_MEAN = 3.0
SCALE_RATIO = 10.0


def check_input_dtype(x: Any, what: str = "stimulus windows") -> None:
    """Refuse model inputs (numpy arrays, torch tensors) whose dtype is not real numbers:
    booleans, complex numbers, Python objects, text (:class:`ConfigurationError`)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return
    if not isinstance(dtype, np.dtype):                      # a torch dtype
        kind = ("b" if str(dtype) == "torch.bool" else "c" if getattr(dtype, "is_complex", False) else
                "f" if getattr(dtype, "is_floating_point", False) else "i")
    else:
        kind = dtype.kind
    if kind not in "iuf":
        name = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes"}
        raise ConfigurationError(f"{what} have dtype {dtype} ({name.get(kind, kind)}); a model takes real-valued "
                                 f"z-scored stimulus windows (float32). Convert them, e.g. x.astype('float32'), "
                                 f"and z-score raw frames with retcodec.windows")


def check_model_input(x: np.ndarray, what: str) -> None:
    """Refuse NaN/Inf (:class:`NonFiniteError`) and magnitudes above :data:`MAX_MODEL_INPUT`
    (:class:`RecordingValueError`) in model inputs ``x``."""
    if x.size == 0:
        return
    with np.errstate(invalid="ignore", over="ignore"):
        peak = float(np.max(np.abs(x)))
    if not np.isfinite(peak):
        raise NonFiniteError(f"{what} holds NaN or Inf; it cannot be fed to a model")
    if peak > MAX_MODEL_INPUT:
        raise RecordingValueError(
            f"{what} holds model inputs up to ±{peak:.3g}, beyond ±{MAX_MODEL_INPUT:g} (z-scored stimuli lie "
            f"within a few tens): that is not a stimulus in the model's units (fill values? a wrong dtype "
            f"or scale?). Clean or rescale the stimulus")


def check_stimulus_values(peak: float, what: str) -> None:
    """Refuse a stimulus whose largest magnitude ``peak`` is beyond :data:`MAX_STIMULUS_VALUE`."""
    if peak > MAX_STIMULUS_VALUE:
        raise RecordingValueError(
            f"{what} holds values up to ±{peak:.3g}, beyond ±{MAX_STIMULUS_VALUE:g}: that is no light "
            f"intensity or contrast (fill values? an export in the wrong dtype?). Clean the stimulus; "
            f"z-scoring would hide such values")


def scale_mismatch(z_mean: float, z_std: float) -> bool:
    """Whether z-scored values of this mean and std are implausible for a z-scored stimulus."""
    return (abs(z_mean) > MAX_Z_MEAN or z_std > SCALE_RATIO
            or (z_std > 0 and z_std < 1.0 / SCALE_RATIO and abs(z_mean) > 1.0))


def warn_stimulus_scale(sample: np.ndarray, norm_stats: Mapping[str, float], what: str,
                        reference: str, dtype: Any = None, reference_dtype: Any = None) -> None:
    """Warn when a raw stimulus ``sample`` is on another scale than ``norm_stats`` (module doc).

    ``reference`` says where the norm stats come from (``"the train split (uint8)"``,
    ``"the checkpoint's norm_stats"``); ``dtype``/``reference_dtype`` are named when known.
    Raises like :func:`check_model_input` when the z-scored sample is out of range.
    """
    import warnings

    raw = np.asarray(sample, dtype=np.float64)
    raw = raw[np.isfinite(raw)]          # NaN/Inf are refused where windows are read
    if raw.size == 0:
        return
    z = (raw - norm_stats["mean"]) / norm_stats["std"]
    check_model_input(z, what)
    z_mean, z_std = float(z.mean()), float(z.std())
    dtype_note = "" if dtype is None else f" ({np.dtype(dtype)})"
    ref_note = "" if reference_dtype is None else f" (a {np.dtype(reference_dtype)} stimulus)"
    if scale_mismatch(z_mean, z_std) or (reference_dtype is not None and dtype is not None
                                         and np.dtype(dtype) != np.dtype(reference_dtype)
                                         and (abs(z_mean) > 1.0 or not 0.5 <= z_std <= 2.0)):
        warnings.warn(
            f"{what}{dtype_note} spans {raw.min():.6g}..{raw.max():.6g} (mean {raw.mean():.6g}, std "
            f"{raw.std():.6g}), but it is z-scored with mean {norm_stats['mean']:.6g} and std "
            f"{norm_stats['std']:.6g} from {reference}{ref_note}: the model sees inputs of mean {z_mean:.3g} "
            f"and std {z_std:.3g} where about 0 and 1 are expected. The published models were fitted on frames "
            f"z-scored with their train split: give the stimulus in the train split's units (same dtype "
            f"and range) or the norm stats that belong to it", RuntimeWarning, stacklevel=3)


def warn_unscaled_input(x: np.ndarray, what: str) -> None:
    """Warn when model inputs that should already be z-scored look raw (e.g. 0..255 frames)."""
    import warnings

    if x.size == 0:
        return
    values = np.asarray(x, dtype=np.float64)
    mean, std = float(values.mean()), float(values.std())
    if abs(mean) > MAX_Z_MEAN * 3 or std > SCALE_RATIO * 3:
        warnings.warn(f"{what} has mean {mean:.4g} and std {std:.4g}, spanning {values.min():.4g}.."
                      f"{values.max():.4g}: model inputs are z-scored stimuli (about 0 and 1). Make "
                      f"windows with retcodec.windows(recording, norm_stats=model.meta['norm_stats'])",
                      RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------- scalar arguments
def as_int(value: Any, name: str, low: int | None = None) -> int:
    """``value`` as an int (Python or NumPy integer, not bool), at least ``low``; ConfigurationError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigurationError(f"{name} must be a whole number, got {type(value).__name__} {value!r:.40}")
    if low is not None and value < low:
        raise ConfigurationError(f"{name} must be >= {low}, got {value}")
    return int(value)


def as_float(value: Any, name: str, low: float | None = None) -> float:
    """``value`` as a finite float, at least ``low``; ConfigurationError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigurationError(f"{name} must be a number, got {type(value).__name__} {value!r:.40}")
    value = float(value)
    if not np.isfinite(value) or (low is not None and value < low):
        raise ConfigurationError(f"{name} must be a finite number" + (f" >= {low:g}" if low is not None else "")
                                 + f", got {value}")
    return value


def as_flag(value: Any, name: str) -> bool:
    """``value`` as a bool (True/False, or the integers 0/1)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ConfigurationError(f"{name} must be True or False, got {type(value).__name__} {value!r:.40}")
