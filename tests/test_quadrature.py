"""Error-controlled path quadrature (``steps="auto"``): known answers, completeness, reuse of points."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retcodec.classifier import load_classifier
from retcodec.engine.contributions import contributions
from retcodec.engine.quadrature import AUTO_VARIABLES, INITIAL_STEPS, adaptive_trapezoid
from retcodec.engine.targets import SumOfRates
from retcodec.errors import ConfigurationError
from test_contributions import IMG, tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the rule alone
class SeparablePath:
    """``h_u(α) = α x_u``, ``S = Σ_u tanh(k h_u)``: ``C_u = tanh(k x_u)`` exactly. Counts evaluations."""

    def __init__(self, x: np.ndarray, k: float = 30.0) -> None:
        self.x = torch.as_tensor(x, dtype=torch.float64)
        self.k = k
        self.requests: list[tuple[int, float]] = []
        self.calls = 0

    def __call__(self, index: np.ndarray, alpha: np.ndarray):
        self.calls += 1
        self.requests += list(zip(index.tolist(), alpha.tolist()))
        h = torch.as_tensor(alpha)[:, None] * self.x[torch.as_tensor(index)]
        s = torch.tanh(self.k * h).sum(1)
        g = self.k / torch.cosh(self.k * h) ** 2
        return s, {"h": h}, {"h": g}

    def exact(self) -> np.ndarray:
        return np.tanh(self.k * self.x.numpy())


@pytest.fixture
def separable() -> SeparablePath:
    return SeparablePath(np.random.default_rng(1).uniform(0.05, 1.0, (5, 7)))


def test_adaptive_rule_meets_the_tolerance_and_the_known_answer(separable):
    result = adaptive_trapezoid(separable, 5, ["h"], tol=1e-3, max_steps=512)
    c = result.contributions["h"].numpy()
    exact = separable.exact()
    delta = exact.sum(1)
    assert np.allclose(result.delta, delta)
    assert np.all(result.error <= 1e-3)
    assert np.allclose(np.abs(c.sum(1) - delta) / np.abs(delta), result.error)
    assert np.abs(c - exact).max() <= 5e-3 * np.abs(exact).max()      # each unit, not only the sum
    assert np.all(result.steps > INITIAL_STEPS)


def test_adaptive_rule_reuses_every_point(separable):
    result = adaptive_trapezoid(separable, 5, ["h"], tol=1e-3, max_steps=512, chunk=16)
    requested = separable.requests
    assert len(requested) == len(set(requested))                     # no point evaluated twice
    assert result.evaluations == len(requested) == 1 + int(result.steps.sum())   # one shared baseline
    assert sum(1 for _, a in requested if a == 0.0) == 1
    assert separable.calls >= int(np.ceil(len(requested) / 16))


def test_adaptive_rule_stops_at_the_step_cap(separable):
    result = adaptive_trapezoid(separable, 5, ["h"], tol=1e-12, max_steps=11)
    assert np.all(result.steps == 11)
    assert np.all(result.error > 1e-12)


# --------------------------------------------------------------------------- in the engine
def small_classifier(seed: int = 0):
    """Two ReLU convolutions and two dense layers with random weights: a kinked path integrand."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for m in net:
            if getattr(m, "bias", None) is not None:
                m.bias.normal_(0, 0.5)
    return load_classifier(net, ["1", "3"])


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return 2 * np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)


def relative_errors(tree) -> np.ndarray:
    """``(layer, time)`` ``|Σ C − ΔS| / |ΔS|`` from the tree's residuals."""
    delta = tree["target"].values.astype(np.float64) - tree["target_baseline"].values
    return np.stack([np.abs(tree[n]["completeness_residual"].values) / np.abs(delta)
                     for n in tree.children])


def test_auto_is_complete_where_fixed_steps_are_not(images):
    model = small_classifier()
    kw = dict(layers=["1", "3"], target="top_logit", progress=False, fast=False)
    auto = contributions(model, images, steps="auto", tol=1e-3, **kw)
    assert relative_errors(auto).max() <= 1e-3 * 1.01
    steps = auto["quadrature_steps"]
    assert steps.dims == ("time",) and steps.sizes["time"] == len(images)
    assert np.allclose(auto["quadrature_error"].values, relative_errors(auto).max(0), rtol=1e-2, atol=1e-6)
    fixed = contributions(model, images, steps=int(steps.max()), **kw)   # more points for every image
    assert relative_errors(fixed).max() > 10 * 1e-3
    assert "adaptive trapezoid" in auto.attrs["quadrature"] and auto.attrs["steps"] == "auto"


def test_auto_capped_at_the_initial_grid_is_the_fixed_rule(images):
    model = small_classifier()
    kw = dict(layers=["1", "3"], target="top_logit", progress=False, fast=False)
    fixed = contributions(model, images, steps=INITIAL_STEPS, **kw)
    auto = contributions(model, images, steps="auto", max_steps=INITIAL_STEPS, **kw)
    assert np.all(auto["quadrature_steps"].values == INITIAL_STEPS)
    for n in ("1", "3"):
        np.testing.assert_allclose(auto[n]["contribution"].values, fixed[n]["contribution"].values,
                                   rtol=1e-4, atol=1e-5 * np.abs(fixed[n]["contribution"].values).max())
    assert not set(AUTO_VARIABLES) & set(fixed.data_vars)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_on_a_retina_model(fast):
    model = tiny_model()
    x = np.random.default_rng(7).standard_normal((5, *IMG)).astype(np.float32)
    tree = contributions(model, x, layers=("conv0", "conv1"), steps="auto", target=SumOfRates(),
                         progress=False, fast=fast)
    assert relative_errors(tree).max() <= 0.01 * 1.01
    assert tree["quadrature_steps"].values.min() >= INITIAL_STEPS
    assert (tree.attrs["computation"].startswith("fast")) == fast


def test_auto_fast_and_plain_paths_agree():
    model = tiny_model()
    x = np.random.default_rng(3).standard_normal((4, *IMG)).astype(np.float32)
    kw = dict(layers=("conv0", "conv1"), steps="auto", target=SumOfRates(), progress=False)
    fast, plain = contributions(model, x, fast=True, **kw), contributions(model, x, fast=False, **kw)
    np.testing.assert_array_equal(fast["quadrature_steps"].values, plain["quadrature_steps"].values)
    for n in ("conv0", "conv1"):
        a, b = fast[n]["contribution"].values, plain[n]["contribution"].values
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.parametrize("kw, match", [
    (dict(quadrature="gauss-legendre"), "trapezoid"),
    (dict(method="actgrad"), "method"),
    (dict(tol=0.0), "tol"),
    (dict(tol=1.5), "tol"),
    (dict(max_steps=0), "max_steps"),
])
def test_bad_auto_settings_raise(images, kw, match):
    with pytest.raises(ConfigurationError, match=match):
        contributions(small_classifier(), images, layers=["1"], steps="auto", target="top_logit",
                      progress=False, **kw)
