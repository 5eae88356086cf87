"""Safe checkpoint reading: both serializations, numpy-1 names, refusal of unsafe pickles."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from published_fixtures import make_published_checkpoint, write_published_checkpoint
from retcodec.io.checkpoint import (allowed_globals, disallowed_globals, load_checkpoint,
                                 referenced_globals, resolve_checkpoint_path)
from retcodec.errors import CheckpointError, MissingDataError, UnsafeCheckpointError


@pytest.fixture(scope="module")
def published_dict() -> dict:
    return make_published_checkpoint(seed=3, zero_dict={"sequential.0": {2}})


# --------------------------------------------------------------------------- formats
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("old_numpy_names", [False, True], ids=["numpy2-names", "numpy1-names"])
def test_reads_both_serializations_and_numpy_names(tmp_path, published_dict, legacy, old_numpy_names):
    path = tmp_path / "model.pt"
    write_published_checkpoint(path, published_dict, legacy=legacy, old_numpy_names=old_numpy_names)
    assert zipfile.is_zipfile(path) is not legacy
    names = referenced_globals(path)
    expected_package = "numpy.core" if old_numpy_names else "numpy._core"
    assert f"{expected_package}.multiarray.scalar" in names
    assert f"{expected_package}.multiarray._reconstruct" in names
    assert not any(n.startswith("numpy._core" if old_numpy_names else "numpy.core.") for n in names)

    data = load_checkpoint(path)
    state = published_dict["model_state_dict"]
    assert list(data["model_state_dict"]) == list(state)
    assert all(torch.equal(data["model_state_dict"][k], v) for k, v in state.items())
    assert isinstance(data["norm_stats"]["mean"], np.float32)
    assert data["norm_stats"]["mean"] == published_dict["norm_stats"]["mean"]
    assert data["norm_stats"]["std"] == published_dict["norm_stats"]["std"]
    np.testing.assert_array_equal(data["centers"], published_dict["centers"])
    assert data["centers"].dtype == np.int64
    assert data["zero_dict"] == {"sequential.0": {2}}
    assert data["optim_state_dict"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_allow_list_is_what_makes_numpy_objects_load(tmp_path, published_dict):
    path = tmp_path / "model.pt"
    write_published_checkpoint(path, published_dict, old_numpy_names=True)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu", weights_only=True)   # torch alone refuses numpy
    assert load_checkpoint(path)["epoch"] == published_dict["epoch"]


def test_allow_list_maps_numpy1_and_numpy2_names_to_the_same_objects():
    names = allowed_globals()
    assert names["numpy.core.multiarray.scalar"] is names["numpy._core.multiarray.scalar"]
    assert names["numpy.core.multiarray._reconstruct"] is names["numpy._core.multiarray._reconstruct"]
    assert names["numpy.dtypes.Float32DType"] is type(np.dtype("float32"))
    assert "numpy.dtypes.ObjectDType" not in names
    assert not any(name.startswith(("os.", "posix.", "builtins.exec", "builtins.eval")) for name in names)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"a": np.array([{}, 1], dtype=object)}, path)
    with pytest.raises(UnsafeCheckpointError, match="ObjectDType"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- folders
def test_folder_takes_highest_epoch_numerically(tmp_path, published_dict):
    for epoch, suffix in [(2, "pt"), (9, "pth"), (10, "p"), (1, "pt")]:
        write_published_checkpoint(tmp_path / f"convgc_26_epoch_{epoch}.{suffix}",
                                   {**published_dict, "epoch": epoch})
    write_published_checkpoint(tmp_path / "best_model.pt", {**published_dict, "epoch": 99})
    assert resolve_checkpoint_path(tmp_path).name == "convgc_26_epoch_10.p"
    assert load_checkpoint(tmp_path)["epoch"] == 10


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(MissingDataError, match="_epoch_N"):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_file_is_a_checkpoint_error(tmp_path, published_dict, legacy):
    path = tmp_path / "model.pt"
    write_published_checkpoint(path, published_dict, legacy=legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt") as info:
        load_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 8], ids=["empty", "garbage"])
def test_corrupt_bytes_are_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_non_dict_content_is_refused(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        load_checkpoint(path)


def test_pickle_protocol_4_is_explained(tmp_path):
    path = tmp_path / "p4.pt"
    torch.save({"a": 1}, path, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="protocol 2") as info:
        load_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


# --------------------------------------------------------------------------- malicious files
class _ExecPayload:
    """Unpickling this runs ``exec``: writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _SystemPayload:
    """Unpickling this runs ``os.system``: touches the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_exec_payload_is_live(tmp_path):
    """The payload below really runs under plain pickle, so the refusal tests mean something."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_ExecPayload(marker), protocol=2))
    assert marker.read_text() == "pwned"


_SYSTEM = "posix.system" if os.name == "posix" else "nt.system"


@pytest.mark.parametrize("payload, name", [(_ExecPayload, "builtins.exec"), (_SystemPayload, _SYSTEM)],
                         ids=["exec", "os.system"])
@pytest.mark.parametrize("layout", ["zip", "legacy", "zip-protocol4"])
def test_malicious_checkpoint_runs_nothing(tmp_path, payload, name, layout):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    kwargs = {"legacy": {"_use_new_zipfile_serialization": False},
              "zip-protocol4": {"pickle_protocol": 4}}.get(layout, {})
    torch.save({"model_state_dict": {}, "hyps": {"x": payload(marker)}}, path, **kwargs)
    assert name in disallowed_globals(path)
    with pytest.raises(UnsafeCheckpointError, match=name.replace(".", r"\.")) as info:
        load_checkpoint(path)
    assert "nothing from the file was executed" in str(info.value)
    assert not marker.exists()


def test_plain_pickle_file_is_scanned_too(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_ExecPayload(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec"):
        load_checkpoint(path)
    assert not marker.exists()
