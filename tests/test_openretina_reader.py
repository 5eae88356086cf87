"""The distributed ganglion_cell_data tree: every rate, both repeat layouts, same layout as load_recording."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from retcodec.errors import ConfigurationError, MissingDataError, RecordingError, ShapeError
from retcodec.io.openretina import published_tree, session_file, sessions
from retcodec.io.openretina.recording import load_published_recording, rate_names
from retcodec.io.recordings import load_recording

from openretina_fixtures import H, N_CELLS, N_REP, WIDTHS, write_session


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    rng = np.random.default_rng(0)
    a = write_session(root / "ganglion_cell_data" / "15-10-07" / "naturalscene.h5", "cells", rng)
    b = write_session(root / "ganglion_cell_data" / "15-11-21a" / "naturalscene.h5", "arrays", rng,
                      extra_test_bin=True)
    return root, {"15-10-07": a, "15-11-21a": b}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("session", ["15-10-07", "15-11-21a"])
def test_every_rate_and_both_repeat_layouts(tree, session, width):
    root, values = tree
    ds = load_published_recording(root, session=session, stim_type="naturalscene", response=f"firing_rate_{width}ms")
    v = values[session]
    np.testing.assert_array_equal(ds["stimulus"].values, v["test/stimulus"])
    np.testing.assert_array_equal(ds["rate"].values, v[f"test/firing_rate_{width}ms"][:, :50].astype(float))
    expected = v["repeats"] if session == "15-10-07" else v[f"repeats_{width}"]
    np.testing.assert_array_equal(ds["repeats"].values, expected.astype(float))
    assert ds.attrs["response"] == f"firing_rate_{width}ms"
    assert ds.attrs["rate_width_s"] == pytest.approx(width / 1000)
    assert ds.attrs["dt"] == pytest.approx(0.01)
    assert ds.attrs["repeats_layout"] == ("test/repeats/cellNN" if session == "15-10-07"
                                          else f"test/repeats/firing_rate_{width}ms")
    assert ds.attrs["trimmed_bins"] == (1 if session == "15-11-21a" else 0)
    assert ds.attrs["session"] == ds.attrs["experiment"] == session
    assert dict(ds.sizes) == {"time": 50, "y": H, "x": H, "cell": N_CELLS, "repeat": N_REP}


def test_same_layout_as_load_recording(tree):
    root, _ = tree
    file = session_file(root, "15-10-07", "naturalscene")
    ours = load_published_recording(file)
    theirs = load_recording(file, split="test")
    assert set(ours.data_vars) == set(theirs.data_vars)
    assert set(ours.coords) == set(theirs.coords)
    for name in ("stimulus", "rate", "spikes", "repeats"):
        assert ours[name].dims == theirs[name].dims
        np.testing.assert_array_equal(ours[name].values, theirs[name].values)
    np.testing.assert_array_equal(ours["time"].values, theirs["time"].values)
    assert set(theirs.attrs) <= set(ours.attrs)
    for key in ("norm_mean", "norm_std", "dt", "frame_rate", "experiment", "stim_type", "split"):
        assert ours.attrs[key] == theirs.attrs[key]
    train = load_published_recording(file, split="train", response="firing_rate_20ms", cells=[2, 0])
    assert train["cell"].values.tolist() == [2, 0] and train.sizes["time"] == 60


def test_tree_helpers_and_errors(tree, tmp_path):
    root, _ = tree
    assert sessions(root) == ["15-10-07", "15-11-21a"]
    assert rate_names(session_file(root, "15-10-07")) == [f"firing_rate_{w}ms" for w in WIDTHS]
    with pytest.raises(MissingDataError, match="sessions there are"):
        session_file(root, "nope")
    with pytest.raises(ConfigurationError, match="name the session"):
        load_published_recording(root)
    with pytest.raises(RecordingError, match="its rates are"):
        load_published_recording(root, session="15-10-07", response="firing_rate_50ms")
    with pytest.raises(ConfigurationError, match="firing_rate_<width>ms"):
        load_published_recording(root, session="15-10-07", response="binned")
    bad = tmp_path / "ganglion_cell_data" / "s" / "naturalscene.h5"
    write_session(bad, "cells", np.random.default_rng(1))
    with h5py.File(bad, "a") as f:
        del f["test/response/firing_rate_10ms"]
        f["test/response/firing_rate_10ms"] = np.ones((N_CELLS, 25), np.float32)   # half-rate samples
    with pytest.raises(ShapeError, match="one rate per frame"):
        load_published_recording(bad)
    linked = published_tree({"copy": [session_file(root, "15-10-07")]}, tmp_path / "tree")
    assert session_file(linked, "copy").read_bytes() == session_file(root, "15-10-07").read_bytes()
