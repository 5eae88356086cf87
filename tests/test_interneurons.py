"""Interneuron files: published layout -> DataTree with model-ready stimuli and aligned Vm."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

from recording_fixtures import file_fingerprint, truncate_half, write_published_interneurons
from retcodec.errors import (ConfigurationError, MissingDataError, NonFiniteError,
                             RecordingError, ShapeError)
from retcodec.io.interneurons import (cell_class_from_name, interneuron_windows, load_interneurons,
                                   prepare_interneuron_stimulus, write_interneurons)

T, N_CELLS, H = 60, 3, 40
BORDER = 6                                     # (50 - 38) / 2


def _boxes(seed=0, n_time=T):
    return np.random.default_rng(seed).integers(0, 2, (n_time, 38, 38)).astype(np.uint8)


def _vm(n_cells=N_CELLS, n_time=T):
    """Vm[c, t] = 100 c + t: cell and sample readable from the value."""
    return 100.0 * np.arange(n_cells)[:, None] + np.arange(n_time)[None, :]


@pytest.fixture
def bipolar_file(tmp_path):
    lines = np.tile(np.arange(76.0), (T, 1)) + np.arange(T)[:, None]
    return write_published_interneurons(
        tmp_path / "bipolars_late_2012.h5",
        {"boxes": (_boxes(), _vm()), "lines": (lines, _vm()),
         "flashes": (np.arange(T, dtype=float), _vm()),
         "movingbar": (np.zeros((T, 10)), _vm())},
        truth={"cell_type": np.array(["OFF bipolar", "ON bipolar", "OFF bipolar"])})


def test_tree_nodes_dims_coords_and_attrs(bipolar_file):
    tree = load_interneurons(bipolar_file)
    assert set(tree.children) == {"boxes", "lines", "flashes"}     # not 'truth', not movingbar
    assert tree.attrs["cell_class"] == "bipolar"
    assert tree.attrs["source_file"] == str(bipolar_file.resolve())
    assert "movingbar" in tree.attrs["notes"]
    node = tree["boxes"]
    assert node["stimulus"].dims == ("time", "y", "x") and node["stimulus"].shape == (T, 50, 50)
    assert node["stimulus"].dtype == np.float32
    assert node["membrane_potential"].dims == ("cell", "time")
    np.testing.assert_array_equal(node["time"], np.arange(T) * 0.01)
    np.testing.assert_array_equal(node["cell"], np.arange(N_CELLS))
    assert node["cell_type"].values.tolist() == ["OFF bipolar", "ON bipolar", "OFF bipolar"]
    assert node.attrs["stim_type"] == "boxes" and node.attrs["history"] == H


def test_boxes_become_plus_minus_one_padded_centrally(bipolar_file):
    stim = load_interneurons(bipolar_file, stim_types=["boxes"])["boxes"]["stimulus"].values
    inner = stim[:, BORDER:BORDER + 38, BORDER:BORDER + 38]
    np.testing.assert_array_equal(inner, 2.0 * _boxes() - 1.0)
    assert set(np.unique(inner)) == {-1.0, 1.0}
    border = stim.copy()
    border[:, BORDER:BORDER + 38, BORDER:BORDER + 38] = 0
    assert not border.any()


def test_lines_and_flashes_preparation():
    raw = np.array([[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]])     # W = 6 -> 3 bars
    stim, _ = prepare_interneuron_stimulus("lines", raw)
    bars = np.array([1.0, 5.0, 9.0])                        # means of adjacent pairs
    top = (50 - 3) // 2
    np.testing.assert_array_equal(stim[0, top:top + 3, top:top + 3], np.tile(bars, (3, 1)))
    assert stim.shape == (1, 50, 50) and np.abs(stim).sum() == 3 * bars.sum()
    flashes, _ = prepare_interneuron_stimulus("flashes", np.array([0.5, -1.0]))
    np.testing.assert_array_equal(flashes[:, BORDER:BORDER + 38, BORDER:BORDER + 38],
                                  np.array([0.5, -1.0])[:, None, None] * np.ones((2, 38, 38)))
    assert flashes[:, :BORDER].sum() == 0 and flashes[:, :, -BORDER:].sum() == 0
    with pytest.raises(ShapeError, match="do not fit"):
        prepare_interneuron_stimulus("lines", np.zeros((2, 104)))
    with pytest.raises(ConfigurationError, match="movingbar"):
        prepare_interneuron_stimulus("movingbar", np.zeros((2, 10)))


def test_windows_pair_vm_at_history_plus_k(bipolar_file):
    tree = load_interneurons(bipolar_file, stim_types=["boxes", "flashes"])
    w, vm = interneuron_windows(tree["flashes"])
    assert len(w) == T - H and vm.dims == ("time", "cell") and vm.shape == (T - H, N_CELLS)
    k = 9
    np.testing.assert_array_equal(w[k][:, 25, 25], np.arange(k, k + H))   # no z-scoring
    np.testing.assert_array_equal(vm[k], 100.0 * np.arange(N_CELLS) + k + H)
    np.testing.assert_array_equal(vm["time"], w.time)
    assert w.norm_stats == {"mean": 0.0, "std": 1.0}
    w_boxes, _ = interneuron_windows(tree["boxes"])
    np.testing.assert_array_equal(w_boxes[k], tree["boxes"]["stimulus"].values[k:k + H])
    short = load_interneurons(bipolar_file, stim_types="boxes", history=10)
    assert len(interneuron_windows(short["boxes"])[0]) == T - 10


@pytest.mark.parametrize("name, expected", [
    ("bipolars_late_2012.h5", "bipolar"), ("amacrines_early_2012.h5", "amacrine"),
    ("horizontals_late_2012.h5", "horizontal"), ("unks_17-10-18.h5", "unknown")])
def test_cell_class_from_file_name(name, expected):
    assert cell_class_from_name(name) == expected


def test_write_interneurons_round_trip(tmp_path):
    path = write_interneurons(tmp_path / "amacrines_early_2012.h5",
                              {"boxes": (_boxes(3), _vm(2))},
                              truth={"cell_type": ["A1", "A2"], "circuit": {"k": 1}})
    with h5py.File(path, "r") as h5:
        assert set(h5) == {"boxes", "truth"}
        assert h5["boxes/stimuli"].shape == (T, 38, 38)
        np.testing.assert_array_equal(h5["boxes/detrended_membrane_potential"], _vm(2))
    tree = load_interneurons(path)
    assert tree.attrs["cell_class"] == "amacrine" and tree.attrs["truth_circuit"] == '{"k": 1}'
    assert tree["boxes"]["cell_type"].values.tolist() == ["A1", "A2"]
    np.testing.assert_array_equal(tree["boxes"]["stimulus"][:, BORDER:-BORDER, BORDER:-BORDER],
                                  2.0 * _boxes(3) - 1.0)
    with pytest.raises(ConfigurationError, match="reserved"):
        write_interneurons(tmp_path / "x.h5", {"truth": (_boxes(), _vm())})
    with pytest.raises(ShapeError, match="membrane potential"):
        write_interneurons(tmp_path / "x.h5", {"boxes": (_boxes(), _vm(n_time=T - 1))})
    assert not (tmp_path / "x.h5").exists()


# --------------------------------------------------------------------------- errors
def test_missing_file_and_stim_type(bipolar_file, tmp_path):
    with pytest.raises(MissingDataError):
        load_interneurons(tmp_path / "bipolars_early_2012.h5")
    with pytest.raises(RecordingError, match=r"no stimulus group\(s\) \['whitenoise'\]"):
        load_interneurons(bipolar_file, stim_types=["whitenoise"])
    with pytest.raises(ConfigurationError, match="movingbar"):
        load_interneurons(bipolar_file, stim_types=["movingbar"])


def test_missing_dataset_names_path(tmp_path):
    path = write_published_interneurons(tmp_path / "bipolars_x.h5", {"boxes": (_boxes(), None)})
    with pytest.raises(RecordingError, match="'boxes/detrended_membrane_potential' is missing"):
        load_interneurons(path)


def test_bad_values_and_lengths(tmp_path):
    short = write_published_interneurons(tmp_path / "a.h5", {"boxes": (_boxes(), _vm(n_time=T + 2))})
    with pytest.raises(RecordingError, match=f"{T} stimulus frames but {T + 2}"):
        load_interneurons(short)
    vm = _vm()
    vm[1, 4] = np.inf
    nan = write_published_interneurons(tmp_path / "b.h5", {"boxes": (_boxes(), vm)})
    with pytest.raises(NonFiniteError):
        load_interneurons(nan)
    grey = write_published_interneurons(tmp_path / "c.h5", {"boxes": (_boxes() * 0.5, _vm())})
    with pytest.raises(RecordingError, match="0/1"):
        load_interneurons(grey)


def test_truncated_file(bipolar_file):
    truncate_half(bipolar_file)
    with pytest.raises(RecordingError, match="truncated"):
        load_interneurons(bipolar_file)


def test_reading_leaves_the_file_unchanged(bipolar_file):
    before = file_fingerprint(bipolar_file)
    tree = load_interneurons(bipolar_file)
    interneuron_windows(tree["lines"])[0][0:3]
    assert file_fingerprint(bipolar_file) == before
    assert isinstance(tree, xr.DataTree)


# --------------------------------------------------------------------------- bad values
import os  # noqa: E402

from retcodec.errors import RecordingValueError, UnreadableFileError  # noqa: E402
from retcodec.io.interneurons import MAX_ABS_VALUE  # noqa: E402


def _flash_file(tmp_path, stimulus=None, vm=None):
    stimulus = np.sin(np.arange(T) / 3.0) if stimulus is None else stimulus
    return write_published_interneurons(tmp_path / "amacrines_x.h5",
                                        {"flashes": (stimulus, _vm() if vm is None else vm)})


@pytest.mark.parametrize("stimulus, vm, error, match", [
    (np.full(T, b"1"), None, RecordingValueError, "bytes"),
    (np.ones(T, np.complex64) * np.arange(T), None, RecordingValueError, "complex"),
    (None, np.full((N_CELLS, T), b"1.0"), RecordingValueError, "bytes"),
    (None, _vm().astype(np.complex128), RecordingValueError, "complex"),
    (None, _vm() * 1e30, RecordingValueError, "MAX_ABS_VALUE"),
    (np.arange(T) * 1e30, None, RecordingValueError, "plausible"),
    (np.full(T, 0.5), None, RecordingValueError, "constant"),
    (None, np.vstack([_vm()[:2], np.full((1, T), 3.0)]), RecordingValueError, r"constant for cells \[2\]"),
    (np.where(np.arange(T) == 5, np.nan, 1.0), None, NonFiniteError, "NaN"),
], ids=["bytes-stimulus", "complex-stimulus", "bytes-vm", "complex-vm", "huge-vm", "huge-stimulus",
        "constant-stimulus", "constant-cell", "nan-stimulus"])
def test_bad_interneuron_values_are_refused(tmp_path, stimulus, vm, error, match):
    path = _flash_file(tmp_path, stimulus, vm)
    with pytest.raises(error, match=match) as info:
        load_interneurons(path)
    assert "amacrines_x.h5" in str(info.value)


def test_write_interneurons_refuses_the_same_values(tmp_path):
    for stimulus, vm, match in [(np.full(T, b"1"), _vm(), "bytes"), (np.arange(T, dtype=float), _vm() * 1e30,
                                                                      "plausible"),
                                (np.arange(T, dtype=float), np.full((N_CELLS, T), b"x"), "bytes")]:
        with pytest.raises(RecordingValueError, match=match):
            write_interneurons(tmp_path / "bipolars_w.h5", {"flashes": (stimulus, vm)})
    assert not (tmp_path / "bipolars_w.h5").exists()
    assert MAX_ABS_VALUE == 1e6


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_interneuron_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "bipolars_late_2012.h5"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        load_interneurons(fifo)


@pytest.mark.parametrize("stim_types", [5, [1, 2], {"boxes": 1}])
def test_stim_types_must_be_names(bipolar_file, stim_types):
    with pytest.raises(ConfigurationError, match="stim_types must be a list"):
        load_interneurons(bipolar_file, stim_types=stim_types)


def test_bad_history_and_node(bipolar_file):
    with pytest.raises(ConfigurationError, match="history"):
        load_interneurons(bipolar_file, history="40")
    with pytest.raises(RecordingError, match="membrane_potential"):
        interneuron_windows(np.zeros(3))


def test_compact_loading_keeps_every_value_and_window(bipolar_file):
    full = load_interneurons(bipolar_file, history=40)
    small = load_interneurons(bipolar_file, history=40, compact=True)
    stim, stim_small = full["boxes"]["stimulus"], small["boxes"]["stimulus"]
    assert stim.dtype == np.float32 and stim_small.dtype == np.int8
    np.testing.assert_array_equal(stim_small.values.astype(np.float32), stim.values)
    w, _ = interneuron_windows(full["boxes"])
    w_small, _ = interneuron_windows(small["boxes"])
    np.testing.assert_array_equal(w[:7], w_small[:7])
