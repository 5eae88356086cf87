"""The v2 in-silico retina: layout, jitter, causality, physiology, silencing, files and truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.insilico import circuit as v2
from retcodec.io.architectures import centers_to_coords

FAST = v2.CircuitConfig(calibration_seconds=5.0)     # a short calibration keeps the tests quick


@pytest.fixture(scope="module")
def circuit() -> v2.InSilicoCircuit:
    return v2.InSilicoCircuit(0, FAST)


def step(center: np.ndarray, sign: float, n: int = 160, onset: int = 50, radius: float = 3.0) -> np.ndarray:
    """A contrast movie (n, 50, 50): a spot of ``sign`` contrast at ``center`` from ``onset`` on."""
    yy, xx = np.mgrid[0:50, 0:50]
    movie = np.zeros((n, 50, 50), np.float32)
    movie[onset:] = sign * ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2)
    return movie


def motion(center: np.ndarray, local: bool, n: int = 150, radius: float = 6.0) -> np.ndarray:
    """A texture moving 1 px/frame: inside a disc at ``center`` over a still background
    (``local``), or the whole texture (global drift)."""
    rng = np.random.default_rng(0)
    tex = ndimage.gaussian_filter(rng.normal(size=(260, 260)), 1.0)
    tex = np.clip(0.5 * tex / tex.std(), -1, 1).astype(np.float32)
    yy, xx = np.mgrid[0:50, 0:50]
    disc = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2
    out = np.empty((n, 50, 50), np.float32)
    for t in range(n):
        s = t % 60
        if local:
            out[t] = tex[50:100, 50:100]
            out[t][disc] = tex[100 + s:150 + s, 100:150][disc]
        else:
            out[t] = tex[50 + s:100 + s, 50:100]
    return out


def mean_rate(circuit: v2.InSilicoCircuit, gtype: str, movie_of) -> float:
    """Mean rate of the cells of ``gtype`` (after 50 frames) for ``movie_of(center)``."""
    idx = np.flatnonzero(circuit.cell_types == gtype)[:2]
    return float(np.mean([circuit.rates(movie_of(circuit.centers[i]))[i, 50:].mean() for i in idx]))


# --------------------------------------------------------------------------- layout
def test_same_random_state_same_circuit_and_another_differs(circuit):
    again = v2.InSilicoCircuit(0, FAST)
    for name in ("centers", "weights", "rf_sigma", "tau", "gain", "gen_std"):
        np.testing.assert_array_equal(getattr(again, name), getattr(circuit, name))
    other = v2.InSilicoCircuit(1, FAST, calibrate=False)
    assert not np.allclose(other.centers, circuit.centers)


def test_at_least_five_types_of_at_least_four_jittered_cells_in_the_readout_range(circuit):
    types, counts = np.unique(circuit.cell_types, return_counts=True)
    assert set(types) == set(v2.GANGLION_TYPES) and len(types) >= 5 and counts.min() >= 4
    coords = centers_to_coords(np.rint(circuit.centers), [15, 11, 11], [40, 50, 50])
    assert coords.min() >= 0 and coords.max() <= 15             # every cell read at its own place
    for gtype in types:
        m = circuit.cell_types == gtype
        for name in ("rf_sigma", "tau", "target_rate", "threshold"):
            assert np.ptp(getattr(circuit, name)[m]) > 0             # jittered within the type
        # the type's wiring pattern (signs) is shared by its cells
        assert (np.sign(circuit.weights[m]) == np.sign(circuit.weights[m][0])).all()


def test_object_motion_and_on_off_cells_share_excitation_and_differ_by_inhibition():
    w = v2.DEFAULT_WIRING
    exc = {g: {k: v for k, v in w[g].items() if v > 0} for g in ("on_off_transient", "object_motion")}
    assert exc["on_off_transient"] == exc["object_motion"]
    assert abs(w["object_motion"]["amacrine_widefield"]) > 4 * abs(w["on_off_transient"]["amacrine_widefield"])
    # ON and OFF mixed in different proportions: OFF / ON excitation
    assert w["on_sustained"]["bipolar_off_transient"] / w["on_sustained"]["bipolar_on_sustained"] < 0.5
    assert w["on_off_transient"]["bipolar_off_transient"] / w["on_off_transient"]["bipolar_on_transient"] == 1


def test_config_round_trips_through_json_and_pathways_fit_the_cnn_window():
    cfg = v2.CircuitConfig(random_state=3, cells_per_type=5)
    assert v2.CircuitConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["version"] == v2.VERSION
    assert cfg.history <= 40
    with pytest.raises(ConfigurationError, match="40"):
        v2.CircuitConfig(bipolar_taps=30)
    with pytest.raises(ConfigurationError, match="unknown interneuron types"):
        v2.CircuitConfig(wiring={**v2.DEFAULT_WIRING, "on_transient": {"starburst": 1.0}})


# --------------------------------------------------------------------------- physiology
def test_responses_depend_on_at_most_the_cnn_history(circuit):
    movie = v2.to_contrast(v2.white_noise(200, np.random.default_rng(3)))
    base = circuit.rates(movie)
    poked = movie.copy()
    t = 100
    poked[t] *= -1
    diff = np.abs(circuit.rates(poked) - base).max(axis=0)
    assert diff[:t + 1].max() == 0.0                       # causal, at least one frame of latency
    assert diff[t + 1:t + 40].max() > 0
    assert diff[t + 40:].max() < 1e-3 * base.max()         # nothing beyond the 40-frame window


@pytest.mark.parametrize("gtype, on, off", [
    ("on_transient", True, False), ("off_transient", False, True), ("on_sustained", True, False),
    ("off_sustained", False, True), ("on_off_transient", True, True)])
def test_polarity_of_each_type(circuit, gtype, on, off):
    i = int(np.flatnonzero(circuit.cell_types == gtype)[0])
    base = circuit.rates(np.zeros((100, 50, 50), np.float32))[i, 60:].mean()
    light = circuit.rates(step(circuit.centers[i], 1.0, n=100))[i, 50:80].max()
    dark = circuit.rates(step(circuit.centers[i], -1.0, n=100))[i, 50:80].max()
    assert (light > 2 * base + 1) == on
    assert (dark > 2 * base + 1) == off


def test_sustained_types_keep_firing_during_a_step_and_transient_types_adapt(circuit):
    ratio = {}
    for gtype, sign in (("on_sustained", 1.0), ("on_transient", 1.0), ("off_sustained", -1.0),
                        ("off_transient", -1.0)):
        i = int(np.flatnonzero(circuit.cell_types == gtype)[0])
        r = circuit.rates(step(circuit.centers[i], sign))[i]
        ratio[gtype] = r[120:160].mean() / r[50:90].max()     # late plateau / peak
    assert ratio["on_sustained"] > 0.3 and ratio["off_sustained"] > 0.3
    assert ratio["on_transient"] < 0.5 * ratio["on_sustained"]
    assert ratio["off_transient"] < 0.5 * ratio["off_sustained"]


def test_object_motion_cells_fire_for_local_motion_but_not_global_drift(circuit):
    ratio = {g: mean_rate(circuit, g, lambda c: motion(c, True)) /
             max(mean_rate(circuit, g, lambda c: motion(c, False)), 1e-3)
             for g in ("object_motion", "on_off_transient")}
    assert ratio["object_motion"] > 10                     # local motion drives, global drift is cancelled
    assert ratio["on_off_transient"] < 2                   # same excitation without the wide-field inhibition


def test_natural_scenes_hold_object_motion_and_drive_every_type(circuit):
    rng = np.random.default_rng(1)
    still = v2.object_motion_scenes(300, rng, p_object=0.0, p_global=0.0)
    objects = v2.object_motion_scenes(300, rng, p_object=1.0, p_global=0.0)
    assert still.dtype == np.uint8 and still.shape == (300, 50, 50)
    # a moving disc changes a part of the frame: more frame-to-frame change than fixational drift alone
    change = lambda s: np.abs(np.diff(s.astype(float), axis=0)).mean(axis=(1, 2))   # noqa: E731
    assert np.median(change(objects)) > np.median(change(still))
    rates = circuit.rates(v2.to_contrast(v2.object_motion_scenes(1500, rng)))[:, circuit.history:]
    for gtype in v2.GANGLION_TYPES:
        r = rates[circuit.cell_types == gtype]
        assert r.mean() > 2 and (r.std(axis=1) / r.mean(axis=1)).min() > 0.5   # firing and modulated


def test_cells_adapt_to_the_stimulus_ensemble(circuit):
    wn_adapted = circuit.adapted_to("whitenoise")
    np.testing.assert_array_equal(wn_adapted.weights, circuit.weights)    # same synapses
    assert not np.allclose(wn_adapted.gen_std, circuit.gen_std)           # another operating point
    rates = wn_adapted.rates(v2.to_contrast(v2.white_noise(800, np.random.default_rng(2))))[:, 40:]
    for gtype in v2.GANGLION_TYPES:
        assert rates[circuit.cell_types == gtype].mean() > 2              # white noise drives every type
    with pytest.raises(ConfigurationError, match="adaptation"):
        circuit.adapted_to("movingbar")


# --------------------------------------------------------------------------- silencing
def test_silence_returns_a_silenced_copy_and_leaves_the_circuit_intact(circuit):
    quiet = circuit.silence(["bipolar_on_transient"])
    assert quiet.silenced == ("bipolar_on_transient",) and circuit.silenced == ()
    assert quiet.silence(["amacrine_widefield"]).silenced == ("amacrine_widefield", "bipolar_on_transient")
    with pytest.raises(ConfigurationError, match="unknown interneuron types"):
        circuit.silence(["starburst"])
    with pytest.raises(ShapeError, match=r"\(T, 50, 50\)"):
        circuit.rates(np.zeros((10, 40, 40), np.float32))


def test_silencing_effects_follow_the_wiring(circuit):
    movie = v2.to_contrast(v2.object_motion_scenes(300, np.random.default_rng(4)))
    eff = circuit.silencing_effects(movie)
    assert eff.dims == ("interneuron_type", "cell") and eff.shape == (len(v2.INTERNEURON_TYPES), circuit.n_cells)
    types = circuit.cell_types
    # an exact re-simulation of one entry
    h = circuit.history
    intact = circuit.rates(movie)[:, h:].mean(axis=1)
    quiet = circuit.silence(["amacrine_widefield"]).rates(movie)[:, h:].mean(axis=1)
    np.testing.assert_allclose(eff.sel(interneuron_type="amacrine_widefield"), (quiet - intact) / intact, rtol=1e-6)
    # cells that receive nothing (directly or through an amacrine) from a type are untouched
    assert np.all(eff.sel(interneuron_type="amacrine_on_narrow").values[types != "off_sustained"] == 0)
    # removing a cell's only excitation silences it; removing its inhibition raises its rate
    assert np.all(eff.sel(interneuron_type="bipolar_on_transient").values[types == "on_transient"] < -0.8)
    assert np.all(eff.sel(interneuron_type="bipolar_off_sustained").values[types == "off_sustained"] < -0.8)
    assert np.all(eff.sel(interneuron_type="amacrine_widefield").values[types == "object_motion"] > 1.0)
    assert np.all(eff.sel(interneuron_type="amacrine_on_narrow").values[types == "off_sustained"] > 0)


def test_every_interneuron_type_can_be_recorded(circuit):
    movie = step(np.array([25, 25]), 1.0, n=100)
    pos = np.array([[25, 25]] * len(v2.INTERNEURON_TYPES))
    vm = dict(zip(v2.INTERNEURON_TYPES, circuit.interneuron_potentials(movie, list(v2.INTERNEURON_TYPES), pos)))
    assert vm["bipolar_on_transient"][50:80].max() > 0 and vm["bipolar_off_transient"][50:80].min() < 0
    assert vm["amacrine_on_narrow"][50:80].max() > 0 and np.ptp(vm["amacrine_widefield"]) > 0
    with pytest.raises(ConfigurationError, match="unknown interneuron type"):
        circuit.interneuron_potentials(movie, ["starburst"], pos[:1])


# --------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    plan = v2.SimulationPlan(naturalscene_train=2, naturalscene_test=1, whitenoise_train=1,
                             whitenoise_test=1, n_repeats=3, interneuron_seconds=1,
                             bipolars_per_type=2, amacrines_per_type=2)
    return v2.simulate(tmp_path_factory.mktemp("v2"), random_state=0, plan=plan, config=FAST)


def test_simulate_writes_loadable_recordings_with_their_truth(files):
    from retcodec.io.recordings import load_recording
    from retcodec.io.truth import read_truth

    ns = load_recording(files["naturalscene"], split="test")
    assert ns.sizes["repeat"] == 3 and ns.sizes["time"] == 100
    assert set(ns["cell_type"].values) == set(v2.GANGLION_TYPES)
    assert load_recording(files["whitenoise"], split="test").attrs["trimmed_bins"] == 1
    truth = read_truth(files["naturalscene"])
    assert set(truth.dims) == {"cell", "interneuron_type"}
    assert list(truth["interneuron_type"].values) == list(v2.INTERNEURON_TYPES)
    assert truth["wiring"].dims == ("cell", "interneuron_type")
    assert truth["silencing_effect"].dims == ("interneuron_type", "cell")
    assert truth.attrs["adaptation"] == "naturalscene" and "naturalscene test" in truth.attrs["silencing_stimulus"]
    assert v2.CircuitConfig.from_json(truth.attrs["circuit"]) == FAST
    for i, gtype in enumerate(truth["cell_type"].values):      # signs of the wiring as documented
        w = truth["wiring"].isel(cell=i).to_series()
        for itype, weight in v2.DEFAULT_WIRING[gtype].items():
            assert np.sign(w[itype]) == np.sign(weight)
        assert (w.drop(list(v2.DEFAULT_WIRING[gtype])) == 0).all()
    np.testing.assert_array_equal(truth["center_y"], ns["center_y"])
    # the truth of each file is its own: effects on its own test stimulus
    wn_truth = read_truth(files["whitenoise"])
    assert not np.allclose(wn_truth["silencing_effect"], truth["silencing_effect"])


def test_interneuron_files_cover_every_type_with_true_types(files):
    from retcodec.io.interneurons import load_interneurons

    bip = load_interneurons(files["bipolars"])["boxes"]
    ama = load_interneurons(files["amacrines"])["boxes"]
    assert list(bip["cell_type"].values) == list(np.repeat(v2.BIPOLAR_TYPES, 2))
    assert list(ama["cell_type"].values) == list(np.repeat(v2.AMACRINE_TYPES, 2))
    assert set(bip["cell_type"].values) | set(ama["cell_type"].values) == set(v2.INTERNEURON_TYPES)


def test_circuit_from_json_rebuilds_either_version(circuit):
    from retcodec.insilico import retina as v1

    again = v2.circuit_from_json(circuit.config.to_json())
    np.testing.assert_array_equal(again.weights, circuit.weights)
    movie = step(np.array([25, 25]), 1.0, n=60)
    maps = v2.interneuron_maps(again, movie)
    assert set(maps) == set(v2.INTERNEURON_TYPES) and maps["amacrine_widefield"].shape == (60, 50, 50)
    old = v2.circuit_from_json(v1.CircuitParams(seed=2).to_json())
    assert isinstance(old, v1.InSilicoRetina) and old.params.seed == 2
    assert set(v2.interneuron_maps(old, movie)) == set(v1.BIPOLAR_TYPES) | set(v1.AMACRINE_TYPES)
