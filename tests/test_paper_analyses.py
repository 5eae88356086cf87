"""The paper's analyses with uncertainty: layer trends, ablation curves, IRF similarity null, exact shift null,
layer agreement, stimulus-aligned view, and their figures (known answers on small planted data)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.figure import Figure

from retcodec.analysis.ablation import ablation_curves
from retcodec.analysis.agreement import contingency
from retcodec.analysis.interneuron_match import match_interneurons
from retcodec.analysis.interneuron_null import exact_shift_null, holm_significance, shift_correlations
from retcodec.analysis.irf_similarity import similarity_statistics
from retcodec.analysis.layer_trends import layer_trends, paper_trend_notes
from retcodec.analysis.stimulus_view import stimulus_view
from retcodec.analysis.uncertainty import block_bootstrap, holm, median_interval, median_intervals, permutation_p
from retcodec.errors import ConfigurationError, MissingDataError, ShapeError
from retcodec.io.architectures import build_model
from retcodec.io.interneurons import interneuron_windows, load_interneurons, write_interneurons
from retcodec.analysis.unit_correlation import layer_activations
from retcodec.report import figures as fg
from retcodec.report.figstyle import type_colors


# --------------------------------------------------------------------------- resampling helpers
def test_holm_matches_the_step_down_rule_and_keeps_order():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, made monotone
    np.testing.assert_allclose(holm(p)[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm(p)[4])
    adjusted, significant = holm_significance(p)
    assert significant.tolist() == [True, False, False, True, False]


def test_block_bootstrap_draws_whole_blocks_deterministically():
    a = block_bootstrap(100, n_boot=5, n_blocks=10, random_state=3)
    assert a.shape == (5, 100)
    np.testing.assert_array_equal(a, block_bootstrap(100, n_boot=5, n_blocks=10, random_state=3))
    starts = a[:, ::10]                     # every block starts at a multiple of 10 and runs on
    assert np.all(starts % 10 == 0) and np.all(np.diff(a.reshape(5, 10, 10), axis=2) == 1)
    with pytest.raises(ConfigurationError):
        block_bootstrap(0)


def test_median_interval_covers_the_true_median_and_permutation_p():
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0 <= hi for _, lo, hi in (median_interval(rng.normal(size=200), n_boot=200,
                                                                   random_state=i) for i in range(40)))
    assert covered >= 34                               # ~95 % coverage
    assert permutation_p(1.0, [0, 0.5, 2.0]) == pytest.approx(2 / 4)
    ds = xr.Dataset({"a": ("cell", np.arange(11.0))})
    m = median_intervals(ds, ["a", "missing"], where=np.arange(11) < 5)
    assert m.sel(variable="a", statistic="median") == 2.0 and list(m["variable"].values) == ["a"]


# --------------------------------------------------------------------------- Fig. 3 layer trends
def _layer(sparse: bool, n: int = 400, seed: int = 0) -> xr.Dataset:
    """Contributions on one channel (Hoyer 1) or spread evenly (0); activations the other way round."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(1, 2, size=n)
    c = np.zeros((n, 4, 2))
    if sparse:
        c[:, 0, 1] = amp
        c[:, 0, 0] = -amp                                   # C- = -C+: E/I correlation 1
    else:
        c[:, :, 1] = amp[:, None] * rng.uniform(0.9, 1.1, size=(n, 4))
        c[:, :, 0] = -rng.uniform(0, 1, size=(n, 4))         # unrelated C-
    act = np.zeros((n, 4))
    if sparse:
        act[:] = amp[:, None] * rng.uniform(0.9, 1.1, size=(n, 4))
        act[:, 1:3] += rng.normal(size=(n, 2))
    else:
        act[:, 0] = amp
    return xr.Dataset({"contribution": (("time", "channel", "sign"), c), "activation": (("time", "channel"), act)},
                      coords={"time": np.arange(n) * 0.01, "channel": np.arange(4), "sign": ["neg", "pos"]})


def test_layer_trends_known_sparsity_correlation_dimensionality_and_notes():
    trends = layer_trends({"conv0": _layer(False), "conv1": _layer(True)}, n_boot=50)
    t = trends["trend"]
    assert float(t.sel(layer="conv1", quantity="sparsity", source="contributions")) == pytest.approx(1.0)
    assert float(t.sel(layer="conv0", quantity="sparsity", source="activations")) == pytest.approx(1.0)
    assert float(t.sel(layer="conv1", quantity="ei_correlation", source="contributions")) == pytest.approx(1.0)
    assert np.isnan(float(t.sel(layer="conv1", quantity="ei_correlation", source="activations")))
    assert float(t.sel(layer="conv1", quantity="dimensionality", source="contributions")) == 1
    low, high = trends["trend_low"], trends["trend_high"]
    finite = np.isfinite(t.values)
    assert (low.values[finite] <= t.values[finite] + 1e-12).all()
    assert (high.values[finite] >= t.values[finite] - 1e-12).all()
    assert float(trends["contrast_low"].sel(layer="conv1", quantity="sparsity")) > 0
    notes = dict(paper_trend_notes(trends))
    conv0_sparsity = next(a for s, a in notes.items() if s.startswith("conv0: sparsity"))
    assert conv0_sparsity is False                       # contributions less sparse than activations
    with pytest.raises(ShapeError):
        layer_trends({"a": _layer(True, n=50), "b": _layer(True, n=60)})
    fig = fg.plot_layer_trends(trends)
    assert isinstance(fig, Figure) and "windows" in fig.get_suptitle()


# --------------------------------------------------------------------------- Fig. 6 ablation curves
def _experiments() -> xr.Dataset:
    f = np.array([0.0, 0.5, 1.0])
    n_mode, n_cell = 3, 4
    ratio = np.ones((n_mode, 2, 3, n_cell))
    ratio[:, 0, :, :2] = 1 - f[None, :, None]               # ablating hits cells 0, 1 (own) linearly
    ratio[:, 0, :, 2:] = 1 - 0.2 * f[None, :, None]
    ratio[:, 1] = f[None, :, None]                           # preserving restores everybody alike
    own = np.zeros((n_mode, n_cell), bool)
    own[:, :2] = True
    control = np.full((n_mode, 5, n_cell), -0.1)
    return xr.Dataset(
        {"ratio": (("mode", "kind", "fraction", "cell"), ratio), "mode_cell": (("mode", "cell"), own),
         "specificity": (("mode", "kind"), np.array([[0.3, 0.0], [0.4, 0.0], [0.5, 0.0]])),
         "mode_channels": (("mode", "channel"), np.array([[1, 1, 0, 0]] * 3, bool)),
         "mode_weight": (("mode", "channel"), np.ones((3, 4))),
         "mode_effect": (("mode", "cell"), np.full((3, 4), -0.5)),
         "mode_control_effect": (("mode", "draw", "cell"), control)},
        coords={"mode": ["conv0/0", "conv0/1", "conv0/activation/0"], "kind": ["ablate", "preserve"],
                "fraction": f, "mode_layer": ("mode", ["conv0"] * 3),
                "mode_source": ("mode", ["contribution", "contribution", "activation"])})


def test_ablation_curves_group_means_random_sets_and_specificity():
    curves = ablation_curves(_experiments(), n_boot=20)
    own = curves["curve"].sel(layer="conv0", source="contribution", kind="ablate", group="own cells")
    other = curves["curve"].sel(layer="conv0", source="contribution", kind="ablate", group="other cells")
    np.testing.assert_allclose(own, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(other, [1.0, 0.9, 0.8])
    assert int(curves["n_modes"].sel(layer="conv0", source="contribution")) == 2
    assert float(curves["specificity"].sel(layer="conv0", source="contribution", kind="ablate",
                                           statistic="median")) == pytest.approx(0.35)
    np.testing.assert_allclose(curves["set_fraction"], 0.5)
    np.testing.assert_allclose(curves["random_ratio"], 0.9)
    np.testing.assert_allclose(curves["set_ratio"], 0.5)
    with pytest.raises(MissingDataError, match="experiments"):
        ablation_curves(_experiments().drop_vars("ratio"))
    assert isinstance(fg.plot_ablation_curves(curves), Figure)


# --------------------------------------------------------------------------- IRF similarity null
def _cell(n_sets: int, per_set: int, planted: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    owner = np.repeat(np.arange(n_sets), per_set)
    base = rng.normal(size=(n_sets, 50))
    filters = (base[owner] if planted else 0) + rng.normal(size=(owner.size, 50))
    corr = np.corrcoef(filters)
    return corr, owner


def test_irf_similarity_planted_sets_are_significant_and_shuffled_null_is_uniform():
    rng = np.random.default_rng(0)
    planted = similarity_statistics([_cell(3, 4, True, rng) for _ in range(5)], n_boot=50, n_shuffle=200)
    assert planted["within"] > planted["across"] and planted["p_value"] < 0.01
    assert planted["difference_low"] <= planted["difference"] <= planted["difference_high"]
    ps = [similarity_statistics([_cell(3, 4, False, rng) for _ in range(3)], n_boot=5, n_shuffle=99,
                                random_state=i)["p_value"] for i in range(60)]
    assert 0.35 < np.mean(ps) < 0.65 and np.mean(np.array(ps) <= 0.1) < 0.25


# --------------------------------------------------------------------------- exact shift null
def test_shift_correlations_equal_direct_pearson_of_rolled_series():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=120), rng.normal(size=120)
    held = np.arange(120) % 20 >= 10
    r = shift_correlations(u, v, held)
    for s in (0, 7, 63):
        want = np.corrcoef(u[held], np.roll(v, s)[held])[0, 1]
        assert r[s] == pytest.approx(want, abs=1e-10)


def test_exact_null_p_values_are_uniform_under_independence():
    rng = np.random.default_rng(2)
    ps = []
    for _ in range(200):
        u, v = rng.normal(size=400), rng.normal(size=400)
        r = shift_correlations(u, v, np.arange(400) % 40 >= 20)
        null = r[10:391]
        ps.append((1 + np.sum(null >= r[0])) / (1 + null.size))
    ps = np.array(ps)
    assert 0.42 < ps.mean() < 0.58 and 0.02 < np.mean(ps <= 0.05) < 0.09


HISTORY = 10


def test_exact_shift_null_reproduces_the_match_and_finds_the_copied_unit(tmp_path):
    torch.manual_seed(0)
    centers = np.array([[21, 18], [24, 20], [22, 18]])
    model = build_model("VaryModel", dict(n_units=3, centers=centers, img_shape=(HISTORY, 50, 50), chans=[4, 4]))
    raw = np.random.default_rng(0).integers(0, 2, (410, 38, 38)).astype(np.uint8)
    rng = np.random.default_rng(1)
    probe = write_interneurons(tmp_path / "probe.h5", {"boxes": (raw, rng.normal(size=(1, 410)))})
    w, _ = interneuron_windows(load_interneurons(probe, history=HISTORY)["boxes"], history=HISTORY)
    model.eval()
    acts = layer_activations(model, torch.as_tensor(w[:]), ["conv0", "conv1"])
    vm = rng.normal(size=(3, 410))
    for k, (layer, c, y, x) in enumerate((("conv0", 1, 20, 15), ("conv1", 2, 10, 13))):
        signal = acts[layer][:, c, y, x].numpy().astype(float)
        vm[k, HISTORY:] = signal + 0.3 * signal.std() * rng.normal(size=signal.size)
    path = write_interneurons(tmp_path / "bipolars_test.h5", {"boxes": (raw, vm)})
    match = match_interneurons(model, [path], n_shifts=9, random_state=0)
    null = exact_shift_null(model, [path], match)
    np.testing.assert_allclose(null["exact_check"], match["heldout_correlation"], atol=2e-3)
    assert (null["exact_n_shifts"] > 300).all()
    assert float(null["exact_p_value"][0]) < 0.01 and float(null["exact_p_value"][1]) < 0.01
    assert bool(null["significant"][0]) and null.attrs["exact_null_stimulus"] == "boxes"
    assert "Holm" in null.attrs["correction"]


# --------------------------------------------------------------------------- agreement, view, palettes
def test_contingency_of_relabelled_clusterings_is_diagonal_with_ari_one():
    a = np.array([0, 0, 1, 1, 2, 2])
    table = contingency(a, np.array([5, 5, 3, 3, 9, 9]), names=("conv0", "conv1"))
    assert table.dims == ("cluster_conv0", "cluster_conv1")
    np.testing.assert_array_equal(np.diag(table.values), [2, 2, 2])
    assert table.attrs["ari"] == pytest.approx(1.0) and table.attrs["matched"] == 1.0
    assert contingency(a, np.array([0, 1, 0, 1, 0, 1])).attrs["ari"] < 0.1
    with pytest.raises(ShapeError):
        contingency(a, a[:3])
    assert isinstance(fg.plot_layer_agreement({"drive": table}), Figure)


def _view_inputs(n: int = 600):
    t = np.round(np.arange(n) * 0.01 + 0.4, 2)
    rng = np.random.default_rng(0)
    stim = xr.DataArray(rng.integers(0, 255, (n + 40, 8, 8)).astype(np.uint8), dims=("time", "y", "x"),
                        coords={"time": np.round(np.arange(n + 40) * 0.01, 2)})
    rates = xr.DataArray(rng.gamma(2, 5, (n, 3)), dims=("time", "cell"), coords={"time": t, "cell": [0, 1, 2]})
    loadings = xr.DataArray(rng.uniform(0, 1, (n, 2)), dims=("time", "mode"), coords={"time": t, "mode": [0, 1]})
    selected = np.full((1, 3, 4), np.nan)
    selected[0, 1] = [4.1, 4.2, 4.3, 1.0]                   # three moments near 4 s
    irf = xr.Dataset({"selected_time": (("combination", "cell", "draw"), selected),
                      "spatial": (("combination", "cell", "y", "x"), rng.normal(size=(1, 3, 8, 8)))},
                     coords={"combination": ["0+1"], "cell": [0, 1, 2]})
    return stim, rates, loadings, irf


def test_stimulus_view_picks_the_stretch_with_most_irf_moments():
    stim, rates, loadings, irf = _view_inputs()
    view = stimulus_view(stim, rates, {"conv0": loadings}, recorded_rate=rates.T, irfs={"conv0": irf},
                         cell_types=["a", "b", "c"], duration=1.0)
    assert view.attrs["start"] <= 4.1 and view["time"].values[-1] >= 4.3
    assert view.sizes["moment"] == 3 and set(view["moment_cell"].values) == {1}
    assert view["stimulus"].sizes["time"] == view.sizes["time"] == 100
    np.testing.assert_allclose(view["recorded_rate"].values, view["model_rate"].values)
    with pytest.raises(ShapeError):
        stimulus_view(stim.isel(y=0), rates, {"conv0": loadings})
    assert isinstance(fg.plot_stimulus_view(view, irfs={"conv0": irf}), Figure)


def test_type_colours_do_not_depend_on_which_types_a_figure_shows():
    full = type_colors(["on_transient", "off_transient", "object_motion"])
    assert type_colors(["object_motion"])["object_motion"] == full["object_motion"]
    inter = type_colors(["amacrine_widefield", "bipolar_on_transient"], kind="interneuron")
    assert inter["amacrine_widefield"] != type_colors(["on_transient"])["on_transient"]
    with pytest.raises(ConfigurationError):
        type_colors(["a"], kind="ganglion")


def test_contribution_heatmap_says_what_stretch_it_shows_and_its_unit():
    layer = _layer(False, n=300)
    rates = xr.DataArray(np.ones((300, 2)), dims=("time", "cell"), coords={"time": layer["time"].values,
                                                                           "cell": [4, 7]})
    stim = xr.DataArray(np.zeros((300, 5, 5)), dims=("time", "y", "x"), coords={"time": layer["time"].values})
    fig = fg.plot_contribution_heatmap(layer, rates, time_slice=(0.0, 1.0), target="surprisal", stimulus=stim)
    assert "of 3.0 s analysed" in fig.get_suptitle()
    labels = [a.get_ylabel() for a in fig.axes] + [a.get_title() for a in fig.axes]
    assert any("dimensionless" in l for l in labels) and any("stimulus" in l for l in labels)


# --------------------------------------------------------------------------- most-exciting input
class _Planted(torch.nn.Module):
    """One linear conv layer with planted filters; each output reads one channel at one position."""

    def __init__(self, filters: np.ndarray) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(filters.shape[1], filters.shape[0], filters.shape[-1], bias=False)
        with torch.no_grad():
            self.conv0.weight.copy_(torch.as_tensor(filters))
        self.layers = {"conv0": self.conv0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(torch.relu(self.conv0(x))[:, :, 4, 5])


def test_most_exciting_input_of_a_planted_mode_recovers_its_filter():
    from retcodec.analysis.mei import most_exciting_input
    from retcodec.engine.targets import Surprisal

    rng = np.random.default_rng(0)
    filters = rng.normal(size=(2, 4, 7, 7)).astype(np.float32)
    model = _Planted(filters)
    with torch.no_grad():
        target = Surprisal.from_outputs(model(torch.randn(200, 4, 16, 16)))
    weights = xr.DataArray([[0.0, 1.0], [0.0, 0.0]], dims=("channel", "sign"), coords={"sign": ["neg", "pos"]})
    mei = most_exciting_input(model, "conv0", weights, target, (4, 16, 16), n_steps=60)
    frames = mei["mei"].values[::-1]                      # back to the model's frame order
    patch = frames[:, 4:11, 5:12]                         # the receptive field the output reads
    assert np.corrcoef(patch.ravel(), filters[0].ravel())[0, 1] > 0.99
    assert abs(np.corrcoef(patch.ravel(), filters[1].ravel())[0, 1]) < 0.5
    assert mei["loading"].values[-1] > mei["loading"].values[0]
    np.testing.assert_allclose(np.sqrt(np.mean(frames ** 2)), 1.0, rtol=1e-4)     # the contrast budget
    assert mei["temporal"].sizes["lag"] == 4
    assert isinstance(fg.plot_meis({"mode 0 (ch0+)": mei}), Figure)
    with pytest.raises(ShapeError):
        most_exciting_input(model, "conv0", weights.isel(channel=[0]), target, (4, 16, 16))
