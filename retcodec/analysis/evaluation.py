"""How well a model predicts a recording: correlation, FEVE and the repeat ceiling.

Definitions follow the field's conventions (neuralpredictors / openretina):

* ``correlation``: Pearson r of the model rate with the trial-averaged test rate.
* ``oracle``: jackknife oracle correlation, the mean over repeats of
  ``corr(repeat_i, mean of the other repeats)`` (time pooled), the reliability
  ceiling of a single trial.
* ``feve``: fraction of explainable variance explained,
  ``1 - (mean_r mean_t (r_it - p_t)^2 - noise) / (var(r) - noise)`` with
  ``noise = mean_t var_r(r_it)`` (across repeats, ddof=1) and ``var(r)`` the
  variance of all single-trial responses.
* ``explainable_fraction``: ``(var(r) - noise) / var(r)``; cells below 0.15 are
  flagged (``reliable = False``) and left out of the summaries.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from retcodec.analysis.metrics import pearson

from retcodec.errors import CellMismatchError, ShapeError

RELIABILITY_THRESHOLD = 0.15


def jackknife_oracle(repeats: np.ndarray) -> np.ndarray:
    """Oracle correlation per cell from ``(repeat, cell, time)`` single trials."""
    repeats = np.asarray(repeats, np.float64)
    if repeats.ndim != 3 or repeats.shape[0] < 2:
        raise ShapeError(f"repeats must be (repeat>=2, cell, time), got {repeats.shape}")
    n = repeats.shape[0]
    total = repeats.sum(axis=0)
    rs = [np.nan_to_num(pearson(repeats[i], (total - repeats[i]) / (n - 1)), nan=0.0) for i in range(n)]
    return np.mean(rs, axis=0)


def feve(repeats: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FEVE and explainable-variance fraction per cell (``repeats`` (R, n, T), ``prediction`` (n, T))."""
    repeats = np.asarray(repeats, np.float64)
    prediction = np.asarray(prediction, np.float64)
    noise = repeats.var(axis=0, ddof=1).mean(axis=-1)
    total = repeats.transpose(1, 0, 2).reshape(repeats.shape[1], -1).var(axis=-1, ddof=1)
    mse = ((repeats - prediction[None]) ** 2).mean(axis=(0, 2))
    explainable = total - noise
    with np.errstate(invalid="ignore", divide="ignore"):
        fe = np.where(explainable > 0, 1.0 - (mse - noise) / explainable, np.nan)
        frac = np.where(total > 0, explainable / total, 0.0)
    return fe, frac


def evaluate(model: Any, recording: xr.Dataset, batch_size: int = 256, device: str | None = None,
             prediction: xr.DataArray | None = None) -> xr.Dataset:
    """Per-cell test performance of ``model`` on a test-split ``recording``.

    Returns a Dataset over ``cell`` with ``correlation``, ``oracle``,
    ``fraction_of_oracle``, ``feve``, ``explainable_fraction``, ``reliable`` and
    attrs with the medians over reliable cells. ``prediction`` (time, cell) may
    be given to skip running the model.
    """
    from retcodec.io.models import predict

    if prediction is None:
        prediction = predict(model, recording, batch_size=batch_size, device=device)
    cells = recording["cell"].values
    if prediction.sizes["cell"] != len(cells):
        raise CellMismatchError(
            f"model predicts {prediction.sizes['cell']} cells but the recording has {len(cells)}")
    times = prediction["time"].values
    rate = recording["rate"].sel(time=times, method="nearest").transpose("cell", "time").values
    pred = prediction.transpose("cell", "time").values
    r = np.nan_to_num(pearson(pred, rate), nan=0.0)       # a silent cell counts as uncorrelated
    data: dict[str, Any] = {"correlation": ("cell", r)}
    if "repeats" in recording:
        reps = recording["repeats"].sel(time=times, method="nearest").transpose("repeat", "cell", "time").values
        oracle = jackknife_oracle(reps)
        fe, frac = feve(reps, pred)
        reliable = frac >= RELIABILITY_THRESHOLD
        data.update(oracle=("cell", oracle), fraction_of_oracle=("cell", r / np.where(oracle != 0, oracle, np.nan)),
                    feve=("cell", fe), explainable_fraction=("cell", frac), reliable=("cell", reliable))
    else:
        reliable = np.ones(len(cells), bool)
    ds = xr.Dataset(data, coords={"cell": cells})
    for name in ("cell_type",):
        if name in recording.coords:
            ds = ds.assign_coords({name: ("cell", recording[name].values)})
    keep = reliable if reliable.any() else np.ones(len(cells), bool)
    for k in ("correlation", "oracle", "fraction_of_oracle", "feve"):
        if k in ds:
            ds.attrs[f"median_{k}"] = float(np.nanmedian(ds[k].values[keep]))
    ds.attrs["n_windows"] = int(len(times))
    ds.attrs["reliability_threshold"] = RELIABILITY_THRESHOLD
    return ds


def format_evaluation(ds: xr.Dataset) -> str:
    """A short human-readable table of :func:`evaluate` results."""
    cols = [c for c in ("correlation", "oracle", "fraction_of_oracle", "feve") if c in ds]
    lines = ["cell  " + "  ".join(f"{c:>18s}" for c in cols)]
    for i, cell in enumerate(ds["cell"].values):
        lines.append(f"{int(cell):4d}  " + "  ".join(f"{float(ds[c].values[i]):18.3f}" for c in cols))
    lines.append("median " + "  ".join(f"{c}={ds.attrs.get('median_' + c, float('nan')):.3f}" for c in cols))
    return "\n".join(lines)
