"""Instantaneous receptive fields: equality with autograd, coordinates, memory bounds, rank-1 filters."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import published_fixtures as spec
from retcodec.io.architectures import build_model
from retcodec.errors import CellMismatchError, ConfigurationError, NonFiniteError, ShapeError
from retcodec.analysis.irf import first_layer_transpose, irf, iter_irf, rank1

N_CELLS = 5
CELL_IDS = [2, 5, 7, 9, 11]
#: float32 agreement with the float64 autograd reference, relative to the largest value
F32 = 5e-6


def published_model(seed: int = 3, model_type: str = "VaryModel", n_cells: int = N_CELLS) -> nn.Module:
    """A published-layout model with random weights and batch-norm statistics."""
    hyps = spec.published_hyps("15-10-07" if n_cells == 5 else None, model_type, n_cells)
    model = build_model(model_type, hyps)
    model.load_state_dict(spec.make_published_state_dict(n_cells, seed, model_type, hyps))
    return model.eval()


def autograd_irf(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(n, cells, frames, y, x) input gradients, one cell at a time, in window frame order."""
    out = []
    for k in range(model.n_cells):
        xx = x.clone().double().requires_grad_(True)
        out.append(torch.autograd.grad(model.double()(xx)[:, k].sum(), xx)[0])
    model.float()
    return torch.stack(out, 1).numpy()


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """numpy's BLAS threads fight over the shared cores; one thread is much faster here."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return published_model()


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return torch.randn(6, 40, 50, 50, generator=torch.Generator().manual_seed(0)).numpy()


@pytest.fixture(scope="module")
def reference(model, windows) -> np.ndarray:
    return autograd_irf(model, torch.from_numpy(windows))


@pytest.fixture(scope="module")
def full(model, windows) -> xr.DataArray:
    return irf(model, windows, batch_size=4)


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("transpose", ["auto", "collapsed", "stacked"])
def test_irf_equals_the_autograd_input_gradient(model, windows, reference, transpose):
    result = irf(model, windows, batch_size=4, transpose=transpose)
    expected = reference[:, :, ::-1]                       # lag ascending = frames reversed
    scale = np.abs(expected).max()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=F32 * scale)


def test_float64_matches_autograd_to_double_precision(model, windows, reference):
    result = irf(model, windows[:1], dtype=np.float64, transpose="collapsed")
    np.testing.assert_allclose(result.values, reference[:1, :, ::-1], rtol=0,
                               atol=1e-11 * np.abs(reference).max())


@pytest.mark.parametrize("variant", ["collapsed", "BNCNN"])
def test_plain_conv_first_layers(windows, variant):
    model = published_model(seed=5, model_type="BNCNN") if variant == "BNCNN" \
        else published_model(seed=5).collapse()
    expected = autograd_irf(model, torch.from_numpy(windows[:2]))[:, :, ::-1]
    result = irf(model, windows[:2])
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=F32 * np.abs(expected).max())


def test_models_without_an_affine_first_layer_take_the_plain_path(windows):
    class Tiny(nn.Module):
        n_cells, img_shape = 2, (40, 50, 50)

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(40, 2, 5, stride=3)

        def forward(self, x):
            return torch.tanh(self.conv(x)).mean(dim=(2, 3)) ** 2

    tiny = Tiny()
    torch.nn.init.normal_(tiny.conv.weight, std=0.05)
    x = torch.from_numpy(windows[:3]).double()
    expected = np.stack([_grad(tiny, x, k) for k in range(2)], 1)[:, :, ::-1]
    result = irf(tiny.float(), windows[:3])
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=F32 * np.abs(expected).max())


def _grad(model: nn.Module, x: torch.Tensor, k: int) -> np.ndarray:
    xx = x.clone().requires_grad_(True)
    return torch.autograd.grad(model.double()(xx)[:, k].sum(), xx)[0].numpy()


def test_first_layer_transpose_is_the_adjoint(model):
    """<W x, g> == <x, W^T g> for the stacked layer, both ways."""
    layer = model.layers["conv0"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, 50, 50, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 8, 36, 36, generator=gen, dtype=torch.float64)
    layer64 = layer.double()
    wx = layer64(x) - layer64.bias.view(1, -1, 1, 1)
    for method in ("collapsed", "stacked"):
        wtg = first_layer_transpose(layer64, method)(g)
        assert torch.allclose((wx * g).sum(), (x * wtg).sum(), rtol=1e-10)
    layer.float()


# --------------------------------------------------------------------------- coordinates
def test_dims_coords_and_lag_convention(full, reference):
    assert full.dims == ("time", "cell", "lag", "y", "x")
    assert full.shape == (6, N_CELLS, 40, 50, 50)
    np.testing.assert_allclose(full["lag"].values, np.arange(1, 41) * 0.01)
    assert full["lag"].attrs["units"] == "s"
    assert full.attrs["units"] == "Hz per z-scored stimulus unit"
    np.testing.assert_array_equal(full["time"].values, np.arange(6))
    assert full["time"].attrs["units"] == "window index"
    np.testing.assert_array_equal(full["window"].values, np.arange(6))
    # lag 0.01 s is the most recent frame (39), lag 0.40 s the oldest (0)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(full.sel(lag=0.01).values, reference[:, :, 39], atol=F32 * scale)
    np.testing.assert_allclose(full.sel(lag=0.40).values, reference[:, :, 0], atol=F32 * scale)


def test_receptive_fields_span_the_three_kernels(full):
    """A cell reads one map location: its IRF vanishes outside 15 + 11 + 11 - 2 = 35 pixels."""
    support = np.abs(full.values).max(axis=(0, 2)) > 0                   # (cell, y, x)
    for mask in support:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert 20 < rows[-1] - rows[0] + 1 <= 35 and 20 < cols[-1] - cols[0] + 1 <= 35


def test_cells_are_selected_by_id(windows, full):
    model = published_model()
    model.meta["cells"] = CELL_IDS
    result = irf(model, windows[:2], cells=[9, 2])
    np.testing.assert_array_equal(result["cell"].values, [9, 2])
    np.testing.assert_array_equal(result.values, full.isel(time=[0, 1], cell=[3, 0]).values)
    with pytest.raises(CellMismatchError, match=r"cells \[4\].*valid cell ids are \[2, 5, 7, 9, 11\]"):
        irf(model, windows[:2], cells=[4, 9])


def test_times_select_window_positions(model, windows, full):
    result = irf(model, windows, times=[4, 1, -1])
    np.testing.assert_array_equal(result["window"].values, [4, 1, 5])
    np.testing.assert_array_equal(result.values, full.isel(time=[4, 1, 5]).values)
    with pytest.raises(ConfigurationError, match=r"times \[6\] are out of range for 6 windows"):
        irf(model, windows, times=[6])
    with pytest.raises(ConfigurationError, match="window positions"):
        irf(model, windows, times=[0.5])


def test_recording_input_uses_norm_stats_and_recording_time(windows):
    model = published_model()
    rng = np.random.default_rng(2)
    stimulus = rng.integers(0, 256, size=(43, 50, 50)).astype(np.uint8)
    time = 12.0 + np.arange(43) * 0.01
    recording = xr.Dataset({"stimulus": (("time", "y", "x"), stimulus)}, coords={"time": time})
    with pytest.raises(ConfigurationError, match="norm_stats"):
        irf(model, recording)
    model.meta["norm_stats"] = {"mean": 120.0, "std": 60.0}
    result = irf(model, recording, cells=[1])
    z = (stimulus.astype(np.float32) - np.float32(120.0)) / np.float32(60.0)
    arrays = np.stack([z[k:k + 40] for k in range(3)])
    np.testing.assert_allclose(result["time"].values, time[40:])
    assert result["time"].attrs["units"] == "s"
    np.testing.assert_array_equal(result.values, irf(model, arrays, cells=[1]).values)


def test_iter_irf_yields_batches_of_the_full_result(model, windows, full):
    blocks = list(iter_irf(model, windows, batch_size=4))
    assert [b.sizes["time"] for b in blocks] == [4, 2]
    np.testing.assert_array_equal(xr.concat(blocks, "time").values, full.values)
    np.testing.assert_array_equal(blocks[1]["time"].values, [4, 5])


def test_the_model_is_left_unchanged(windows):
    model = published_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    irf(model, windows[:1])
    assert model.training
    assert all(p.grad is None and p.requires_grad == (not name.endswith(("running_mean", "running_var",
                                                                        "sigma")))
               for name, p in model.named_parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- memory and files
def test_results_over_the_memory_budget_need_out(model, windows):
    with pytest.raises(ConfigurationError, match=r"would take .*GiB.*times=.*out="):
        irf(model, windows, max_bytes=5 * N_CELLS * 400_000)
    irf(model, windows[:5], max_bytes=5 * N_CELLS * 400_000)          # exactly at the budget


def test_out_file_equals_the_in_memory_result(tmp_path, model, windows, full):
    path = tmp_path / "irf.nc"
    result = irf(model, windows, batch_size=4, out=path, max_bytes=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["irf.nc"]          # temp file renamed
    np.testing.assert_array_equal(result.values, full.values)
    xr.testing.assert_identical(result.drop_attrs(), full.drop_attrs())
    result.close()
    with xr.open_dataarray(path, engine="h5netcdf") as reopened:
        assert reopened.attrs["units"] == full.attrs["units"]
        np.testing.assert_array_equal(reopened["window"].values, np.arange(6))
    with h5py.File(path, "r") as h5:
        assert h5["irf"].shape == (6, N_CELLS, 40, 50, 50)
        assert h5["irf"].chunks == (1, 1, 40, 50, 50)


def test_a_failed_run_leaves_no_file(tmp_path, model, windows):
    bad = windows.copy()
    bad[5, 3, 10, 10] = np.nan
    with pytest.raises(NonFiniteError, match="positions 4..5"):
        irf(model, bad, batch_size=4, out=tmp_path / "irf.nc")
    assert list(tmp_path.iterdir()) == []


def test_input_errors(model, windows):
    with pytest.raises(ShapeError, match=r"\(n, 40, 50, 50\)"):
        irf(model, windows[:, :30])
    with pytest.raises(ConfigurationError, match="batch_size"):
        irf(model, windows, batch_size=0)
    with pytest.raises(ConfigurationError, match="float32 or float64"):
        irf(model, windows, dtype=np.int32)
    with pytest.raises(ConfigurationError, match="Windows or a recording Dataset"):
        irf(model, [1, 2, 3])
    with pytest.raises(ConfigurationError, match="transpose must be one of"):
        irf(model, windows, transpose="fft")


# --------------------------------------------------------------------------- rank-1 filters
def separable(temporal: np.ndarray, spatial: np.ndarray, scale: float, offset: float) -> xr.DataArray:
    values = scale * temporal[:, None, None] * spatial[None] + offset
    return xr.DataArray(values, dims=("lag", "y", "x"),
                        coords={"lag": np.arange(1, len(temporal) + 1) * 0.01})


def test_rank1_recovers_known_filters_with_the_documented_sign():
    lag = np.arange(1, 21) * 0.01
    temporal = -np.sin(lag / 0.2 * 2 * np.pi) * np.exp(-lag / 0.1)        # biphasic, negative first
    temporal -= temporal.mean()                                          # zero mean: exactly rank 1
    yy, xx = np.mgrid[:12, :15]
    r2 = (yy - 5) ** 2 + (xx - 8) ** 2
    spatial = np.exp(-r2 / 6.0) - 0.3 * np.exp(-r2 / 30.0)               # centre-surround
    result = rank1(separable(temporal, spatial, scale=3.0, offset=0.5))
    t_unit, s_unit = temporal / np.linalg.norm(temporal), spatial.ravel() / np.linalg.norm(spatial)
    # peak frame = 3 * t[peak] * spatial with t[peak] < 0: the spatial filter that correlates
    # positively with it is -spatial, and the temporal filter flips with it
    peak = np.argmax(np.abs(temporal))
    assert temporal[peak] < 0
    np.testing.assert_allclose(result["spatial"].values.ravel(), -s_unit, atol=1e-10)
    np.testing.assert_allclose(result["temporal"].values, -t_unit, atol=1e-10)
    assert result["temporal"].values[peak] > 0
    np.testing.assert_allclose(float(result["singular_value"]),
                               3.0 * np.linalg.norm(temporal) * np.linalg.norm(spatial), rtol=1e-10)
    np.testing.assert_allclose(float(result["singular_value_share"]), 1.0, rtol=1e-10)
    assert float(result["offset"]) == pytest.approx(0.5)
    assert float(result["peak_lag"]) == pytest.approx(lag[peak])


def test_rank1_reconstructs_the_best_rank_one_approximation(full):
    subset = full.isel(time=[0, 3], cell=[0, 4])
    result = rank1(subset)
    assert result["spatial"].dims == ("time", "cell", "y", "x")
    assert result["temporal"].dims == ("time", "cell", "lag")
    for t in range(2):
        for c in range(2):
            m = subset.values[t, c].astype(np.float64).reshape(40, -1)
            centred = m - m.mean()
            u, s, vt = np.linalg.svd(centred, full_matrices=False)
            best = s[0] * np.outer(u[:, 0], vt[0])
            r = result.isel(time=t, cell=c)
            rebuilt = float(r.singular_value) * np.outer(r.temporal.values, r.spatial.values.ravel())
            np.testing.assert_allclose(rebuilt, best, atol=1e-5 * np.abs(best).max())
            assert float(r.singular_value_share) == pytest.approx(s[0] ** 2 / np.sum(s ** 2), rel=1e-5)
            peak_frame = centred[np.abs(centred).max(axis=1).argmax()]
            assert np.corrcoef(r.spatial.values.ravel(), peak_frame)[0, 1] > 0


def test_rank1_of_a_single_irf_and_of_a_file(tmp_path, model, windows, full):
    batch = rank1(full.isel(time=[1, 2]))
    single = rank1(full.isel(time=2, cell=3))
    assert single["spatial"].dims == ("y", "x") and single["singular_value"].dims == ()
    np.testing.assert_allclose(single["spatial"].values, batch["spatial"].isel(time=1, cell=3).values,
                               atol=1e-6)
    lazy = irf(model, windows[1:3], out=tmp_path / "irf.nc")
    np.testing.assert_allclose(rank1(lazy, block=3)["spatial"].values, batch["spatial"].values, atol=1e-6)
    lazy.close()


def test_rank1_of_a_constant_irf_and_bad_input():
    flat = rank1(np.full((2, 5, 4, 4), 2.0))
    assert np.isnan(flat["singular_value_share"].values).all()
    assert (flat["spatial"].values == 0).all() and (flat["singular_value"].values == 0).all()
    with pytest.raises(ShapeError, match=r"dims lag, y, x; \['lag'\] missing"):
        rank1(xr.DataArray(np.zeros((3, 4, 4)), dims=("time", "y", "x")))


# --------------------------------------------------------------------------- one cell per window
def test_paired_irf_equals_the_full_irf_of_each_pair(model, windows, full):
    from retcodec.analysis.irf import iter_paired_irf

    ids = full["cell"].values
    times = np.array([0, 3, 3, 5, 1])
    cells = ids[[4, 0, 2, 1, 4]]
    blocks = list(iter_paired_irf(model, windows, times, cells, batch_size=2))
    assert [b.shape for _, b in blocks] == [(2, 40, 50, 50), (2, 40, 50, 50), (1, 40, 50, 50)]
    got = np.concatenate([b for _, b in blocks])
    want = np.stack([full.sel(cell=c).isel(time=t).values for t, c in zip(times, cells)])
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=F32 * scale, rtol=0)


def test_paired_irf_refuses_mismatched_pairs(model, windows):
    from retcodec.analysis.irf import iter_paired_irf

    with pytest.raises(ShapeError, match="one length"):
        next(iter_paired_irf(model, windows, [0, 1], [0]))
    with pytest.raises(CellMismatchError):
        next(iter_paired_irf(model, windows, [0], [99]))
