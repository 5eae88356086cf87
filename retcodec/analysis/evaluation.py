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
* ``ceiling``: the highest correlation any model could reach with the trial
  average of ``R`` repeats, given the trial-to-trial noise (Schoppe et al. 2016):
  ``CC_max = sqrt(SP / var(mean_r r_it))`` with the signal power
  ``SP = (var_t(sum_r r_it) - sum_r var_t(r_it)) / (R (R - 1))``.
* ``normalized_correlation``: ``correlation / ceiling``, i.e. the correlation with
  the trial average divided by the trial average's own reliability: model and
  ceiling are measured the same way, so 1 means "as good as the data allow"
  (estimates can exceed 1 by noise for a few cells, not for the median).
  This replaces 0.1's ``fraction_of_oracle`` (correlation with the trial
  average divided by a *single-trial* oracle), which compared unlike things and
  exceeded 1 for every cell.
* ``explainable_fraction``: ``(var(r) - noise) / var(r)``; cells below 0.15 are
  flagged (``reliable = False``) and left out of the summaries.

:data:`FIT_METRICS` describes each metric in one sentence; the report, the README
and ``retcodec evaluate`` use these definitions.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from retcodec.defaults import FORWARD_BATCH
from retcodec.analysis.metrics import pearson

from retcodec.errors import CellMismatchError, ShapeError

__all__ = ["evaluate", "format_evaluation", "feve", "jackknife_oracle", "trial_average_ceiling",
           "FIT_METRICS", "RELIABILITY_THRESHOLD"]

RELIABILITY_THRESHOLD = 0.15

#: one-sentence definitions of the fit metrics, shown wherever they are reported
FIT_METRICS = {
    "correlation": "Pearson r between the model's rate and the trial-averaged test rate.",
    "ceiling": "the highest r any model could reach with that trial average, given the trial-to-trial "
               "noise of the repeats (signal-power estimate).",
    "normalized_correlation": "correlation / ceiling: how close the model gets to the best the data "
                              "allow (1 = at the noise ceiling).",
    "feve": "fraction of the explainable (repeatable) variance of single trials that the model explains.",
    "oracle": "single-trial reliability: mean r between one repeat and the average of the others.",
}


def trial_average_ceiling(repeats: np.ndarray) -> np.ndarray:
    """Noise ceiling of the correlation with the trial average, per cell, from ``(R, n, T)`` trials."""
    repeats = np.asarray(repeats, np.float64)
    if repeats.ndim != 3 or repeats.shape[0] < 2:
        raise ShapeError(f"repeats must be (repeat>=2, cell, time), got {repeats.shape}")
    n_rep = repeats.shape[0]
    var_sum = repeats.sum(axis=0).var(axis=-1, ddof=1)
    sum_var = repeats.var(axis=-1, ddof=1).sum(axis=0)
    signal_power = (var_sum - sum_var) / (n_rep * (n_rep - 1))
    var_mean = repeats.mean(axis=0).var(axis=-1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((signal_power > 0) & (var_mean > 0), np.sqrt(signal_power / var_mean), np.nan)


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


def evaluate(model: Any, recording: xr.Dataset, batch_size: int = FORWARD_BATCH, device: str | None = None,
             prediction: xr.DataArray | None = None) -> xr.Dataset:
    """Per-cell test performance of ``model`` on a test-split ``recording``.

    Returns a Dataset over ``cell`` with ``correlation``, ``oracle``,
    ``ceiling``, ``normalized_correlation``, ``feve``, ``explainable_fraction``, ``reliable`` and
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
        ceiling = trial_average_ceiling(reps)
        fe, frac = feve(reps, pred)
        reliable = frac >= RELIABILITY_THRESHOLD
        with np.errstate(invalid="ignore", divide="ignore"):
            normalized = r / ceiling
        data.update(ceiling=("cell", ceiling), normalized_correlation=("cell", normalized),
                    oracle=("cell", oracle), feve=("cell", fe), explainable_fraction=("cell", frac),
                    reliable=("cell", reliable))
    else:
        reliable = np.ones(len(cells), bool)
    ds = xr.Dataset(data, coords={"cell": cells})
    for name in ("cell_type",):
        if name in recording.coords:
            ds = ds.assign_coords({name: ("cell", recording[name].values)})
    keep = reliable if reliable.any() else np.ones(len(cells), bool)
    for k in ("correlation", "ceiling", "normalized_correlation", "feve", "oracle"):
        if k in ds:
            ds.attrs[f"median_{k}"] = float(np.nanmedian(ds[k].values[keep]))
    ds.attrs["n_windows"] = int(len(times))
    ds.attrs["reliability_threshold"] = RELIABILITY_THRESHOLD
    return ds


def format_evaluation(ds: xr.Dataset) -> str:
    """A short human-readable table of :func:`evaluate` results."""
    cols = [c for c in ("correlation", "ceiling", "normalized_correlation", "feve") if c in ds]
    lines = ["cell  " + "  ".join(f"{c:>18s}" for c in cols)]
    for i, cell in enumerate(ds["cell"].values):
        lines.append(f"{int(cell):4d}  " + "  ".join(f"{float(ds[c].values[i]):18.3f}" for c in cols))
    lines.append("median " + "  ".join(f"{c}={ds.attrs.get('median_' + c, float('nan')):.3f}" for c in cols))
    lines += [f"  {c}: {FIT_METRICS[c]}" for c in cols]
    return "\n".join(lines)
