"""In-silico experiments (analysis.experiments) on a tiny random model with synthetic modes and matches."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from retcodec.analysis.experiments import (Hypothesis, block_effects, experiments, fractional_change,
                                           hypotheses, mode_channel_set, score_against_truth,
                                           subsample_index, summary, truth_type)
from retcodec.engine.perturb import silence
from retcodec.errors import ConfigurationError, ShapeError
from test_perturb import IMG, tiny_model

N = 40


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def windows() -> xr.DataArray:
    x = np.random.default_rng(5).standard_normal((N, *IMG)).astype(np.float32)
    return xr.DataArray(x, dims=("time", "lag", "y", "x"), coords={"time": 0.4 + 0.01 * np.arange(N)})


def modes_for(layer: str, n_channels: int, times: np.ndarray, seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    w = np.zeros((3, n_channels, 2))
    w[0, 0, 1], w[0, 1, 1] = 2.0, 1.0
    w[1, -1, 1] = 1.0
    w[2, :, 1] = np.arange(1, n_channels + 1)
    return xr.Dataset({"modes": (("mode", "channel", "sign"), w),
                       "loadings": (("time", "mode"), rng.random((len(times), 3)))},
                      coords={"mode": [0, 1, 2], "channel": np.arange(n_channels), "sign": ["neg", "pos"],
                              "time": times})


@pytest.fixture(scope="module")
def modes(windows) -> dict:
    t = windows["time"].values
    act = xr.Dataset({"modes": (("mode", "channel"), np.array([[1.0, -3.0, 0.5, 0.0]])),
                      "loadings": (("time", "mode"), np.random.default_rng(1).standard_normal((N, 1)))},
                     coords={"mode": [0], "channel": np.arange(4), "time": t})
    return {"conv0": modes_for("conv0", 4, t, 0), "conv1": modes_for("conv1", 3, t, 1),
            "conv0_activation": act}


@pytest.fixture(scope="module")
def match() -> xr.Dataset:
    """What match_interneurons returns, reduced to what the experiments read."""
    rng = np.random.default_rng(2)
    maps0 = rng.uniform(-0.2, 0.5, (3, 4, 18, 18))
    maps1 = rng.uniform(-0.2, 0.5, (3, 3, 14, 14))
    maps0[0, 2, 5, 5] = 0.9                        # interneuron 0: conv0 ch 2, ch 3 almost as good
    maps0[0, 3, 6, 6] = 0.88
    maps1[1, 1, 3, 3] = 0.8                        # interneuron 1: conv1 ch 1
    maps0[2, 0, 2, 2] = 0.7                        # interneuron 2: conv0 ch 0
    return xr.Dataset(
        {"best_layer": ("interneuron", np.array(["conv0", "conv1", "conv0"])),
         "best_channel": ("interneuron", np.array([2, 1, 0])),
         "heldout_correlation": ("interneuron", np.array([0.85, 0.7, 0.5])),
         "correlation_map_conv0": (("interneuron", "channel_conv0", "y_conv0", "x_conv0"), maps0),
         "correlation_map_conv1": (("interneuron", "channel_conv1", "y_conv1", "x_conv1"), maps1)},
        coords={"interneuron": ["bipolars_a/0", "bipolars_a/1", "amacrines_b/0"],
                "cell_class": ("interneuron", ["bipolar", "bipolar", "amacrine"]),
                "cell_type": ("interneuron", ["on", "off", "wide"])})


@pytest.fixture(scope="module")
def result(model, windows, modes, match) -> xr.Dataset:
    return experiments(model, windows, modes, match, max_windows=None, n_random=5, n_blocks=4,
                       cell_types=["a", "a", "b", "b", "c"])


def test_fractional_change_and_blocks_known_answers():
    intact = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
    silenced = intact * np.array([0.5, 1.5])
    np.testing.assert_allclose(fractional_change(silenced, intact), [-0.5, 0.5])
    np.testing.assert_allclose(block_effects(silenced, intact, 2), [[-0.5, 0.5], [-0.5, 0.5]])
    np.testing.assert_allclose(fractional_change(silenced, intact, np.array([1, 0, 0, 0], bool)), [-0.5, 0.5])
    assert subsample_index(10, None).tolist() == list(range(10))
    idx = subsample_index(1000, 100)
    assert len(idx) == 100 and idx[0] == 0 and idx[-1] == 999
    assert mode_channel_set(np.array([0.0, 5.0, 3.0, 2.0]), 0.8).tolist() == [1, 2]
    assert mode_channel_set(np.array([0.0, 5.0, 3.0, 2.0]), 0.5).tolist() == [1]


def test_predicted_effect_is_the_silenced_change_of_the_mean_rate(model, windows, match, result):
    intact = silence(model, windows, {"conv0": []}).values
    for i, (layer, ch) in enumerate(zip(match["best_layer"].values, match["best_channel"].values)):
        silenced = silence(model, windows, {str(layer): [int(ch)]}).values
        expected = (silenced.mean(0) - intact.mean(0)) / intact.mean(0)
        np.testing.assert_allclose(result["predicted_effect"].values[i], expected, rtol=1e-4, atol=1e-6)
    assert result["predicted_effect"].dims == ("interneuron", "cell")
    assert list(result["interneuron"].values) == list(match["interneuron"].values)
    assert list(result["cell"].values) == [3, 4, 6, 8, 9]
    assert (result["effect_low"] <= result["predicted_effect"]).all()
    assert (result["effect_high"] >= result["predicted_effect"]).all()
    assert result["alternatives"].values[0] == "conv0/2,conv0/3"
    assert result["alternatives"].values[1] == "conv1/1"


def test_interval_covers_the_alternative_channel(result):
    single = result["single_effect"]
    alt = single.sel(unit="conv0/3").values
    assert (result["effect_low"].values[0] <= alt + 1e-12).all()
    assert (result["effect_high"].values[0] >= alt - 1e-12).all()


def test_mode_dose_curves_and_controls(result):
    contrib = result.sel(mode=result["mode_source"] == "contribution")
    assert contrib.sizes["mode"] == 6
    np.testing.assert_allclose(result["ratio"].sel(kind="ablate", fraction=0.0).values, 1.0)
    np.testing.assert_allclose(result["ratio"].sel(kind="preserve", fraction=1.0).values, 1.0)
    full = result["ratio"].sel(kind="ablate", fraction=1.0)
    for layer in ("conv0", "conv1"):          # silencing every channel of a layer: same for all its modes
        rows = full.values[result["mode_layer"].values == layer]
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape))
    assert result["mode_channels"].sel(mode="conv0/0").values.tolist() == [True, True, False, False]
    assert result["mode_channels"].sel(mode="conv0/activation/0").values.tolist() == [True, True, False, False]
    assert result["mode_control_effect"].sizes["draw"] == 5
    ablate = result["specificity"].sel(kind="ablate")
    auc = result["auc"].sel(kind="ablate")
    ok = np.isfinite(ablate.values)
    np.testing.assert_allclose(ablate.values[ok], (auc.sel(group="off") - auc.sel(group="on")).values[ok])


def test_scores_against_a_synthetic_truth(result):
    types = ["bipolar_on", "bipolar_off", "amacrine_wide"]
    perfect = xr.Dataset({"effect": (("interneuron_type", "cell"), result["predicted_effect"].values)},
                         coords={"interneuron_type": types, "cell": result["cell"].values})
    scored = score_against_truth(result, perfect, threshold=0.0)
    assert float(scored["spearman"]) == pytest.approx(1.0)
    assert float(scored["sign_accuracy"]) == pytest.approx(1.0)
    assert int(scored["n_scored_pairs"]) == 15
    flipped = perfect.assign(effect=-perfect["effect"])
    assert float(score_against_truth(result, flipped, 0.0)["sign_accuracy"]) == pytest.approx(0.0)
    partial = perfect.isel(interneuron_type=[0, 1])
    scored = score_against_truth(result, partial)
    assert int(scored["n_scored_pairs"]) == 10
    assert scored.attrs["unscored_interneurons"] == "amacrines_b/0"
    assert np.isfinite(float(scored["baseline_spearman"]))
    with pytest.raises(ShapeError, match="no effects for cells"):
        score_against_truth(result, perfect.isel(cell=[0, 1]))


def test_truth_type_names():
    assert truth_type("on_transient", "bipolar", ["bipolar_on_transient"]) == "bipolar_on_transient"
    assert truth_type("on_transient", "bipolar", ["on_transient"]) == "on_transient"
    assert truth_type("x", "bipolar", ["y"]) is None


def test_hypotheses_are_ranked_records_with_sentences(result):
    found = hypotheses(result, clear=0.0)
    assert found and all(isinstance(h, Hypothesis) for h in found)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
    kinds = {h.kind for h in found}
    assert kinds <= {"interneuron", "mode"}
    for h in found:
        assert h.sentence.startswith("Silencing ") and "random" in h.sentence
        assert set(h.decreases).isdisjoint(h.increases)
        assert h.as_dict()["layer"] == h.layer
    inter = [h for h in found if h.kind == "interneuron" and h.subject == "bipolars_a/0"]
    if inter:
        assert "best model match conv0 ch 2, held-out r = 0.85" in inter[0].sentence


def test_results_write_and_carry_parameters(result, tmp_path):
    from retcodec.io.storage import write_netcdf_atomic
    path = write_netcdf_atomic(result, tmp_path / "experiments.nc")
    back = xr.open_dataset(path, engine="h5netcdf")
    assert "predicted_effect" in back and "ratio" in back
    assert back.attrs["n_windows"] == N and "fractions" in back.attrs["parameters"]


def test_bad_inputs(model, windows, modes, match):
    with pytest.raises(ConfigurationError, match="nothing to do"):
        experiments(model, windows)
    bad = dict(modes)
    bad["conv0"] = bad["conv0"].isel(time=slice(0, 10)).assign_coords(time=np.arange(10) + 100.0)
    with pytest.raises(ShapeError, match="loadings cover 10 time points"):
        experiments(model, windows, {"conv0": bad["conv0"]}, max_windows=None)


def test_summary_headlines(result):
    s = summary(result)
    assert s["n_interneurons"] == 3 and s["n_contribution_modes"] == 6 and s["n_activation_modes"] == 1
    assert s["n_windows"] == N and "spearman" not in s
