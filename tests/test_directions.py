"""Interneurons as directions: projection silencing (engine.directions), the non-negative fit and
the blind-spot rule (analysis.interneuron_directions), and the direction experiments."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from retcodec.analysis.experiments import experiments
from retcodec.analysis.interneuron_directions import blind_spots, fit_nonnegative, local_activity
from retcodec.engine.directions import direction_rates, project_out
from retcodec.engine.perturb import Silencer
from retcodec.errors import ConfigurationError, ShapeError
from test_perturb import IMG, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


class Planted(nn.Module):
    """``rate = sum over positions of (planted . h) + (other . h)``, ``h = ReLU(conv(x))`` (3 channels).

    ``planted`` and ``other`` are orthogonal, so projecting ``planted`` out of ``h``
    must leave exactly ``sum (other . h)``.
    """

    def __init__(self, planted: np.ndarray, other: np.ndarray) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3)
        self.relu = nn.ReLU()
        self.register_buffer("planted", torch.as_tensor(planted, dtype=torch.float32))
        self.register_buffer("other", torch.as_tensor(other, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        return torch.stack([(h * self.planted.view(1, -1, 1, 1)).sum((1, 2, 3)),
                            (h * self.other.view(1, -1, 1, 1)).sum((1, 2, 3))], dim=1)


def test_projecting_a_planted_direction_removes_exactly_its_effect():
    planted, other = np.array([1.0, 2.0, 0.0]), np.array([2.0, -1.0, 3.0])      # orthogonal
    model = Planted(planted, other)
    x = torch.randn(30, 1, 6, 6)
    silencer = Silencer(model, x, ["relu"])                # any module, by dotted name (hooks)
    intact = silencer.intact()
    rates = direction_rates(silencer, {"relu": 5 * planted})          # the scale of w does not matter
    np.testing.assert_allclose(rates[:, 0], 0.0, atol=1e-4)         # the planted read-out is gone
    np.testing.assert_allclose(rates[:, 1], intact[:, 1], rtol=1e-5, atol=1e-4)   # the rest untouched
    nothing = direction_rates(silencer, {"relu": np.zeros(3)})
    np.testing.assert_array_equal(nothing, intact)


def test_project_out_known_answer_and_loadings():
    h = torch.tensor([[[2.0]], [[0.0]]]).unsqueeze(0)            # (1, 2 channels, 1, 1)
    w = torch.tensor([1.0, 1.0])
    np.testing.assert_allclose(project_out(h, w).flatten().numpy(), [1.0, -1.0])
    np.testing.assert_allclose(project_out(h, w, loadings=torch.tensor([0.5, 0.0])).flatten().numpy(),
                               [1.0, 0.0])


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(5).standard_normal((24, *IMG)).astype(np.float32)


def test_a_one_channel_direction_is_whole_channel_silencing(model, windows):
    silencer = Silencer(model, windows, ["conv0", "conv1"])           # staged (sequential) path
    both = silencer.rates({"conv0": [1], "conv1": [2]})
    w0, w1 = np.eye(4)[1] * 3.0, np.eye(3)[2] * 0.5
    np.testing.assert_allclose(direction_rates(silencer, {"conv0": w0, "conv1": w1}), both, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(direction_rates(silencer, {"conv1": w1}), silencer.rates({"conv1": [2]}),
                               rtol=1e-4, atol=1e-5)


def test_staged_and_hooked_paths_agree(model, windows):
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    staged = Silencer(model, windows, ["conv0"])
    relu = staged.points["conv0"].index
    hooked = Silencer(Wrapped().eval(), windows, [f"inner.sequential.{relu}"])
    assert staged.staged and not hooked.staged
    w = np.array([0.3, 1.0, 0.0, 0.7])
    np.testing.assert_allclose(direction_rates(hooked, {f"inner.sequential.{relu}": w}),
                               direction_rates(staged, {"conv0": w}), rtol=1e-4, atol=1e-5)


def test_direction_errors(model, windows):
    silencer = Silencer(model, windows, ["conv0"])
    with pytest.raises(ShapeError, match="has 4 channels"):
        direction_rates(silencer, {"conv0": np.ones(3)})
    with pytest.raises(ConfigurationError, match="silencing is set up for"):
        direction_rates(silencer, {"conv1": np.ones(3)})
    with pytest.raises(ConfigurationError, match="NaN"):
        direction_rates(silencer, {"conv0": np.array([1.0, np.nan, 0, 0])})


def test_fit_nonnegative_recovers_planted_weights_and_stays_non_negative():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 4)) * [1.0, 3.0, 0.5, 2.0] + 5.0
    y = 2.0 * X[:, 0] + 0.5 * X[:, 2] - 1.0 * X[:, 3] + 0.01 * rng.standard_normal(4000)
    w = fit_nonnegative(X, y, alpha=1e-6)[:, 0]
    assert (w >= 0).all() and w[3] == 0 and w[1] < 0.05       # the negative weight is not allowed
    np.testing.assert_allclose(w[[0, 2]], [2.0, 0.5], atol=0.1)
    const = np.c_[X[:, :1], np.ones(len(X))]                   # a constant feature gets weight 0
    assert fit_nonnegative(const, y)[1, 0] == 0


def test_blind_spot_rule():
    held = np.array([0.5, 0.15, 0.25, 0.4, np.nan])
    chance = np.array([0.05, 0.05, 0.05, 0.45, 0.05])
    np.testing.assert_array_equal(blind_spots(held, chance, min_r=0.2), [False, True, False, True, True])
    np.testing.assert_array_equal(blind_spots(held, chance, min_r=0.3), [False, True, True, True, True])


def test_local_activity_is_the_mean_of_the_square_around_each_centre(model, windows):
    got = local_activity(model, windows, ["conv0"], np.array([[12.0, 12.0], [3.0, 20.0]]), radii=(0, 1))
    silencer = Silencer(model, windows, ["conv0"])
    store = {}
    handle = silencer.points["conv0"].module.register_forward_hook(lambda m, a, o: store.setdefault("h", o))
    with torch.inference_mode():
        model(torch.as_tensor(windows))
    handle.remove()
    h = store["h"].numpy()                                    # (time, 4, 18, 18): offset (24 - 18) / 2 = 3
    assert h.shape[1:] == (4, 18, 18)
    np.testing.assert_allclose(got[("conv0", 0)][:, 0], h[:, :, 9, 9], rtol=1e-5)
    np.testing.assert_allclose(got[("conv0", 1)][:, 0], h[:, :, 8:11, 8:11].mean((-2, -1)), rtol=1e-5)
    np.testing.assert_allclose(got[("conv0", 1)][:, 1], h[:, :, 0:3, 15:18].mean((-2, -1)), rtol=1e-5)  # clipped


def _directions(weights: np.ndarray, heldout: np.ndarray, ids: list[str]) -> xr.Dataset:
    units = [f"conv0/{c}" for c in range(4)] + [f"conv1/{c}" for c in range(3)]
    return xr.Dataset({"direction": (("interneuron", "unit"), weights),
                       "heldout_correlation": ("interneuron", heldout),
                       "chance_p95": ("interneuron", np.full(len(ids), 0.05))},
                      coords={"interneuron": ids, "unit": units,
                              "unit_layer": ("unit", [u.split("/")[0] for u in units]),
                              "unit_channel": ("unit", [int(u.split("/")[1]) for u in units])})


def test_experiments_with_directions_keep_the_channel_control(model, windows):
    match = xr.Dataset({"best_layer": ("interneuron", np.array(["conv0", "conv1"])),
                        "best_channel": ("interneuron", np.array([2, 1])),
                        "heldout_correlation": ("interneuron", np.array([0.8, 0.6])),
                        "chance_p95": ("interneuron", np.array([0.1, 0.1]))},
                       coords={"interneuron": ["a/0", "a/1"], "cell_type": ("interneuron", ["on", "off"])})
    w = np.zeros((2, 7))
    w[0, 2] = 1.0                                       # interneuron 0: exactly its best channel
    w[1, [0, 4]] = [0.5, 1.0]                           # interneuron 1: a direction over both layers
    fit = xr.Dataset({"correlation": ("cell", np.full(5, 0.8)), "feve": ("cell", [0.9, 0.1, 0.8, 0.7, 0.5])})
    directions = _directions(w, np.array([0.7, 0.1]), ["a/0", "a/1"])
    ds = experiments(model, windows, interneurons=match, max_windows=None, n_blocks=4,
                     directions=directions, fit_quality=fit, mapping="direction")
    effect = ds["mapping_effect"].transpose("mapping", "interneuron", "cell")
    assert list(ds["mapping"].values) == ["direction", "channel"]
    np.testing.assert_allclose(effect.values[0, 0], effect.values[1, 0], atol=1e-5)   # same silencing
    np.testing.assert_allclose(ds["predicted_effect"].values, effect.values[0])
    silencer = Silencer(model, windows, ["conv0", "conv1"])
    intact = silencer.intact().astype(float)
    rates = direction_rates(silencer, {"conv0": w[1, :4], "conv1": w[1, 4:]}).astype(float)
    np.testing.assert_allclose(ds["predicted_effect"].values[1], rates.mean(0) / intact.mean(0) - 1, rtol=1e-4)
    np.testing.assert_array_equal(ds["blind_spot"].values, [False, True])
    np.testing.assert_array_equal(ds["poorly_fit"].values, [False, True, False, False, False])
    assert list(ds["prediction_mapping"].values) == ["direction", "direction"]
    # "heldout": each interneuron by the mapping that predicts its recording better on held-out data
    chosen = experiments(model, windows, interneurons=match, max_windows=None, n_blocks=4, mapping="heldout",
                         directions=directions.assign(heldout_correlation=("interneuron", [0.7, 0.65])))
    assert list(chosen["prediction_mapping"].values) == ["channel", "direction"]   # 0.7 < 0.8; 0.65 > 0.6
    np.testing.assert_allclose(chosen["predicted_effect"].values[0], effect.values[1, 0])
    np.testing.assert_allclose(chosen["match_correlation"].values, [0.8, 0.65])
    default = experiments(model, windows, interneurons=match, max_windows=None, n_blocks=4, directions=directions)
    assert list(default["prediction_mapping"].values) == ["channel", "channel"]
    np.testing.assert_allclose(default["predicted_effect"].values, effect.values[1])
    # without directions the channel match decides the blind spots
    alone = experiments(model, windows, interneurons=match.assign(heldout_correlation=("interneuron", [0.8, 0.05])),
                        max_windows=None, n_blocks=4)
    assert list(alone["mapping"].values) == ["channel"]
    np.testing.assert_array_equal(alone["blind_spot"].values, [False, True])     # 0.05 <= chance 0.1
    with pytest.raises(ConfigurationError, match="mapping must be one of"):
        experiments(model, windows, interneurons=match, max_windows=None, n_blocks=4,
                    directions=directions, mapping="best")
    with pytest.raises(ConfigurationError, match="different interneurons"):
        experiments(model, windows, interneurons=match, max_windows=None, n_blocks=4,
                    directions=_directions(w, np.array([0.7, 0.1]), ["a/0", "b/1"]))


def test_class_consistent_directions_keep_channels_acting_like_the_class():
    from retcodec.analysis.silencing_effects import consistent_directions

    w = np.array([[1.0, 1.0, 1.0, 0, 0, 0, 0], [1.0, 1.0, 0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0, 0]])
    d = _directions(w, np.full(3, 0.6), ["bip/0", "ama/0", "ama/1"])
    units = list(d["unit"].values)
    single = np.zeros((7, 2))
    single[0], single[1], single[2] = [-0.5, -0.1], [0.4, 0.2], [-0.3, 0.1]   # net: -, +, -
    got = consistent_directions(d, single, units, np.array(["bipolar", "amacrine", "amacrine"]))
    np.testing.assert_array_equal(got["direction"].values[0], [1, 0, 1, 0, 0, 0, 0])   # excitatory only
    np.testing.assert_array_equal(got["direction"].values[1], [0, 1, 0, 0, 0, 0, 0])   # inhibitory only
    np.testing.assert_array_equal(got["direction"].values[2], w[2])          # nothing left: kept whole
    assert list(got["weights_rule"].values) == ["excitatory channels", "inhibitory channels", "all channels"]
