"""The in-silico retina: determinism, causality, cell-type physiology, files."""
from __future__ import annotations

import numpy as np
import pytest

from retcodec.insilico import retina as ins
from retcodec.io.architectures import centers_to_coords


FAST = ins.CircuitParams(calibration_seconds=10.0)     # a shorter calibration keeps tests quick


@pytest.fixture(scope="module")
def retina() -> ins.InSilicoRetina:
    return ins.InSilicoRetina(0, FAST)


def flash(center: np.ndarray, sign: float, n: int = 120, onset: int = 50, radius: float = 3.0,
          duration: int | None = None) -> np.ndarray:
    """A contrast movie (n, 50, 50) with a spot of ``sign`` contrast at ``center`` from ``onset``."""
    yy, xx = np.mgrid[0:50, 0:50]
    spot = ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.float32)
    movie = np.zeros((n, 50, 50), np.float32)
    end = n if duration is None else onset + duration
    movie[onset:end] = sign * spot
    return movie


def test_same_seed_same_circuit_and_other_seed_differs(retina):
    again = ins.InSilicoRetina(0, FAST)
    np.testing.assert_array_equal(again.centers, retina.centers)
    np.testing.assert_array_equal(again.gain, retina.gain)
    other = ins.InSilicoRetina(1, FAST, calibrate=False)
    assert not np.allclose(other.centers, retina.centers)


def test_cell_types_and_places_follow_the_published_readout(retina):
    types, counts = np.unique(retina.cell_types, return_counts=True)
    assert set(types) == set(ins.GANGLION_TYPES) and len(types) >= 4
    assert counts.min() >= 3
    assert retina.centers.min() >= 18 and retina.centers.max() <= 33
    # within the readout's unclipped range, so every cell is read at its own place
    coords = centers_to_coords(np.rint(retina.centers), [15, 11, 11], [40, 50, 50])
    assert coords.min() >= 0 and coords.max() <= 15
    assert np.all(np.rint(retina.centers) - 18 == coords)


def test_temporal_filters_are_causal_with_one_frame_latency():
    f = ins.temporal_filter(0.05, 0.9, 25)
    assert f[0] == 0.0 and np.isclose(np.linalg.norm(f), 1.0)
    assert ins.temporal_filter(0.05, 0.0, 25).argmax() == 5   # the fast lobe peaks at 50 ms
    assert 3 <= f.argmax() <= 5                             # the slow lobe advances the peak
    assert f.min() < 0                                      # biphasic
    mono = ins.lowpass_filter(0.04, 14)
    assert np.isclose(mono.sum(), 1.0) and mono.min() >= 0


def test_responses_depend_on_at_most_the_model_history(retina):
    rng = np.random.default_rng(3)
    movie = ins.to_contrast(ins.white_noise(200, rng))
    base = retina.rates(movie)
    t = 100
    poked = movie.copy()
    poked[t] *= -1
    diff = np.abs(retina.rates(poked) - base).max(axis=0)
    assert diff[: t + 1].max() == 0.0                     # nothing before or at the frame itself
    assert diff[t + 1:t + 40].max() > 0                   # an effect within the 40-frame history
    assert diff[t + 40:].max() < 1e-3 * base.max()        # and (numerically) none after it


@pytest.mark.parametrize("gtype, on, off", [
    ("on_transient", True, False), ("off_transient", False, True),
    ("off_sustained", False, True), ("on_off_transient", True, True)])
def test_polarity_of_each_ganglion_type(retina, gtype, on, off):
    i = int(np.flatnonzero(retina.cell_types == gtype)[0])
    c = retina.centers[i]
    base = retina.rates(np.zeros((120, 50, 50), np.float32))[i, 60:].mean()
    light = retina.rates(flash(c, +1.0))[i, 50:80].max()
    dark = retina.rates(flash(c, -1.0))[i, 50:80].max()
    assert (light > 2 * base + 1) == on
    assert (dark > 2 * base + 1) == off


def test_sustained_cells_keep_firing_during_a_step_and_transient_cells_adapt(retina):
    ratio = {}
    for gtype in ("off_sustained", "off_transient"):
        i = int(np.flatnonzero(retina.cell_types == gtype)[0])
        r = retina.rates(flash(retina.centers[i], -1.0, n=160))[i]
        ratio[gtype] = r[120:160].mean() / r[50:90].max()      # late plateau / peak
    assert ratio["off_sustained"] > 0.5
    assert ratio["off_transient"] < 0.5 * ratio["off_sustained"]


def test_poisson_spikes_and_rate_estimate(retina):
    rng = np.random.default_rng(0)
    movie = ins.to_contrast(ins.natural_scenes(300, rng))
    rec = retina.record(movie, rng, n_repeats=200)
    mean_count = rec["spikes"].mean(axis=0)
    expected = rec["true_rate"] * ins.DT
    assert abs(mean_count.sum() - expected.sum()) < 0.02 * expected.sum()
    # the 10 ms rate estimate conserves spikes (Gaussian smoothing has unit area)
    s = rec["spikes"][0].astype(float)
    est = ins.smooth_rate(rec["spikes"][0])
    inner = slice(5, -5)
    assert abs(est[:, inner].sum() * ins.DT - s[:, inner].sum()) < 0.05 * s.sum() + 2


def test_stimuli_are_uint8_with_the_published_kinds():
    rng = np.random.default_rng(1)
    wn = ins.white_noise(10, rng)
    assert wn.dtype == np.uint8 and set(np.unique(wn)) == {0, 255}
    ns = ins.natural_scenes(250, rng)
    assert ns.shape == (250, 50, 50) and ns.dtype == np.uint8 and ns.std() > 10
    # fixational drift: consecutive frames are similar, image changes are not
    d = np.abs(np.diff(ns.astype(float), axis=0)).mean(axis=(1, 2))
    assert np.median(d) < 10
    b = ins.boxes(5, rng)
    assert b.shape == (5, 38, 38) and set(np.unique(b)) <= {0, 1}
    with pytest.raises(ValueError, match="unknown stimulus kind"):
        ins.make_stimulus("movingbar", 10, rng)


def test_interneuron_potentials_have_their_type_polarity(retina):
    c = np.array([[25, 25]] * 2)
    on, off = retina.interneuron_potentials(flash(np.array([25, 25]), 1.0), ["on_sustained", "off_sustained"], c)
    assert on[50:80].max() > 0 and off[50:80].min() < 0
    with pytest.raises(ValueError, match="unknown interneuron type"):
        retina.interneuron_potentials(flash(np.array([25, 25]), 1.0), ["starburst"], c[:1])


def test_params_round_trip_through_json():
    p = ins.CircuitParams(seed=3)
    assert ins.CircuitParams.from_json(p.to_json()) == p


def test_simulate_writes_loadable_files_with_truth(tmp_path):
    from retcodec.io.interneurons import load_interneurons
    from retcodec.io.recordings import load_recording

    plan = ins.SimulationPlan(naturalscene_train=2, naturalscene_test=1, whitenoise_train=1,
                              whitenoise_test=1, n_repeats=3, interneuron_seconds=1)
    paths = ins.simulate(tmp_path, seed=0, plan=plan, progress=False, params=FAST)
    ns = load_recording(paths["naturalscene"], split="test")
    assert ns.sizes["repeat"] == 3 and ns.sizes["time"] == 100
    assert set(ns["cell_type"].values) == set(ins.GANGLION_TYPES)
    np.testing.assert_allclose(ns["repeats"].mean("repeat"), ns["rate"], rtol=1e-5, atol=1e-4)
    wn = load_recording(paths["whitenoise"], split="test")
    assert wn.attrs["trimmed_bins"] == 1                      # the published quirk, reproduced
    bip = load_interneurons(paths["bipolars"])
    assert set(bip["boxes"]["cell_type"].values) == set(ins.BIPOLAR_TYPES)
    ama = load_interneurons(paths["amacrines"])
    assert set(ama["boxes"]["cell_type"].values) == set(ins.AMACRINE_TYPES)


def test_shorten_recording_keeps_test_and_truth(tmp_path):
    from retcodec.io.recordings import load_recording

    plan = ins.SimulationPlan(naturalscene_train=2, naturalscene_test=1, whitenoise_train=1,
                              whitenoise_test=1, n_repeats=2, interneuron_seconds=1)
    paths = ins.simulate(tmp_path / "full", seed=0, plan=plan, progress=False, params=FAST)
    short = ins.shorten_recording(paths["naturalscene"], tmp_path / "short.h5", train_seconds=0.5)
    a = load_recording(short, split="train")
    assert a.sizes["time"] == 50
    full_test = load_recording(paths["naturalscene"], split="test")
    short_test = load_recording(short, split="test")
    np.testing.assert_array_equal(full_test["stimulus"].values, short_test["stimulus"].values)
    assert list(a["cell_type"].values) == list(full_test["cell_type"].values)
