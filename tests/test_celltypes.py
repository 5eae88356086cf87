"""Cell types from modes: planted clusters, silhouette choice of k, canonical labels, agreement."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import adjusted_rand_score

from retcodec.analysis.celltypes import (canonical_labels, cell_types, cluster_cells, cluster_rates,
                                clustering_agreement, mode_rate_correlation)
from retcodec.errors import ConfigurationError, ShapeError

N_TIME = 300
#: planted types, interleaved so that cluster order is not cell order
TYPES = np.array(["on", "off", "dir", "on", "off", "dir", "on", "off", "dir", "on", "off", "dir"])


def planted(seed: int = 0, n_types: int = 3, layers=("conv0", "conv1")):
    """Rates driven by one of ``n_types`` latent signals per type; each layer's modes follow the signals."""
    rng = np.random.default_rng(seed)
    types = TYPES if n_types == 3 else np.array([f"t{i % n_types}" for i in range(12)])
    names = sorted(set(types), key=list(types).index)
    drivers = rng.normal(size=(N_TIME, len(names)))
    time = 0.4 + np.arange(N_TIME) * 0.01
    rates = np.stack([np.exp(drivers[:, names.index(t)] + 0.3 * rng.normal(size=N_TIME)) for t in types], 1)
    rates = xr.DataArray(rates, dims=("time", "cell"), coords={"time": time, "cell": 10 + np.arange(12)})
    loadings = {}
    for name in layers:
        modes = np.stack([drivers[:, j % len(names)] for j in range(2 * len(names))], 1)
        modes = np.maximum(modes + 0.4 * rng.normal(size=modes.shape), 0)
        loadings[name] = xr.DataArray(modes, dims=("time", "mode"), coords={"time": time})
    return loadings, rates, types


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """BLAS/OpenMP threads fight over the shared cores; one thread is much faster here."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield


def test_canonical_labels_follow_first_appearance():
    np.testing.assert_array_equal(canonical_labels([5, 5, 2, 7, 2]), [0, 0, 1, 2, 1])
    np.testing.assert_array_equal(canonical_labels(["b", "a", "b"]), [0, 1, 0])


def test_mode_rate_correlation_matches_numpy_and_zeroes_constants():
    loadings, rates, _ = planted()
    z = loadings["conv0"].copy()
    z[:, 5] = 1.0                                                        # constant mode
    m = mode_rate_correlation(z, rates)
    assert m.dims == ("cell", "mode")
    np.testing.assert_array_equal(m["cell"].values, rates["cell"].values)
    assert m.values[3, 2] == pytest.approx(np.corrcoef(z.values[:, 2], rates.values[:, 3])[0, 1])
    np.testing.assert_array_equal(m.values[:, 5], 0.0)


def test_planted_clusters_are_recovered_in_every_layer():
    loadings, rates, types = planted()
    tree = cell_types(loadings, rates, true_types=types)
    assert set(tree.children) == {"conv0", "conv1"}
    for name in ("conv0", "conv1"):
        node = tree[name]
        assert int(node["chosen_k"]) == 3
        assert float(node["ari_truth"]) == 1.0
        assert float(node["hierarchical_ari_truth"]) == 1.0
        np.testing.assert_array_equal(node["cluster"].values, np.tile([0, 1, 2], 4))     # canonical
        assert int(node["k"][np.nanargmax(node["silhouette"].values)]) == 3
        assert node["linkage"].shape == (11, 4)
        assert node["features"].dims == ("cell", "mode")
        np.testing.assert_allclose(node["features"].mean("cell"), 0.0, atol=1e-12)
    np.testing.assert_array_equal(tree["agreement"].values, np.ones((2, 2)))
    np.testing.assert_array_equal(tree["ari_truth"].values, [1.0, 1.0])
    np.testing.assert_array_equal(tree["true_type"].values, types)


def test_silhouette_chooses_the_planted_number_of_clusters():
    loadings, rates, types = planted(seed=4, n_types=4, layers=("conv0",))
    tree = cell_types(loadings, rates, k_range=range(2, 7), true_types=types)
    assert int(tree["conv0"]["chosen_k"]) == 4
    assert float(tree["conv0"]["ari_truth"]) == 1.0
    np.testing.assert_array_equal(tree["conv0"]["k"].values, [2, 3, 4, 5, 6])


def test_results_are_deterministic_and_ks_out_of_range_are_nan():
    loadings, rates, _ = planted(seed=1)
    a = cell_types(loadings, rates, k_range=[2, 3, 11, 12], random_state=7)
    b = cell_types(loadings, rates, k_range=[2, 3, 11, 12], random_state=7)
    xr.testing.assert_identical(a["conv0"].to_dataset().drop_attrs(), b["conv0"].to_dataset().drop_attrs())
    silhouette = a["conv0"]["silhouette"]
    assert np.isnan(silhouette.sel(k=12)) and np.isfinite(silhouette.sel(k=11))


def test_layers_disagree_when_their_modes_carry_crossed_partitions():
    """Rates mix a 3-way and a crossed 2-way signal; conv0 modes follow one, conv1 modes the other."""
    rng = np.random.default_rng(2)
    three, two = np.arange(12) % 3, (np.arange(12) // 3) % 2             # crossed partitions
    drivers = rng.normal(size=(N_TIME, 5))
    drivers = np.linalg.qr(drivers - drivers.mean(axis=0))[0]            # exactly uncorrelated
    d3, d2 = drivers[:, :3], drivers[:, 3:]
    rates = xr.DataArray(d3[:, three] + d2[:, two] + 0.002 * rng.normal(size=(N_TIME, 12)),
                         dims=("time", "cell"))
    modes = {"conv0": d3 + 0.002 * rng.normal(size=d3.shape),
             "conv1": d2 + 0.002 * rng.normal(size=d2.shape)}
    loadings = {name: xr.DataArray(z, dims=("time", "mode")) for name, z in modes.items()}
    tree = cell_types(loadings, rates, k_range=range(2, 5), true_types=three.astype(str))
    assert int(tree["conv0"]["chosen_k"]) == 3 and int(tree["conv1"]["chosen_k"]) == 2
    crossed = adjusted_rand_score(three, two)                             # -0.138
    np.testing.assert_allclose(tree["ari_truth"].values, [1.0, crossed])
    assert adjusted_rand_score(tree["conv1"]["cluster"].values, two) == 1.0
    agreement = tree["agreement"]
    assert float(agreement.sel(layer="conv0", layer2="conv1")) == pytest.approx(crossed)
    assert float(agreement.sel(layer="conv0", layer2="conv1")) \
        == float(agreement.sel(layer="conv1", layer2="conv0"))
    np.testing.assert_array_equal(np.diag(agreement.values), [1.0, 1.0])


def test_times_are_aligned_and_mismatch_is_reported():
    loadings, rates, types = planted()
    shuffled = rates.isel(time=np.random.default_rng(0).permutation(N_TIME))
    a = cell_types(loadings, rates)
    b = cell_types(loadings, shuffled)
    np.testing.assert_allclose(a["conv0"]["correlation"], b["conv0"]["correlation"], atol=1e-12)
    with pytest.raises(ShapeError, match=r"rates \(time\) lacks 10 of the 300 times of loadings"):
        cell_types(loadings, rates.isel(time=slice(10, None)))


def test_cluster_rates_control_recovers_planted_types():
    _, rates, types = planted()
    ds = cluster_rates(rates, true_types=types)
    assert ds["correlation"].dims == ("cell", "cell2")
    np.testing.assert_allclose(np.diag(ds["correlation"].values), 1.0)
    assert float(ds["ari_truth"]) == 1.0
    modes = cell_types(planted()[0], rates)
    agreement = clustering_agreement({"rates": ds["cluster"].values,
                                      "conv0": modes["conv0"]["cluster"].values})
    np.testing.assert_array_equal(agreement.values, np.ones((2, 2)))


def test_cluster_cells_errors():
    features = xr.DataArray(np.ones((4, 3)), dims=("cell", "mode"))
    with pytest.raises(ConfigurationError, match="all cells have the same features"):
        cluster_cells(features, k_range=[2, 3])
    with pytest.raises(ConfigurationError, match=r"no k with 2 <= k <= n_cells - 1 = 3"):
        cluster_cells(features, k_range=[4, 8])
    two_points = xr.DataArray([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dims=("cell", "mode"))
    duplicates = cluster_cells(two_points, k_range=[2, 3])                 # 3 > 2 distinct cells
    assert np.isnan(duplicates["silhouette"].sel(k=3)) and int(duplicates["chosen_k"]) == 2
    np.testing.assert_array_equal(duplicates["cluster"].values, [0, 0, 1, 1])
    loadings, rates, _ = planted()
    with pytest.raises(ShapeError, match=r"true_types must hold one type per cell \(12\)"):
        cell_types(loadings, rates, true_types=["a", "b"])
    with pytest.raises(ShapeError, match=r"loadings must be a DataArray \(time, mode\)"):
        cell_types({"conv0": loadings["conv0"].rename(mode="unit")}, rates)
    with pytest.raises(ConfigurationError, match="without '/'"):
        cell_types({"a/b": loadings["conv0"]}, rates)
    with pytest.raises(ShapeError, match="different numbers of cells"):
        clustering_agreement({"a": [0, 1], "b": [0, 1, 1]})


# =========================================================================== drive profiles, k rules, primary
from retcodec.analysis.celltypes import (PRIMARY_K_RULE, cell_types_primary, choose_k, gap_statistic, subsample_stability,
                                         typing_windows)
from retcodec.analysis.drive import drive_over_modes, drive_profiles

#: planted drive: each type has its own (channel, sign) pattern per layer
N_CHANNELS = 4


def planted_per_cell(seed: int = 0, types=TYPES, n_time: int = 40, gains=None,
                     jitter: float = 0.05) -> xr.DataTree:
    """A per-cell contribution tree whose mean drive profile is set by the cell's type (times a gain)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(types), key=list(types).index)
    patterns = {layer: rng.uniform(0, 1, size=(len(names), N_CHANNELS, 2)) ** 3 for layer in ("conv0", "conv1")}
    gains = np.ones(len(types)) if gains is None else np.asarray(gains)
    time = 0.4 + np.arange(n_time) * 0.01
    children = {}
    for layer, pattern in patterns.items():
        c = np.stack([gains[i] * pattern[names.index(t)] for i, t in enumerate(types)])     # (cell, ch, sign)
        c = c * (1 + jitter * rng.uniform(-1, 1, size=c.shape))                              # cell jitter
        c = c[None] * rng.uniform(0.5, 1.5, size=(n_time, len(types), 1, 1))
        c[..., 0] *= -1                                                                      # neg part
        children[layer] = xr.Dataset(
            {"contribution": (("time", "cell", "channel", "sign"), c)},
            coords={"time": time, "cell": 10 + np.arange(len(types)), "channel": np.arange(N_CHANNELS),
                    "sign": ["neg", "pos"]})
    root = xr.Dataset({"output": (("time", "cell"), rng.uniform(1, 2, size=(n_time, len(types))))},
                      coords={"time": time, "cell": 10 + np.arange(len(types))})
    return xr.DataTree.from_dict({"/": root, **children})


def test_drive_profiles_are_gain_free_signed_fractions():
    tree = planted_per_cell(gains=np.arange(1, 13))
    p = drive_profiles(tree)
    assert p.dims == ("cell", "feature") and p.shape == (12, 2 * N_CHANNELS * 2)
    np.testing.assert_array_equal(np.unique(p["layer"].values), ["conv0", "conv1"])
    for layer in ("conv0", "conv1"):
        block = p.sel(feature=p["layer"] == layer)
        np.testing.assert_allclose(np.abs(block).sum("feature"), 1.0)
        assert (block.sel(feature=block["sign"] == "neg") <= 0).all()
    mean = tree["conv1"]["contribution"].mean("time").isel(cell=4).values.ravel()
    np.testing.assert_allclose(p.sel(feature=p["layer"] == "conv1").isel(cell=4), mean / np.abs(mean).sum())
    same = drive_profiles(planted_per_cell(gains=np.ones(12)))          # same seed: same jitter
    np.testing.assert_allclose(p.values, same.values, atol=1e-12)         # gains drop out
    half = drive_profiles(tree, ["conv0"], time_index=np.arange(0, 40, 2))
    assert half.sizes["feature"] == N_CHANNELS * 2


def test_drive_over_modes_recovers_planted_mode_mixtures():
    rng = np.random.default_rng(1)
    rows = np.abs(rng.normal(size=(3, N_CHANNELS, 2)))
    rows[..., 0] *= -1
    mix = np.array([[1, 0, 0], [0, 1, 0], [0.5, 0, 0.5]])                  # three cells
    c = np.einsum("km,mcs->kcs", mix, rows)[None].repeat(5, 0)
    tree = xr.DataTree.from_dict({"conv0": xr.Dataset(
        {"contribution": (("time", "cell", "channel", "sign"), c)},
        coords={"cell": [0, 1, 2], "channel": np.arange(N_CHANNELS), "sign": ["neg", "pos"]})})
    modes = {"conv0": xr.Dataset({"modes": (("mode", "channel", "sign"), rows)},
                                 coords={"mode": [0, 1, 2], "channel": np.arange(N_CHANNELS),
                                         "sign": ["neg", "pos"]})}
    d, resampler = drive_over_modes(tree, modes)
    assert np.allclose(resampler.make(np.arange(resampler.n_time)), d.values)
    np.testing.assert_allclose(d.values, mix / mix.sum(1, keepdims=True), atol=1e-8)
    with pytest.raises(ConfigurationError, match="no modes for layer 'conv0'"):
        drive_over_modes(tree, {})


def test_choose_k_rules_on_known_curves():
    ks = [1, 2, 3, 4, 5]
    gap = np.array([0.0, 0.3, 0.8, 0.85, 0.7])
    se = np.full(5, 0.1)
    assert choose_k(ks, gap, se, "gap") == 3                                # 0.8 >= 0.85 - 0.1
    assert choose_k(ks, np.array([0.1, 0.5, 0.4, np.nan, 0.2]), se, "silhouette") == 2
    stability = np.array([1.0, 0.95, 0.9, 0.6, 0.5])
    assert choose_k(ks, stability, se, "stability", threshold=0.8) == 3
    assert choose_k(ks, stability, se, "stability", threshold=0.99) == 1
    with pytest.raises(ConfigurationError, match="unknown k rule"):
        choose_k(ks, gap, se, "elbow")


@pytest.mark.parametrize("rule", ["silhouette_gap", "gap", "silhouette"])
def test_k_rules_find_well_separated_planted_types(rule):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 6)) * 10
    labels = np.repeat(np.arange(4), 5)
    x = xr.DataArray(centres[labels] + rng.normal(size=(20, 6)), dims=("cell", "feature"))
    ds = cluster_cells(x, k_range=range(2, 8), k_rule=rule, true_types=labels.astype(str))
    assert int(ds["chosen_k"]) == 4 and float(ds["ari_truth"]) == 1.0
    assert ds.attrs["k_rule"] == rule and np.isfinite(ds["k_score"].sel(k=4))
    assert float(ds["ari_truth_by_k"].sel(k=4)) == 1.0


def test_stability_is_perfect_at_the_planted_k():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 6)) * 10
    labels = np.repeat(np.arange(4), 5)
    x = xr.DataArray(centres[labels] + rng.normal(size=(20, 6)), dims=("cell", "feature"))
    ds = cluster_cells(x, k_range=range(2, 8), k_rule="stability", n_resamples=6)
    assert float(ds["k_score"].sel(k=4)) == 1.0 and int(ds["chosen_k"]) >= 4


def test_gap_and_stability_curves_shapes():
    x = np.random.default_rng(0).normal(size=(12, 3))
    gap, se = gap_statistic(x, [1, 2, 3], n_references=5)
    assert gap.shape == se.shape == (3,) and (se > 0).all()
    mean, se = subsample_stability(x, [2, 3, 11], n_resamples=4)
    assert np.isnan(mean[2]) and ((mean[:2] <= 1) & (mean[:2] >= -1)).all()


def test_typing_windows_are_even_and_bounded():
    np.testing.assert_array_equal(typing_windows(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(typing_windows(5, None), np.arange(5))
    np.testing.assert_array_equal(typing_windows(5, 400), np.arange(5))
    with pytest.raises(ConfigurationError, match="max_windows must be at least 3"):
        typing_windows(10, 2)


def primary_inputs():
    """Planted per-cell drive, rates on its windows and loadings-only modes (no mode rows)."""
    per_cell = planted_per_cell()
    loadings, rates, _ = planted()
    rates = rates.isel(time=slice(0, 40)).assign_coords(time=per_cell["time"].values)
    modes = {l: xr.Dataset({"loadings": z.isel(time=slice(0, 40)).assign_coords(time=rates["time"].values)})
             for l, z in loadings.items()}
    return per_cell, rates, modes


def test_primary_types_and_controls(tmp_path):
    per_cell, rates, modes = primary_inputs()
    tree = cell_types_primary(None, None, None, modes, modes, rates, true_types=TYPES, per_cell=per_cell,
                              k_range=range(2, 6), k_rule="silhouette_gap")
    root = tree.to_dataset()
    assert int(root["chosen_k"]) == 3 and float(root["ari_truth"]) == 1.0
    np.testing.assert_array_equal(root["cluster"].values, np.tile([0, 1, 2], 4))
    np.testing.assert_array_equal(root["true_type"].values, TYPES)
    assert root["drive_profile"].dims == ("cell", "primary_feature")
    assert root["k_score"].dims == ("k",) and root["silhouette"].dims == ("k",)
    methods = list(root["clustering"].values)
    assert methods[0] == "primary" and {"drive/conv0", "drive/conv1", "controls/rates",
                                        "controls/surprisal_modes/conv0",
                                        "controls/activation_modes/conv1"} <= set(methods)
    assert all(tree[m].attrs["k_rule"] == "silhouette_gap" for m in methods[1:])
    np.testing.assert_array_equal(root["clustering_ari_truth"].sel(clustering=["primary", "drive/conv0"]),
                                  [1.0, 1.0])
    assert float(root["layer_agreement"].sel(family="drive")) == 1.0
    assert float(root["half_agreement"]) == 1.0
    assert tree.attrs["winner"] in methods
    path = tmp_path / "cell_types.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    back = xr.open_datatree(path, engine="h5netcdf")
    np.testing.assert_array_equal(back["cluster"].values, root["cluster"].values)
    assert set(back["controls"].children) == {"surprisal_modes", "activation_modes", "rates"}


def test_primary_over_modes_carries_consensus_confidence_and_diagnostics():
    per_cell = planted_per_cell()
    loadings, rates, _ = planted()
    rates = rates.isel(time=slice(0, 40)).assign_coords(time=per_cell["time"].values)
    # modes: each type's own (channel, sign) pattern is one mode, so the drive over modes is one-hot per type
    modes = {}
    for layer in ("conv0", "conv1"):
        c = per_cell[layer]["contribution"]
        rows = np.abs(c).mean("time").groupby(xr.DataArray(np.array(TYPES), dims="cell")).mean().values
        modes[layer] = xr.Dataset({"modes": (("mode", "channel", "sign"), rows),
                                   "loadings": loadings[layer].isel(time=slice(0, 40), mode=slice(0, len(rows)))
                                   .assign_coords(time=rates["time"].values, mode=np.arange(len(rows)))},
                                  coords={"mode": np.arange(len(rows)), "channel": c["channel"].values,
                                          "sign": ["neg", "pos"]})
        modes[layer]["modes"].values[..., 0] *= -1
    tree = cell_types_primary(None, None, None, modes, modes, rates, true_types=TYPES, per_cell=per_cell,
                              k_range=range(2, 6))
    root = tree.to_dataset()
    assert root.attrs["k_rule"] == PRIMARY_K_RULE == "combined"
    assert root["drive_profile"].attrs["features"].startswith("drive over the contribution modes")
    assert int(root["chosen_k"]) == 3 and float(root["ari_truth"]) == 1.0
    assert "drive/channels" in tree.children["drive"].children or "channels" in tree["drive"].children
    assert root["consensus"].dims == ("k", "cell", "cell2")
    c3 = root["consensus"].sel(k=3).values
    same = np.array(TYPES)[:, None] == np.array(TYPES)[None, :]
    assert np.allclose(c3[same], 1.0) and np.allclose(c3[~same], 0.0)   # planted types: always, never together
    assert np.allclose(root["confidence"].values, 1.0) and float(root["pac"].sel(k=3)) == 0.0
    lo, hi = root["ari_truth_interval"].values
    assert lo == hi == 1.0
    assert root["separating_feature"].dims == ("type_a", "type_b", "rank")
    assert root["separating_feature"].sel(type_a=0, type_b=1, rank=0).item().startswith("conv")
    assert root["consensus_cluster"].sel(k=3).values.tolist() == root["cluster"].values.tolist()


def test_combined_rule_is_the_largest_of_its_parts():
    from retcodec.analysis.consensus import Resampler
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 5)) * 6
    truth = np.repeat(np.arange(4), 4)
    per_window = centres[truth][None] + rng.normal(size=(60, truth.size, 5))
    resample = Resampler(lambda idx: per_window[idx].mean(axis=0), 60)
    x = xr.DataArray(resample.make(np.arange(60)), dims=("cell", "feature"))
    parts = {rule: int(cluster_cells(x, range(2, 8), k_rule=rule, resample=resample)["chosen_k"])
             for rule in ("silhouette", "gap", "consensus", "combined")}
    assert parts["combined"] == max(parts["silhouette"], parts["gap"], parts["consensus"]) == 4
    with pytest.raises(ConfigurationError, match="needs resample"):
        cluster_cells(x, range(2, 8), k_rule="combined")


def test_cell_type_figure_and_uncertainty_text():
    from retcodec.report.fig_types import plot_cell_types
    from retcodec.report.type_sections import type_uncertainty_html
    from retcodec.errors import MissingDataError
    per_cell, rates, modes = primary_inputs()
    tree = cell_types_primary(None, None, None, modes, modes, rates, true_types=TYPES, per_cell=per_cell,
                              k_range=range(2, 6))
    fig = plot_cell_types(tree)
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "consensus at k = 3" in titles and "ARI vs truth 1.00" in titles and "drive profiles" in titles
    text = type_uncertainty_html(tree.to_dataset())
    assert "k = 3 by the combined rule" in text and "Every cell shares its type" in text
    assert "Closest types" in text
    with pytest.raises((MissingDataError, ConfigurationError, ShapeError)):
        plot_cell_types(xr.Dataset({"cluster": ("cell", [0, 1])}))


def test_primary_falls_back_to_channels_when_modes_cannot_separate_cells():
    per_cell, rates, modes = primary_inputs()
    one = {}
    for layer in ("conv0", "conv1"):                       # one mode per layer: the same drive for every cell
        c = per_cell[layer]["contribution"]
        rows = np.abs(c).mean(("time", "cell")).values[None]
        rows[..., 0] *= -1
        one[layer] = xr.Dataset({"modes": (("mode", "channel", "sign"), rows)},
                                coords={"mode": [0], "channel": c["channel"].values, "sign": ["neg", "pos"]})
        one[layer]["loadings"] = modes[layer]["loadings"].isel(mode=[0]).assign_coords(mode=[0])
    tree = cell_types_primary(None, None, None, one, modes, rates, true_types=TYPES, per_cell=per_cell,
                              k_range=range(2, 6))
    root = tree.to_dataset()
    assert root["drive_profile"].attrs["features"].startswith("drive profiles (channels)")
    assert int(root["chosen_k"]) == 3 and float(root["ari_truth"]) == 1.0
