"""load_model / save_model / predict against checkpoints built from the published specification."""
from __future__ import annotations

import hashlib
import re
import json
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

import published_fixtures as spec
from retcodec.io.architectures import LinearStackedConv2d, build_model
from retcodec.io.checkpoint import load_checkpoint
from retcodec.errors import (CellMismatchError, CheckpointError, ConfigurationError,
                             NonFiniteError, ShapeError, UnknownModelTypeError)
from retcodec.io.models import (PUBLISHED_CELLS, PUBLISHED_CENTERS, load_model, predict,
                             save_model)

ATOL = 2e-5   # float32 model vs float64 reference, outputs of order one


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    return torch.randn(5, 40, 50, 50, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A published 15-11-21b VaryModel checkpoint (17 cells, stacked convs, drop_p 0.05)."""
    path = tmp_path_factory.mktemp("published") / "15-11-21b_naturalscene.pt"
    checkpoint = spec.write_published_checkpoint(path, seed=11)
    return path, checkpoint


def _outputs(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).double()


def _assert_meta_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "provenance":
            continue
        if key == "hyps":
            _assert_meta_equal(a[key], b[key])
        elif isinstance(a[key], np.ndarray) or isinstance(b[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


# --------------------------------------------------------------------------- published layouts
def test_published_varymodel_matches_reference(published, windows):
    path, checkpoint = published
    model = load_model(path)
    expected = spec.reference_forward(checkpoint["model_state_dict"], checkpoint["hyps"], windows)
    torch.testing.assert_close(_outputs(model, windows), expected, atol=ATOL, rtol=0)
    assert expected.std() > 0.1                    # outputs vary: the comparison has power
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert list(model.layers) == ["conv0", "conv1", "conv2"]
    assert [model.sequential[i] for i in (0, 4, 8)] == list(model.layers.values())


def test_published_meta(published):
    path, checkpoint = published
    meta = load_model(path).meta
    assert meta["dataset"] == "15-11-21b"
    assert meta["cells"] == spec.SPEC_CELLS["15-11-21b"]           # "all" resolved
    assert meta["stim_type"] == "naturalscene"
    assert meta["img_shape"] == (40, 50, 50)
    assert meta["norm_stats"] == {"mean": float(checkpoint["norm_stats"]["mean"]),
                                  "std": float(checkpoint["norm_stats"]["std"])}
    assert all(type(v) is float for v in meta["norm_stats"].values())
    np.testing.assert_array_equal(meta["centers"], spec.SPEC_CENTERS["15-11-21b"])
    assert meta["model_type"] == "VaryModel" and meta["hyps"]["drop_p"] == 0.05
    prov = meta["provenance"]
    assert prov["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["path"] == str(path.resolve())
    assert (prov["epoch"], prov["test_pearson"]) == (41, 0.62)


def test_published_bncnn_matches_reference(tmp_path, windows):
    path = tmp_path / "drone_15-10-07_naturalscene.pt"
    checkpoint = spec.write_published_checkpoint(path, seed=5, model_type="BNCNN", dataset="15-10-07")
    model = load_model(path)
    expected = spec.reference_forward(checkpoint["model_state_dict"], checkpoint["hyps"], windows[:3])
    torch.testing.assert_close(_outputs(model, windows[:3]), expected, atol=ATOL, rtol=0)
    assert model.meta["cells"] == [0, 1, 2, 3, 4]
    assert [model.sequential[i] for i in (0, 6, 13)] == list(model.layers.values())


def test_tables_match_the_specification():
    assert PUBLISHED_CELLS == spec.SPEC_CELLS
    assert PUBLISHED_CENTERS.keys() == spec.SPEC_CENTERS.keys()
    for dataset, centers in spec.SPEC_CENTERS.items():
        np.testing.assert_array_equal(PUBLISHED_CENTERS[dataset], centers)
        assert len(centers) == len(PUBLISHED_CELLS[dataset])


# --------------------------------------------------------------------------- GrabUnits and collapse
def test_grab_coords_equal_printed_repr_of_15_11_21b():
    model = build_model("VaryModel", spec.published_hyps("15-11-21b"))
    coords = model.sequential[9].coords.tolist()
    assert coords == spec.SPEC_GRABUNITS_COORDS_15_11_21B


@pytest.mark.parametrize("dataset", ["15-10-07", "15-11-21a", "15-11-21b"])
def test_grab_coords_follow_the_clip_rule(dataset):
    hyps = spec.published_hyps(dataset)
    coords = build_model("VaryModel", hyps).sequential[9].coords.numpy()
    np.testing.assert_array_equal(coords, spec.spec_grab_coords(hyps["centers"], [15, 11, 11], 50))
    if dataset == "15-11-21a":
        assert coords[:, 0].max() == 15          # row 41 - 18 = 23 is clipped to the 16x16 map


def test_collapsed_kernel_equals_sub_convs_one_by_one(published):
    model = load_model(published[0])
    x = torch.randn(2, 8, 30, 30, generator=torch.Generator().manual_seed(2))
    stack = model.sequential[4]
    assert isinstance(stack, LinearStackedConv2d) and len(stack.sub_convs()) == 5
    expected = x
    for conv in stack.sub_convs():
        expected = F.conv2d(expected, conv.weight, conv.bias)
    collapsed = stack.collapse()
    assert collapsed.kernel_size == (11, 11)
    torch.testing.assert_close(collapsed(x), expected, atol=1e-5, rtol=1e-5)


def test_collapsed_model_equals_stacked_model(published, windows):
    model = load_model(published[0])
    stacked_out = _outputs(model, windows)
    model.collapse()
    assert not any(isinstance(m, LinearStackedConv2d) for m in model.modules())
    assert model.sequential[0].weight.shape == (8, 40, 15, 15)
    torch.testing.assert_close(_outputs(model, windows), stacked_out, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- tolerated variants
@pytest.fixture(scope="module")
def seed4_reference(windows):
    """Weights drawn with seed 4 (the same in every variant below) and their reference output."""
    hyps = spec.published_hyps("15-11-21b")
    state = spec.make_published_state_dict(17, seed=4, hyps=hyps)
    return state, spec.reference_forward(state, hyps, windows[:2])


@pytest.mark.parametrize("variant", [
    {"hyps_key": "model_hyps"},
    {"hyps_key": None},                               # only top-level copies
    {"norm_stats_format": "list"},
    {"include_sigma": False},
    {"img_shape": (40, 50, 50)},
    {"cells": spec.SPEC_CELLS["15-11-21b"]},
    {"legacy": True, "old_numpy_names": True},
], ids=["model_hyps", "top-level-hyps", "norm-list", "no-sigma", "img-tuple", "cells-list", "2020-file"])
def test_published_variants_load(tmp_path, windows, seed4_reference, variant):
    variant = dict(variant)
    save_kwargs = {k: variant.pop(k) for k in ("legacy", "old_numpy_names") if k in variant}
    path = tmp_path / "model.pt"
    checkpoint = spec.write_published_checkpoint(path, seed=4, **variant, **save_kwargs)
    state, expected = seed4_reference
    written = checkpoint["model_state_dict"]
    assert all(torch.equal(written[k], state[k]) for k in written)
    model = load_model(path)
    torch.testing.assert_close(_outputs(model, windows[:2]), expected, atol=ATOL, rtol=0)
    assert model.meta["cells"] == spec.SPEC_CELLS["15-11-21b"]
    assert model.meta["norm_stats"]["std"] == pytest.approx(57.5, abs=1e-6)


def test_hyperparams_json_and_missing_centres(tmp_path, windows, seed4_reference):
    hyps = spec.published_hyps("15-11-21b")
    checkpoint = spec.make_published_checkpoint(seed=4, hyps_key=None, top_level_copies=False)
    json_hyps = {k: v for k, v in hyps.items() if k != "centers"}     # centres from the table
    (tmp_path / "hyperparams.json").write_text(json.dumps(json_hyps))
    spec.write_published_checkpoint(tmp_path / "run_epoch_3.pt", checkpoint)
    model = load_model(tmp_path)
    np.testing.assert_array_equal(model.meta["centers"], spec.SPEC_CENTERS["15-11-21b"])
    torch.testing.assert_close(_outputs(model, windows[:2]), seed4_reference[1], atol=ATOL, rtol=0)


def test_renamed_keys_load_pairwise_in_order(tmp_path, windows):
    checkpoint = spec.make_published_checkpoint(seed=6)
    renamed = OrderedDict((k.replace("sequential", "features"), v)
                          for k, v in checkpoint["model_state_dict"].items())
    spec.write_published_checkpoint(tmp_path / "m.pt", {**checkpoint, "model_state_dict": renamed})
    model = load_model(tmp_path / "m.pt")
    assert model.meta["provenance"]["renamed_state_keys"] is True
    expected = spec.reference_forward(checkpoint["model_state_dict"], checkpoint["hyps"], windows[:2])
    torch.testing.assert_close(_outputs(model, windows[:2]), expected, atol=ATOL, rtol=0)


def test_cells_all_for_an_unknown_dataset_stay_all(tmp_path):
    spec.write_published_checkpoint(tmp_path / "m.pt", dataset="insilico", n_cells=4)
    model = load_model(tmp_path / "m.pt")
    assert model.meta["cells"] == "all" and model.meta["dataset"] == "insilico"
    rates = predict(model, np.zeros((2, 40, 50, 50), dtype=np.float32))
    np.testing.assert_array_equal(rates["cell"], np.arange(4))


def test_cells_all_with_a_count_unlike_the_table_warns(tmp_path):
    spec.write_published_checkpoint(tmp_path / "m.pt", dataset="15-10-07", n_cells=3)
    with pytest.warns(RuntimeWarning, match="names 5 cells but the model has 3"):
        model = load_model(tmp_path / "m.pt")
    assert model.meta["cells"] == "all"


# --------------------------------------------------------------------------- zero_dict
@pytest.mark.parametrize("layer_name", ["conv0", "sequential.0"])
def test_zero_dict_zeroes_channels(tmp_path, windows, layer_name):
    spec.write_published_checkpoint(tmp_path / "m.pt", seed=8, zero_dict={layer_name: {1, 3}})
    model = load_model(tmp_path / "m.pt")
    assert model.zero_dict == {layer_name: {1, 3}}
    seen = {}
    handle = model.layers["conv0"].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    _outputs(model, windows[:2])
    handle.remove()
    per_channel = seen["out"].abs().amax(dim=(0, 2, 3))
    assert per_channel[[1, 3]].tolist() == [0.0, 0.0]
    assert (per_channel[[0, 2, 4, 5, 6, 7]] > 0).all()


# --------------------------------------------------------------------------- errors
def test_unknown_model_type(tmp_path):
    checkpoint = spec.make_published_checkpoint(seed=1)
    spec.write_published_checkpoint(tmp_path / "m.pt", {**checkpoint, "model_type": "RetinotopicModel"})
    with pytest.raises(UnknownModelTypeError, match="RetinotopicModel"):
        load_model(tmp_path / "m.pt")


def _write_with_state(tmp_path, edit) -> str:
    checkpoint = spec.make_published_checkpoint(seed=1)
    state = OrderedDict(checkpoint["model_state_dict"])
    edit(state)
    spec.write_published_checkpoint(tmp_path / "m.pt", {**checkpoint, "model_state_dict": state})
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "m.pt")
    return str(info.value)


def test_missing_key_is_named(tmp_path):
    message = _write_with_state(tmp_path, lambda s: s.pop("sequential.10.shift"))
    assert "missing keys: sequential.10.shift" in message


def test_wrong_shape_is_named(tmp_path):
    def shrink(state):
        state["sequential.8.weight"] = torch.zeros(17, 8, 9, 9)
    message = _write_with_state(tmp_path, shrink)
    assert "sequential.8.weight: checkpoint (17, 8, 9, 9) vs model (17, 8, 11, 11)" in message


def test_unexpected_key_is_named(tmp_path):
    message = _write_with_state(tmp_path, lambda s: s.update({"sequential.12.weight": torch.zeros(3)}))
    assert "unexpected keys: sequential.12.weight" in message


def test_checkpoint_without_weights(tmp_path):
    torch.save({"model_type": "VaryModel", "hyps": {}}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="model_state_dict"):
        load_model(tmp_path / "m.pt")


def test_bad_norm_stats(tmp_path):
    checkpoint = spec.make_published_checkpoint(seed=1)
    spec.write_published_checkpoint(tmp_path / "m.pt", {**checkpoint, "norm_stats": {"mean": 1.0, "std": 0.0}})
    with pytest.raises(CheckpointError, match="positive std"):
        load_model(tmp_path / "m.pt")


# --------------------------------------------------------------------------- saving
def test_save_load_round_trip_is_exact(tmp_path, published, windows):
    model = load_model(published[0])
    model.apply_zero_dict({"conv1": {0}})
    out = tmp_path / "saved" / "model.pt"
    assert save_model(model, out, epoch=3, val_loss=0.25) == out
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]    # no temporary left behind
    again = load_model(out)
    state, state_again = model.state_dict(), again.state_dict()
    assert list(state) == list(state_again)
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    _assert_meta_equal(model.meta, again.meta)
    assert again.zero_dict == {"conv1": {0}}
    assert (again.meta["provenance"]["epoch"], again.meta["provenance"]["val_loss"]) == (3, 0.25)
    assert torch.equal(_outputs(model, windows[:2]), _outputs(again, windows[:2]))


def test_saved_file_has_the_published_layout(tmp_path, published, windows):
    model = load_model(published[0])
    save_model(model, tmp_path / "m.pt", epoch=5)
    data = load_checkpoint(tmp_path / "m.pt")
    assert data["model_type"] == "VaryModel" and data["epoch"] == 5
    assert type(data["norm_stats"]["mean"]) is np.float32          # float32 where exact,
    assert type(data["norm_stats"]["std"]) is np.float64           # float64 where it would round
    assert float(data["norm_stats"]["std"]) == model.meta["norm_stats"]["std"]
    assert isinstance(data["centers"], np.ndarray) and data["centers"].shape == (17, 2)
    for key, value in data["hyps"].items():
        assert key in data and np.array_equal(np.asarray(data[key]), np.asarray(value)), key
    assert data["zero_dict"] == {}
    # the spec reader computes the same rates from the saved keys
    expected = spec.reference_forward(data["model_state_dict"], data["hyps"], windows[:2])
    torch.testing.assert_close(_outputs(model, windows[:2]), expected, atol=ATOL, rtol=0)


def test_collapsed_model_saves_as_plain_convs(tmp_path, published, windows):
    model = load_model(published[0]).collapse()
    save_model(model, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.hyps["stackconvs"] is False
    assert torch.equal(_outputs(model, windows[:2]), _outputs(again, windows[:2]))


def test_fresh_model_round_trip(tmp_path):
    model = build_model("VaryModel", spec.published_hyps(None, n_cells=3))
    model.meta = {"dataset": "insilico", "cells": [4, 7, 9], "norm_stats": {"mean": 0.1, "std": 0.3}}
    save_model(model, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.meta["cells"] == [4, 7, 9]
    assert again.meta["norm_stats"] == {"mean": 0.1, "std": 0.3}      # float64 kept where float32 rounds
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_save_refuses_clobbering_and_unreadable_extras(tmp_path, published):
    model = load_model(published[0])
    with pytest.raises(ConfigurationError, match="model_state_dict"):
        save_model(model, tmp_path / "a.pt", model_state_dict={})
    with pytest.raises(ConfigurationError, match="differs from hyps"):
        save_model(model, tmp_path / "a.pt", seed=1)
    with pytest.raises(ConfigurationError, match="load_checkpoint refuses"):
        save_model(model, tmp_path / "a.pt", note=types.SimpleNamespace(a=1))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- predict
def test_predict_array_and_tensor(published, windows):
    model = load_model(published[0])
    rates = predict(model, windows.numpy(), batch_size=2)
    assert rates.dims == ("time", "cell") and rates.shape == (5, 17)
    assert rates.name == "rate_model" and rates.attrs["units"] == "Hz"
    np.testing.assert_array_equal(rates["time"], np.arange(5))
    np.testing.assert_array_equal(rates["cell"], spec.SPEC_CELLS["15-11-21b"])
    np.testing.assert_allclose(rates.values, _outputs(model, windows).numpy(), atol=1e-6)
    again = predict(model, windows, batch_size=256, device="cpu")
    np.testing.assert_allclose(again.values, rates.values, atol=1e-6)


class _FakeWindows:
    """The interface of retcodec.recordings.Windows that predict relies on."""

    def __init__(self, data: np.ndarray, cells) -> None:
        self.data, self.cells = data, np.asarray(cells)
        self.time = 0.4 + 0.01 * np.arange(len(data))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index].astype(np.float32)


def test_predict_windows_object(published, windows):
    model = load_model(published[0])
    fake = _FakeWindows(windows.numpy(), spec.SPEC_CELLS["15-11-21b"])
    rates = predict(model, fake, batch_size=3)
    np.testing.assert_array_equal(rates["time"], fake.time)
    assert rates["time"].attrs["units"] == "s"
    np.testing.assert_allclose(rates.values, _outputs(model, windows).numpy(), atol=1e-6)
    with pytest.raises(CellMismatchError, match="17 cells"):
        predict(model, _FakeWindows(windows.numpy(), range(26)))


def test_predict_recording_selects_model_cells(monkeypatch, published, windows):
    model = load_model(published[0])
    calls = {}

    def fake_windows(recording, norm_stats=None, history=40):
        calls["cells"], calls["norm_stats"] = recording["cell"].values.tolist(), norm_stats
        calls["history"] = history
        return _FakeWindows(windows.numpy(), recording["cell"].values)

    fake_module = types.SimpleNamespace(windows=fake_windows)
    monkeypatch.setitem(sys.modules, "retcodec.io.recordings", fake_module)
    import retcodec.io
    monkeypatch.setattr(retcodec.io, "recordings", fake_module, raising=False)
    recording = xr.Dataset(coords={"cell": np.arange(26)})
    rates = predict(model, recording)
    assert calls["cells"] == spec.SPEC_CELLS["15-11-21b"]
    assert calls["norm_stats"] == model.meta["norm_stats"] and calls["history"] == 40
    assert rates.shape == (5, 17)
    with pytest.raises(CellMismatchError, match=r"lacks the model's cells \[24, 25\]"):
        predict(model, xr.Dataset(coords={"cell": np.arange(24)}))


def test_predict_recording_with_the_recordings_module(published):
    """End to end with retcodec.recordings.windows on a small in-memory recording."""
    pytest.importorskip("retcodec.io.recordings")
    model = load_model(published[0])
    stimulus = np.random.default_rng(0).integers(0, 256, (46, 50, 50)).astype(np.float32)
    recording = xr.Dataset({"stimulus": (("time", "y", "x"), stimulus)},
                           coords={"time": 0.01 * np.arange(46), "cell": np.arange(26)})
    rates = predict(model, recording, batch_size=4)
    assert rates.shape == (6, 17)
    np.testing.assert_allclose(rates["time"], 0.01 * np.arange(40, 46))
    np.testing.assert_array_equal(rates["cell"], spec.SPEC_CELLS["15-11-21b"])
    mean, std = model.meta["norm_stats"]["mean"], model.meta["norm_stats"]["std"]
    first = torch.as_tensor((stimulus[None, :40] - mean) / std, dtype=torch.float32)
    np.testing.assert_allclose(rates.values[0], _outputs(model, first)[0].numpy(), atol=1e-5)


def test_predict_input_errors_and_state(published, windows):
    model = load_model(published[0])
    model.train()
    with pytest.raises(ShapeError, match="40, 50, 50"):
        predict(model, np.zeros((2, 30, 50, 50), dtype=np.float32))
    bad = windows[:2].clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        predict(model, bad)
    assert model.training                          # restored after the error
    with pytest.raises(ConfigurationError, match="not a device name"):
        load_model(published[0], device="gpu0")


def test_load_model_device_argument(published):
    model = load_model(published[0], device=torch.device("cpu"))
    assert model.device == torch.device("cpu")
    assert model.sequential[9].coords.device == torch.device("cpu")


# --------------------------------------------------------------------------- invalid values (refused)
from retcodec.errors import DeviceError, InvalidModelError  # noqa: E402
from retcodec.io.models import check_weights, model_from_checkpoint  # noqa: E402


def _refused(tmp_path, error=InvalidModelError, legacy=False, **changes) -> str:
    checkpoint = spec.make_published_checkpoint(seed=1)
    checkpoint = {**checkpoint, **changes}
    spec.write_published_checkpoint(tmp_path / "m.pt", checkpoint, legacy=legacy)
    with pytest.raises(error) as info:
        load_model(tmp_path / "m.pt")
    return str(info.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("key, value", [
    ("sequential.8.weight", float("nan")), ("sequential.0.convs.12.bias", float("inf")),
    ("sequential.10.scale", float("-inf")), ("sequential.1.running_mean", float("nan"))])
def test_non_finite_weights_are_refused(tmp_path, legacy, key, value):
    state = OrderedDict(spec.make_published_checkpoint(seed=1)["model_state_dict"])
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    message = _refused(tmp_path, legacy=legacy, model_state_dict=state)
    assert key in message and "NaN or Inf" in message and "clean copy" in message


@pytest.mark.parametrize("key", ["sequential.1.running_var", "sequential.10.running_var"])
def test_negative_batch_norm_variance_is_refused(tmp_path, key):
    state = OrderedDict(spec.make_published_checkpoint(seed=1)["model_state_dict"])
    state[key] = state[key].clone()
    state[key][0] = -0.5
    message = _refused(tmp_path, model_state_dict=state)
    assert key in message and "negative" in message


def test_negative_variance_of_a_bncnn_is_refused(tmp_path):
    checkpoint = spec.make_published_checkpoint(seed=2, model_type="BNCNN", dataset="15-10-07")
    state = OrderedDict(checkpoint["model_state_dict"])
    key = next(k for k in state if k.endswith("running_var"))
    state[key] = -state[key].abs() - 1
    spec.write_published_checkpoint(tmp_path / "m.pt", {**checkpoint, "model_state_dict": state})
    with pytest.raises(InvalidModelError, match="negative"):
        load_model(tmp_path / "m.pt")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_of_a_non_float_dtype_are_refused(tmp_path, dtype):
    state = OrderedDict(spec.make_published_checkpoint(seed=1)["model_state_dict"])
    state["sequential.8.weight"] = state["sequential.8.weight"].to(dtype)
    assert "real floating point" in _refused(tmp_path, model_state_dict=state)


def test_sparse_weights_are_refused(tmp_path):
    state = OrderedDict(spec.make_published_checkpoint(seed=1)["model_state_dict"])
    state["sequential.10.shift"] = state["sequential.10.shift"].to_sparse()
    assert "dense CPU tensors" in _refused(tmp_path, model_state_dict=state)


@pytest.mark.parametrize("center", [(500, 500), (-40, -40), (50, 10), (10, 50), (-1, 0)])
def test_centres_outside_the_image_are_refused(tmp_path, center):
    centers = np.array(spec.SPEC_CENTERS["15-11-21b"])
    centers[3] = center
    hyps = {**spec.published_hyps("15-11-21b"), "centers": centers}
    message = _refused(tmp_path, hyps=hyps, centers=centers)
    assert "outside the 50x50 image" in message and f"cell 3: {list(center)}" in message


def test_centres_inside_the_image_keep_the_published_clipping(tmp_path):
    centers = np.array(spec.SPEC_CENTERS["15-11-21b"])
    centers[0], centers[1] = (0, 0), (49, 49)          # corners: clipped onto the map's edges
    hyps = {**spec.published_hyps("15-11-21b"), "centers": centers}
    checkpoint = {**spec.make_published_checkpoint(seed=1), "hyps": hyps, "centers": centers}
    spec.write_published_checkpoint(tmp_path / "m.pt", checkpoint)
    coords = load_model(tmp_path / "m.pt").sequential[9].coords
    assert coords[0].tolist() == [0, 0] and coords[1].tolist() == [15, 15]


@pytest.mark.parametrize("centers", [np.full((17, 2), np.nan), np.full((17, 2), 20.5),
                                     np.array(["a"] * 34).reshape(17, 2)], ids=["nan", "fraction", "text"])
def test_centres_that_are_not_pixels_are_refused(tmp_path, centers):
    hyps = {**spec.published_hyps("15-11-21b"), "centers": centers}
    _refused(tmp_path, hyps=hyps, centers=centers)


def test_stored_grab_coords_off_the_map_are_refused(tmp_path):
    state = OrderedDict(spec.make_published_checkpoint(seed=1)["model_state_dict"])
    state["sequential.9.coords"] = torch.full((17, 2), 40, dtype=torch.long)
    assert "0..15" in _refused(tmp_path, model_state_dict=state)


@pytest.mark.parametrize("zero_dict, match", [
    ({"conv0": {8}}, r"channels \[8\].*8 output channels"),
    ({"conv0": {-1}}, r"channels \[-1\]"),
    ({"conv2": {17}}, r"channels \[17\].*17 output channels"),
    ({"conv1": {"a"}}, "integer channel indices"),
    ({"conv9": {0}}, "unknown layer"),
    ([("conv0", {1})], "must map layer names"),
])
def test_bad_zero_dict_is_refused(tmp_path, zero_dict, match):
    message = _refused(tmp_path, zero_dict=zero_dict)
    assert re.search(match, message), message


def test_apply_zero_dict_out_of_range_is_a_configuration_error(published):
    model = load_model(published[0])
    before = model.layers["conv0"].bias.clone()
    with pytest.raises(ConfigurationError, match=r"valid: 0..7"):
        model.apply_zero_dict({"conv0": {1, 99}})
    assert torch.equal(model.layers["conv0"].bias, before)     # nothing zeroed


@pytest.mark.parametrize("key, value, match", [
    ("n_units", 10 ** 9, "n_units"), ("chans", [8, 10 ** 6], "chans"), ("chans", "abc", "chans"),
    ("ksizes", [15, 11, 0], "ksizes"), ("img_shape", [40, 50], "img_shape"),
    ("drop_p", 5, "drop_p"), ("bnorm_d", 3, "bnorm_d"), ("noise", float("nan"), "noise"),
])
def test_bad_hyps_are_refused_before_allocating(tmp_path, key, value, match):
    hyps = {**spec.published_hyps("15-11-21b"), key: value}
    message = _refused(tmp_path, error=CheckpointError, hyps=hyps, **{key: value})
    assert match in message


def test_hyps_describing_far_more_weights_than_stored_are_refused(tmp_path):
    hyps = {**spec.published_hyps("15-11-21b"), "chans": [4000, 4000]}
    message = _refused(tmp_path, error=CheckpointError, hyps=hyps, chans=[4000, 4000])
    assert "describe a VaryModel with" in message


def test_model_from_checkpoint_refuses_non_mappings():
    with pytest.raises(CheckpointError, match="not the dict"):
        model_from_checkpoint([1, 2])


def test_check_weights_on_a_built_model(published):
    model = load_model(published[0])
    check_weights(model)
    with torch.no_grad():
        model.sequential[5].running_var[0] = -1
    with pytest.raises(InvalidModelError, match=r"sequential\.5\.running_var"):
        check_weights(model)


def test_predict_refuses_non_finite_outputs(published):
    model = load_model(published[0])
    with torch.no_grad():
        model.sequential[10].shift.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="returned NaN or Inf"):
        predict(model, np.zeros((2, 40, 50, 50), dtype=np.float32))


# --------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_device_error_before_reading(tmp_path, published, monkeypatch):
    reads = []
    monkeypatch.setattr("retcodec.io.models.load_checkpoint", lambda *a: reads.append(a))
    with pytest.raises(DeviceError, match="needs a CUDA GPU") as info:
        load_model(published[0], device="cuda")
    assert "'cpu'" in str(info.value) and not reads
    with pytest.raises(DeviceError, match="CUDA"):
        predict(model_from_checkpoint(load_checkpoint(published[0])),
                np.zeros((1, 40, 50, 50), np.float32), device="cuda:0")


def test_finite_weights_that_overflow_are_refused(tmp_path):
    state = OrderedDict(spec.make_published_checkpoint(seed=1)["model_state_dict"])
    state["sequential.10.shift"] = torch.full_like(state["sequential.10.shift"], 3e38)
    state["sequential.10.scale"] = torch.full_like(state["sequential.10.scale"], 3e38)
    assert "blank (mean-grey) stimulus" in _refused(tmp_path, model_state_dict=state)


@pytest.mark.parametrize("cells", [[-1] + list(range(16)), [0] * 17, [0.5] * 17, ["a"] * 17])
def test_bad_cells_are_refused(tmp_path, cells):
    hyps = {**spec.published_hyps("15-11-21b"), "cells": cells}
    _refused(tmp_path, error=CheckpointError, hyps=hyps, cells=cells)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "8", True])
def test_predict_bad_batch_size(published, batch_size):
    with pytest.raises(ConfigurationError, match="batch_size"):
        predict(load_model(published[0]), np.zeros((1, 40, 50, 50), np.float32), batch_size=batch_size)


def test_predict_needs_a_retina_model():
    with pytest.raises(ConfigurationError, match="RetinaCNN"):
        predict(torch.nn.Linear(2, 2), np.zeros((1, 40, 50, 50), np.float32))
