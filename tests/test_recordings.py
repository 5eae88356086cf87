"""Recordings: published layout -> labelled, lazy xarray data and model windows."""
from __future__ import annotations

import pickle
import time as _time

import h5py
import numpy as np
import pytest
import xarray as xr

from recording_fixtures import (file_fingerprint, index_stimulus, published_split, ramp_rate,
                                truncate_half, write_published_recording)
from retcodec.io import recordings as recordings
from retcodec.errors import (CellMismatchError, ConfigurationError, MissingDataError,
                             NonFiniteError, RecordingError, ShapeError)
from retcodec.io.recordings import (PUBLISHED_CELLS, Windows, load_recording, stimulus_norm_stats,
                                 windows, write_recording)

EXPT = "15-10-07"
N_CELLS, T_TRAIN, T_TEST, H = 6, 90, 100, 40


@pytest.fixture
def root(tmp_path):
    """<root>/15-10-07/naturalscene.h5 with index-coded test frames and 3 repeats per cell."""
    test = published_split(N_CELLS, T_TEST, seed=1)
    test["stimulus"] = index_stimulus(T_TEST)
    repeats = {c: np.full((3, T_TEST), float(c)) + np.arange(3)[:, None] for c in range(N_CELLS)}
    write_published_recording(tmp_path / EXPT / "naturalscene.h5",
                              {"train": published_split(N_CELLS, T_TRAIN, seed=0), "test": test},
                              repeats=repeats)
    return tmp_path


@pytest.fixture
def rec_file(root):
    return root / EXPT / "naturalscene.h5"


def _train_stimulus(path):
    with h5py.File(path, "r") as h5:
        return h5["train/stimulus"][()]


# --------------------------------------------------------------------------- layout -> Dataset
def test_dataset_dims_coords_and_attrs(rec_file):
    with load_recording(rec_file) as ds:
        assert ds["stimulus"].dims == ("time", "y", "x") and ds["stimulus"].dtype == np.uint8
        assert ds["stimulus"].shape == (T_TEST, 50, 50)
        assert ds["rate"].dims == ds["spikes"].dims == ("cell", "time")
        assert ds["repeats"].dims == ("repeat", "cell", "time")
        np.testing.assert_array_equal(ds["time"], np.arange(T_TEST) * 0.01)
        np.testing.assert_array_equal(ds["cell"], np.arange(N_CELLS))
        np.testing.assert_array_equal(ds["y"], np.arange(50))
        np.testing.assert_array_equal(ds["rate"], ramp_rate(N_CELLS, T_TEST))
        np.testing.assert_array_equal(ds["repeats"].sel(cell=4, repeat=2), np.full(T_TEST, 6.0))
        assert ds.attrs["experiment"] == EXPT and ds.attrs["stim_type"] == "naturalscene"
        assert ds.attrs["split"] == "test" and ds.attrs["trimmed_bins"] == 0
        assert ds.attrs["frame_rate"] == 100.0 and ds.attrs["dt"] == 0.01
        assert ds.attrs["source_file"] == str(rec_file.resolve())
        assert ds["rate"].attrs["units"] == "Hz"


def test_train_split_and_root_folder_path(root, rec_file):
    with load_recording(root, split="train", experiment=EXPT) as ds:
        assert ds.sizes["time"] == T_TRAIN and ds.attrs["split"] == "train"
        assert "repeats" not in ds
        assert ds.attrs["source_file"] == str(rec_file.resolve())
    with pytest.raises(ConfigurationError, match="experiment="):
        load_recording(root)
    with pytest.raises(MissingDataError, match="naturalscene"):
        load_recording(root, experiment=EXPT, stim_type="whitenoise")
    with pytest.raises(ConfigurationError, match="split"):
        load_recording(rec_file, split="validation")


def test_norm_stats_are_global_train_mean_and_population_std(rec_file, monkeypatch):
    stim = _train_stimulus(rec_file).astype(np.float64)
    monkeypatch.setattr(recordings, "_STIM_BLOCK_PIXELS", 7 * 2500)   # 7-frame blocks
    recordings._norm_stats_cached.cache_clear()
    with load_recording(rec_file, split="test") as ds:
        assert ds.attrs["norm_mean"] == pytest.approx(stim.mean(), rel=1e-12)
        assert ds.attrs["norm_std"] == pytest.approx(stim.std(ddof=0) + 1e-7, rel=1e-12)
    test_stim = index_stimulus(T_TEST).astype(float)
    assert ds.attrs["norm_mean"] != pytest.approx(test_stim.mean())
    hits = recordings._norm_stats_cached.cache_info().hits
    assert stimulus_norm_stats(rec_file) == {"mean": ds.attrs["norm_mean"],
                                             "std": ds.attrs["norm_std"]}
    assert recordings._norm_stats_cached.cache_info().hits == hits + 1


def test_norm_stats_cache_follows_file_changes(tmp_path):
    path = tmp_path / EXPT / "whitenoise.h5"
    splits = {"train": published_split(2, 50, seed=3), "test": published_split(2, 45, seed=4)}
    write_published_recording(path, splits)
    first = stimulus_norm_stats(path)
    alternating = np.where(np.arange(50) % 2, 8, 10).astype(np.uint8)[:, None, None]
    splits["train"]["stimulus"] = np.broadcast_to(alternating, (50, 50, 50)).copy()
    write_published_recording(path, splits)
    assert stimulus_norm_stats(path) == {"mean": 9.0, "std": 1.0 + 1e-7} != first


# --------------------------------------------------------------------------- windows
def test_window_k_holds_frames_k_to_k_plus_history_and_predicts_bin_k_plus_history(rec_file):
    with load_recording(rec_file) as ds:
        w = windows(ds, norm_stats={"mean": 0.0, "std": 1.0})
        assert isinstance(w, Windows) and len(w) == T_TEST - H
        assert w.shape == (T_TEST - H, H, 50, 50)
        k = 7
        np.testing.assert_array_equal(w[k][:, 0, 0], np.arange(k, k + H))
        assert w[k].dtype == np.float32 and w[k].shape == (H, 50, 50)
        assert w.time[k] == ds["time"].values[k + H]
        rate = w.rate()
        assert rate.dims == ("time", "cell")
        np.testing.assert_array_equal(rate[k], 1000.0 * np.arange(N_CELLS) + k + H)
        xr.testing.assert_identical(ds["rate"].sel(time=w.time).T, rate)
        np.testing.assert_array_equal(w.cells, ds["cell"].values)
        assert w.history == H and w.recording is ds


def test_window_indexing_forms_agree(rec_file):
    with load_recording(rec_file) as ds:
        w = windows(ds, norm_stats=[0, 1])
        stack = np.stack([w[i] for i in range(len(w))])
        np.testing.assert_array_equal(w[:], stack)
        np.testing.assert_array_equal(w[3:11], stack[3:11])
        np.testing.assert_array_equal(w[1:20:6], stack[1:20:6])
        np.testing.assert_array_equal(w[-1], stack[-1])
        idx = np.array([25, 2, 3, 29, 2])
        np.testing.assert_array_equal(w[idx], stack[idx])
        mask = np.arange(len(w)) % 4 == 0
        np.testing.assert_array_equal(w[mask], stack[mask])
        assert w[5:5].shape == (0, H, 50, 50)
        batches = list(w.batches(25))
        assert [b.shape[0] for _, b in batches] == [25, 25, 10]
        np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), stack)
        with pytest.raises(IndexError):
            w[len(w)]
        with pytest.raises(IndexError):
            w[np.array([0, len(w)])]


def test_zscore_uses_train_stats_by_default_and_model_stats_when_given(rec_file):
    with load_recording(rec_file) as ds:
        mean, std = ds.attrs["norm_mean"], ds.attrs["norm_std"]
        frames = ds["stimulus"].values.astype(np.float32)
        w = windows(ds)
        assert w.norm_stats == {"mean": mean, "std": std}
        np.testing.assert_allclose(w[3], (frames[3:3 + H] - mean) / std, rtol=1e-6)
        model = windows(ds, norm_stats={"mean": np.float32(10.0), "std": 2.0})
        np.testing.assert_allclose(model[3], (frames[3:3 + H] - 10.0) / 2.0)
        assert windows(ds, norm_stats=(10.0, 2.0)).norm_stats == {"mean": 10.0, "std": 2.0}
        with pytest.raises(ConfigurationError, match="std"):
            windows(ds, norm_stats={"mean": 0.0, "std": 0.0})
        with pytest.raises(ConfigurationError, match="'mean' and 'std'"):
            windows(ds, norm_stats={"mu": 0.0})
        with pytest.raises(NonFiniteError):
            windows(ds, norm_stats=[np.nan, 1.0])


def test_bare_stimulus_array_and_dataarray(rec_file):
    stim = index_stimulus(60, size=8)
    w = windows(stim, norm_stats=[1.0, 2.0], history=10)
    assert len(w) == 50 and w.cells is None and w.recording is None
    np.testing.assert_array_equal(w.time, np.arange(10, 60) * 0.01)
    np.testing.assert_allclose(w[4][:, 0, 0], (np.arange(4, 14) - 1.0) / 2.0)
    da = xr.DataArray(stim, dims=("time", "y", "x"), attrs={"norm_mean": 1.0, "norm_std": 2.0})
    np.testing.assert_array_equal(windows(da, history=10)[4], w[4])
    with pytest.raises(ConfigurationError, match="norm_stats"):
        windows(stim)
    with pytest.raises(ConfigurationError, match="recording"):
        w.rate()
    with pytest.raises(ShapeError, match="at least 61"):
        windows(stim, norm_stats=[0, 1], history=60)
    with pytest.raises(ShapeError, match="time, y, x"):
        windows(stim[0], norm_stats=[0, 1])
    with pytest.raises(ConfigurationError, match="history"):
        windows(stim, norm_stats=[0, 1], history=0)


# --------------------------------------------------------------------------- laziness
@pytest.fixture
def stimulus_reads(monkeypatch):
    """Frames read from any '<split>/stimulus' dataset, as (dataset name, n_frames) pairs."""
    reads: list[tuple[str, int]] = []
    original = h5py.Dataset.__getitem__

    def spy(self, key, *args, **kwargs):
        if self.name.endswith("/stimulus"):
            first = key[0] if isinstance(key, tuple) else key
            reads.append((self.name, np.arange(self.shape[0])[first].size))
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return reads


def test_stimulus_is_lazy_and_slices_read_only_needed_frames(rec_file, stimulus_reads):
    stimulus_norm_stats(rec_file)                   # train stats cached beforehand
    stimulus_reads.clear()
    with load_recording(rec_file) as ds:
        assert stimulus_reads == []                 # loading reads no test frame
        assert not isinstance(ds["stimulus"].variable._data, np.ndarray)
        w = windows(ds, norm_stats=[0, 1])
        w[10:15]
        assert stimulus_reads == [("/test/stimulus", 5 + H - 1)]
        stimulus_reads.clear()
        w[np.array([50, 0])]                        # two separate runs of 40 frames
        assert sorted(n for _, n in stimulus_reads) == [H, H]
        stimulus_reads.clear()
        w[np.array([0, 25, 5])]                     # overlapping windows: one run 0..64
        assert stimulus_reads == [("/test/stimulus", 25 + H)]
        stimulus_reads.clear()
        ds["stimulus"].isel(time=3).values
        assert stimulus_reads == [("/test/stimulus", 1)]


def test_huge_declared_chunked_stimulus_opens_fast(tmp_path):
    path = tmp_path / "big" / "naturalscene.h5"
    write_published_recording(path, {"train": published_split(2, 50, size=50)})
    n_time = 2_000_000                              # 5 GB declared, nothing written
    with h5py.File(path, "a") as h5:
        h5.create_dataset("test/stimulus", (n_time, 50, 50), np.uint8, chunks=(128, 50, 50))
        h5.create_dataset("test/time", (n_time,), np.float64, chunks=(1 << 16,))
        for name in ("firing_rate_10ms", "binned"):
            h5.create_dataset(f"test/response/{name}", (2, n_time), np.float32, chunks=(2, 1 << 16))
    assert path.stat().st_size < 10_000_000
    start = _time.perf_counter()
    with load_recording(path) as ds:
        w = windows(ds, norm_stats=[0, 1])
        last = w[-1]
    assert _time.perf_counter() - start < 10.0
    assert len(w) == n_time - H and last.shape == (H, 50, 50)


def test_dataset_pickles_and_reopens_file(rec_file):
    with load_recording(rec_file) as ds:
        expected = ds["stimulus"][5].values
        clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone["stimulus"][5].values, expected)
    clone.close()


# --------------------------------------------------------------------------- quirks and cells
def test_white_noise_test_response_one_bin_longer_is_trimmed(tmp_path):
    path = tmp_path / EXPT / "whitenoise.h5"
    write_published_recording(
        path, {"train": published_split(3, 60), "test": published_split(3, 50, n_resp=51)},
        repeats={0: np.arange(2 * 51.0).reshape(2, 51)})
    with load_recording(path) as ds:
        assert ds.sizes["time"] == 50 and ds.attrs["trimmed_bins"] == 1
        assert "white-noise" in ds.attrs["notes"]
        np.testing.assert_array_equal(ds["rate"], ramp_rate(3, 51)[:, :50])
        np.testing.assert_array_equal(ds["repeats"].sel(cell=0)[1], np.arange(51.0, 101.0))
        assert np.isnan(ds["repeats"].sel(cell=2)).all()


def test_response_longer_by_more_than_one_bin_is_an_error(tmp_path):
    path = tmp_path / EXPT / "whitenoise.h5"
    write_published_recording(
        path, {"train": published_split(3, 60), "test": published_split(3, 50, n_resp=52)})
    with pytest.raises(RecordingError, match="52 time bins but the stimulus has 50") as err:
        load_recording(path)
    assert isinstance(err.value, ShapeError)


def test_cell_selection(rec_file):
    with load_recording(rec_file, cells=[3, 1]) as ds:
        np.testing.assert_array_equal(ds["cell"], [3, 1])
        np.testing.assert_array_equal(ds["rate"], ramp_rate(N_CELLS, T_TEST)[[3, 1]])
        np.testing.assert_array_equal(ds["repeats"].sel(repeat=0), [np.full(T_TEST, 3.0),
                                                                     np.full(T_TEST, 1.0)])
        assert ds.attrs["cells_selection"] == "list"
    with load_recording(rec_file, cells="published") as ds:
        np.testing.assert_array_equal(ds["cell"], PUBLISHED_CELLS[EXPT])
    with load_recording(rec_file, cells="all") as ds:
        assert ds.sizes["cell"] == N_CELLS
    with pytest.raises(CellMismatchError, match=r"\[6, -1\].*0\.\.5"):
        load_recording(rec_file, cells=[0, 6, -1])
    with pytest.raises(CellMismatchError, match="empty"):
        load_recording(rec_file, cells=[])
    with pytest.raises(CellMismatchError, match="repeat"):
        load_recording(rec_file, cells=[1, 1])
    with pytest.raises(CellMismatchError, match="no published cell list"):
        load_recording(rec_file, cells="published", experiment="my-retina")
    with pytest.raises(ConfigurationError):
        load_recording(rec_file, cells="some")


def test_published_cells_out_of_range_for_small_file(tmp_path):
    path = tmp_path / "15-11-21b" / "naturalscene.h5"
    write_published_recording(path, {"train": published_split(4, 45), "test": published_split(4, 45)})
    with pytest.raises(CellMismatchError, match="0..3"):
        load_recording(path, cells="published")


def test_truth_group_becomes_cell_coordinates(tmp_path):
    path = tmp_path / "insilico" / "naturalscene.h5"
    truth = {"cell_type": np.array(["ON", "OFF", "ON", "OFF"]),
             "center": np.array([[10, 11], [20, 21], [30, 31], [40, 41]], dtype=float),
             "polarity": np.array([1, -1, 1, -1])}
    write_published_recording(path, {"train": published_split(4, 45), "test": published_split(4, 45)},
                              truth=truth, circuit='{"layers": 2}')
    with load_recording(path, cells=[2, 1]) as ds:
        assert ds["cell_type"].dims == ("cell",)
        assert ds["cell_type"].values.tolist() == ["ON", "OFF"]
        np.testing.assert_array_equal(ds["center_y"], [30.0, 20.0])
        np.testing.assert_array_equal(ds["center_x"], [31.0, 21.0])
        np.testing.assert_array_equal(ds["polarity"], [1, -1])
        assert ds.attrs["truth_circuit"] == '{"layers": 2}'
        assert ds.sel(cell=1)["cell_type"].item() == "OFF"


# --------------------------------------------------------------------------- writing
def test_write_recording_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    train = {"stimulus": rng.integers(0, 256, (60, 50, 50)).astype(np.float64),
             "firing_rate_10ms": rng.random((3, 60)) * 50, "binned": rng.integers(0, 3, (3, 60)),
             "stas": rng.random((3, 40, 5, 5))}
    test = {"stimulus": rng.integers(0, 256, (45, 50, 50), dtype=np.uint8),
            "firing_rate_10ms": rng.random((3, 45)), "binned": rng.integers(0, 3, (3, 45)),
            "repeats": rng.random((3, 4, 45))}
    truth = {"cell_type": ["ON", "OFF", "ON"], "center": [[1, 2], [3, 4], [5, 6]],
             "circuit": {"n_types": 2}}
    path = write_recording(tmp_path / "insilico" / "naturalscene.h5", train=train, test=test,
                           attrs={"experiment": "insilico", "seed": 5}, truth=truth)
    assert sorted(p.name for p in path.parent.iterdir()) == ["naturalscene.h5"]   # no temp file
    with h5py.File(path, "r") as h5:
        stim = h5["train/stimulus"]
        assert stim.dtype == np.uint8 and stim.compression == "gzip" and stim.chunks[1:] == (50, 50)
        assert h5["test/repeats/cell03"].shape == (4, 45) and h5["train/stas/cell01"].shape == (40, 5, 5)
        assert h5.attrs["seed"] == 5 and "retcodec_version" in h5.attrs
        assert set(h5) == {"train", "test", "truth"}
    with load_recording(path, split="train") as ds:
        np.testing.assert_array_equal(ds["stimulus"].values, train["stimulus"])
        np.testing.assert_allclose(ds["rate"], train["firing_rate_10ms"], rtol=1e-6)
        np.testing.assert_array_equal(ds["spikes"], train["binned"])
        assert ds.attrs["norm_mean"] == pytest.approx(train["stimulus"].mean(), rel=1e-12)
    with load_recording(path, split="test") as ds:
        np.testing.assert_array_equal(ds["stimulus"].values, test["stimulus"])
        np.testing.assert_allclose(ds["repeats"].transpose("cell", "repeat", "time"),
                                   test["repeats"], rtol=1e-6)
        assert ds["cell_type"].values.tolist() == ["ON", "OFF", "ON"]
        np.testing.assert_array_equal(ds["center_x"], [2, 4, 6])
        assert ds.attrs["truth_circuit"] == '{"n_types": 2}'


def test_write_recording_keeps_non_integer_stimulus_and_rejects_bad_input(tmp_path):
    stim = np.linspace(-1, 1, 45 * 4 * 4).reshape(45, 4, 4)
    split = {"stimulus": stim, "firing_rate_10ms": np.ones((2, 45)), "binned": np.ones((2, 45))}
    path = write_recording(tmp_path / "e" / "s.h5", train=split, test=split, compression=None)
    with h5py.File(path, "r") as h5:
        assert h5["test/stimulus"].dtype == np.float32
    bad = dict(split, firing_rate_10ms=np.ones((2, 44)))
    with pytest.raises(ShapeError, match="firing_rate_10ms"):
        write_recording(tmp_path / "e" / "bad.h5", train=split, test=bad)
    with pytest.raises(NonFiniteError):
        write_recording(tmp_path / "e" / "bad.h5", train=split,
                        test=dict(split, firing_rate_10ms=np.full((2, 45), np.nan)))
    with pytest.raises(ShapeError, match="train has 2 cells, test 3"):
        write_recording(tmp_path / "e" / "bad.h5", train=split,
                        test=dict(split, firing_rate_10ms=np.ones((3, 45)), binned=np.ones((3, 45))))
    with pytest.raises(ShapeError, match=r"truth\['cell_type'\]"):
        write_recording(tmp_path / "e" / "bad.h5", train=split, test=split,
                        truth={"cell_type": ["a", "b", "c"]})
    with pytest.raises(ConfigurationError, match="unknown keys"):
        write_recording(tmp_path / "e" / "bad.h5", train=split, test=dict(split, spikes=1))
    assert not (tmp_path / "e" / "bad.h5").exists()


# --------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        load_recording(tmp_path / EXPT / "naturalscene.h5")


def test_missing_dataset_names_path_and_layout(tmp_path):
    path = tmp_path / EXPT / "naturalscene.h5"
    test = published_split(3, 50)
    del test["firing_rate_10ms"]
    write_published_recording(path, {"train": published_split(3, 50), "test": test})
    with pytest.raises(RecordingError, match="'test/response/firing_rate_10ms' is missing.*expected layout"):
        load_recording(path)
    write_published_recording(path, {"test": published_split(3, 50)})
    with pytest.raises(RecordingError, match="'train/stimulus' is missing"):
        load_recording(path)


@pytest.mark.parametrize("key, value, message", [
    ("stimulus", np.zeros((50, 2500), np.uint8), "expected 3-D"),
    ("firing_rate_10ms", np.zeros(50), "expected 2-D"),
    ("binned", np.zeros((2, 50)), "binned"),
    ("time", np.zeros(30), "'test/time'"),
])
def test_wrong_shapes(tmp_path, key, value, message):
    path = tmp_path / EXPT / "naturalscene.h5"
    test = dict(published_split(3, 50), **{key: value})
    write_published_recording(path, {"train": published_split(3, 50), "test": test})
    with pytest.raises(ShapeError, match=message) as err:
        load_recording(path)
    assert isinstance(err.value, RecordingError)


def test_nan_rate(tmp_path):
    path = tmp_path / EXPT / "naturalscene.h5"
    test = published_split(3, 50)
    test["firing_rate_10ms"][1, 7] = np.nan
    write_published_recording(path, {"train": published_split(3, 50), "test": test})
    with pytest.raises(NonFiniteError, match=r"cells \[1\]"):
        load_recording(path)
    with load_recording(path, cells=[0, 2]) as ds:
        assert np.isfinite(ds["rate"]).all()


def test_nan_stimulus_caught_before_the_model(tmp_path):
    path = tmp_path / EXPT / "naturalscene.h5"
    test = published_split(2, 60)
    test["stimulus"] = test["stimulus"].astype(np.float32)
    test["stimulus"][50, 3, 3] = np.nan
    write_published_recording(path, {"train": published_split(2, 60), "test": test})
    with load_recording(path) as ds:
        w = windows(ds)
        assert np.isfinite(w[0:5]).all()            # frames 0..43 are finite
        with pytest.raises(NonFiniteError, match="NaN"):
            w[15]
    with pytest.raises(NonFiniteError, match="frames"):
        load_recording(path, validate=True)
    train = dict(published_split(2, 60), stimulus=test["stimulus"])
    write_published_recording(path, {"train": train, "test": published_split(2, 60)})
    with pytest.raises(NonFiniteError, match="train/stimulus"):
        load_recording(path)


def test_truncated_and_non_hdf5_files(rec_file, tmp_path):
    truncate_half(rec_file)
    with pytest.raises(RecordingError, match="truncated"):
        load_recording(rec_file)
    junk = tmp_path / "x" / "naturalscene.h5"
    junk.parent.mkdir()
    junk.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(RecordingError, match="cannot be opened as HDF5"):
        load_recording(junk)


def test_reading_leaves_the_file_unchanged(rec_file):
    before = file_fingerprint(rec_file)
    with load_recording(rec_file, split="train", cells="published", validate=True) as ds:
        windows(ds)[0:10]
    with load_recording(rec_file) as ds:
        windows(ds).rate()
    assert file_fingerprint(rec_file) == before


# --------------------------------------------------------------------------- bad values
import subprocess  # noqa: E402
import sys  # noqa: E402
import os  # noqa: E402

from retcodec.errors import FileInUseError, RecordingValueError, UnreadableFileError  # noqa: E402
from retcodec.io.recordings import MAX_RATE_HZ  # noqa: E402


def _replace_dataset(path, name, value):
    with h5py.File(path, "a") as h5:
        del h5[name]
        h5.create_dataset(name, data=value)


@pytest.mark.parametrize("name, value, match", [
    ("test/stimulus", np.full((100, 50, 50), b"ab"), "bytes"),
    ("train/stimulus", np.full((90, 50, 50), b"ab"), "bytes"),
    ("test/stimulus", np.ones((100, 50, 50), np.complex64), "complex"),
    ("test/response/firing_rate_10ms", np.full((N_CELLS, T_TEST), b"1.5"), "bytes"),
    ("test/response/firing_rate_10ms", np.ones((N_CELLS, T_TEST), np.complex128), "complex"),
    ("test/response/binned", np.full((N_CELLS, T_TEST), b"1"), "bytes"),
    ("test/response/firing_rate_10ms",
     np.zeros((N_CELLS, T_TEST), dtype=[("a", "f4"), ("b", "f4")]), "compound"),
], ids=["bytes-stimulus", "bytes-train-stimulus", "complex-stimulus", "bytes-rate", "complex-rate",
        "bytes-binned", "compound-rate"])
def test_non_numeric_datasets_are_refused(rec_file, name, value, match):
    _replace_dataset(rec_file, name, value)
    with pytest.raises(RecordingValueError, match=match) as info:
        load_recording(rec_file)
    assert "real numbers" in str(info.value) and name.split("/")[-1] in str(info.value)


@pytest.mark.parametrize("value, match", [(-0.5, "negative"), (1e30, "plausible limit"),
                                          (MAX_RATE_HZ * 1.01, "MAX_RATE_HZ")])
def test_implausible_rates_are_refused_naming_the_cells(rec_file, value, match):
    with h5py.File(rec_file, "a") as h5:
        h5["test/response/firing_rate_10ms"][4, 10] = value
    with pytest.raises(RecordingValueError, match=match) as info:
        load_recording(rec_file)
    assert "cells [4]" in str(info.value)
    with load_recording(rec_file, cells=[0, 1]) as ds:      # the other cells still load
        assert ds.sizes["cell"] == 2


def test_negative_spike_counts_and_repeats_are_refused(rec_file):
    with h5py.File(rec_file, "a") as h5:
        del h5["test/response/binned"]
        h5["test/response/binned"] = -np.ones((N_CELLS, T_TEST), np.int16)
    with pytest.raises(RecordingValueError, match="negative spike counts"):
        load_recording(rec_file)


def test_negative_repeats_are_refused(rec_file):
    with h5py.File(rec_file, "a") as h5:
        h5["test/repeats/cell02"][0, 3] = -7
    with pytest.raises(RecordingValueError, match=r"repeats.*cells \[1\]"):
        load_recording(rec_file)


def test_constant_train_stimulus_is_refused(rec_file):
    _replace_dataset(rec_file, "train/stimulus", np.full((T_TRAIN, 50, 50), 128, np.uint8))
    with pytest.raises(RecordingValueError, match="constant") as info:
        load_recording(rec_file)
    assert "1e9" in str(info.value)


def test_complex_or_bytes_arrays_are_refused_by_windows():
    with pytest.raises(RecordingValueError, match="complex"):
        windows(np.ones((50, 50, 50), np.complex64), norm_stats=[0, 1])
    with pytest.raises(RecordingValueError, match="bytes"):
        windows(np.full((50, 5, 5), b"x"), norm_stats=[0, 1])


@pytest.mark.parametrize("key, value, match", [
    ("firing_rate_10ms", -np.ones((2, 50)), "negative"),
    ("firing_rate_10ms", np.full((2, 50), 1e30), "plausible"),
    ("firing_rate_10ms", np.full((2, 50), b"x"), "bytes"),
    ("binned", -np.ones((2, 50), int), "negative"),
    ("stimulus", np.ones((50, 50, 50), complex), "complex"),
])
def test_write_recording_refuses_bad_values(tmp_path, key, value, match):
    split = {"stimulus": np.zeros((50, 50, 50), np.uint8), "firing_rate_10ms": np.ones((2, 50)),
             "binned": np.ones((2, 50), int)}
    with pytest.raises(RecordingValueError, match=match):
        write_recording(tmp_path / "r.h5", train={**split, key: value}, test=split)
    assert not (tmp_path / "r.h5").exists()


_HOLD_OPEN = ("import h5py, sys; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True); "
              "sys.stdin.read()")


def test_file_locked_by_another_process_is_reported_as_in_use(rec_file, monkeypatch):
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_OPEN, str(rec_file)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FileInUseError, match="in use by another process") as info:
            load_recording(rec_file)
        assert "truncated" not in str(info.value) and "corrupt" not in str(info.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with load_recording(rec_file) as ds:                  # free again once the writer is gone
        assert ds.sizes["cell"] == N_CELLS


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_recording_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / EXPT / "naturalscene.h5"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        load_recording(fifo)
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        stimulus_norm_stats(fifo)


@pytest.mark.parametrize("history", ["abc", 1.5, 0, -3, True, None])
def test_bad_history_is_a_configuration_error(rec_file, history):
    with load_recording(rec_file) as ds:
        with pytest.raises(ConfigurationError, match="history must be a whole number"):
            windows(ds, history=history)


@pytest.mark.parametrize("norm_stats", [{"mean": "a", "std": 1}, ["x", "y"], {"mean": 0, "std": [1, 2]}])
def test_norm_stats_that_are_not_numbers(rec_file, norm_stats):
    with load_recording(rec_file) as ds:
        with pytest.raises(ConfigurationError, match="norm_stats"):
            windows(ds, norm_stats=norm_stats)
