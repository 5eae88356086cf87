"""Silencing channels (retcodec.silence, engine.perturb) against independently rebuilt models."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import retcodec
from retcodec.engine.perturb import (Silencer, curve_auc, dose_sets, silence, specificity)
from retcodec.errors import ConfigurationError, RetcodecError
from retcodec.io.architectures import AbsBatchNorm, build_model

IMG = (6, 24, 24)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(model_type: str = "VaryModel", seed: int = 0, **hyps) -> nn.Module:
    """Random weights, batch-norm statistics near the data's, random scales and shifts."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hyps = dict(n_units=5, centers=rng.integers(10, 14, (5, 2)), img_shape=list(IMG),
                ksizes=[7, 5, 5], chans=[4, 3], **hyps)
    model = build_model(model_type, hyps).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        h = torch.as_tensor(rng.standard_normal((32, *IMG)).astype(np.float32))
        for module in model.sequential:
            if isinstance(module, (AbsBatchNorm, nn.BatchNorm1d)):
                dims = [0] + list(range(2, h.ndim))
                n = h.shape[1]
                module.running_mean.copy_(h.mean(dims))
                module.running_var.copy_(h.var(dims) * (0.5 + torch.rand(n, generator=g)))
                weight = module.scale if isinstance(module, AbsBatchNorm) else module.weight
                bias = module.shift if isinstance(module, AbsBatchNorm) else module.bias
                weight.copy_(torch.rand(n, generator=g) + 0.5)
                bias.copy_(0.5 * torch.randn(n, generator=g))
            h = module(h)
    model.meta = {"cells": [3, 4, 6, 8, 9]}
    return model.requires_grad_(False)


class ChannelMask(nn.Module):
    """Zeroes channels of (B, C, ...) (the independent rebuild)."""

    def __init__(self, channels, n: int) -> None:
        super().__init__()
        self.register_buffer("m", torch.ones(n))
        self.m[list(channels)] = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.m.to(h.dtype).view(1, -1, *([1] * (h.ndim - 2)))


def rebuilt(model: nn.Module, spec: dict) -> nn.Sequential:
    """A new Sequential with a ChannelMask inserted after the ReLU of each silenced layer."""
    seq = copy.deepcopy(model.sequential)
    relus = [i for i, m in enumerate(seq) if isinstance(m, nn.ReLU)]
    mods = []
    for i, m in enumerate(seq):
        mods.append(m)
        for layer, chans in spec.items():
            if i == relus[int(layer[-1])]:
                mods.append(ChannelMask(chans, model.chans[int(layer[-1])]))
    return nn.Sequential(*mods).eval()


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((20, *IMG)).astype(np.float32)


SPECS = [{"conv0": [1]}, {"conv1": [0, 2]}, {"conv0": [0, 3], "conv1": [1]}, {"conv1": [0, 1, 2]},
         {"conv0": []}]


@pytest.mark.parametrize("model_type,hyps", [("VaryModel", {}), ("VaryModel", {"stackconvs": False}),
                                             ("BNCNN", {})])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_silence_matches_a_rebuilt_model(windows, model_type, hyps, dtype, tol):
    model = tiny_model(model_type, **hyps).to(dtype)
    x = torch.as_tensor(windows).to(dtype)
    for spec in SPECS:
        with torch.no_grad():
            expected = rebuilt(model, spec)(x).numpy()
        got = silence(model, windows, spec).values
        assert np.abs(got - expected).max() <= tol * np.abs(expected).max(), spec


def test_one_silencer_many_sets_equals_separate_calls(windows):
    model = tiny_model()
    engine = Silencer(model, windows, ["conv0", "conv1"], index=np.arange(0, 20, 2), batch_size=3)
    x = torch.as_tensor(windows[::2]).double()
    m64 = copy.deepcopy(model).double()
    for spec in SPECS + [{"conv0": [2]}, {"conv1": [2]}]:
        with torch.no_grad():
            expected = rebuilt(m64, spec)(x).numpy()
        got = engine.rates(spec)
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), spec
    with torch.no_grad():
        assert np.allclose(engine.intact(), model(torch.as_tensor(windows[::2])).numpy(), rtol=1e-5)


def test_mean_clamps_channels_to_their_mean_map(windows):
    model = tiny_model().double()
    x = torch.as_tensor(windows).double()
    seq = model.sequential
    relu0, relu1 = [i for i, m in enumerate(seq) if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        h0 = seq[:relu0 + 1](x)
        h0c = h0.clone()
        h0c[:, [1, 2]] = h0.mean(0)[[1, 2]]
        h1 = seq[relu0 + 1:relu1 + 1](h0c)
        h1c = h1.clone()
        h1c[:, [0]] = seq[relu0 + 1:relu1 + 1](h0).mean(0)[[0]]     # the intact mean map
        expected = seq[relu1 + 1:](h1c).numpy()
    got = silence(model, windows, {"conv0": [1, 2], "conv1": [0]}, how="mean").values
    assert np.abs(got - expected).max() <= 1e-10 * np.abs(expected).max()


def test_keep_silences_every_other_channel(windows):
    model = tiny_model()
    kept = silence(model, windows, {"conv0": [1]}, keep=True)
    direct = silence(model, windows, {"conv0": [0, 2, 3]})
    np.testing.assert_allclose(kept.values, direct.values, rtol=1e-6)
    assert kept.attrs["keep"] == 1 and kept.attrs["how"] == "zero"


def test_rates_are_aligned_like_predict(windows):
    model = tiny_model()
    pred = retcodec.predict(model, windows)
    got = silence(model, windows, {"conv1": []})
    assert got.dims == ("time", "cell")
    np.testing.assert_array_equal(got["cell"].values, pred["cell"].values)
    np.testing.assert_array_equal(got["time"].values, pred["time"].values)
    np.testing.assert_allclose(got.values, pred.values, rtol=1e-6)
    da = xr.DataArray(windows, dims=("time", "lag", "y", "x"), coords={"time": np.arange(20) * 0.01})
    assert np.array_equal(silence(model, da, {"conv0": [0]})["time"].values, da["time"].values)


def test_model_is_left_as_it_was(windows):
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    silence(model, windows, {"conv0": [0], "conv1": [1]}, how="mean")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_any_module_by_dotted_path():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU())
            self.head = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(5, 2, 8, 8)
    got = silence(net, x.numpy(), {"body.1": [0, 3]}).values
    with torch.no_grad():
        h = net.body(x)
        h[:, [0, 3]] = 0
        expected = net.head(h.flatten(1)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    mean = silence(net, x.numpy(), {"body.1": [2]}, how="mean").values
    with torch.no_grad():
        h = net.body(x)
        h[:, 2] = h[:, 2].mean(0)
        np.testing.assert_allclose(mean, net.head(h.flatten(1)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec,how,message", [
    ({"conv7": [0]}, "zero", "unknown layer 'conv7'"),
    ({"conv0": [4]}, "zero", "out of range: it has channels 0..3"),
    ({"conv1": [-1]}, "zero", "out of range"),
    ({"conv2": [0]}, "zero", "not a hidden layer"),
    ({"conv0": [0]}, "median", "how must be one of"),
])
def test_bad_requests_raise_clear_errors(windows, spec, how, message):
    with pytest.raises(RetcodecError, match=message):
        silence(tiny_model(), windows, spec, how=how)
    assert issubclass(ConfigurationError, RetcodecError)


def test_dose_sets_auc_and_specificity_known_answers():
    sets = dose_sets([5, 1, 0, 4], [0.0, 0.25, 0.5, 1.0])
    assert [s.tolist() for s in sets] == [[], [5], [5, 1], [5, 1, 0, 4]]
    f = np.array([0.0, 0.5, 1.0])
    assert curve_auc(f, np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert specificity(0.2, 0.7, "ablate") == pytest.approx(0.5)
    assert specificity(0.7, 0.2, "preserve") == pytest.approx(0.5)
    with pytest.raises(ConfigurationError, match="fractions must increase"):
        dose_sets([0, 1], [0.5, 0.2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu(windows):
    model = tiny_model()
    spec = {"conv0": [1], "conv1": [0]}
    cpu = silence(model, windows, spec).values
    gpu = silence(model, windows, spec, device="cuda").values
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-6)
    assert next(model.parameters()).device.type == "cpu"
