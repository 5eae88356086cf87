"""Evaluation metrics: known answers for correlation, oracle and FEVE."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from retcodec.errors import CellMismatchError, ShapeError
from retcodec.analysis.evaluation import evaluate, feve, format_evaluation, jackknife_oracle
from retcodec.analysis.metrics import pearson


def test_pearson_known_values():
    a = np.array([[1.0, 2, 3, 4], [1, 1, 1, 1]])
    b = np.array([[2.0, 4, 6, 8], [3, 1, 2, 5]])
    np.testing.assert_allclose(pearson(a, b), [1.0, np.nan])       # constant row -> NaN (documented)
    np.testing.assert_allclose(pearson(a[0], -b[0]), -1.0)


def test_oracle_is_one_for_identical_repeats_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(3, 500))
    same = np.repeat(signal[None], 5, axis=0)
    np.testing.assert_allclose(jackknife_oracle(same), 1.0)
    noise = rng.normal(size=(8, 3, 5000))
    assert np.abs(jackknife_oracle(noise)).max() < 0.05
    with pytest.raises(ShapeError, match="repeat>=2"):
        jackknife_oracle(noise[:1])


def test_oracle_matches_its_analytic_value():
    # r_i = s + e_i with var(s) = 1, var(e) = v: corr(r_i, mean of n-1 others)
    rng = np.random.default_rng(1)
    n, v = 6, 1.0
    s = rng.normal(size=(1, 200_000))
    reps = s[None] + rng.normal(scale=np.sqrt(v), size=(n, 1, 200_000))
    expected = 1 / np.sqrt((1 + v) * (1 + v / (n - 1)))
    np.testing.assert_allclose(jackknife_oracle(reps), expected, atol=5e-3)


def test_feve_of_the_true_signal_is_one_and_of_a_constant_is_zero():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(2, 20_000))
    reps = s[None] + rng.normal(scale=0.7, size=(10, 2, 20_000))
    fe, frac = feve(reps, s)
    np.testing.assert_allclose(fe, 1.0, atol=0.02)
    np.testing.assert_allclose(frac, 1 / (1 + 0.49), atol=0.02)
    fe0, _ = feve(reps, np.zeros_like(s))
    np.testing.assert_allclose(fe0, 0.0, atol=0.02)


def _recording(rate: np.ndarray, repeats: np.ndarray) -> xr.Dataset:
    n, T = rate.shape
    return xr.Dataset({"rate": (("cell", "time"), rate),
                       "repeats": (("repeat", "cell", "time"), repeats)},
                      coords={"cell": [4, 7][:n], "time": np.arange(T) * 0.01,
                              "cell_type": ("cell", ["on", "off"][:n])})


def test_evaluate_with_a_given_prediction():
    rng = np.random.default_rng(3)
    s = np.abs(rng.normal(size=(2, 3000))) * 10
    reps = s[None] + rng.normal(scale=3, size=(6, 2, 3000))
    rec = _recording(reps.mean(0), reps)
    times = rec["time"].values[40:]
    pred = xr.DataArray(s[:, 40:].T, dims=("time", "cell"), coords={"time": times, "cell": [4, 7]})
    ev = evaluate(None, rec, prediction=pred)
    assert list(ev["cell"].values) == [4, 7] and list(ev["cell_type"].values) == ["on", "off"]
    np.testing.assert_allclose(ev["correlation"], pearson(s[:, 40:], reps.mean(0)[:, 40:]))
    # the true signal is at the noise ceiling of the trial average
    np.testing.assert_allclose(ev["normalized_correlation"], 1.0, atol=0.02)
    assert (ev["ceiling"] < 1).all() and (ev["ceiling"] > 0.9).all()
    np.testing.assert_allclose(ev["feve"], 1.0, atol=0.05)
    assert ev.attrs["n_windows"] == 2960
    assert "median_correlation" in ev.attrs and "cell" in format_evaluation(ev)
    with pytest.raises(CellMismatchError, match="predicts 1 cells"):
        evaluate(None, rec, prediction=pred.isel(cell=[0]))


def test_trial_average_ceiling_matches_its_closed_form():
    """Signal s with unit variance plus noise of variance v in R repeats: CC_max^2 = 1 / (1 + v / R)."""
    from retcodec.analysis.evaluation import trial_average_ceiling
    rng = np.random.default_rng(0)
    R, T, v = 5, 200_000, 4.0
    s = rng.normal(size=(1, T))
    reps = s[None] + rng.normal(scale=np.sqrt(v), size=(R, 1, T))
    np.testing.assert_allclose(trial_average_ceiling(reps), np.sqrt(1 / (1 + v / R)), atol=0.01)
    with pytest.raises(ShapeError):
        trial_average_ceiling(reps[:1])
