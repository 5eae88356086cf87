"""The contribution engine on tiny published-layout models with random weights."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from retcodec.io.architectures import AbsBatchNorm, build_model
from retcodec.engine.contributions import contributions, quadrature_rule
from retcodec.errors import ConfigurationError, NonFiniteError, ShapeError
from retcodec.engine.targets import CellRate, SumOfRates, Surprisal

IMG = (10, 30, 30)


pytestmark = pytest.mark.usefixtures("one_thread")


def _calibrate(model: nn.Module, x: np.ndarray, seed: int) -> nn.Module:
    """Batch-norm statistics near those of ``x`` (as after training), random scales and shifts."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        h = torch.as_tensor(x)
        for module in model.sequential:
            if isinstance(module, (AbsBatchNorm, nn.BatchNorm1d)):
                dims = [0] + list(range(2, h.ndim))
                n = h.shape[1]
                module.running_mean.copy_(h.mean(dims) + 0.3 * h.std(dims) * torch.randn(n, generator=g))
                module.running_var.copy_(h.var(dims) * (0.5 + torch.rand(n, generator=g)))
                weight = module.scale if isinstance(module, AbsBatchNorm) else module.weight
                bias = module.shift if isinstance(module, AbsBatchNorm) else module.bias
                weight.copy_(torch.randn(n, generator=g).abs() + 0.5)
                bias.copy_(0.5 * torch.randn(n, generator=g))
            h = module(h)
    return model


def tiny_model(model_type: str = "VaryModel", n_cells: int = 4, seed: int = 0, **hyps) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hyps = dict(n_units=n_cells, centers=rng.integers(10, 20, (n_cells, 2)), img_shape=list(IMG),
                ksizes=[7, 5, 5], chans=[3, 3], **hyps)
    model = build_model(model_type, hyps)
    return _calibrate(model, rng.standard_normal((48, *IMG)).astype(np.float32), seed)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    m = tiny_model()
    m.meta["cells"] = np.array([2, 5, 7, 11])
    return m


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((6, *IMG)).astype(np.float32)


@pytest.fixture(scope="module")
def surprisal(model, windows) -> Surprisal:
    with torch.no_grad():
        y = model(torch.as_tensor(windows)).double().numpy()
    noisy = y + 0.1 * np.random.default_rng(0).standard_normal(y.shape)
    return Surprisal.from_outputs(np.concatenate([y, noisy]))


def run(model, x, **kw):
    kw.setdefault("progress", False)
    return contributions(model, x, **kw)


def rel_diff(a: xr.DataArray, b: xr.DataArray) -> float:
    """max |a - b| / max |b|: the relative difference used throughout."""
    return float(np.abs(a.values - b.values).max() / np.abs(b.values).max())


def completeness(tree: xr.DataTree) -> np.ndarray:
    return tree["completeness_error"].sel(statistic="total").values


# --------------------------------------------------------------------------- the quantity
def test_completeness_error_shrinks_with_steps(model, windows, surprisal):
    layers = ("conv0", "conv1", "conv2")
    errors = [completeness(run(model, windows, layers=layers, steps=m, target=surprisal, dtype="float64"))
              for m in (4, 16, 64, 256)]
    errors = np.array(errors)                                     # (steps, layer)
    assert np.all(np.diff(errors, axis=0) < 0)
    assert np.all(errors[3] < errors[1] / 10) and errors[3].max() < 1e-2
    # the layer next to the output has a smooth downstream (no ReLU): second order
    assert errors[2, 2] < errors[0, 2] / 100


def test_tree_layout_and_completeness_per_window(model, windows, surprisal):
    tree = run(model, windows, steps=64, target=surprisal, maps=True)
    assert set(tree.children) == {"conv0", "conv1"}
    c0 = tree["conv0"]
    assert c0["contribution"].dims == ("time", "channel", "sign")
    assert list(c0["sign"].values) == ["neg", "pos"]
    assert c0["contribution_map"].shape == (6, 3, 24, 24)
    assert tree["conv1"]["contribution_map"].shape == (6, 3, 20, 20)
    # the E/I split is taken per unit before the spatial sum
    cmap = c0["contribution_map"]
    pos, neg = cmap.clip(min=0).sum(("y", "x")), cmap.clip(max=0).sum(("y", "x"))
    np.testing.assert_allclose(c0["contribution"].sel(sign="pos"), pos, rtol=1e-5)
    np.testing.assert_allclose(c0["contribution"].sel(sign="neg"), neg, rtol=1e-5)
    assert np.all(c0["contribution"].sel(sign="neg") <= 0) and np.all(c0["contribution"].sel(sign="pos") >= 0)
    delta = tree["target"] - tree["target_baseline"]
    total = tree["conv1"]["contribution"].sum(("channel", "sign"))
    np.testing.assert_allclose(total, delta, rtol=0, atol=0.03 * float(np.abs(delta).max()))
    np.testing.assert_allclose(tree["conv1"]["completeness_residual"], total - delta, atol=1e-4)
    assert list(tree["cell"].values) == [2, 5, 7, 11]
    np.testing.assert_array_equal(tree["time"].values, np.arange(6))
    for key in ("method", "steps", "baseline", "target", "device", "quadrature", "retcodec_version"):
        assert key in tree.attrs


def test_target_and_surprisal_equal_a_direct_numpy_computation(model, windows):
    tree = run(model, windows, method="actgrad", shrinkage=None)
    with torch.no_grad():
        y = model(torch.as_tensor(windows)).double().numpy()
        y0 = model(torch.zeros(1, *IMG)).double().numpy()
    mean, cov = y.mean(0), np.cov(y, rowvar=False)
    np.testing.assert_allclose(tree["surprisal_mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(tree["surprisal_cov"], cov, rtol=1e-4, atol=1e-6 * np.abs(cov).max())
    assert tree["surprisal_cov"].dims == ("cell", "cell2")

    def s(v):
        d = v - mean
        return 0.5 * np.einsum("bi,bi->b", d, np.linalg.solve(cov, d.T).T)

    np.testing.assert_allclose(tree["target"], s(y), rtol=1e-3)
    np.testing.assert_allclose(tree["target_baseline"], np.repeat(s(y0), 6), rtol=1e-3)
    np.testing.assert_allclose(tree["output"], y, rtol=1e-5)


# --------------------------------------------------------------------------- fast == plain
@pytest.mark.parametrize("method, kw", [
    ("ig", dict(steps=12)), ("ig", dict(steps=6, quadrature="gauss-legendre")),
    ("ig", dict(steps=6, quadrature="simpson")), ("actgrad", {}), ("inputgrad", {}),
    ("smoothgrad", dict(n_samples=3, sigma=0.3)),
])
def test_fast_path_equals_plain_path(model, windows, surprisal, method, kw):
    layers = ("conv0", "conv1", "conv2")
    fast = run(model, windows, layers=layers, method=method, target=surprisal, **kw)
    plain = run(model, windows, layers=layers, method=method, target=surprisal, fast=False, **kw)
    assert "fast" in fast.attrs["computation"] and "plain" in plain.attrs["computation"]
    for layer in layers:
        assert rel_diff(fast[layer]["contribution"], plain[layer]["contribution"]) < 1e-4
        assert rel_diff(fast[layer]["activation"], plain[layer]["activation"]) < 1e-5


def test_float32_is_close_to_float64(model, windows, surprisal):
    f32 = run(model, windows, steps=10, target=surprisal)
    f64 = run(model, windows, steps=10, target=surprisal, dtype="float64", fast=False)
    assert f64["conv0"]["contribution"].dtype == np.float64
    for layer in ("conv0", "conv1"):
        assert rel_diff(f32[layer]["contribution"], f64[layer]["contribution"]) < 1e-4


def test_nonzero_baseline(model, windows, surprisal):
    rng = np.random.default_rng(2)
    base = 0.5 * rng.standard_normal(IMG)
    fast = run(model, windows, steps=64, target=surprisal, baseline=base, layers=("conv0", "conv1", "conv2"))
    plain = run(model, windows, steps=64, target=surprisal, baseline=base, fast=False,
                layers=("conv0", "conv1", "conv2"))
    for layer in ("conv0", "conv1", "conv2"):
        assert rel_diff(fast[layer]["contribution"], plain[layer]["contribution"]) < 1e-4
    with torch.no_grad():
        s0 = surprisal(model(torch.as_tensor(base[None], dtype=torch.float32)).double()).item()
    np.testing.assert_allclose(fast["target_baseline"], s0, rtol=1e-4)
    assert completeness(fast).max() < 2e-2
    scalar = run(model, windows[:2], steps=8, target=surprisal, baseline=0.25, method="actgrad")
    assert scalar.attrs["baseline"] == 0.25


def test_bncnn_layout_fast_equals_plain(windows):
    model = tiny_model("BNCNN", n_cells=3, seed=1)
    layers = ("conv0", "conv1", "conv2")
    kw = dict(layers=layers, steps=8, target=SumOfRates(), quadrature="gauss-legendre")
    fast, plain = run(model, windows, **kw), run(model, windows, fast=False, **kw)
    for layer in layers:
        assert rel_diff(fast[layer]["contribution"], plain[layer]["contribution"]) < 1e-4
    assert fast["conv2"]["contribution"].sizes["channel"] == 3     # linear read-out: one unit a cell


def test_a_layer_alone_equals_the_layer_among_others(model, windows, surprisal):
    together = run(model, windows, layers=("conv0", "conv1", "conv2"), steps=6, target=surprisal)
    for layer in ("conv1", "conv2"):
        alone = run(model, windows, layers=layer, steps=6, target=surprisal)
        assert list(alone.children) == [layer]
        assert rel_diff(alone[layer]["contribution"], together[layer]["contribution"]) < 1e-6


def test_model_is_left_untouched(windows, surprisal):
    model = tiny_model(seed=3).train()
    before = copy.deepcopy(model.state_dict())
    run(model, windows[:2], steps=4, target=surprisal)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.sequential[0].convs[0].weight.requires_grad


# --------------------------------------------------------------------------- definitions
def _hidden_and_grads(model, x, target, layers):
    """h and dS/dh by plain autograd, independently of the engine."""
    model = copy.deepcopy(model).double().eval().requires_grad_(False)
    captured = {}
    for name in layers:
        model.layers[name].register_forward_hook(lambda m, a, out, name=name: captured.__setitem__(name, out))
    xt = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    s = target(model(xt)).sum()
    grads = torch.autograd.grad(s, [captured[n] for n in layers])
    return model, {n: captured[n].detach() for n in layers}, dict(zip(layers, grads))


def _split_sum(c: torch.Tensor) -> np.ndarray:
    return torch.stack([c.clamp(max=0).sum((2, 3)), c.clamp(min=0).sum((2, 3))], -1).numpy()


def test_actgrad_matches_its_definition(model, windows, surprisal):
    layers = ("conv0", "conv1")
    _, h, g = _hidden_and_grads(model, windows, surprisal, layers)
    tree = run(model, windows, method="actgrad", target=surprisal, layers=layers, dtype="float64")
    for n in layers:
        np.testing.assert_allclose(tree[n]["contribution"].values, _split_sum(h[n] * g[n]),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(tree[n]["activation"].values, h[n].sum((2, 3)).numpy(), rtol=1e-9)


def test_inputgrad_matches_its_definition(model, windows, surprisal):
    layers = ("conv0", "conv1")
    m64, h, g = _hidden_and_grads(model, windows, surprisal, layers)
    x = torch.as_tensor(windows, dtype=torch.float64)
    tree = run(model, windows, method="inputgrad", target=surprisal, layers=layers, dtype="float64")
    # sum_p x_p dh/dx_p = d/da h(a x) at a = 1; h is piecewise linear in a (ReLUs): central differences
    eps = 1e-6
    _, up, _ = _hidden_and_grads(m64, (1 + eps) * x, surprisal, layers)
    _, down, _ = _hidden_and_grads(m64, (1 - eps) * x, surprisal, layers)
    for n in layers:
        expected = _split_sum(g[n] * (up[n] - down[n]) / (2 * eps))
        np.testing.assert_allclose(tree[n]["contribution"].values, expected, rtol=1e-6, atol=1e-9)
    # first layer, affine in x: (h - b) g
    bias = m64.sequential[0].bias.view(1, -1, 1, 1)
    np.testing.assert_allclose(tree["conv0"]["contribution"].values,
                               _split_sum((h["conv0"] - bias) * g["conv0"]), rtol=1e-8, atol=1e-10)


def test_smoothgrad_is_seeded_and_tends_to_actgrad(model, windows, surprisal):
    kw = dict(method="smoothgrad", n_samples=4, sigma=0.2, target=surprisal)
    a = run(model, windows, seed=1, batch_size=2, **kw)
    b = run(model, windows, seed=1, batch_size=5, **kw)
    c = run(model, windows, seed=2, **kw)
    np.testing.assert_allclose(a["conv1"]["contribution"], b["conv1"]["contribution"], rtol=1e-5, atol=1e-6)
    assert rel_diff(a["conv1"]["contribution"], c["conv1"]["contribution"]) > 1e-3
    zero = run(model, windows, method="smoothgrad", n_samples=2, sigma=0.0, target=surprisal)
    act = run(model, windows, method="actgrad", target=surprisal)
    assert rel_diff(zero["conv1"]["contribution"], act["conv1"]["contribution"]) < 1e-6
    assert zero.attrs["n_samples"] == 2


def test_all_methods_coincide_on_a_linear_model(windows):
    model = tiny_model(seed=4, softplus=False)
    with torch.no_grad():
        for i, m in enumerate(model.sequential):
            if isinstance(m, nn.ReLU):
                model.sequential[i] = nn.Identity()
            if isinstance(m, AbsBatchNorm):                       # linear, not affine: h(0) = 0
                m.running_mean.zero_()
                m.shift.zero_()
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.zero_()
        model.sequential[0].bias.zero_()
        model.sequential[4].bias.zero_()
    kw = dict(layers=("conv0", "conv1", "conv2"), target=SumOfRates(), dtype="float64")
    ig = run(model, windows, steps=1, **kw)
    for method in ("actgrad", "inputgrad", "smoothgrad"):
        other = run(model, windows, method=method, sigma=0.0, n_samples=1, **kw)
        for layer in kw["layers"]:
            np.testing.assert_allclose(other[layer]["contribution"], ig[layer]["contribution"],
                                       rtol=1e-9, atol=1e-9)
    assert completeness(ig).max() < 1e-10


def test_quadrature_rules_integrate_polynomials():
    for name, steps, degree in (("trapezoid", 8, 1), ("simpson", 8, 3), ("gauss-legendre", 4, 7)):
        alphas, w = quadrature_rule(name, steps)
        assert w.sum() == pytest.approx(1.0)
        assert np.dot(w, alphas ** degree) == pytest.approx(1 / (degree + 1), rel=1e-12)
        assert np.dot(w, alphas ** (degree + 1)) != pytest.approx(1 / (degree + 2), rel=1e-9)


def test_agrees_with_captum_layer_conductance(model, windows, surprisal):
    captum = pytest.importorskip("captum.attr")
    m64 = copy.deepcopy(model).double().eval().requires_grad_(False)
    x = torch.as_tensor(windows[:3], dtype=torch.float64)
    gaps = []
    for steps in (4, 64):
        ours = run(model, windows[:3], steps=steps, target=surprisal, dtype="float64", maps=True)
        for layer in ("conv0", "conv1"):
            lc = captum.LayerConductance(lambda inp: surprisal(m64(inp)), m64.layers[layer])
            theirs = lc.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, method="riemann_trapezoid")
            mine = ours[layer]["contribution_map"].values
            gaps.append(np.abs(mine - theirs.detach().numpy()).max() / np.abs(mine).max())
    coarse, fine = gaps[:2], gaps[2:]
    assert all(f < c / 8 for f, c in zip(fine, coarse))         # first order: ~1/16
    assert max(fine) < 0.05


# --------------------------------------------------------------------------- recordings, files, resume
class FakeWindows:
    """Duck-typed ``retcodec.io.recordings.Windows``: slicing, ``time`` and ``cells``."""

    def __init__(self, x: np.ndarray) -> None:
        self._x = x
        self.time = 0.5 + 0.01 * np.arange(len(x))
        self.cells = np.array([2, 5, 7, 11])

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, item):
        return self._x[item]


def test_windows_give_time_in_seconds_and_cell_ids(windows, surprisal):
    model = tiny_model(seed=5)                   # no cells in meta: they come from the windows
    tree = run(model, FakeWindows(windows), method="actgrad", target=CellRate(7))
    np.testing.assert_allclose(tree["time"].values, 0.5 + 0.01 * np.arange(6))
    assert tree["time"].attrs["units"] == "s"
    assert list(tree["cell"].values) == [2, 5, 7, 11]
    assert tree.attrs["target_output_index"] == 2
    with torch.no_grad():
        np.testing.assert_allclose(tree["target"], model(torch.as_tensor(windows))[:, 2].numpy(), rtol=1e-5)


def test_recording_dataset_is_cut_into_windows(model):
    recordings = pytest.importorskip("retcodec.io.recordings")
    frames = np.random.default_rng(4).standard_normal((IMG[0] + 5, *IMG[1:]))
    ds = xr.Dataset({"stimulus": (("time", "y", "x"), frames)},
                    coords={"time": 0.01 * np.arange(len(frames))}, attrs={"norm_mean": 0.5, "norm_std": 2.0})
    tree = run(model, ds, method="actgrad", target=SumOfRates())
    cut = recordings.windows(ds, history=IMG[0])
    np.testing.assert_allclose(tree["time"].values, cut.time)
    direct = run(model, cut[0:len(cut)], method="actgrad", target=SumOfRates())
    np.testing.assert_allclose(tree["target"].values, direct["target"].values, rtol=1e-6)


def test_netcdf_round_trip(model, windows, tmp_path):
    path = tmp_path / "contrib.nc"
    tree = run(model, windows, steps=4, maps=True, out=path, chunk_size=4)
    assert path.exists() and not (tmp_path / "contrib.nc.partial").exists()
    back = xr.open_datatree(path, engine="h5netcdf")
    xr.testing.assert_identical(back.to_dataset(), tree.to_dataset())
    for layer in ("conv0", "conv1"):
        xr.testing.assert_identical(back[layer].to_dataset(), tree[layer].to_dataset())
    assert back.attrs["method"] == "ig" and back.attrs["steps"] == 4
    back.close()


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_recomputing(model, windows, surprisal, tmp_path):
    path = tmp_path / "c.nc"
    kw = dict(steps=4, target=surprisal, chunk_size=2, out=path)

    def stop_after_first(index, start, stop):
        if index == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(model, windows, on_chunk=stop_after_first, **kw)
    assert not path.exists()
    assert len(list((tmp_path / "c.nc.partial").glob("chunk-*.npz"))) == 2
    computed = []
    resumed = run(model, windows, on_chunk=lambda i, a, b: computed.append(i), **kw)
    assert computed == [2]
    complete = run(model, windows, steps=4, target=surprisal, chunk_size=2)
    for layer in ("conv0", "conv1"):
        xr.testing.assert_equal(resumed[layer].to_dataset(), complete[layer].to_dataset())
    xr.testing.assert_equal(resumed["target"], complete["target"])


def test_partial_run_with_other_parameters(model, windows, surprisal, tmp_path):
    path = tmp_path / "c.nc"

    def stop(index, start, stop):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(model, windows, steps=4, target=surprisal, chunk_size=3, out=path, on_chunk=stop)
    with pytest.raises(ConfigurationError, match="steps"):
        run(model, windows, steps=5, target=surprisal, chunk_size=3, out=path)
    computed = []
    run(model, windows, steps=5, target=surprisal, chunk_size=3, out=path, resume=False,
        on_chunk=lambda i, a, b: computed.append(i))
    assert computed == [0, 1] and path.exists()


def test_surprisal_fitted_once_is_reused_on_resume(model, windows, tmp_path):
    path = tmp_path / "s.nc"

    def stop(index, start, stop):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(model, windows, steps=3, chunk_size=3, out=path, on_chunk=stop)
    resumed = run(model, windows, steps=3, chunk_size=3, out=path)
    fresh = run(model, windows, steps=3, chunk_size=3)
    np.testing.assert_array_equal(resumed["surprisal_cov"], fresh["surprisal_cov"])
    xr.testing.assert_equal(resumed["conv1"]["contribution"], fresh["conv1"]["contribution"])


def test_dask_backend_equals_serial(model, windows, surprisal):
    distributed = pytest.importorskip("distributed")
    kw = dict(steps=4, target=surprisal, chunk_size=2, method="ig", layers=("conv0", "conv1"))
    serial = run(model, windows, **kw)
    with distributed.LocalCluster(processes=False, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        parallel = run(model, windows, backend="dask", scheduler=cluster, **kw)
    # equal up to float rounding: the workers' threads may use another number of
    # intra-op threads, and convolution backward sums in a thread-dependent order
    for layer in ("conv0", "conv1"):
        for var in ("contribution", "activation"):
            assert rel_diff(parallel[layer][var], serial[layer][var]) < 1e-6
    np.testing.assert_array_equal(parallel["time"], serial["time"])
    np.testing.assert_allclose(parallel["target"], serial["target"], rtol=1e-6)


# --------------------------------------------------------------------------- errors
def test_bad_input_raises_specific_errors(model, windows, surprisal):
    with pytest.raises(ShapeError, match=r"\(n, 10, 30, 30\)"):
        run(model, windows[:, :5], target=surprisal)
    bad = windows.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="window 3"):
        run(model, bad, target=surprisal)
    with pytest.raises(ConfigurationError, match=r"\['conv0', 'conv1', 'conv2'\]"):
        run(model, windows, layers=("conv9",), target=surprisal)
    with pytest.raises(ConfigurationError, match="unknown method"):
        run(model, windows, method="deeplift", target=surprisal)
    with pytest.raises(ConfigurationError, match="unknown target"):
        run(model, windows, target="entropy")
    for steps in (0, 2.5):
        with pytest.raises(ConfigurationError, match="steps"):
            run(model, windows, steps=steps, target=surprisal)
    with pytest.raises(ConfigurationError, match="even"):
        run(model, windows, steps=5, quadrature="simpson", target=surprisal)
    with pytest.raises(ConfigurationError, match="unknown quadrature"):
        run(model, windows, quadrature="romberg", target=surprisal)
    with pytest.raises(ConfigurationError, match="backend"):
        run(model, windows, backend="ray", target=surprisal)
    with pytest.raises(ShapeError, match="baseline"):
        run(model, windows, baseline=np.zeros((3, 3)), target=surprisal)
    with pytest.raises(ConfigurationError, match="singular"):            # 3 windows, 4 cells
        run(model, windows[:3], shrinkage=None)
