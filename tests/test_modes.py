"""Tests of retcodec.modes: the thresholded sparse autoencoder, baselines, xarray I/O."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from retcodec.errors import ConfigurationError, MissingDataError, NonFiniteError, ShapeError
from scipy.optimize import nnls

from retcodec.modes import (ContributionModes, NMFModes, PCAModes, estimator_from_dataset,
                            explained_r2, fit_layer, layer_matrix, load_modes,
                            make_combinatorial_modes, make_sparse_modes, match_modes, mode_stability,
                            save_modes,
                            stability_score)
from retcodec.modes.compact import choose_operating_point, prune_modes, thresholded_loadings, unit_rows
from retcodec.modes.synthetic import mode_overlap

torch.set_num_threads(1)

N_SAMPLES, N_FEATURES, N_TRUE = 2000, 8, 4
QUICK = dict(max_epochs=4, random_state=0)  # enough to exercise the code paths


@pytest.fixture(scope="module")
def data():
    """(X, true modes, true loadings): 2000 x 8, 4 sparse non-negative modes."""
    return make_sparse_modes(N_SAMPLES, N_FEATURES, N_TRUE, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    """The default autoencoder, epochs capped to keep the suite fast."""
    return ContributionModes(max_epochs=60, random_state=0).fit(data[0])


def as_contribution(X: np.ndarray, n_channels: int, signs=("neg", "pos")) -> xr.DataArray:
    """Columns [0, n) as |C-| and [n, 2n) as C+ of a (time, channel, sign) contribution."""
    parts = {"neg": -X[:, :n_channels], "pos": X[:, n_channels:2 * n_channels]}
    values = np.stack([parts[s] for s in signs], axis=-1)
    return xr.DataArray(values, dims=("time", "channel", "sign"), name="conv1",
                        coords={"time": np.arange(len(X)) * 0.01,
                                "channel": np.arange(n_channels) + 10, "sign": list(signs)},
                        attrs={"method": "ig"})


def true_mode_recovery(true_modes, components):
    cosine = np.zeros(len(true_modes))
    rows, _, matched = match_modes(true_modes, components)
    cosine[rows] = matched
    return cosine


# --------------------------------------------------------------------------- autoencoder
def test_defaults_reconstruct_and_recover_known_modes(data, fitted):
    X, true_modes, _ = data
    assert fitted.r2_ >= 0.9
    assert fitted.score(X) == pytest.approx(fitted.r2_, abs=1e-12)
    assert true_mode_recovery(true_modes, fitted.components_).min() >= 0.9


def test_defaults_generalise_to_held_out_samples(data, fitted):
    X_new, _, _ = make_sparse_modes(N_SAMPLES + 500, N_FEATURES, N_TRUE, random_state=0)
    held_out = X_new[N_SAMPLES:]  # same modes, samples not seen in fit
    assert fitted.score(held_out) >= 0.85


def test_transform_inverse_transform_consistency(data, fitted):
    X = data[0]
    Z = fitted.transform(X)
    assert Z.shape == (len(X), fitted.n_modes_)
    np.testing.assert_allclose(fitted.inverse_transform(Z), Z @ fitted.components_)
    assert explained_r2(X, fitted.inverse_transform(Z)) == pytest.approx(fitted.r2_)
    assert fitted.l0_ == pytest.approx((Z != 0).sum(axis=1).mean())


def test_atom_loadings_are_thresholded_preloadings(data, fitted):
    """Atoms: z = a where a >= θ, else 0; so every non-zero atom loading lies in [θ, 1)."""
    X = data[0]
    Z = fitted.transform_atoms(X)
    nonzero = Z[Z != 0]
    assert nonzero.size and nonzero.min() >= fitted.threshold and nonzero.max() < 1
    with torch.no_grad():
        a = fitted._module.preloadings(torch.as_tensor(X / fitted.scale_))
    a = a.numpy()[:, fitted.atoms_]
    np.testing.assert_array_equal(Z, np.where(a >= fitted.threshold, a, 0.0))


def test_threshold_property_holds_for_another_threshold(data):
    est = ContributionModes(threshold=0.7, max_epochs=6, random_state=1).fit(data[0])
    Z = est.transform_atoms(data[0])
    assert Z[Z != 0].size and Z[Z != 0].min() >= 0.7


def test_compact_loadings_are_sparse_by_construction(data, fitted):
    """A loading is 0 or its part z_k‖c_k‖ passes the activity cut; on its support it is the exact NNLS fit."""
    X = data[0]
    Z = fitted.transform(X[:200])
    parts = Z * np.linalg.norm(fitted.components_, axis=1)
    assert fitted.activity_cut_ > 0 and parts[Z > 0].min() >= fitted.activity_cut_ * (1 - 1e-12)
    for x, z in zip(X[:200], Z):
        support = np.flatnonzero(z)
        if support.size:
            np.testing.assert_allclose(z[support], nnls(fitted.components_[support].T, x)[0], atol=1e-10)
    np.testing.assert_allclose(Z[:50], fitted.transform(X[:50]))  # sample by sample
    dense = np.array([nnls(fitted.components_.T, x)[0] for x in X[:200]])
    assert (Z > 0).sum() < (dense > 0).sum()                      # thresholding removes tiny loadings
    Z = fitted.transform(X)
    np.testing.assert_allclose([z[z > 0].mean() for z in Z.T], 1.0, rtol=1e-6)
    assert fitted.l0_ == pytest.approx((Z > 0).sum(axis=1).mean())
    assert fitted.fraction_none_ == pytest.approx(((Z > 0).sum(axis=1) == 0).mean())


def test_thresholded_loadings_known_answer():
    D = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    X = np.array([[1.0, 0.1], [0.05, 0.02], [0.6, 0.8]])
    Z = thresholded_loadings(X, D, cut=0.2)
    np.testing.assert_allclose(Z[0], [1.0, 0.0, 0.0])            # 0.1 < cut: dropped, the rest refitted
    np.testing.assert_allclose(Z[1], 0.0)                         # nothing passes: no active mode
    np.testing.assert_allclose(Z[2] @ D, X[2], atol=1e-12)


def test_operating_point_rule_known_answer():
    r2 = np.array([0.5, 0.90, 0.985, 0.99, 0.992, 0.992])
    l0 = np.array([1.0, 1.9, 2.5, 2.1, 2.05, 2.3])
    # within 0.01 of 0.992: counts 3..6; lowest L0 among them 2.05; within 0.1: counts 4 and 5 -> 4
    assert choose_operating_point(r2, l0, tolerance=0.01, l0_tolerance=0.1) == 3
    assert choose_operating_point(r2, l0, tolerance=0.01, l0_tolerance=0.0) == 4
    assert choose_operating_point(r2, l0, tolerance=0.1, l0_tolerance=10) == 1


def test_pruning_drops_a_copy_and_keeps_needed_modes():
    rng = np.random.default_rng(0)
    D = np.eye(4)[:3]
    X = rng.uniform(0.5, 1.5, (300, 3)) * (rng.random((300, 3)) < 0.5) @ D
    doubled = np.vstack([D, unit_rows((D[0] + 0.01 * D[1])[None])])       # a near copy of mode 0
    kept = prune_modes(X, doubled, cut=0.1, r2_loss=0.0025, l0_gain=0.1)
    assert len(kept) == 3 and stability_score(D, kept) > 0.999
    assert len(prune_modes(X, D, cut=0.1, r2_loss=0.0025, l0_gain=0.1)) == 3     # every mode is needed


def test_count_follows_the_documented_rule(fitted):
    f = fitted.frontier_
    assert len(f.r2) == len(f.l0) == len(f.n_modes) == len(fitted.count_r2_) >= 1
    assert f.chosen == choose_operating_point(f.r2, f.l0, fitted.compact_tolerance, fitted.l0_tolerance)
    assert fitted.n_modes_ <= len(f.pruned) <= f.n_modes[f.chosen]
    assert f.pareto[np.argmax(f.r2)] and "held-out R²" in fitted.count_rule_


def test_fixed_count_and_paper_atoms(data):
    X = data[0]
    fixed = ContributionModes(n_compact=2, **QUICK).fit(X)
    assert fixed.n_modes_ <= 2 and "fixed" in fixed.count_rule_
    atoms = ContributionModes(compact=False, **QUICK).fit(X)
    np.testing.assert_array_equal(atoms.components_, atoms.atom_components_)
    np.testing.assert_array_equal(atoms.transform(X), atoms.transform_atoms(X))
    np.testing.assert_array_equal(atoms.atom_index_, atoms.atoms_)
    assert atoms.r2_ == pytest.approx(atoms.atom_r2_)
    np.testing.assert_array_equal(atoms.atom_mode_[atoms.atoms_], np.arange(atoms.n_modes_))


def test_mode_order_is_decreasing_explained_energy(data, fitted):
    X = data[0]
    Z = fitted.transform(X)
    energy = (Z ** 2).sum(axis=0) * (fitted.components_ ** 2).sum(axis=1) / (X ** 2).sum()
    np.testing.assert_allclose(fitted.energy_, energy, rtol=1e-9)
    assert np.all(np.diff(energy) <= 0)


def test_nonneg_components_and_scale(data, fitted):
    X = data[0]
    assert fitted.components_.min() >= 0
    assert fitted.scale_ == pytest.approx(X.std())
    np.testing.assert_allclose(fitted.atom_components_, fitted.dictionary_[fitted.atoms_])


def test_signed_dictionary_fits_signed_data(data):
    X = data[0] - data[0].mean(axis=0)
    est = ContributionModes(nonneg=False, **QUICK).fit(X)
    assert est.components_.min() < 0
    assert np.isfinite(est.r2_)


def test_alive_and_dead_atom_bookkeeping(data, fitted):
    X = data[0]
    loadings = fitted._all_loadings(X)  # every atom, dead ones included
    assert fitted.alive_.shape == (fitted.n_atoms_,) == (3 * N_FEATURES,)
    assert (~fitted.alive_).any(), "this fit should leave some atoms dead"
    norms = np.linalg.norm(fitted.dictionary_, axis=1)
    nonempty = norms > 1e-6 * norms.max()
    np.testing.assert_array_equal(fitted.alive_, (loadings != 0).any(axis=0) & nonempty)
    assert sorted(fitted.atoms_) == list(np.flatnonzero(fitted.alive_))
    np.testing.assert_array_equal(fitted.transform_atoms(X), loadings[:, fitted.atoms_])
    assert np.all(fitted.atom_mode_[~fitted.alive_] == -1)
    assert set(fitted.atom_mode_[fitted.alive_]) <= set(range(fitted.n_modes_))
    for mode, atom in enumerate(fitted.atom_index_):
        assert atom == -1 or fitted.atom_mode_[atom] == mode


def test_atom_with_zero_weights_is_never_alive(data):
    """The root cause of empty modes: an atom that fires but has no weights is not a mode."""
    X = data[0]
    est = ContributionModes(compact=False, **QUICK).fit(X)
    empty = est.atoms_[0]
    with torch.no_grad():
        est._module.dictionary_raw[empty] = -1.0  # ReLU -> exactly zero weights
    assert (est._all_loadings(X)[:, empty] != 0).any(), "the atom still fires"
    est._set_modes_from_module(X)
    assert not est.alive_[empty] and empty not in est.atoms_ and empty not in est.atom_index_
    assert np.linalg.norm(est.components_, axis=1).min() > 0


def test_n_modes_sets_dictionary_size(data):
    est = ContributionModes(n_modes=12, hidden=16, **QUICK).fit(data[0])
    assert est.n_atoms_ == 12 and est.hidden_ == 16
    assert est.n_modes_ <= 12 and len(est.history_["val_r2"]) == est.n_iter_ == 4


def test_best_validation_weights_are_kept(data):
    est = ContributionModes(max_epochs=8, patience=2, random_state=0).fit(data[0])
    scores = est.history_["val_r2"]
    assert est.val_r2_ == pytest.approx(max(scores)) == pytest.approx(scores[est.best_epoch_])
    assert est.n_iter_ == len(scores) <= 8


def test_deterministic_under_random_state_without_touching_global_rng(data):
    X = data[0]
    before = torch.get_rng_state()
    first = ContributionModes(**QUICK).fit(X)
    assert torch.equal(before, torch.get_rng_state())
    second = ContributionModes(**QUICK).fit(X)
    np.testing.assert_array_equal(first.components_, second.components_)
    assert first.history_ == second.history_
    np.testing.assert_array_equal(first.transform(X), second.fit_transform(X))
    other = ContributionModes(max_epochs=4, random_state=1).fit(X)
    assert other.history_ != first.history_


def test_sklearn_get_params_set_params_clone(fitted):
    params = fitted.get_params()
    assert params["threshold"] == 0.9 and params["multiplier"] == 3 and params["nonneg"]
    copy = clone(fitted)
    assert copy.get_params() == params
    with pytest.raises(NotFittedError):
        copy.transform(np.ones((3, N_FEATURES)))
    assert copy.set_params(lr=0.01).lr == 0.01 and fitted.lr != 0.01


def test_paper_initialisation_can_leave_no_modes():
    """PyTorch's default read-out almost never reaches θ = 0.9: nothing is learned."""
    X = make_sparse_modes(300, 4, 2, random_state=0)[0]
    est = ContributionModes(init="random", init_active=None, lr=1e-5, max_epochs=2,
                            random_state=0)
    with pytest.warns(Warning, match="no atom passed the threshold"):
        est.fit(X)
    assert est.n_modes_ == 0 and est.components_.shape == (0, 4)
    np.testing.assert_array_equal(est.inverse_transform(est.transform(X)), 0.0)


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("cls", [NMFModes, PCAModes])
def test_baselines_share_the_interface(cls, data):
    X, true_modes, _ = data
    est = cls(N_TRUE, random_state=0).fit(X)
    assert est.components_.shape == (N_TRUE, N_FEATURES) and est.n_modes_ == N_TRUE
    assert est.alive_.all() and list(est.atom_index_) == list(range(N_TRUE))
    assert est.n_features_in_ == N_FEATURES and est.scale_ == pytest.approx(X.std())
    Z = est.transform(X)
    assert Z.shape == (len(X), N_TRUE)
    assert explained_r2(X, est.inverse_transform(Z)) == pytest.approx(est.r2_, abs=1e-3)
    assert est.r2_ > 0.95  # 4 components span this 4-mode data
    assert clone(est).get_params() == est.get_params()


def test_nmf_recovers_known_modes_in_energy_order(data):
    X, true_modes, _ = data
    est = NMFModes(N_TRUE, random_state=0)
    W = est.fit_transform(X)
    assert true_mode_recovery(true_modes, est.components_).min() > 0.99
    assert est.components_.min() >= 0 and W.min() >= 0
    energy = (W ** 2).sum(axis=0) * (est.components_ ** 2).sum(axis=1)
    assert np.all(np.diff(energy) <= 0)


def test_pca_components_orthonormal_in_variance_order(data):
    est = PCAModes(N_FEATURES).fit(data[0])
    np.testing.assert_allclose(est.components_ @ est.components_.T, np.eye(N_FEATURES),
                               atol=1e-10)
    assert np.all(np.diff(est.explained_variance_ratio_) <= 0)
    assert est.r2_ == pytest.approx(1.0)


# --------------------------------------------------------------------------- xarray
def test_layer_matrix_pos_and_both(data):
    C = as_contribution(data[0], 4)
    X_pos, channel, sign = layer_matrix(C, "pos")
    np.testing.assert_array_equal(X_pos, data[0][:, 4:])
    assert list(sign) == ["pos"] * 4 and list(channel) == [10, 11, 12, 13]
    X_both, channel, sign = layer_matrix(C.transpose("sign", "time", "channel"), "both")
    np.testing.assert_array_equal(X_both, data[0])  # [|C-|, C+]
    assert list(sign) == ["neg"] * 4 + ["pos"] * 4 and list(channel) == [10, 11, 12, 13] * 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sign", ["pos", "both"])
def test_fit_layer_shapes_coords_and_layout(data, sign):
    C = as_contribution(data[0], 4)
    est = NMFModes(3, random_state=0)
    ds = fit_layer(est, C, sign=sign)
    n_features = 4 if sign == "pos" else 8
    assert est.sign == sign and est.n_features_in_ == n_features
    assert ds["modes"].dims == ("mode", "channel", "sign")
    assert ds["modes"].shape == (3, 4, 2) and ds["loadings"].shape == (N_SAMPLES, 3)
    assert list(ds["mode"].values) == [0, 1, 2]
    np.testing.assert_array_equal(ds["atom"].values, est.atom_index_)
    np.testing.assert_array_equal(ds["channel"].values, C["channel"].values)
    np.testing.assert_array_equal(ds["time"].values, C["time"].values)
    assert list(ds["sign"].values) == ["neg", "pos"]
    np.testing.assert_array_equal(ds["modes"].sel(sign="pos").values, est.components_[:, -4:])
    neg = ds["modes"].sel(sign="neg").values
    if sign == "pos":
        assert not neg.any()
    else:
        np.testing.assert_array_equal(neg, -est.components_[:, :4])
    reconstruction = xr.dot(ds["loadings"], ds["modes"], dim="mode")
    fitted_part = C if sign == "both" else C.sel(sign=["pos"])
    assert explained_r2(fitted_part.values.reshape(N_SAMPLES, -1),
                        reconstruction.sel(sign=fitted_part["sign"]).values
                        .reshape(N_SAMPLES, -1)) == pytest.approx(float(ds["r2"]))
    attrs = ds.attrs
    assert attrs["estimator"] == "NMFModes" and attrs["layer"] == "conv1"
    assert attrs["n_alive"] == 3 and attrs["sign"] == sign and attrs["random_state"] == 0
    assert attrs["scale"] == pytest.approx(est.scale_) and attrs["l0"] == est.l0_
    assert '"n_modes": 3' in attrs["parameters"] and '"method": "ig"' in attrs["contribution_attrs"]


def test_fit_layer_default_sign_comes_from_estimator(data):
    ds = fit_layer(PCAModes(2, sign="both"), as_contribution(data[0], 4))
    assert ds.attrs["sign"] == "both" and ds.sizes["feature"] == 8


@pytest.mark.parametrize("make", [lambda: ContributionModes(**QUICK),
                                  lambda: NMFModes(3, random_state=0), lambda: PCAModes(3)])
def test_netcdf_round_trip_is_exact_and_rebuilds_estimator(tmp_path, data, make):
    C = as_contribution(data[0], 4)
    est = make()
    ds = fit_layer(est, C, sign="both")
    path = save_modes(ds, tmp_path / "modes.nc")
    loaded = load_modes(path)
    xr.testing.assert_identical(loaded, ds)
    rebuilt = type(est).from_dataset(loaded)
    assert rebuilt.get_params() == est.get_params()
    X_new = make_sparse_modes(50, 8, 3, random_state=5)[0]
    np.testing.assert_array_equal(rebuilt.components_, est.components_)
    np.testing.assert_allclose(rebuilt.transform(X_new), est.transform(X_new), atol=1e-12)
    assert rebuilt.r2_ == est.r2_ and rebuilt.l0_ == est.l0_


def test_sae_rebuilt_from_dataset_transforms_identically(tmp_path, data, fitted):
    C = as_contribution(data[0], 4)
    est = clone(fitted).set_params(max_epochs=3)
    ds = fit_layer(est, C, sign="both")
    rebuilt = estimator_from_dataset(load_modes(save_modes(ds, tmp_path / "m.nc")))
    X = layer_matrix(C, "both")[0]
    np.testing.assert_array_equal(rebuilt.transform(X), est.transform(X))
    np.testing.assert_array_equal(rebuilt.alive_, est.alive_)
    assert rebuilt.history_ == est.history_ and rebuilt.seed_ == est.seed_
    with pytest.raises(ConfigurationError, match="not a NMFModes"):
        NMFModes.from_dataset(ds)


def test_save_several_layers_as_groups(tmp_path, data):
    C = as_contribution(data[0], 4)
    layers = {"conv0": fit_layer(PCAModes(2), C), "conv1": fit_layer(NMFModes(2), C)}
    loaded = load_modes(save_modes(layers, tmp_path / "layers.nc"))
    assert sorted(loaded) == ["conv0", "conv1"]
    for name, ds in layers.items():
        xr.testing.assert_identical(loaded[name], ds)


# --------------------------------------------------------------------------- stability, helpers
def test_match_modes_finds_permutation():
    rng = np.random.default_rng(0)
    A = rng.random((5, 7))
    permutation = np.array([3, 0, 4, 1, 2])
    rows, cols, cosine = match_modes(A, 2.5 * A[permutation])
    np.testing.assert_array_equal(permutation[cols], rows)
    np.testing.assert_allclose(cosine, 1.0)
    rows, cols, cosine = match_modes(A[:2], A)  # rectangular: min(n_a, n_b) pairs
    assert list(cols) == [0, 1] and len(cosine) == 2


def test_mode_stability_report(data):
    report = mode_stability(NMFModes(N_TRUE, init="random"), data[0], seeds=(0, 1, 2))
    assert report.sizes == {"pair": 3, "seed": 3}
    assert list(report["seed_a"].values) == [0, 0, 1] and list(report["seed_b"].values) == [1, 2, 2]
    assert (report["n_matched"] == N_TRUE).all()
    assert report.attrs["min_cosine"] > 0.99  # these modes are identifiable
    assert report.attrs["stability"] > 0.99 and (report["stability"] > 0.99).all()
    pca = mode_stability(PCAModes(2), as_contribution(data[0], 4), seeds=(0, 1), n_top=1)
    assert pca["n_matched"].values.tolist() == [1]


def test_explained_r2_reference_points():
    X = np.random.default_rng(0).random((50, 3))
    assert explained_r2(X, X) == 1.0
    assert explained_r2(X, np.broadcast_to(X.mean(axis=0), X.shape)) == pytest.approx(0.0)


def test_make_sparse_modes_properties():
    X, modes, loadings = make_sparse_modes(500, 10, 3, random_state=0)
    assert X.shape == (500, 10) and modes.shape == (3, 10) and loadings.shape == (500, 3)
    assert X.min() >= 0 and modes.min() >= 0 and loadings.min() >= 0
    np.testing.assert_allclose(np.linalg.norm(modes, axis=1), 1.0)
    assert 0.15 < (loadings > 0).mean() < 0.35


@pytest.mark.parametrize("magnitude", ["exponential", "lognormal", "uniform"])
def test_make_sparse_modes_magnitudes_and_overlap(magnitude):
    X, modes, loadings = make_sparse_modes(4000, 12, 4, magnitude=magnitude, noise=0.0,
                                           random_state=1)
    active = loadings[loadings > 0]
    assert active.mean() == pytest.approx(1.0, abs=0.1) and np.unique(active).size > 100
    np.testing.assert_allclose(X, loadings @ modes)
    wide = make_sparse_modes(10, 12, 4, support_fraction=1.0, random_state=1)[1]
    assert mode_overlap(wide) > mode_overlap(make_sparse_modes(10, 12, 4, support_fraction=0.2,
                                                                random_state=1)[1])
    with pytest.raises(ConfigurationError, match="magnitude"):
        make_sparse_modes(10, magnitude="gamma")


def test_stability_score_penalises_a_changing_count():
    rng = np.random.default_rng(0)
    A = rng.random((4, 6))
    assert stability_score(A, 3 * A[::-1]) == pytest.approx(1.0)
    assert stability_score(A, A[:2]) == pytest.approx(0.5)  # not 1: two modes are missing
    assert stability_score(A[:2], A) == pytest.approx(0.5)
    assert stability_score(A, A[:0]) == 0.0


def test_fit_layer_reports_energy_count_rule_and_stability(data):
    C = as_contribution(data[0], 4)
    ds = fit_layer(ContributionModes(max_epochs=10, random_state=0), C, sign="both",
                   stability_seeds=(0, 1))
    assert ds["energy"].dims == ("mode",) and np.all(np.diff(ds["energy"].values) <= 0)
    assert 0 < float(ds["energy"].sum()) <= 1.0 + 1e-9
    assert ds.attrs["n_modes"] == ds.sizes["mode"] <= 2 * N_TRUE
    assert ds.attrs["n_alive"] > ds.attrs["n_modes"]
    assert "held-out R²" in ds.attrs["count_rule"] and ds.attrs["atom_r2"] <= 1
    assert 0.5 < ds.attrs["stability"] <= 1 and ds.attrs["stability_seeds"] == "[0, 1]"
    assert np.linalg.norm(ds["modes"].values.reshape(ds.sizes["mode"], -1), axis=1).min() > 0


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [ContributionModes, NMFModes, PCAModes])
def test_input_errors(cls):
    X = np.random.default_rng(0).random((40, 4))
    est = cls(**({"n_modes": 2}))
    with pytest.raises(NonFiniteError, match="NaN"):
        est.fit(np.where(X > 0.9, np.nan, X))
    with pytest.raises(ShapeError, match="Reshape your data"):
        est.fit(X[:, 0])
    with pytest.raises(NotFittedError):
        est.transform(X)
    with pytest.raises(ConfigurationError, match="positive integer"):
        clone(est).set_params(n_modes=0).fit(X)
    with pytest.raises(ConfigurationError, match="sign"):
        clone(est).set_params(sign="neg").fit(X)


@pytest.mark.parametrize("make", [lambda: ContributionModes(**QUICK), lambda: NMFModes(2)])
def test_negative_input_needs_signed_modes(make):
    X = np.random.default_rng(0).random((40, 4)) - 0.5
    with pytest.raises(ConfigurationError, match="Negative values"):
        make().fit(X)


def test_transform_checks_feature_count(data, fitted):
    with pytest.raises(ShapeError, match="expecting 8 features"):
        fitted.transform(data[0][:, :5])
    with pytest.raises(ConfigurationError, match="Negative values"):
        fitted.transform(-data[0])


def test_contribution_errors(data):
    C = as_contribution(data[0], 4)
    with pytest.raises(ShapeError, match="needs sign coordinates"):
        fit_layer(NMFModes(2), C.sel(sign=["pos"]), sign="both")
    with pytest.raises(ConfigurationError, match="C\\+ = max"):
        layer_matrix(-C, "pos")
    with pytest.raises(ConfigurationError, match="C- = min"):
        layer_matrix(abs(C), "both")
    with pytest.raises(ShapeError, match="dims"):
        layer_matrix(C.rename(channel="unit"), "pos")
    with pytest.raises(ShapeError, match="fit_layer"):
        NMFModes(2).fit(C)
    with pytest.raises(MissingDataError):
        load_modes("/nonexistent/modes.nc")


def test_parameter_errors(data):
    X = data[0][:100]
    for bad in [dict(threshold=1.0), dict(init="nmf"), dict(init_active=0.7),
                dict(validation_fraction=1.0), dict(lr=0), dict(batch_size=0), dict(scale="max")]:
        with pytest.raises(ConfigurationError):
            ContributionModes(**bad).fit(X)
    with pytest.raises(ConfigurationError, match="at least two"):
        mode_stability(PCAModes(2), X, seeds=(0,))
    with pytest.raises(ConfigurationError, match="exceeds"):
        PCAModes(20).fit(X)


# --------------------------------------------------------------------------- planted combinatorial problem
@pytest.fixture(scope="module")
def combinatorial():
    """6 channels (E and I), 6 multi-channel modes with overlapping supports, 1-3 active per sample."""
    X, modes, loadings = make_combinatorial_modes(2000, n_channels=6, n_modes=6, random_state=3)
    fits = [ContributionModes(max_epochs=50, random_state=seed).fit(X[:1500]) for seed in (0, 1)]
    return X, modes, loadings, fits


def test_planted_combinations_are_recovered_sparse_and_stable(combinatorial):
    X, modes, loadings, fits = combinatorial
    truth_l0 = (loadings[1500:] > 0).sum(axis=1).mean()
    assert 1.8 < truth_l0 < 2.2 and (modes[:, :6] > 0).any(axis=1).all()   # every mode has an I part
    for est in fits:
        assert true_mode_recovery(modes, est.components_).min() >= 0.95
        Z = est.transform(X[1500:])
        assert abs((Z > 0).sum(axis=1).mean() - truth_l0) <= 0.3
        assert explained_r2(X[1500:], Z @ est.components_) >= 0.95
    assert stability_score(fits[0].components_, fits[1].components_) >= 0.95


def test_planted_modes_through_fit_layer_keep_e_and_i_parts(combinatorial):
    X, _, _, fits = combinatorial
    ds = fit_layer(clone(fits[0]).set_params(max_epochs=30), as_contribution(X[:1000], 6), sign="both")
    assert (ds["modes"].sel(sign="neg") < 0).any() and (ds["modes"].sel(sign="pos") > 0).any()
    assert ds.attrs["sign"] == "both" and 0 <= ds.attrs["fraction_none"] < 0.05
    assert ds.attrs["l0"] == pytest.approx(float((ds["loadings"] > 0).sum("mode").mean()))
    assert "frontier_r2" in ds and int(ds["frontier_chosen"].sum()) == 1
