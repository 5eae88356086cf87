"""match_interneurons: cross-validated best units, chance level, layout; label_units_by_truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from retcodec.io.architectures import build_model
from retcodec.errors import ConfigurationError, NonFiniteError, RecordingError, ShapeError
from retcodec.analysis.interneuron_match import (circular_offsets, label_units_by_truth, layer_activations,
                                        match_interneurons, selection_mask)
from retcodec.io.interneurons import interneuron_windows, load_interneurons, write_interneurons
from retcodec.io.recordings import windows
from retcodec.io.storage import write_netcdf_atomic

HISTORY, N_TIME, N_SHIFTS = 10, 310, 19           # 300 windows; smallest p-value 1/20
CENTERS = np.array([[21, 18], [24, 20], [22, 18], [27, 18], [31, 20]])
# (file, cell) -> the unit its Vm copies (+ 30 % noise); other cells are pure noise
BIPOLAR_UNIT = ("conv1", 2, 10, 13)
AMACRINE_UNIT = ("conv0", 1, 20, 15)


def _model(img_shape=(HISTORY, 50, 50)):
    torch.manual_seed(0)
    return build_model("VaryModel", dict(n_units=5, centers=CENTERS, img_shape=img_shape, chans=[4, 4]))


def _boxes(n_time=N_TIME, seed=0):
    return np.random.default_rng(seed).integers(0, 2, (n_time, 38, 38)).astype(np.uint8)


def _activations(model, raw):
    """Activations of conv0/conv1 on the prepared boxes, as match_interneurons sees them."""
    tree = _write(None, "bipolars_probe", raw, np.random.default_rng(0).normal(size=(1, len(raw))))
    w, _ = interneuron_windows(tree["boxes"], history=HISTORY)
    model.eval()
    acts = layer_activations(model, torch.as_tensor(w[:]), ["conv0", "conv1"])
    return {k: v.numpy().astype(float) for k, v in acts.items()}


def _write(folder, name, raw, vm, truth=None):
    import tempfile
    from pathlib import Path
    folder = Path(folder or tempfile.mkdtemp())
    path = write_interneurons(folder / f"{name}.h5", {"boxes": (raw, vm)}, truth=truth)
    return load_interneurons(path, history=HISTORY)


def _vm(acts, unit, n_noise, rng):
    """Cell 0 = the unit's activation + 30 % noise; then ``n_noise`` pure-noise cells: (n, N_TIME)."""
    layer, c, y, x = unit
    signal = acts[layer][:, c, y, x]
    vm = rng.normal(size=(1 + n_noise, N_TIME))
    vm[0, HISTORY:] = signal + 0.3 * signal.std() * rng.normal(size=signal.size)
    return vm


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interneurons")
    model, raw = _model(), _boxes()
    acts = _activations(model, raw)
    rng = np.random.default_rng(1)
    bipolars = _write(folder, "bipolars_test", raw, _vm(acts, BIPOLAR_UNIT, 3, rng),
                      truth={"cell_type": np.array(["on", "off", "off", "off"]),
                             "center": np.full((4, 2), 25.0)})
    amacrines = _write(folder, "amacrines_test", raw, _vm(acts, AMACRINE_UNIT, 1, rng))
    return model, acts, bipolars, amacrines


@pytest.fixture(scope="module")
def matched(setup):
    model, _, bipolars, amacrines = setup
    return match_interneurons(model, [bipolars, amacrines], n_shifts=N_SHIFTS, random_state=0)


def _best(ds, cell_id):
    row = ds.sel(interneuron=cell_id)
    return (str(row.best_layer.values), int(row.best_channel), int(row.best_y), int(row.best_x))


# --------------------------------------------------------------------------- the statistic
def test_copied_unit_is_found_with_high_heldout_correlation_and_small_p(matched):
    for cell_id, unit in (("bipolars_test/0", BIPOLAR_UNIT), ("amacrines_test/0", AMACRINE_UNIT)):
        row = matched.sel(interneuron=cell_id)
        assert _best(matched, cell_id) == unit
        assert row.heldout_correlation > 0.9
        assert row.heldout_correlation > row.chance_p95
        assert row.p_value == pytest.approx(1 / (N_SHIFTS + 1))          # beats every shift
    # the stimulus-pixel centre of the unit: map pixel + 7 (conv0) or + 12 (conv1)
    amacrine = matched.sel(interneuron="amacrines_test/0")
    assert (float(amacrine.best_center_y), float(amacrine.best_center_x)) == (27.0, 22.0)
    bipolar = matched.sel(interneuron="bipolars_test/0")
    assert (float(bipolar.best_center_y), float(bipolar.best_center_x)) == (22.0, 25.0)


def test_noise_cells_sit_at_chance(matched):
    noise = matched.sel(interneuron=["bipolars_test/1", "bipolars_test/2", "bipolars_test/3",
                                     "amacrines_test/1"])
    n_held = int((~selection_mask(N_TIME - HISTORY)).sum())
    assert (np.abs(noise.heldout_correlation) < 3 / np.sqrt(n_held)).all()
    assert (np.abs(noise.chance_mean) < 2 / np.sqrt(n_held)).all()
    assert (noise.p_value > 0.05).all()                 # none significant at the 5 % level
    # the null spreads like a correlation of independent series on n_held points
    spread = noise.null_heldout_correlation.std("shift") * np.sqrt(n_held)
    assert ((spread > 0.5) & (spread < 2)).all()


def test_selection_bias_insample_exceeds_heldout_on_noise(matched):
    noise = matched.where(matched.cell_index > 0, drop=True)
    assert (noise.insample_correlation > noise.heldout_correlation + 0.1).all()
    # the published statistic (max over all units, no split) is far above the chance level
    assert (noise.published_correlation > noise.chance_p95).all()


def test_correlations_equal_direct_pearson(setup, matched):
    _, acts, bipolars, _ = setup
    _, vm = interneuron_windows(bipolars["boxes"], history=HISTORY)
    sel = selection_mask(vm.sizes["time"], "alternate", 10)
    for i in range(vm.sizes["cell"]):
        row = matched.sel(interneuron=f"bipolars_test/{i}")
        layer, c, y, x = _best(matched, f"bipolars_test/{i}")
        a, v = acts[layer][:, c, y, x], vm.values[:, i]
        assert float(row.insample_correlation) == pytest.approx(np.corrcoef(a[sel], v[sel])[0, 1], abs=1e-5)
        assert float(row.heldout_correlation) == pytest.approx(np.corrcoef(a[~sel], v[~sel])[0, 1], abs=1e-5)
        for layer, (cc, yy, xx) in (("conv0", (3, 0, 35)), ("conv1", (1, 25, 4))):
            expected = np.corrcoef(acts[layer][:, cc, yy, xx], v)[0, 1]
            got = row[f"correlation_map_{layer}"].values[cc, yy, xx]
            assert got == pytest.approx(expected, abs=1e-5)
        maps_max = max(float(row[f"correlation_map_{k}"].max()) for k in ("conv0", "conv1"))
        assert float(row.published_correlation) == pytest.approx(maps_max, abs=1e-6)


def test_half_split_with_another_seed(setup, matched):
    model, _, bipolars, _ = setup
    half = match_interneurons(model, bipolars, n_shifts=N_SHIFTS, random_state=1, split="half")
    assert half.attrs["split"] == "half" and half.attrs["seed"] == 1
    assert _best(half, "bipolars_test/0") == BIPOLAR_UNIT
    assert float(half.heldout_correlation.sel(interneuron="bipolars_test/0")) > 0.9
    before = matched.sel(interneuron=half.interneuron)
    assert not np.allclose(half.null_heldout_correlation, before.null_heldout_correlation)


# --------------------------------------------------------------------------- layout
def test_dataset_layout_coords_and_attrs(matched, tmp_path):
    ds = matched
    assert ds.interneuron.values.tolist() == [f"bipolars_test/{i}" for i in range(4)] + \
        ["amacrines_test/0", "amacrines_test/1"]
    assert ds.file.values.tolist() == ["bipolars_test"] * 4 + ["amacrines_test"] * 2
    assert ds.cell_index.values.tolist() == [0, 1, 2, 3, 0, 1]
    assert ds.cell_class.values.tolist() == ["bipolar"] * 4 + ["amacrine"] * 2
    assert ds.cell_type.values.tolist() == ["on", "off", "off", "off", "unknown", "unknown"]
    assert np.isnan(ds.center_y.values[4:]).all() and (ds.center_y.values[:4] == 25).all()
    for name in ("best_channel", "heldout_correlation", "insample_correlation", "chance_mean",
                 "chance_p95", "p_value", "published_correlation"):
        assert ds[name].dims == ("interneuron",)
    assert ds.null_heldout_correlation.shape == (6, N_SHIFTS)
    assert ds.correlation_map_conv0.dims == ("interneuron", "channel_conv0", "y_conv0", "x_conv0")
    assert ds.correlation_map_conv0.shape == (6, 4, 36, 36)
    assert ds.correlation_map_conv1.shape == (6, 4, 26, 26)
    assert ds.correlation_map_conv0.attrs["stimulus_pixel_offset"] == 7
    assert ds.correlation_map_conv1.attrs["stimulus_pixel_offset"] == 12
    assert ((ds.p_value > 0) & (ds.p_value <= 1)).all()
    assert ds.attrs["split"] == "alternate" and ds.attrs["n_shifts"] == N_SHIFTS
    assert ds.attrs["min_shift"] == HISTORY and ds.attrs["layers"] == "conv0,conv1"
    inputs = json.loads(ds.attrs["inputs"])
    assert inputs["bipolars_test"]["n_time"] == [N_TIME - HISTORY]
    assert len(inputs["amacrines_test"]["sha256"]) == 64
    back = xr.open_dataset(write_netcdf_atomic(ds, tmp_path / "match.nc"), engine="h5netcdf")
    xr.testing.assert_allclose(back.heldout_correlation.load(), ds.heldout_correlation)
    back.close()


def test_selection_mask_and_offsets():
    alternate = selection_mask(100, "alternate", 10)
    assert alternate.sum() == 50
    assert alternate[:10].all() and not alternate[10:20].any() and alternate[90:].sum() == 0
    half = selection_mask(101, "half")
    assert half[:51].all() and not half[51:].any()
    offsets = circular_offsets(200, 30, 40, np.random.default_rng(0))
    assert offsets.min() >= 40 and offsets.max() <= 160 and len(set(offsets)) == 30
    with pytest.raises(ConfigurationError, match="split"):
        selection_mask(100, "random")
    with pytest.raises(ConfigurationError, match="too few"):
        selection_mask(15, "alternate", 10)
    with pytest.raises(ConfigurationError, match="too few"):
        circular_offsets(70, 5, 40, np.random.default_rng(0))


# --------------------------------------------------------------------------- unit types
def test_type_match_with_unit_type_mapping(setup, matched):
    model, _, bipolars, amacrines = setup
    labels = {(layer, c): "off" for layer in ("conv0", "conv1") for c in range(4)}
    labels[BIPOLAR_UNIT[:2]] = "on"
    ds = match_interneurons(model, bipolars, n_shifts=N_SHIFTS, random_state=0, unit_types=labels)
    # same seed, same file position: the same shifts as in `matched` (deterministic)
    xr.testing.assert_allclose(ds.null_heldout_correlation,
                               matched.null_heldout_correlation.sel(interneuron=ds.interneuron))
    assert bool(ds.type_match.sel(interneuron="bipolars_test/0"))
    assert ds.best_unit_type.sel(interneuron="bipolars_test/0") == "on"
    expected = (ds.best_unit_type == ds.cell_type).values
    np.testing.assert_array_equal(ds.type_match.values, expected)
    assert ds.attrs["type_match_rate"] == pytest.approx(expected.mean())
    del labels[("conv0", 3)]
    with pytest.raises(ConfigurationError, match="conv0', 3"):
        match_interneurons(model, bipolars, n_shifts=3, unit_types=labels)
    labels[("conv0", 3)] = "off"
    with pytest.raises(ConfigurationError, match="cell_type"):
        match_interneurons(model, amacrines, n_shifts=3, unit_types=labels)


def test_label_units_by_truth_uses_the_corresponding_pixels():
    model = _model()
    rng = np.random.default_rng(2)
    n_frames = 200
    stim = rng.choice([-1.0, 1.0], (n_frames, 50, 50)).astype(np.float32)
    w = windows(stim, norm_stats={"mean": 0.0, "std": 1.0}, history=HISTORY)
    model.eval()
    acts = layer_activations(model, torch.as_tensor(w[:]), ["conv0", "conv1"])
    # truth of type "a" = conv0 channel 1 placed where its units are centred (offset 7),
    # type "b" = conv1 channel 3 at offset 12 (whole movies: the first HISTORY frames unused)
    truth_a = np.zeros((n_frames, 50, 50), np.float32)
    truth_a[HISTORY:, 7:43, 7:43] = acts["conv0"][:, 1].numpy()
    truth_b = np.zeros((n_frames, 50, 50), np.float32)
    truth_b[HISTORY:, 12:38, 12:38] = acts["conv1"][:, 3].numpy()
    noise = rng.normal(size=(n_frames, 50, 50)).astype(np.float32)
    labels = label_units_by_truth(model, w, {"a": truth_a, "b": truth_b, "noise": noise})
    assert labels.correlation.dims == ("unit", "type") and labels.sizes["unit"] == 8
    assert labels.unit_type.sel(unit="conv0/1") == "a" and labels.unit_type.sel(unit="conv1/3") == "b"
    assert float(labels.correlation.sel(unit="conv0/1", type="a")) == pytest.approx(1.0, abs=1e-6)
    assert float(labels.correlation.sel(unit="conv1/3", type="b")) == pytest.approx(1.0, abs=1e-6)
    assert (np.abs(labels.correlation.sel(type="noise")) < 0.05).all()
    np.testing.assert_array_equal(labels.channel.values, [0, 1, 2, 3, 0, 1, 2, 3])
    # aligned maps (one row per window) give the same answer as whole movies
    aligned = label_units_by_truth(model, w, {"a": truth_a[HISTORY:], "b": truth_b[HISTORY:],
                                              "noise": noise[HISTORY:]})
    xr.testing.assert_allclose(aligned.correlation, labels.correlation)
    with pytest.raises(ShapeError, match="time points"):
        label_units_by_truth(model, w, {"a": truth_a[:50]})
    with pytest.raises(ShapeError, match="like the stimulus"):
        label_units_by_truth(model, w, {"a": truth_a[:, :40, :40]})


# --------------------------------------------------------------------------- bad input
def test_model_and_file_mismatches_raise(setup):
    model, _, bipolars, _ = setup
    with pytest.raises(ConfigurationError, match="unknown layer"):
        match_interneurons(model, bipolars, layers=("conv0", "conv7"))
    with pytest.raises(ShapeError, match="50x50"):
        match_interneurons(_model(img_shape=(HISTORY, 40, 40)), bipolars)
    with pytest.raises(RecordingError, match="lines"):
        match_interneurons(model, bipolars, stim_types=["lines"])
    with pytest.raises(ConfigurationError, match="too few"):
        match_interneurons(model, bipolars, min_shift=300)
    with pytest.raises(ConfigurationError, match="no interneuron files"):
        match_interneurons(model, [])
    with pytest.raises(ConfigurationError, match="share a file name"):
        match_interneurons(model, [bipolars, bipolars])


def test_bad_membrane_potentials_raise(setup):
    model, _, bipolars, _ = setup
    broken = bipolars.copy(deep=True)
    broken["boxes"]["membrane_potential"][1, 100] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        match_interneurons(model, broken)
    flat = bipolars.copy(deep=True)
    flat["boxes"]["membrane_potential"][2, :] = 1.5
    with pytest.raises(RecordingError, match=r"cell\(s\) \[2\] is constant"):
        match_interneurons(model, flat)
