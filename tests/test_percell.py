"""Per-cell contributions: one batched vector-Jacobian product equals one CellRate run per cell."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from retcodec.io.architectures import AbsBatchNorm, build_model
from retcodec.engine.contributions import contributions
from retcodec.engine.percell import per_cell_contributions
from retcodec.engine.targets import CellRate
from retcodec.errors import ConfigurationError, ShapeError

IMG = (8, 24, 24)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(n_cells: int = 4, seed: int = 0) -> nn.Module:
    """A small published-layout model with batch-norm statistics near those of its inputs."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model("VaryModel", dict(n_units=n_cells, centers=rng.integers(10, 14, (n_cells, 2)),
                                          img_shape=list(IMG), ksizes=[7, 5, 5], chans=[3, 3]))
    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        h = torch.as_tensor(rng.standard_normal((32, *IMG)).astype(np.float32))
        for module in model.sequential:
            if isinstance(module, (AbsBatchNorm, nn.BatchNorm1d)):
                dims = [0] + list(range(2, h.ndim))
                n = h.shape[1]
                module.running_mean.copy_(h.mean(dims))
                module.running_var.copy_(h.var(dims) * (0.5 + torch.rand(n, generator=g)))
                weight = module.scale if isinstance(module, AbsBatchNorm) else module.weight
                weight.copy_(torch.randn(n, generator=g).abs() + 0.5)
            h = module(h)
    model.meta["cells"] = np.array([3, 5, 8, 13])
    return model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((5, *IMG)).astype(np.float32)


@pytest.mark.parametrize("method", ["ig", "actgrad"])
def test_batched_over_cells_equals_one_cell_rate_run_per_cell(model, windows, method):
    tree = per_cell_contributions(model, windows, method=method, steps=6, batch_size=2)
    for k, cell in enumerate(model.meta["cells"]):
        ref = contributions(model, windows, method=method, steps=6, target=CellRate(int(cell)),
                            progress=False, dtype="float64")
        for layer in ("conv0", "conv1"):
            np.testing.assert_allclose(tree[layer]["contribution"].sel(cell=cell).values,
                                       ref[layer]["contribution"].values, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(tree["output"].sel(cell=cell).values, ref["output"].values[:, k],
                                   rtol=1e-5)


def test_layout_coordinates_and_signs(model, windows):
    tree = per_cell_contributions(model, windows, layers="conv1", steps=4, window_index=[4, 0, 2])
    assert set(tree.children) == {"conv1"}
    c = tree["conv1"]["contribution"]
    assert c.dims == ("time", "cell", "channel", "sign") and c.shape == (3, 4, 3, 2)
    np.testing.assert_array_equal(c["cell"].values, [3, 5, 8, 13])
    np.testing.assert_array_equal(c["time"].values, [4, 0, 2])          # window positions
    assert (c.sel(sign="neg") <= 0).all() and (c.sel(sign="pos") >= 0).all()
    assert tree["output"].dims == ("time", "cell") and tree["output_baseline"].dims == ("cell",)


def test_integrated_gradients_are_complete_per_cell(model, windows):
    """Σ over units of C_k = y_k(x) − y_k(x0): the residual shrinks with the number of steps."""
    coarse = per_cell_contributions(model, windows, steps=2, dtype="float64")
    fine = per_cell_contributions(model, windows, steps=64, dtype="float64")
    delta = np.abs(fine["output"] - fine["output_baseline"]).values
    for layer in ("conv0", "conv1"):
        r_fine = np.abs(fine[layer]["completeness_residual"].values)
        r_coarse = np.abs(coarse[layer]["completeness_residual"].values)
        assert r_fine.sum() < 0.05 * delta.sum()
        assert r_fine.sum() < r_coarse.sum()
        total = fine[layer]["contribution"].sum(("channel", "sign")).values
        np.testing.assert_allclose(total - (fine["output"] - fine["output_baseline"]).values,
                                   fine[layer]["completeness_residual"].values, atol=1e-9)


def test_plain_path_matches_fast_path(model, windows):
    fast = per_cell_contributions(model, windows[:2], steps=4, dtype="float64")
    plain = per_cell_contributions(model, windows[:2], steps=4, dtype="float64", fast=False)
    assert fast.attrs["parameters"] != plain.attrs["parameters"]      # records the path
    for layer in ("conv0", "conv1"):
        np.testing.assert_allclose(fast[layer]["contribution"], plain[layer]["contribution"], atol=1e-9)


def test_errors(model, windows):
    with pytest.raises(ConfigurationError, match="unknown per-cell method"):
        per_cell_contributions(model, windows, method="smoothgrad")
    with pytest.raises(ConfigurationError, match=r"layers \['conv9'\] are not valid"):
        per_cell_contributions(model, windows, layers=["conv9"])
    with pytest.raises(ConfigurationError, match="window_index must hold indices in 0..4"):
        per_cell_contributions(model, windows, window_index=[7])
    with pytest.raises(ConfigurationError, match="steps must be an integer >= 1"):
        per_cell_contributions(model, windows, steps=0)
    with pytest.raises(ShapeError, match="stimulus windows must have shape"):
        per_cell_contributions(model, windows[:, :4])


def test_any_sequential_by_dotted_layer_name():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(5 * 4 * 4, 3), nn.Softplus())
    x = torch.randn(4, 3, 8, 8)
    tree = per_cell_contributions(net, x, layers=("2",), steps=32, dtype="float64")
    c = tree["2"]["contribution"]
    assert c.dims == ("time", "cell", "channel", "sign") and c.shape == (4, 3, 5, 2)
    ref = contributions(net, x, layers=("2",), target=CellRate(1), steps=32, dtype="float64")
    np.testing.assert_allclose(c.isel(cell=1).values, ref["2"]["contribution"].values, rtol=1e-5, atol=1e-7)
