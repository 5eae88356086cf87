"""The public API: top-level names, any nn.Module by dotted layer path, one vocabulary."""
from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import torch
from torch import nn

import retcodec as rc
from retcodec.errors import ConfigurationError


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(5 * 4 * 4, 3))


def test_top_level_names_resolve():
    for name in rc.__all__:
        assert getattr(rc, name) is not None, name
    for name in ("load_model", "load_recording", "windows", "predict", "contributions", "ContributionModes",
                 "cell_types", "irf", "rank1", "run", "fit_layer", "load_modes"):
        assert name in rc.__all__


def test_every_module_declares_all():
    import pkgutil
    missing = []
    for info in pkgutil.walk_packages(rc.__path__, "retcodec."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if not info.ispkg and not hasattr(module, "__all__"):
            missing.append(info.name)
    assert not missing, missing


def test_contributions_on_a_plain_sequential_by_dotted_name():
    net = _net()
    x = torch.randn(5, 3, 8, 8)
    tree = rc.contributions(net, x, layers=("2",), target="sum_of_rates", steps=64)
    c = tree["2"]["contribution"]
    assert c.dims == ("time", "channel", "sign") and c.shape == (5, 5, 2)
    # completeness: the contributions of layer 2 sum to the change of the target
    total = c.sum(("channel", "sign")).values
    delta = (tree["target"] - tree["target_baseline"]).values
    np.testing.assert_allclose(total, delta, rtol=0.02, atol=1e-4)
    with pytest.raises(ConfigurationError, match="dotted module path"):
        rc.contributions(net, x, layers=("9",), target="sum_of_rates")


def test_seed_is_a_deprecated_alias_of_random_state():
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(DeprecationWarning, match="random_state"):
        a = rc.contributions(net, x, layers=("0",), target="sum_of_rates", method="smoothgrad",
                             n_samples=3, seed=4)
    b = rc.contributions(net, x, layers=("0",), target="sum_of_rates", method="smoothgrad",
                         n_samples=3, random_state=4)
    np.testing.assert_array_equal(a["0"]["contribution"].values, b["0"]["contribution"].values)
    with pytest.raises(ConfigurationError, match="random_state only"):
        rc.contributions(net, x, layers=("0",), target="sum_of_rates", seed=1, random_state=1)


@pytest.mark.parametrize("func", ["contributions", "irf", "match_interneurons"])
def test_library_functions_default_to_quiet_and_cpu(func):
    params = inspect.signature(inspect.unwrap(getattr(rc, func))).parameters
    if "progress" in params:
        assert params["progress"].default is False
    if "device" in params:
        assert params["device"].default == "cpu"
