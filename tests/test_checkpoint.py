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
    # numpy's own reconstructors are reached only through retcodec's guards
    assert names["numpy.ndarray"] is not np.ndarray and names["numpy.dtype"] is not np.dtype
    assert not any(name.startswith("numpy.dtypes.") for name in names)
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


# --------------------------------------------------------------------------- not a checkpoint file
from retcodec.errors import CorruptCheckpointError, UnreadableFileError  # noqa: E402


def test_dev_null_is_refused_without_reading():
    with pytest.raises(UnreadableFileError, match="character device"):
        load_checkpoint("/dev/null")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)                      # opening it for reading would block forever
    with pytest.raises(UnreadableFileError, match="FIFO"):
        load_checkpoint(fifo)


def test_folder_with_an_epoch_named_folder_is_not_a_checkpoint(tmp_path):
    (tmp_path / "run_epoch_3.pt").mkdir()
    with pytest.raises(MissingDataError, match="_epoch_N"):
        load_checkpoint(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_says_permissions(tmp_path, published_dict):
    path = tmp_path / "model.pt"
    write_published_checkpoint(path, published_dict)
    path.chmod(0)
    try:
        with pytest.raises(UnreadableFileError, match="permissions"):
            load_checkpoint(path)
    finally:
        path.chmod(0o644)


def test_empty_file_is_corrupt(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"empty \(0 bytes\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_zip_is_corrupt(tmp_path, published_dict, keep):
    path = tmp_path / "model.pt"
    write_published_checkpoint(path, published_dict)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptCheckpointError, match="copy"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- zip checksums
def test_one_flipped_byte_in_a_tensor_is_refused(tmp_path, published_dict):
    path = tmp_path / "model.pt"
    write_published_checkpoint(path, published_dict)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    data = bytearray(path.read_bytes())
    with open(path, "rb") as handle:     # the member's bytes start after its local header
        handle.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
    data[info.header_offset + 30 + int(name_len) + int(extra_len) + 5] ^= 0x10
    path.write_bytes(bytes(data))
    torch.load(path, map_location="cpu", weights_only=False)   # torch alone loads it silently
    with pytest.raises(CorruptCheckpointError, match="CRC-32"):
        load_checkpoint(path)


def test_every_single_bit_flip_of_a_zip_checkpoint_is_refused_or_harmless(tmp_path):
    value = {"w": torch.arange(6.0), "centers": np.arange(4).reshape(2, 2), "epoch": 3}
    path = tmp_path / "small.pt"
    torch.save(value, path)
    raw = path.read_bytes()
    for offset in range(0, len(raw), 7):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        try:
            data = load_checkpoint(path)
        except CheckpointError:
            continue
        assert torch.equal(data["w"], value["w"]) and data["epoch"] == 3, offset
        np.testing.assert_array_equal(data["centers"], value["centers"])


# --------------------------------------------------------------------------- crafted pickles
class _Reduce:
    """Pickles as ``func(*args)`` (optionally followed by ``__setstate__(state)``)."""

    def __init__(self, func, args, state=None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


_RECONSTRUCT = np._core.multiarray._reconstruct


def _array_with_dtype(dtype_object, shape, data):
    return _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype_object, False, data))


@pytest.mark.parametrize("payload, match", [
    (_Reduce(_RECONSTRUCT, (np.ndarray, (2 ** 40,), np.dtype("f8"))), "8.19e\\+03 GiB"),
    (_Reduce(np.ndarray, ((2 ** 40,), np.dtype("f8"))), "GiB"),
    (_array_with_dtype(np.dtype("f8"), (2 ** 37,), b"\0" * 8), "GiB"),
], ids=["reconstruct", "ndarray", "setstate"])
def test_giant_numpy_arrays_are_refused_before_allocating(tmp_path, payload, match):
    path = tmp_path / "giant.pt"
    torch.save({"centers": payload}, path)
    with pytest.raises(CorruptCheckpointError, match=match) as info:
        load_checkpoint(path)
    assert "Nothing was allocated" in str(info.value)


@pytest.mark.parametrize("kind", [bytearray, bytes])
def test_sized_bytes_are_refused(tmp_path, kind):
    path = tmp_path / "bytearray.pt"
    torch.save({"x": _Reduce(kind, (2 ** 43,))}, path)
    with pytest.raises(UnsafeCheckpointError, match=kind.__name__):
        load_checkpoint(path)


def test_array_data_of_the_wrong_length_is_corrupt(tmp_path):
    path = tmp_path / "short.pt"
    torch.save({"centers": _array_with_dtype(np.dtype("i8"), (4, 2), b"\0" * 16)}, path)
    with pytest.raises(CorruptCheckpointError, match="16 bytes instead of 64"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype_object", [
    _Reduce(np.dtype, ("O8", False, True)),                                        # no BUILD
    _Reduce(np.dtype, ("O", False, True)),
    _Reduce(np.dtype, ("f8", False, True), (3, "<", None, None, None, -1, -1, 63)),  # flags
    _Reduce(np.dtype, ("V8", False, True)),
    _Reduce(np.dtype, ("f8", False, True),
            (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 63)),           # fields
], ids=["O8", "O", "float-with-object-flags", "void", "float-with-object-field"])
def test_object_and_void_dtypes_are_refused_however_spelled(tmp_path, dtype_object):
    path = tmp_path / "objects.pt"
    torch.save({"a": _array_with_dtype(dtype_object, (1,), [{}])}, path)
    with pytest.raises(UnsafeCheckpointError, match="dtype"):
        load_checkpoint(path)


def test_plain_numpy_values_still_load(tmp_path):
    value = {"f": np.arange(3, dtype="<f4"), "big": np.arange(3, dtype=">i2"), "s": np.array(["ab", "c"]),
             "t": np.array(["2020-02-21"], dtype="M8[s]"),
             "c": np.complex64(1 + 2j), "fortran": np.asfortranarray(np.ones((2, 3))), "empty": np.zeros((0, 2))}
    path = tmp_path / "plain.pt"
    torch.save(value, path)
    data = load_checkpoint(path)
    for key, expected in value.items():
        assert type(data[key]) is type(expected), key
        np.testing.assert_array_equal(data[key], expected)
        got, want = np.asarray(data[key]).dtype, np.asarray(expected).dtype
        assert (got.kind, got.itemsize) == (want.kind, want.itemsize), key


def _edit_legacy_numel(path: Path, numel: int) -> None:
    """Make the first storage of a legacy file declare ``numel`` elements."""
    data = path.read_bytes()
    at = data.index(b"cpuq")                    # 'cpu' location, BINPUT n, then BININT1 numel
    assert data[at + 5:at + 6] == b"K"
    path.write_bytes(data[:at + 5] + b"J" + numel.to_bytes(4, "little") + data[at + 7:])


def _edit_zip_member(path: Path, member_suffix: str, edit) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members:
            archive.writestr(name, edit(content) if name.endswith(member_suffix) else content)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_storage_larger_than_the_file_is_refused(tmp_path, legacy):
    path = tmp_path / "storage.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=not legacy)
    if legacy:
        _edit_legacy_numel(path, 2 ** 31 - 1)
    else:
        _edit_zip_member(path, "data.pkl", lambda pkl: pkl.replace(b"cpuq\x06K\x03", b"cpuq\x06J\xff\xff\xff\x7f"))
    with pytest.raises(CorruptCheckpointError, match="declares"):
        load_checkpoint(path)


class _DeviceTensor:
    def __reduce__(self):
        return torch._utils._rebuild_device_tensor_from_cpu_tensor, (torch.ones(2), torch.float32, "cuda", False)


def test_legacy_tensor_rebuilt_on_cuda_is_a_clear_error(tmp_path):
    path = tmp_path / "cuda.pt"
    torch.save({"w": _DeviceTensor()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="re-save the checkpoint from the CPU"):
        load_checkpoint(path)


def test_zip_tensor_tagged_cuda_is_mapped_to_the_cpu(tmp_path, monkeypatch):
    path = tmp_path / "cuda.pt"
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save({"w": torch.ones(3), "d": _DeviceTensor()}, path)
    monkeypatch.undo()
    data = load_checkpoint(path)
    assert data["w"].device.type == "cpu" and data["d"].device.type == "cpu"


def test_meta_tensors_are_refused(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"w": torch.empty(3, device="meta")}, path)
    with pytest.raises(CheckpointError, match="device meta"):
        load_checkpoint(path)


def test_self_referencing_containers_load(tmp_path):
    loop: list = [1]
    loop.append(loop)
    path = tmp_path / "loop.pt"
    torch.save({"loop": loop, "a": np.arange(2)}, path)
    data = load_checkpoint(path)
    assert data["loop"][1] is data["loop"]


def test_non_path_argument_is_explained():
    with pytest.raises(MissingDataError, match="string or a path"):
        load_checkpoint(3)


def test_zero_stride_tensor_claiming_a_terabyte_is_refused(tmp_path):
    path = tmp_path / "expanded.pt"
    torch.save({"norm_stats": torch.ones(1).expand(2 ** 40)}, path)
    with pytest.raises(CorruptCheckpointError, match="zero strides"):
        load_checkpoint(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_storages_shared_by_several_tensors_count_once(tmp_path, legacy):
    weight = torch.arange(1000.0)
    value = {f"view{i}": weight[i:] for i in range(50)}      # 50 views of one storage
    path = tmp_path / "shared.pt"
    torch.save(value, path, _use_new_zipfile_serialization=not legacy)
    data = load_checkpoint(path)
    assert torch.equal(data["view7"], weight[7:])


def test_deeply_nested_containers_are_refused_not_crashing(tmp_path):
    path = tmp_path / "nested.pt"
    torch.save({"x": []}, path)            # torch.save itself cannot write 100000 levels
    depth = 100_000
    pickled = b"\x80\x02}X\x01\x00\x00\x00x" + b"]" * depth + b"a" * (depth - 1) + b"s."
    _edit_zip_member(path, "data.pkl", lambda pkl: pickled)
    try:
        data = load_checkpoint(path)
    except CheckpointError as err:
        assert "nests containers too deeply" in str(err) or "corrupt" in str(err)
    else:
        assert isinstance(data["x"], list)
