"""Tests of the modes' robustness sweep, its figure and the report's modes summary."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr

from retcodec.errors import ConfigurationError
from retcodec.modes import ContributionModes, make_combinatorial_modes
from retcodec.modes.sweep import ROBUST_STABILITY, robustness_sweep, sweep_verdict
from retcodec.report.fig_modes import plot_mode_sweep
from retcodec.report.mode_summary import multi_channel_share, robustness_html, robustness_sentence

matplotlib.use("Agg")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sweep() -> xr.Dataset:
    X, _, _ = make_combinatorial_modes(800, n_channels=4, n_modes=4, inhibitory=False, random_state=0)
    grid = {"threshold": (0.9, 0.7), "random_state": (0, 1)}
    return robustness_sweep(ContributionModes(max_epochs=15, random_state=0), X, grid=grid)


def test_sweep_compares_every_setting_with_the_default(sweep):
    assert sweep["parameter"].values.tolist() == ["threshold", "threshold", "random_state", "random_state"]
    assert sweep["value"].values.tolist() == ["0.9", "0.7", "0", "1"]
    np.testing.assert_array_equal(sweep["is_default"].values, [True, False, True, False])
    default = sweep.where(sweep["is_default"], drop=True)
    np.testing.assert_allclose(default["stability"].values, 1.0)          # the default against itself
    np.testing.assert_allclose(default["loading_correlation"].values, 1.0)
    assert ((sweep["stability"] >= 0) & (sweep["stability"] <= 1 + 1e-12)).all()
    assert (sweep["n_modes"] >= 1).all() and (sweep["l0"] > 0).all()
    assert json.loads(sweep.attrs["default"]) == {"threshold": 0.9, "random_state": 0}


def test_verdict_follows_the_stated_rule(sweep):
    verdict = sweep_verdict(sweep)
    assert set(verdict) == {"threshold", "random_state"}
    default_r2 = float(sweep["r2"][0])
    for name, v in verdict.items():
        part = sweep.where(sweep["parameter"] == name, drop=True)
        expected = bool((part["stability"] >= ROBUST_STABILITY).all() and (part["r2"] >= default_r2 - 0.02).all())
        assert v["robust"] == expected and v["worst_stability"] == pytest.approx(float(part["stability"].min()))
    assert json.loads(sweep.attrs["verdict"]) == verdict
    text = robustness_sentence(sweep)
    ds = xr.Dataset(attrs={"stability": 1.0, "stability_seeds": "[0, 1]"})
    assert robustness_sentence(sweep) in robustness_html({"c": ds}, {"c": sweep}, ["c"], ROBUST_STABILITY, 0.02)
    assert ("robust to" in text) and (("threshold" in text) or ("seed" in text))


def test_sweep_refuses_unknown_parameters():
    with pytest.raises(ConfigurationError, match="cannot sweep \\['colour'\\]"):
        robustness_sweep(ContributionModes(), np.ones((20, 3)), grid={"colour": (1, 2)})


def test_sweep_figure_has_a_panel_per_metric_and_parameter(sweep):
    fig = plot_mode_sweep({"conv0": sweep, "conv1": sweep}, robust_stability=ROBUST_STABILITY)
    assert len(fig.axes) == 4 * 2
    assert [t.get_text() for t in fig.axes[6].get_xticklabels()] == ["0.9", "0.7"]
    with pytest.raises(ConfigurationError):
        plot_mode_sweep({})


def test_multi_channel_share_known_answer():
    modes = xr.DataArray(np.array([[[0, 1.0], [0, 0.0], [0, 0]],        # one channel: not multi
                                   [[0, 0.5], [0, 0.5], [0, 0]],        # 50/50: multi
                                   [[-0.1, 0.75], [0, 0.15], [0, 0]]]),  # 0.85 of the weight on channel 0
                         dims=("mode", "channel", "sign"), coords={"sign": ["neg", "pos"]})
    assert multi_channel_share(modes) == pytest.approx(1 / 3)


def test_report_says_how_to_run_the_sweep_when_absent():
    ds = xr.Dataset(attrs={"stability": 0.99, "stability_seeds": "[0, 1, 2, 3, 4]"})
    text = robustness_html({"conv0": ds}, {}, ["conv0"], ROBUST_STABILITY, 0.02)
    assert "0.990 over 5 seeds" in text and "--mode-sweep" in text
