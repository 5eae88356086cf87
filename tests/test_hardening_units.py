"""Units and scales of stimuli against the norm stats they are z-scored with (issue 26)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import retcodec
from retcodec.errors import NonFiniteError, RecordingValueError
from retcodec.io.recordings import write_recording

NORM = {"mean": 112.96, "std": 73.08}          # the bundled model's: a uint8 train stimulus


def _split(stimulus):
    n = stimulus.shape[0]
    rng = np.random.default_rng(1)
    return {"stimulus": stimulus, "firing_rate_10ms": rng.random((2, n)).astype(np.float32),
            "binned": rng.integers(0, 2, (2, n))}


def _frames(n=60, dtype=np.uint8, top=255):
    return (np.random.default_rng(0).random((n, 50, 50)) * top).astype(dtype)


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def test_stimulus_in_the_train_units_raises_no_warning():
    w = retcodec.windows(_frames(), norm_stats=NORM)
    _no_warning(lambda: w[0:3])


@pytest.mark.parametrize("stimulus, words", [
    (_frames(dtype=np.uint16, top=65535), "uint16"),          # x257 the uint8 range
    (_frames(dtype=np.float32, top=1.0), "float32"),           # [0, 1] floats
    (_frames(dtype=np.float64, top=255.0) * 1000, "float64")])
def test_stimulus_on_another_scale_than_the_norm_stats_warns_naming_both(stimulus, words):
    w = retcodec.windows(stimulus, norm_stats=NORM)
    with pytest.warns(RuntimeWarning, match=rf"{words}.*z-scored with mean 112\.96 and std 73\.08"):
        w[0:2]


def test_test_split_in_other_units_than_the_train_split_warns(tmp_path):
    path = tmp_path / "expt" / "naturalscene.h5"
    write_recording(path, train=_split(_frames()), test=_split(_frames(dtype=np.uint16, top=65535)))
    rec = retcodec.load_recording(path)
    assert rec.attrs["norm_stimulus_dtype"] == "uint8"
    w = retcodec.windows(rec)
    with pytest.warns(RuntimeWarning, match=r"the test stimulus \(float32\).*train split of.*\(a uint8 stimulus\)"):
        w[0:2]
    consistent = tmp_path / "ok" / "naturalscene.h5"
    write_recording(consistent, train=_split(_frames()), test=_split(_frames()))
    _no_warning(lambda: retcodec.windows(retcodec.load_recording(consistent))[0:2])


@pytest.mark.parametrize("make", [
    lambda f: np.sign(f - 127.5).astype(np.float32) * np.float32(3e38),   # +-3e38
    lambda f: np.where(np.arange(len(f))[:, None, None] % 2 == 0, np.float32(1e30), f).astype(np.float32)])
def test_absurd_magnitudes_are_refused(make):
    stimulus = make(_frames().astype(np.float32))
    w = retcodec.windows(stimulus, norm_stats=NORM)
    with pytest.raises(RecordingValueError, match="beyond"):
        w[0:2]


def test_one_bad_frame_late_in_the_stimulus_is_caught_where_it_is_read():
    stimulus = _frames(n=200).astype(np.float32)
    stimulus[150] = 1e30
    w = retcodec.windows(stimulus, norm_stats=NORM)
    w[0:10]
    with pytest.raises(RecordingValueError, match="frames"):
        w[120:130]
    stimulus[150] = np.nan
    with pytest.raises(NonFiniteError):
        retcodec.windows(stimulus, norm_stats=NORM)[120:130]


@pytest.mark.parametrize("fill", [3e38, 1e30, -1e20])
def test_huge_values_in_the_train_split_are_refused_though_z_scoring_would_hide_them(tmp_path, fill):
    import h5py

    from retcodec.io import recordings

    path = tmp_path / "expt" / "naturalscene.h5"
    write_recording(path, train=_split(_frames()), test=_split(_frames()))
    stimulus = _frames().astype(np.float32)
    stimulus[::2] = np.float32(fill)                      # half the frames
    with h5py.File(path, "a") as f:                       # as another exporter would write it
        for split in ("train", "test"):
            del f[f"{split}/stimulus"]
            f[f"{split}/stimulus"] = stimulus
    recordings._norm_stats_cached.cache_clear()
    with pytest.raises(RecordingValueError, match="beyond"):
        retcodec.load_recording(path)
    with pytest.raises(RecordingValueError, match="beyond"):
        write_recording(tmp_path / "w.h5", train=_split(stimulus), test=_split(_frames()))
    with pytest.raises(RecordingValueError, match="beyond"):
        retcodec.windows(stimulus, norm_stats={"mean": 0.0, "std": abs(float(fill))})[0:2]
