"""Inputs an independent adversarial battery found unguarded (issue 26, round 2b): model inputs of
the wrong dtype, non-modules, huge step counts, non-finite targets, fit options and short recordings,
benchmark and family arguments, window indices."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import retcodec
from retcodec.errors import (ConfigurationError, NonFiniteError, RecordingValueError, RetcodecError,
                             ShapeError, WindowIndexError)
from hardening_fixtures import model, x  # noqa: F401  (fixtures)


@pytest.mark.parametrize("dtype", ["bool", "complex64", "object"])
def test_windows_that_are_not_real_numbers_are_refused_everywhere(model, x, dtype):
    bad = (x > 0) if dtype == "bool" else x.astype(dtype)
    calls = [lambda: retcodec.predict(model, bad),
             lambda: retcodec.contributions(model, bad, steps=2, target="sum_of_rates"),
             lambda: retcodec.silence(model, bad, {"conv1": [0]}),
             lambda: retcodec.irf(model, bad, times=[0])]
    for call in calls:
        with pytest.raises(ConfigurationError, match="real-valued"):
            call()
    with pytest.raises(ConfigurationError, match="booleans"):
        retcodec.predict(model, torch.from_numpy(x) > 0)


@pytest.mark.parametrize("call", ["contributions", "silence", "irf"])
def test_a_model_that_is_not_a_module_is_refused(x, call):
    fn = {"contributions": lambda: retcodec.contributions("model.pt", x, steps=2),
          "silence": lambda: retcodec.silence(None, x, {"conv1": [0]}),
          "irf": lambda: retcodec.irf("model.pt", x)}[call]
    with pytest.raises(ConfigurationError, match="torch.nn.Module"):
        fn()


def test_huge_step_counts_are_refused_before_allocating(model, x):
    with pytest.raises(ConfigurationError, match=r"1\.\.10000 or 'auto'"):
        retcodec.contributions(model, x, steps=10**12)


def test_a_huge_baseline_is_refused_like_any_model_input(model, x):
    with pytest.raises(RecordingValueError, match="the baseline"):
        retcodec.contributions(model, x, steps=2, target="sum_of_rates", baseline=1e30)


def test_a_target_that_returns_nan_is_refused(model, x):
    with pytest.raises(NonFiniteError, match="returns NaN or Inf"):
        retcodec.contributions(model, x, steps=2, target=lambda r: r.sum(1) * float("nan"))


def test_irf_of_no_windows_and_a_boolean_batch_size_are_refused(model, x):
    with pytest.raises(ShapeError, match="no windows"):
        retcodec.irf(model, x[:0])
    with pytest.raises(ConfigurationError, match="batch_size"):
        retcodec.irf(model, x, times=[0], batch_size=True)


def test_window_indices_raise_a_retcodec_error_that_is_still_an_index_error():
    w = retcodec.windows(np.random.default_rng(0).integers(0, 255, (45, 50, 50)).astype(np.uint8), [100, 50])
    for key in (10**9, 1.5):
        with pytest.raises(WindowIndexError):
            w[key]
    assert issubclass(WindowIndexError, IndexError) and issubclass(WindowIndexError, RetcodecError)
    assert sum(1 for _ in w) == len(w) == 5                  # iteration still ends


def _train(n_frames: int) -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset({"stimulus": (("time", "y", "x"), rng.integers(0, 255, (n_frames, 50, 50)).astype(np.uint8)),
                       "rate": (("cell", "time"), rng.random((2, n_frames)).astype(np.float32))},
                      coords={"cell": [0, 1]}, attrs={"split": "train"})


@pytest.mark.parametrize("options, words", [
    (dict(epochs=-1), "epochs"), (dict(epochs=0), "epochs"), (dict(lr=float("inf")), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(batch_size=0), "batch_size"), (dict(val_fraction=1.0), "val_fraction"),
    (dict(config={"epochs": 1}), "FitConfig"), (dict(drop_p=2.0), "drop_p")])
def test_fit_options_are_checked(options, words):
    with pytest.raises(ConfigurationError, match=words):
        retcodec.fit(_train(200), centers=np.zeros((2, 2)), **options)


def test_fit_refuses_what_is_not_a_recording_and_a_recording_too_short():
    with pytest.raises(ConfigurationError, match="recording Dataset"):
        retcodec.fit(np.zeros((10, 40, 50, 50)))
    with pytest.raises(ShapeError, match="too short"):
        retcodec.fit(_train(80), centers=np.zeros((2, 2)), epochs=1)


@pytest.mark.parametrize("kwargs, error", [
    (dict(seeds="12"), "list of non-negative integers"), (dict(seeds=[1.5]), "list of non-negative integers"),
    (dict(seeds=[0], device="banana"), "not a device name"), (dict(seeds=[0], quick="yes"), "True or False"),
    (dict(seeds=[0], bogus=1), "unknown run option")])
def test_benchmark_arguments_are_checked_before_any_retina(tmp_path, monkeypatch, kwargs, error):
    from retcodec.benchmark import runner

    monkeypatch.setattr(runner, "run_retina", lambda *a, **k: pytest.fail("a retina was started"))
    with pytest.raises(ConfigurationError, match=error):
        runner.benchmark(out=tmp_path / "b", progress=False, **kwargs)


def test_family_ranges_are_checked():
    from retcodec.insilico.family import draw_retina, replace_ranges

    for ranges, words in (({"n_types": (3, 4)}, "FamilyRanges"), (replace_ranges(n_types=(5, 2)), "n_types"),
                          (replace_ranges(cells_per_type=(0, 0)), "cells_per_type"),
                          (replace_ranges(mean_rate=(float("nan"), 3.0)), "mean_rate")):
        with pytest.raises(ConfigurationError, match=words):
            draw_retina(0, ranges)
    assert draw_retina(0).parameters == draw_retina(0, replace_ranges()).parameters


def test_a_fit_that_diverges_is_an_error_not_a_nan_model(tmp_path):
    """Ramp rates of up to 2300 Hz over random frames make the first epoch diverge: that was a
    RuntimeError from torch's line search (or, past it, a model predicting NaN); now a NonFiniteError."""
    from recording_fixtures import published_split, write_published_recording

    path = write_published_recording(tmp_path / "e" / "naturalscene.h5",
                                     {"train": published_split(3, 300, seed=1), "test": published_split(3, 60)})
    rec = retcodec.load_recording(path, split="train")
    with pytest.raises(NonFiniteError, match="diverged in epoch 1"):
        retcodec.fit(rec, epochs=1, batch_size=16, recalibration_windows=64)
