"""Fitting the published layout: receptive-field centres, a short fit, the saved checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from retcodec.errors import ConfigurationError
from retcodec.fitting import FitConfig, WindowBatches, fit, spike_triggered_average, sta_centers


def ln_cell_recording(n_frames: int = 3000, centers=((22, 27), (30, 20)), seed: int = 0) -> xr.Dataset:
    """White-noise train split of linear-nonlinear cells with known centres."""
    rng = np.random.default_rng(seed)
    stim = rng.integers(0, 2, size=(n_frames, 50, 50)).astype(np.uint8) * 255
    c = stim.astype(np.float32) / 127.5 - 1
    yy, xx = np.mgrid[0:50, 0:50]
    rates = []
    for (r0, c0) in centers:
        w = np.exp(-((yy - r0) ** 2 + (xx - c0) ** 2) / (2 * 2.0**2))
        drive = (c.reshape(n_frames, -1) @ w.ravel()) / w.sum()
        lagged = np.concatenate([[0, 0, 0], drive[:-3]])            # 30 ms latency
        rates.append(40 * np.logaddexp(0, 4 * lagged))
    rate = np.array(rates, np.float32)
    return xr.Dataset({"stimulus": (("time", "y", "x"), stim), "rate": (("cell", "time"), rate)},
                      coords={"time": np.arange(n_frames) * 0.01, "cell": [3, 9]},
                      attrs={"split": "train", "stim_type": "whitenoise", "experiment": "toy"})


def test_sta_centres_recover_planted_receptive_fields():
    rec = ln_cell_recording()
    stim = rec["stimulus"].values.astype(np.float32)
    stim = (stim - stim.mean()) / stim.std()
    sta = spike_triggered_average(stim, rec["rate"].values, history=10)
    assert sta.shape == (2, 10, 50, 50)
    # the most recent frames carry the response: lag 3 (index 10 - 3) dominates
    assert np.abs(sta[0]).max(axis=(1, 2)).argmax() == 7
    np.testing.assert_array_equal(sta_centers(sta), [[22, 27], [30, 20]])


def test_window_batches_follow_the_published_alignment():
    stim = torch.arange(60, dtype=torch.float32)[:, None, None].expand(60, 3, 3).contiguous()
    rate = torch.arange(60, dtype=torch.float32)[:, None]
    data = WindowBatches(stim, rate, history=40)
    idx = torch.tensor([0, 5])
    w = data.windows(idx)
    assert w.shape == (2, 40, 3, 3)
    assert w[1, :, 0, 0].tolist() == list(range(5, 45))     # frames k..k+39
    assert data.targets(idx)[:, 0].tolist() == [40, 45]      # predicts bin k+40


def test_short_fit_learns_and_saves_a_loadable_published_checkpoint(tmp_path):
    from retcodec.io.models import load_model, predict

    rec = ln_cell_recording(n_frames=1000)
    out = tmp_path / "toy.pt"
    # a 10-frame history and 4 channels keep the test quick; the cells' 30 ms latency fits in it
    model, hist = fit(rec, epochs=3, batch_size=64, lr=5e-3, history=10, chans=(4, 4), progress=False,
                      out=out, seed=1, patience=5)
    assert hist.sizes["epoch"] == 3 and np.isfinite(hist["loss"]).all()
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_correlation"].max() > 0.3
    assert model.meta["cells"] == [3, 9] and model.meta["dataset"] == "toy"
    np.testing.assert_array_equal(model.meta["centers"], [[22, 27], [30, 20]])
    assert "STA peak" in hist.attrs["centers_source"]
    # eval-mode outputs keep the scale of the rates (batch-norm statistics recalibrated)
    from retcodec.io.recordings import windows
    w = windows(rec, norm_stats=model.meta["norm_stats"], history=10)
    pred = predict(model, w[0:len(w)]).values
    ratio = pred.std(axis=0) / rec["rate"].values[:, 10:].std(axis=1)
    assert np.all((ratio > 0.3) & (ratio < 3)), ratio
    loaded = load_model(out)
    x = np.random.default_rng(0).normal(size=(4, 10, 50, 50)).astype(np.float32)
    np.testing.assert_allclose(predict(loaded, x).values, predict(model, x).values, rtol=1e-6)
    assert loaded.meta["norm_stats"]["mean"] == pytest.approx(rec["stimulus"].values.mean(), rel=1e-6)


def test_fit_is_deterministic_under_a_seed():
    rec = ln_cell_recording(n_frames=300)
    kw = dict(epochs=1, batch_size=64, progress=False, seed=5, history=10, chans=(2, 2),
              centers=[[22, 27], [30, 20]])
    a, _ = fit(rec, **kw)
    b, _ = fit(rec, **kw)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_fit_rejects_bad_input():
    rec = ln_cell_recording(n_frames=300)
    with pytest.raises(ConfigurationError, match="unknown fit option"):
        fit(rec, epochz=3)
    with pytest.raises(ConfigurationError, match="train split"):
        fit(rec.assign_attrs(split="test"))
    bad = rec.copy()
    bad["rate"] = bad["rate"].where(bad["time"] != 0.5)
    with pytest.raises(ValueError, match="NaN"):
        fit(bad, progress=False)
    assert FitConfig().chans == (8, 8)
