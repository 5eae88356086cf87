"""The truth group: written and read as documented; foreign layouts warn and never stop a load."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from retcodec.errors import MissingDataError, ShapeError
from retcodec.io.recordings import load_recording, write_recording
from retcodec.io.truth import TruthLayoutWarning, read_truth, write_truth

TYPES = np.array(["bip_a", "bip_b", "ama_c"])


def split(n_cells: int = 3, n_time: int = 45) -> dict:
    rng = np.random.default_rng(0)
    return {"stimulus": rng.integers(0, 256, (n_time, 50, 50), dtype=np.uint8),
            "firing_rate_10ms": rng.random((n_cells, n_time)), "binned": rng.integers(0, 3, (n_cells, n_time))}


def truth() -> dict:
    return {"cell_type": np.array(["ON", "OFF", "ON"]), "center": np.array([[20, 21], [25, 26], [30, 31]], float),
            "gain": np.array([1.0, 2.0, 3.0]), "circuit": {"version": 2}, "adaptation": "naturalscene",
            "wiring": {"weight": np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [1.0, 0, 0]]), "interneuron_type": TYPES},
            "silencing": {"effect": np.arange(9.0).reshape(3, 3) / 10, "interneuron_type": TYPES,
                          "stimulus": "test split"}}


def test_truth_round_trips_with_wiring_and_silencing(tmp_path):
    path = write_recording(tmp_path / "insilico" / "naturalscene.h5", train=split(), test=split(), truth=truth())
    ds = read_truth(path)
    assert set(ds.dims) == {"cell", "interneuron_type"} and ds.sizes == {"cell": 3, "interneuron_type": 3}
    assert list(ds["interneuron_type"].values) == list(TYPES)
    assert ds["wiring"].dims == ("cell", "interneuron_type")
    np.testing.assert_array_equal(ds["wiring"].sel(interneuron_type="ama_c"), [-0.5, -0.5, 0])
    assert ds["silencing_effect"].dims == ("interneuron_type", "cell")
    assert ds["silencing_effect"].sel(interneuron_type="bip_b", cell=2).item() == pytest.approx(0.5)
    np.testing.assert_array_equal(ds["center_x"], [21, 26, 31])
    assert list(ds["cell_type"].values) == ["ON", "OFF", "ON"]
    assert ds.attrs["circuit"] == '{"version": 2}' and ds.attrs["adaptation"] == "naturalscene"
    assert ds.attrs["silencing_stimulus"] == "test split"
    # the recording loader still exposes the per-cell truth as coordinates, and not the typed groups
    with load_recording(path, cells=[2, 0]) as rec:
        assert list(rec["cell_type"].values) == ["ON", "ON"] and "wiring" not in rec.coords
        assert rec.attrs["truth_circuit"] == '{"version": 2}'


def test_write_truth_names_the_entry_with_a_wrong_shape(tmp_path):
    bad = truth()
    bad["wiring"] = {"weight": np.ones((3, 2)), "interneuron_type": TYPES}
    with pytest.raises(ShapeError, match=r"truth\['wiring'\]\['weight'\] has shape \(3, 2\), expected \(3, 3\)"):
        write_recording(tmp_path / "e" / "x.h5", train=split(), test=split(), truth=bad)
    with pytest.raises(ShapeError, match=r"truth\['silencing'\] must be a dict"):
        write_recording(tmp_path / "e" / "x.h5", train=split(), test=split(), truth={"silencing": [1, 2]})
    with pytest.raises(ShapeError, match=r"truth\['gain'\]"):
        write_recording(tmp_path / "e" / "x.h5", train=split(), test=split(), truth={"gain": [1.0, 2.0]})


def test_foreign_truth_entries_warn_and_are_skipped(tmp_path):
    path = write_recording(tmp_path / "insilico" / "naturalscene.h5", train=split(), test=split(),
                           truth={"cell_type": np.array(["a", "b", "c"])})
    with h5py.File(path, "a") as h5:
        h5["truth"].create_dataset("connectome", data=np.ones((5, 5)))          # not per cell
        h5["truth"].create_group("morphology").create_dataset("x", data=[1])    # unknown group
        sil = h5["truth"].create_group("silencing")
        sil.create_dataset("effect", data=np.ones((2, 4)))                        # wrong cell count
        sil.create_dataset("interneuron_type", data=["p", "q"])
    with pytest.warns(TruthLayoutWarning) as caught:
        ds = read_truth(path)
    text = " ".join(str(w.message) for w in caught)
    assert "connectome" in text and "morphology" in text and "silencing" in text
    assert list(ds.data_vars) == ["cell_type"]
    with load_recording(path) as rec:                     # loading the recording is not affected
        assert "connectome" in rec.attrs["notes"] and list(rec["cell_type"].values) == ["a", "b", "c"]


def test_files_without_truth_give_an_empty_dataset_and_missing_files_are_named(tmp_path):
    path = write_recording(tmp_path / "e" / "naturalscene.h5", train=split(), test=split())
    assert len(read_truth(path).data_vars) == 0
    with pytest.raises(MissingDataError, match="nothing.h5"):
        read_truth(tmp_path / "nothing.h5")


def test_write_truth_on_an_open_file(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as h5:
        group = write_truth(h5, {"cell_type": ["x", "y"], "circuit": "{}"}, n_cells=2)
        assert group.name == "/truth" and group.attrs["circuit"] == "{}"
    ds = read_truth(tmp_path / "t.h5")
    assert list(ds["cell_type"].values) == ["x", "y"]
