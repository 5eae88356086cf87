"""Mode combinations and IRFs per combination."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import published_fixtures as spec
from retcodec.io.architectures import build_model
from retcodec.analysis.combinations import combination_irfs, mode_combinations
from retcodec.errors import ConfigurationError, ShapeError
from retcodec.analysis.irf import irf, rank1

#: (time, mode) loadings with known active sets (threshold 5% of each mode's max)
LOADINGS = np.array([
    [1.0, 2.0, 0.0],     # 0+1   (windows 0 and 1 are the same stimulus)
    [0.5, 1.0, 0.0],     # 0+1
    [0.0, 0.0, 4.0],     # 2
    [1.0, 0.0, 0.0],     # 0
    [0.3, 0.05, 0.0],    # 0     (0.05 < 5% of 2: mode 1 inactive)
    [0.2, 0.0, 0.1],     # 0     (0.1 < 5% of 4 = 0.2)
    [0.0, 0.0, 0.0],     # none
    [0.04, 0.0, 3.0],    # 2     (0.04 < 5% of 1)
])
LABELS = ["0+1", "0+1", "2", "0", "0", "0", "none", "2"]


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """numpy's BLAS threads fight over the shared cores; one thread is much faster here."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def loadings() -> xr.DataArray:
    return xr.DataArray(LOADINGS, dims=("time", "mode"), coords={"time": np.arange(8)})


@pytest.fixture(scope="module")
def model():
    hyps = spec.published_hyps("15-10-07")
    model = build_model("VaryModel", hyps)
    model.load_state_dict(spec.make_published_state_dict(5, seed=8, hyps=hyps))
    model.meta["cells"] = [0, 1, 2, 3, 4]
    return model.eval()


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    x = torch.randn(8, 40, 50, 50, generator=torch.Generator().manual_seed(4)).numpy()
    x[1] = x[0]
    return x


@pytest.fixture(scope="module")
def rates() -> xr.DataArray:
    """Every cell fires at 10 Hz except cell 4, silent."""
    values = np.full((8, 5), 10.0)
    values[:, 4] = 0.0
    return xr.DataArray(values, dims=("time", "cell"), coords={"time": np.arange(8), "cell": np.arange(5)})


@pytest.fixture(scope="module")
def result(model, windows, loadings, rates) -> xr.Dataset:
    return combination_irfs(model, windows, loadings, rates, mode_combinations(loadings, 0.05, relative=True),
                            rate_threshold=5.0, max_times_per_set=2, seed=0)


# --------------------------------------------------------------------------- combinations
def test_default_active_means_non_zero_loading(loadings):
    """The default is the modes' own definition: a mode is active where its loading is non-zero."""
    combos = mode_combinations(loadings)
    np.testing.assert_array_equal(combos["active"].values, LOADINGS > 0)
    assert combos.attrs["threshold_rule"] == "loading > threshold" and float(combos["fraction_none"]) == 1 / 8


def test_active_sets_labels_and_frequent_sets(loadings):
    combos = mode_combinations(loadings, 0.05, relative=True)
    np.testing.assert_array_equal(combos["combination_label"].values, LABELS)
    np.testing.assert_array_equal(combos["n_active"].values, [2, 2, 1, 1, 1, 1, 0, 1])
    assert combos["active"].dims == ("time", "mode") and combos["active"].dtype == bool
    np.testing.assert_array_equal(combos["active"].values[4], [True, False, False])
    # most frequent first, ties by label; the empty set is not a combination
    np.testing.assert_array_equal(combos["combination"].values, ["0", "0+1", "2"])
    np.testing.assert_array_equal(combos["count"].values, [3, 2, 2])
    np.testing.assert_allclose(combos["fraction"].values, [3 / 8, 2 / 8, 2 / 8])
    np.testing.assert_array_equal(combos["n_modes"].values, [1, 2, 1])
    np.testing.assert_array_equal(combos["members"].sel(combination="0+1").values, [True, True, False])
    assert float(combos["fraction_none"]) == 1 / 8


def test_mode_labels_thresholds_and_limits(loadings):
    named = loadings.assign_coords(mode=[3, 7, 12])
    combos = mode_combinations(named, 0.05, relative=True, min_count=3)
    np.testing.assert_array_equal(combos["combination"].values, ["3"])
    assert combos["combination_label"].values[0] == "3+7"
    absolute = mode_combinations(loadings, threshold=0.5, relative=False)
    np.testing.assert_array_equal(absolute["combination_label"].values,
                                  ["0+1", "1", "2", "0", "none", "none", "none", "2"])
    np.testing.assert_array_equal(mode_combinations(loadings, 0.05, relative=True, max_sets=1)["combination"].values,
                                  ["0"])
    with pytest.raises(ShapeError, match=r"loadings must be a DataArray \(time, mode\)"):
        mode_combinations(loadings.rename(mode="unit"))
    with pytest.raises(ConfigurationError, match="NaN"):
        mode_combinations(loadings.where(loadings > 0))
    with pytest.raises(ConfigurationError, match="min_count"):
        mode_combinations(loadings, min_count=0)


# --------------------------------------------------------------------------- IRFs per combination
def test_combination_irf_shapes_and_selection(result):
    assert result["spatial"].dims == ("combination", "cell", "y", "x")
    assert result["temporal"].dims == ("combination", "cell", "lag")
    assert result["mean_irf"].dims == ("combination", "cell", "lag", "y", "x")
    np.testing.assert_array_equal(result["combination"].values, ["0", "0+1", "2"])
    np.testing.assert_array_equal(result["n_times"].sel(cell=[0, 1, 2, 3]).values, 2)
    np.testing.assert_array_equal(result["n_times"].sel(cell=4).values, 0)          # silent cell
    assert np.isnan(result["spatial"].sel(cell=4)).all()
    np.testing.assert_array_equal(result["selected_time"].sel(combination="0+1", cell=0), [0, 1])
    np.testing.assert_array_equal(result["selected_time"].sel(combination="2", cell=2), [2, 7])
    drawn = result["selected_time"].sel(combination="0", cell=1).values
    assert set(drawn) < {3, 4, 5} and drawn[0] < drawn[1]
    np.testing.assert_array_equal(result["members"].sel(combination="0+1"), [True, True, False])


def test_filters_and_mean_irf_equal_those_of_irf_and_rank1(model, windows, result):
    direct = irf(model, windows, times=[2, 7], cells=[0, 3])
    np.testing.assert_allclose(result["mean_irf"].sel(combination="2", cell=[0, 3]).values,
                               direct.mean("time").values, atol=1e-7)
    filters = rank1(direct)
    np.testing.assert_allclose(result["spatial"].sel(combination="2", cell=[0, 3]).values,
                               filters["spatial"].mean("time").values, atol=1e-6)
    np.testing.assert_allclose(result["singular_value_share"].sel(combination="2", cell=[0, 3]).values,
                               filters["singular_value_share"].mean("time").values, rtol=1e-5)


def test_similarity_within_and_across_combinations(result):
    # windows 0 and 1 are the same stimulus: their IRFs, hence filters, are identical
    np.testing.assert_allclose(result["within_set_similarity"].sel(combination="0+1", cell=[0, 1, 2, 3]),
                               1.0, rtol=1e-6)
    within, across = result["within_set_similarity"], result["across_set_similarity"]
    assert np.isfinite(across.sel(cell=[0, 1, 2, 3])).all() and np.isnan(across.sel(cell=4)).all()
    assert (np.abs(within.sel(cell=[0, 1, 2, 3])) <= 1 + 1e-9).all()
    # pooled per cell: 3 within pairs (one per combination) and 12 across pairs, each once
    cell0 = within.sel(cell=0).values
    assert float(result["within_set_similarity_cell"].sel(cell=0)) == pytest.approx(cell0.mean())
    across0 = across.sel(cell=0).values
    assert float(result["across_set_similarity_cell"].sel(cell=0)) == pytest.approx(across0.mean())
    assert float(result["within_set_similarity_pooled"]) == pytest.approx(
        float(within.sel(cell=[0, 1, 2, 3]).mean()))


def test_a_single_window_per_set_has_no_within_pairs(model, windows, loadings, rates):
    one = combination_irfs(model, windows, loadings, rates, ["0+1", "2"], cells=[1],
                           rate_threshold=5.0, max_times_per_set=1, seed=3, mean_irf=False)
    np.testing.assert_array_equal(one["n_times"].values, [[1], [1]])
    assert np.isnan(one["within_set_similarity"]).all()
    assert np.isfinite(one["across_set_similarity"]).all()
    assert one["across_set_similarity"].sel(combination="0+1").item() == pytest.approx(
        one["across_set_similarity"].sel(combination="2").item())
    assert "mean_irf" not in one


def test_draws_are_seeded_and_rates_default_to_the_mean(model, windows, loadings, rates):
    kwargs = dict(cells=[0], max_times_per_set=1, mean_irf=False)
    a = combination_irfs(model, windows, loadings, rates, ["0"], random_state=5, rate_threshold=5.0, **kwargs)
    b = combination_irfs(model, windows, loadings, rates, ["0"], random_state=5, rate_threshold=5.0, **kwargs)
    np.testing.assert_array_equal(a["selected_time"].values, b["selected_time"].values)
    varying = rates.copy(data=np.tile(np.arange(8.0)[:, None], (1, 5)))       # rate = window index
    relative = mode_combinations(loadings, 0.05, relative=True)                # label "0" at windows 3, 4, 5
    c = combination_irfs(model, windows, loadings, varying, relative, **kwargs)
    assert float(c["rate_threshold"].sel(cell=0)) == 3.5                        # mean rate
    assert c["selected_time"].sel(combination="0").item() in (4, 5)             # rate > 3.5


def test_times_must_match_the_stimulus(model, windows, loadings, rates):
    seconds = loadings.assign_coords(time=0.4 + np.arange(8) * 0.01)
    with pytest.raises(ShapeError, match=r"stimulus windows \(time\) lacks 8 of the 8 times"):
        combination_irfs(model, windows, seconds, rates.assign_coords(time=seconds["time"]), ["0"])
    with pytest.raises(ShapeError, match=r"rates lack cells \[9\]"):
        combination_irfs(model, windows, loadings, rates, ["0"], cells=[9])
    with pytest.raises(ConfigurationError, match="max_times_per_set"):
        combination_irfs(model, windows, loadings, rates, ["0"], max_times_per_set=0)
