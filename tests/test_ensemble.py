"""Model ensembles: members' held-out blocks (fitting), the combination of their silencing
predictions (analysis.ensemble) and the ensemble in `retcodec run`."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from retcodec.analysis.ensemble import combine_members, ensemble_scores
from retcodec.errors import ConfigurationError, MissingDataError, ShapeError
from retcodec.fitting import fit, fit_ensemble, member_paths, split_windows
from retcodec.pipeline.config import ensemble_members
from test_fitting import ln_cell_recording

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("block", [0, 3, -2, -1])
def test_validation_blocks_are_contiguous_and_never_share_a_frame_with_training(block):
    train, val = split_windows(1000, 100, 40, block)
    assert np.array_equal(val, np.arange(val[0], val[0] + 100))
    assert np.abs(train[:, None] - val[None]).min() > 40             # a window of 40 frames: no frame shared
    assert len(train) + len(val) + 80 >= 1000 - 1 and len(np.intersect1d(train, val)) == 0


def test_the_last_block_is_the_plain_fit_split_and_bad_blocks_are_refused():
    train, val = split_windows(1000, 100, 40)
    assert np.array_equal(val, np.arange(900, 1000)) and np.array_equal(train, np.arange(0, 860))
    for bad in (10, -11, 1.5, True):
        with pytest.raises(ConfigurationError, match="validation_block"):
            split_windows(1000, 100, 40, bad)


def test_ensemble_members_differ_in_seed_and_held_out_block_and_member_zero_is_the_plain_fit(tmp_path):
    rec = ln_cell_recording(n_frames=600)
    opts = dict(epochs=1, batch_size=64, history=10, chans=(4, 4), progress=False, recalibration_windows=256)
    from retcodec.fitting import recipe
    config = recipe("quick", seed=3, **{k: v for k, v in opts.items() if k != "progress"})
    fitted = fit_ensemble(rec, 2, config=config, out=tmp_path / "m.pt", progress=False)
    assert [p.name for p in member_paths(tmp_path / "m.pt", 2)] == ["m.pt", "m_m1.pt"]
    assert all(p.is_file() for p in member_paths(tmp_path / "m.pt", 2))
    (m0, h0), (m1, h1) = fitted
    assert m0.meta["fit"]["seed"] == 3 and m1.meta["fit"]["seed"] == 4
    v0, v1 = m0.meta["fit"]["validation_windows"], m1.meta["fit"]["validation_windows"]
    assert v1[1] < v0[0]                                        # member 1 holds out the block before the last
    plain, _ = fit(rec, config=config, progress=False)
    for a, b in zip(plain.state_dict().values(), m0.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigurationError, match="members"):
        fit_ensemble(rec, 0, config=config)
    reseeded = fit_ensemble(rec, 2, config=config, seed=7, progress=False)     # a seed keyword is the base seed
    assert [m.meta["fit"]["seed"] for m, _ in reseeded] == [7, 8]


def _result(pred: np.ndarray, se: float = 0.01) -> xr.Dataset:
    n, c = pred.shape
    return xr.Dataset({"predicted_effect": (("interneuron", "cell"), pred),
                       "effect_se": (("interneuron", "cell"), np.full_like(pred, se)),
                       "matched_layer": ("interneuron", ["conv0"] * n),
                       "matched_channel": ("interneuron", np.arange(n)),
                       "blind_spot": ("interneuron", np.zeros(n, bool)),
                       "poorly_fit": ("cell", np.zeros(c, bool))},
                      coords={"interneuron": [f"i{k}" for k in range(n)], "cell": np.arange(c)})


def _member(effect: np.ndarray, se: float = 0.01) -> xr.Dataset:
    n = effect.shape[0]
    return xr.Dataset({"effect": (("interneuron", "cell"), effect),
                       "effect_se": (("interneuron", "cell"), np.full_like(effect, se)),
                       "matched_unit": ("interneuron", [f"conv1/{k}" for k in range(n)]),
                       "heldout_correlation": ("interneuron", np.full(n, 0.5))},
                      coords={"interneuron": [f"i{k}" for k in range(n)]})


def test_combining_members_known_answer():
    primary = np.array([[0.30, -0.05, 0.50], [-0.40, 0.20, 0.02]])
    m1 = np.array([[0.50, 0.05, 0.40], [-0.20, 0.20, -0.02]])
    m2 = np.array([[0.40, -0.30, 0.60], [-0.30, 0.20, 0.03]])
    out = combine_members(_result(primary, se=0.03), [_member(m1, 0.03), _member(m2, 0.03)], names=["a", "b"],
                          center="mean")
    stack = np.stack([primary, m1, m2])
    np.testing.assert_allclose(out["predicted_effect"], stack.mean(0))
    np.testing.assert_allclose(out["model_spread"], stack.std(0, ddof=1))
    np.testing.assert_allclose(out["time_se"], 0.03)
    total = np.sqrt(0.03 ** 2 + stack.std(0, ddof=1) ** 2)
    np.testing.assert_allclose(out["effect_high"] - out["effect_low"], 2 * 1.959964 * total, rtol=1e-6)
    np.testing.assert_allclose(out["sign_agreement"], [[1, 2 / 3, 1], [1, 1, 2 / 3]])
    # stated: every model agrees on the sign and the mean |effect| >= 0.1
    np.testing.assert_array_equal(out["stated"], [[True, False, True], [True, True, False]])
    assert list(out["member_name"].values) == ["primary", "a", "b"]
    assert out["member_unit"].sel(member=2).values.tolist() == ["conv1/0", "conv1/1"]
    assert set(out["prediction_mapping"].values) == {"ensemble"}
    default = combine_members(_result(primary, se=0.03), [_member(m1, 0.03), _member(m2, 0.03)])
    np.testing.assert_allclose(default["predicted_effect"], primary)   # the default centre: the primary model
    np.testing.assert_allclose(default["model_spread"], out["model_spread"])


def test_blind_spots_and_poorly_fit_cells_are_never_stated():
    pred = np.full((2, 3), 0.5)
    res = _result(pred)
    res["blind_spot"] = ("interneuron", [True, False])
    res["poorly_fit"] = ("cell", [False, False, True])
    out = combine_members(res, [_member(pred)])
    np.testing.assert_array_equal(out["stated"], [[False, False, False], [True, True, False]])


def test_identical_members_reproduce_the_primary_with_no_spread():
    pred = np.array([[0.3, -0.2], [0.1, 0.05]])
    res = _result(pred)
    res = res.assign_coords(mapping=["direction", "channel"])
    res["mapping_effect"] = (("mapping", "interneuron", "cell"), np.stack([pred * 2, pred]))
    res["mapping_effect_se"] = (("mapping", "interneuron", "cell"), np.full((2, 2, 2), 0.01))
    res["predicted_effect"] = (("interneuron", "cell"), pred * 2)          # the direction mapping
    out = combine_members(res, [_member(pred), _member(pred)])
    np.testing.assert_allclose(out["predicted_effect"], pred)              # the ensemble of channel matches
    np.testing.assert_allclose(out["model_spread"], 0.0, atol=1e-12)
    assert list(out["mapping"].values) == ["ensemble", "direction", "channel"]
    np.testing.assert_allclose(out["mapping_effect"].sel(mapping="direction"), pred * 2)


def test_members_of_other_interneurons_are_refused():
    res = _result(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="member 1"):
        combine_members(res, [_member(np.zeros((3, 3)))])


def test_stated_pairs_are_scored_against_the_truth_and_the_baseline():
    pred = np.array([[0.5, -0.5, 0.3]])
    res = combine_members(_result(pred), [_member(pred)])
    res["true_effect"] = (("interneuron", "cell"), np.array([[0.4, 0.6, 0.05]]))
    res["baseline_prediction"] = (("interneuron", "cell"), np.array([[-0.1, 0.2, 0.1]]))
    scores = ensemble_scores(res, threshold=0.2)
    assert scores["n_stated_pairs"] == 3 and scores["n_stated_sign_pairs"] == 2
    assert scores["stated_sign_accuracy"] == 0.5 and scores["stated_baseline_sign_accuracy"] == 0.5


def test_members_are_found_beside_the_model_or_named(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    assert ensemble_members(model, None) == []
    (tmp_path / "model_m1.pt").write_bytes(b"x")
    (tmp_path / "model_m3.pt").write_bytes(b"x")                  # after a gap: not a member
    assert ensemble_members(model, None) == [tmp_path / "model_m1.pt"]
    assert ensemble_members(model, ()) == []
    with pytest.raises(MissingDataError, match="do not exist"):
        ensemble_members(model, (str(tmp_path / "nope.pt"),))
    with pytest.raises(ConfigurationError, match="model itself"):
        ensemble_members(model, (str(model),))


def test_run_with_an_identical_member_keeps_the_primary_prediction_and_reuses_earlier_stages(experiment, tmp_path):
    from conftest import QUICK
    from retcodec.pipeline.run import run

    folder = tmp_path / "models"
    folder.mkdir()
    model = shutil.copy(experiment["model"], folder / "model.pt")
    kw = dict(out=str(tmp_path / "results"), interneurons=[str(experiment["paths"]["bipolars"])], **QUICK)
    run(model, experiment["paths"]["naturalscene"], **kw)
    alone = xr.open_dataset(tmp_path / "results" / "experiments.nc")
    assert "member_effect" not in alone
    shutil.copy(experiment["model"], folder / "model_m1.pt")          # found beside the model
    again = run(model, experiment["paths"]["naturalscene"], **kw)
    assert any(line.startswith("[contributions] skipped") for line in again["log"])
    assert not any(line.startswith("[experiments] skipped") for line in again["log"])
    ds = xr.open_dataset(tmp_path / "results" / "experiments.nc")
    assert ds.sizes["member"] == 2 and list(ds["member_name"].values) == ["primary", "model_m1.pt"]
    np.testing.assert_allclose(ds["predicted_effect"], alone["mapping_effect"].sel(mapping="channel"),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ds["model_spread"], 0.0, atol=1e-7)
    np.testing.assert_array_equal(ds["member_unit"].sel(member=0), ds["member_unit"].sel(member=1))
    assert (tmp_path / "results" / "figures" / "ensemble.png").is_file()
    report = (tmp_path / "results" / "report.html").read_text()
    assert "Model uncertainty" in report and "an ensemble of 2 models" in report


def test_the_center_can_be_the_median_or_the_primary_and_the_spread_stays_the_models():
    primary = np.array([[0.30, -0.05]])
    m1, m2 = np.array([[0.50, 0.05]]), np.array([[0.40, -0.30]])
    members = [_member(m1), _member(m2)]
    median = combine_members(_result(primary), members, center="median")
    np.testing.assert_allclose(median["predicted_effect"], [[0.40, -0.05]])
    first = combine_members(_result(primary), members, center="primary")
    np.testing.assert_allclose(first["predicted_effect"], primary)
    np.testing.assert_allclose(first["model_spread"], median["model_spread"])
    np.testing.assert_allclose(first["sign_agreement"], [[1, 2 / 3]])
    assert first.attrs["ensemble_center"] == "primary"
    with pytest.raises(ConfigurationError, match="center"):
        combine_members(_result(primary), members, center="mode")


def test_the_ensemble_figure_draws_both_panels_with_the_truth_and_refuses_a_single_model():
    from retcodec.report.figures import plot_ensemble_predictions

    pred = np.array([[0.5, -0.3, 0.05], [-0.9, 0.2, 0.0]])
    out = combine_members(_result(pred), [_member(pred * 1.1), _member(pred * 0.8)])
    assert len(plot_ensemble_predictions(out).axes) == 1                 # no truth: the models only
    out["true_effect"] = (("interneuron", "cell"), np.array([[0.4, -0.2, 8.0], [-0.95, np.nan, 0.0]]))
    fig = plot_ensemble_predictions(out)
    assert len(fig.axes) == 2 and fig.axes[1].get_xscale() == "symlog"
    assert "3 models: 4 of 6 pairs stated" == fig.axes[0].get_title()
    with pytest.raises(ConfigurationError, match="member_effect"):
        plot_ensemble_predictions(_result(pred))
