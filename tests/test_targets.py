"""Contribution targets: values against direct NumPy formulas, regularisation, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from retcodec.errors import CellMismatchError, ConfigurationError, ShapeError
from retcodec.engine.targets import (CallableTarget, CellRate, ClassLogit, SoftmaxEntropy, SumOfRates,
                              Surprisal, TopKLogits, TopLogit, TopMargin, make_target)


@pytest.fixture
def outputs() -> np.ndarray:
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal((4, 4)) + 2 * np.eye(4)
    return rng.standard_normal((200, 4)) @ mixing + rng.uniform(1, 3, 4)


def _surprisal_numpy(y: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = y - mean
    return 0.5 * np.einsum("bi,bi->b", d, np.linalg.solve(cov, d.T).T)


def test_surprisal_equals_direct_numpy_computation(outputs):
    target = Surprisal.from_outputs(outputs, shrinkage=None)
    mean, cov = outputs.mean(0), np.cov(outputs, rowvar=False)
    np.testing.assert_allclose(target.mean, mean)
    np.testing.assert_allclose(target.covariance, cov)
    y = outputs[:10] + 0.5
    got = target(torch.as_tensor(y, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, _surprisal_numpy(y, mean, cov), rtol=1e-10)
    # the paper's convention: mean 0.5 * dimension over the fitting set (ddof=1 gives (n-1)/n)
    s = target(torch.as_tensor(outputs)).numpy()
    assert s.mean() == pytest.approx(0.5 * 4 * (len(outputs) - 1) / len(outputs), rel=1e-9)


def test_surprisal_gradient_is_precision_times_deviation(outputs):
    target = Surprisal.from_outputs(outputs, shrinkage=0.2)
    y = torch.as_tensor(outputs[:5], dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(target(y).sum(), y)
    expected = (outputs[:5] - target.mean) @ np.linalg.inv(target.covariance)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-9)


def test_explicit_shrinkage_is_stored_and_inverted(outputs):
    lam = 0.3
    target = Surprisal.from_outputs(outputs, shrinkage=lam)
    sample = np.cov(outputs, rowvar=False)
    expected = (1 - lam) * sample + lam * np.trace(sample) / 4 * np.eye(4)
    np.testing.assert_allclose(target.covariance, expected)
    np.testing.assert_allclose(target.precision @ target.covariance, np.eye(4), atol=1e-10)
    params = target.parameters()
    np.testing.assert_allclose(params["surprisal_cov"].values, expected)
    assert "0.3" in params["surprisal_cov"].attrs["regularization"]


def test_singular_covariance_needs_regularisation():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((50, 3))
    y = np.column_stack([y, y[:, 0] + y[:, 1], np.full(50, 2.0)])     # a dependent and a silent cell
    with pytest.raises(ConfigurationError, match="singular"):
        Surprisal.from_outputs(y, shrinkage=None)
    with pytest.raises(ConfigurationError, match="regularization"):
        Surprisal(y.mean(0), np.cov(y, rowvar=False))
    target = Surprisal.from_outputs(y)                                  # Ledoit-Wolf
    assert 0 < target.shrinkage < 1 and target.method == "ledoit-wolf"
    np.testing.assert_allclose(target.precision @ target.covariance, np.eye(5), atol=1e-8)
    assert np.all(np.isfinite(target(torch.as_tensor(y)).numpy()))
    assert "ledoit-wolf" in target.to_attrs()["surprisal_regularization"]


def test_constant_outputs_cannot_be_regularised():
    with pytest.raises(ConfigurationError, match="constant"):
        Surprisal.from_outputs(np.ones((10, 3)))
    with pytest.raises(ConfigurationError, match="constant"):
        Surprisal(np.ones(3), np.zeros((3, 3)), regularization=0.5)


def test_surprisal_rejects_bad_parameters(outputs):
    with pytest.raises(ShapeError):
        Surprisal(np.zeros(3), np.eye(4))
    with pytest.raises(ConfigurationError, match="symmetric"):
        Surprisal(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        Surprisal(np.zeros(2), np.eye(2), regularization=1.5)
    with pytest.raises(ConfigurationError, match="unknown shrinkage"):
        Surprisal.from_outputs(outputs, shrinkage="oas")
    with pytest.raises(ShapeError, match="4 cells"):
        Surprisal.from_outputs(outputs)(torch.zeros(2, 3, dtype=torch.float64))


def test_cell_rate_resolves_ids_against_cells():
    y = torch.arange(12.0).reshape(3, 4)
    target = CellRate(17).bind([3, 9, 17, 21])
    assert target.index == 2
    np.testing.assert_array_equal(target(y).numpy(), y[:, 2].numpy())
    assert target.to_attrs()["target_cell"] == 17
    with pytest.raises(CellMismatchError, match="not one of"):
        CellRate(5, cells=[3, 9, 17, 21])
    np.testing.assert_array_equal(CellRate(1)(y).numpy(), y[:, 1].numpy())   # no ids: an index


@pytest.mark.parametrize("target, reference", [
    (SumOfRates(), lambda y: y.sum(1)),
    (TopLogit(), lambda y: y.max(1)),
    (TopKLogits(3), lambda y: np.sort(y, 1)[:, -3:].sum(1)),
    (TopMargin(), lambda y: np.sort(y, 1)[:, -1] - np.sort(y, 1)[:, -2]),
    (ClassLogit(2), lambda y: y[:, 2]),
    (SoftmaxEntropy(), lambda y: -(np.exp(y) / np.exp(y).sum(1, keepdims=True)
                                   * (y - np.log(np.exp(y).sum(1, keepdims=True)))).sum(1)),
])
def test_simple_targets_match_numpy(target, reference):
    y = np.random.default_rng(1).standard_normal((6, 5))
    got = target(torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(got, reference(y), rtol=1e-12)


def test_targets_check_shapes():
    with pytest.raises(ShapeError, match="at least 4"):
        TopKLogits(4)(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="one value per sample"):
        CallableTarget(lambda y: y[:, :2], name="two")(torch.zeros(3, 4))
    with pytest.raises(ShapeError, match=r"\(batch, n_outputs\)"):
        SumOfRates()(torch.zeros(3))
    with pytest.raises(ConfigurationError):
        TopKLogits(0)


def test_make_target_resolves_names_and_fits_surprisal_lazily(outputs):
    calls = []

    def fitting_outputs():
        calls.append(1)
        return outputs

    assert isinstance(make_target("sum_of_rates", outputs=fitting_outputs), SumOfRates)
    assert calls == []
    target = make_target("surprisal", outputs=fitting_outputs, shrinkage=None)
    assert isinstance(target, Surprisal) and calls == [1]
    bound = make_target(CellRate(9), cells=[4, 9])
    assert bound.index == 1
    assert isinstance(make_target(lambda y: y[:, 0]), CallableTarget)
    with pytest.raises(ConfigurationError, match="surprisal"):
        make_target("entropy")


def test_parameters_and_attrs_round_trip_through_netcdf(outputs, tmp_path):
    target = Surprisal.from_outputs(outputs)
    ds = xr.Dataset(target.parameters(), coords={"cell": np.arange(4), "cell2": np.arange(4)})
    ds.attrs = target.to_attrs()
    ds.to_netcdf(tmp_path / "t.nc", engine="h5netcdf")
    back = xr.open_dataset(tmp_path / "t.nc", engine="h5netcdf")
    xr.testing.assert_allclose(back, ds)
    assert back.attrs["surprisal_shrinkage"] == pytest.approx(target.shrinkage)
    assert back.attrs["target"] == "surprisal"
    back.close()
