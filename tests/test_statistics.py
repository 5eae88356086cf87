"""Statistics of docs/method.md §9: Hoyer sparsity, E/I correlation, dimensionality, per-layer summaries."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.analysis.statistics import (align_time, dimensionality, hoyer, layer_sparsity, layer_statistics,
                                 pearson, pos_neg_correlation)


def layer_node(contribution: np.ndarray, activation: np.ndarray | None = None, name: str = "conv0",
               time: np.ndarray | None = None) -> xr.Dataset:
    """A layer node as contributions() writes it: contribution (time, channel, sign), activation."""
    n_time, n_channel = contribution.shape[:2]
    time = np.arange(n_time) * 0.01 if time is None else time
    ds = xr.Dataset({"contribution": (("time", "channel", "sign"), contribution)},
                    coords={"time": time, "channel": np.arange(n_channel), "sign": ["neg", "pos"]},
                    attrs={"layer": name})
    if activation is not None:
        ds["activation"] = (("time", "channel"), activation)
    return ds


# --------------------------------------------------------------------------- hoyer
def test_hoyer_known_values():
    assert hoyer(np.array([0.0, 0.0, 3.0, 0.0])) == pytest.approx(1.0)
    assert hoyer(np.array([-2.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert hoyer(np.full(7, 0.4)) == pytest.approx(0.0)
    assert hoyer(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(0.0)
    # two equal entries of n = 4: (2 - 2 / sqrt 2) / (2 - 1)
    assert hoyer(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2 - np.sqrt(2))


def test_hoyer_along_an_axis_zero_vectors_and_dataarrays():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 5.0, 0.0]])
    np.testing.assert_allclose(hoyer(x, axis=1), [np.nan, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(hoyer(x.T, axis=0), [np.nan, 0.0, 1.0], atol=1e-12)
    assert np.isnan(hoyer(np.array([3.0])))                       # n = 1: undefined
    da = xr.DataArray(x, dims=("time", "channel"), coords={"time": [0.1, 0.2, 0.3]})
    h = hoyer(da, dim="channel")
    assert h.dims == ("time",)
    np.testing.assert_allclose(h.sel(time=0.3), 1.0)
    with pytest.raises(ConfigurationError, match="dim="):
        hoyer(da)


# --------------------------------------------------------------------------- correlation, dimensionality
def test_pos_neg_correlation_of_constructed_channels():
    rng = np.random.default_rng(0)
    drive = rng.random(200)
    noise = rng.random(200)
    contribution = np.zeros((200, 3, 2))
    contribution[:, 0, 1], contribution[:, 0, 0] = drive, -2 * drive - 1      # |C-| = 2 C+ + 1
    contribution[:, 1, 1], contribution[:, 1, 0] = drive, -(1 - drive)       # |C-| = 1 - C+
    contribution[:, 2, 1], contribution[:, 2, 0] = drive, -noise
    r = pos_neg_correlation(layer_node(contribution)["contribution"])
    assert r.dims == ("channel",)
    np.testing.assert_allclose(r.values[:2], [1.0, -1.0], atol=1e-12)
    assert r.values[2] == pytest.approx(np.corrcoef(drive, noise)[0, 1])
    contribution[:, 2, 0] = 0.0                                             # constant: undefined
    assert np.isnan(pos_neg_correlation(layer_node(contribution)["contribution"]).values[2])


def test_pearson_matches_numpy_and_is_nan_for_constants():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    np.testing.assert_allclose(pearson(a, b, axis=0), [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(4)])
    assert np.isnan(pearson(np.ones(5), np.arange(5.0)))


def test_dimensionality_of_known_rank_data():
    rng = np.random.default_rng(2)
    # three orthogonal directions of equal variance (1/3 each) plus an offset
    scores = rng.normal(size=(300, 3))
    scores = np.linalg.qr(scores - scores.mean(axis=0))[0]
    basis = np.linalg.qr(rng.normal(size=(10, 3)))[0].T
    low_rank = scores @ basis + 5.0
    assert [dimensionality(low_rank, v) for v in (0.3, 0.6, 0.95, 1.0)] == [1, 2, 3, 3]
    # variances 100, 1, ... on separate axes: one PC holds 100/(100+1+1) = 98%
    scaled = rng.normal(size=(2000, 3)) * np.array([10.0, 1.0, 1.0])
    scaled -= scaled.mean(axis=0)
    scaled = scaled @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    assert dimensionality(scaled, 0.95) == 1
    assert dimensionality(scaled, 0.995) == 3
    assert dimensionality(np.ones((10, 4))) == 0
    da = xr.DataArray(low_rank.reshape(300, 5, 2), dims=("time", "channel", "sign"))
    assert dimensionality(da) == 3
    with pytest.raises(ConfigurationError, match=r"variance must be in \(0, 1\]"):
        dimensionality(low_rank, 1.5)
    with pytest.raises(ShapeError, match="samples, features"):
        dimensionality(np.ones(5))


# --------------------------------------------------------------------------- per layer
def test_layer_sparsity_per_window():
    contribution = np.zeros((3, 4, 2))
    contribution[0, 2] = [-1.0, 2.0]               # one channel carries everything: 1
    contribution[1, :, 1] = 1.0                     # equal positive parts: 0
    contribution[2, :, 0] = -3.0                    # equal negative parts: 0 (C+ all zero: NaN)
    activation = np.array([[0.0, 0.0, 0.0, 4.0], [1.0, -1.0, 1.0, -1.0], [2.0, 2.0, 2.0, 2.0]])
    s = layer_sparsity(layer_node(contribution, activation))
    np.testing.assert_allclose(s["contribution_sparsity"].values, [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s["positive_sparsity"].values, [1.0, 0.0, np.nan], atol=1e-12)
    np.testing.assert_allclose(s["negative_sparsity"].values, [1.0, np.nan, 0.0], atol=1e-12)
    np.testing.assert_allclose(s["activation_sparsity"].values, [1.0, 0.0, 0.0], atol=1e-12)
    assert float(s["contribution_sparsity_mean"]) == pytest.approx(1 / 3)
    assert float(s["positive_sparsity_mean"]) == pytest.approx(0.5)          # NaN window left out


def test_layer_statistics_of_a_tree_with_different_channel_counts():
    rng = np.random.default_rng(3)
    c0 = rng.random((40, 3, 2)) * np.array([-1, 1])
    c1 = rng.random((40, 5, 2)) * np.array([-1, 1])
    c1[:, :, 0] = -c1[:, :, 1]                            # |C-| == C+: correlation 1
    a0 = rng.normal(size=(40, 3)) @ np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # rank 1
    tree = xr.DataTree.from_dict({
        "/": xr.Dataset(coords={"time": np.arange(40) * 0.01}),
        "conv0": layer_node(c0, a0, "conv0").drop_vars("time"),
        "conv1": layer_node(c1, rng.normal(size=(40, 5)), "conv1").drop_vars("time")})
    stats = layer_statistics(tree)
    np.testing.assert_array_equal(stats["layer"].values, ["conv0", "conv1"])
    np.testing.assert_array_equal(stats["n_channels"].values, [3, 5])
    assert stats["pos_neg_correlation"].dims == ("layer", "channel")
    assert np.isnan(stats["pos_neg_correlation"].sel(layer="conv0", channel=4))
    np.testing.assert_allclose(stats["pos_neg_correlation"].sel(layer="conv1"), 1.0)
    assert float(stats["pos_neg_correlation_mean"].sel(layer="conv1")) == pytest.approx(1.0)
    single = layer_sparsity(tree["conv0"])
    np.testing.assert_allclose(stats["contribution_sparsity"].sel(layer="conv0"),
                               single["contribution_sparsity"])
    assert int(stats["contribution_dimensionality"].sel(layer="conv1")) == dimensionality(c1.reshape(40, -1))
    assert int(stats["activation_dimensionality"].sel(layer="conv0")) == 1
    node_stats = layer_statistics(layer_node(c0, name="conv0"))
    np.testing.assert_array_equal(node_stats["layer"].values, ["conv0"])
    assert "activation_dimensionality" not in node_stats


def test_layer_errors():
    with pytest.raises(ShapeError, match="sign coordinate"):
        layer_sparsity(layer_node(np.zeros((2, 3, 2))).assign_coords(sign=["a", "b"]))
    with pytest.raises(ShapeError, match="contribution \\(time, channel, sign\\)"):
        layer_sparsity(xr.Dataset({"activation": (("time", "channel"), np.zeros((2, 2)))}))
    with pytest.raises(ShapeError, match="no layer node"):
        layer_statistics(xr.DataTree())


def test_align_time_matches_and_reports_missing_times():
    a = xr.DataArray(np.arange(3.0), dims="time", coords={"time": [0.41, 0.42, 0.43]})
    b = xr.DataArray(np.arange(5.0) * 10, dims="time",
                     coords={"time": np.arange(40, 45) * 0.01 + 1e-9})             # float noise
    a2, b2 = align_time(a, b)
    np.testing.assert_array_equal(b2.values, [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(b2["time"].values, a["time"].values)
    with pytest.raises(ShapeError, match=r"rates \(time\) lacks 1 of the 3 times of loadings"):
        align_time(a, b.isel(time=[0, 1, 2]), names=("loadings", "rates"))
