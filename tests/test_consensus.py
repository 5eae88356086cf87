"""Consensus clustering: planted types, an ambiguous cell, block bootstrap."""
import numpy as np
import pytest

from retcodec.analysis.consensus import (ambiguous_fraction, block_bootstrap, cell_confidence,
                                         choose_k_consensus, consensus_evidence, consensus_labels)
from retcodec.errors import ConfigurationError


def planted(n_types=4, per_type=5, n_time=200, noise=1.0, spread=4.0, seed=0, bridge=False):
    """Per-window features (time, cell, feature): type centres + per-window noise; make(idx) = mean."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(n_types, 6))
    truth = np.repeat(np.arange(n_types), per_type)
    means = centres[truth]
    if bridge:                                     # one extra cell: like type 0 in some stretches, type 1 in others
        means = np.vstack([means, centres[0]])
        truth = np.append(truth, -1)
    per_window = means[None] + rng.normal(scale=noise, size=(n_time,) + means.shape)
    if bridge:
        stretch = (np.arange(n_time) // 25) % 2 == 1
        per_window[stretch, -1] += centres[1] - centres[0]
    return (lambda idx: per_window[idx].mean(axis=0)), n_time, truth


def test_block_bootstrap_keeps_neighbours_and_length():
    idx = block_bootstrap(95, np.random.default_rng(0), block=20)
    assert idx.shape == (95,) and idx.min() >= 0 and idx.max() < 95
    steps = np.diff(idx[:20])
    assert np.all((steps == 1) | (steps == -94))          # one circular block of neighbours
    with pytest.raises(ConfigurationError):
        block_bootstrap(0, np.random.default_rng(0))


def test_planted_types_are_found_with_full_confidence():
    make, n_time, truth = planted()
    ds = consensus_evidence(make, n_time, np.arange(truth.size), range(2, 7), n_resamples=20)
    assert int(ds["chosen_k"]) == 4
    assert float(ds["pac"].sel(k=4)) == 0.0
    assert float(ds["pac"].sel(k=6)) > 0.1                  # splitting a type is not reproducible
    labels = ds["consensus_cluster"].sel(k=4).values
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, labels) == 1.0
    assert np.allclose(ds["confidence"].values, 1.0)
    c4 = ds["consensus"].sel(k=4).values
    assert np.allclose(c4, c4.T) and np.allclose(np.diag(c4), 1.0)


def test_a_cell_between_two_types_has_low_confidence_and_names_both():
    make, n_time, truth = planted(bridge=True, seed=1)
    ds = consensus_evidence(make, n_time, np.arange(truth.size), range(2, 7), n_resamples=40)
    c4 = ds["consensus"].sel(k=4).values
    labels = ds["consensus_cluster"].sel(k=4).values
    conf, alt, _ = cell_confidence(c4, labels)
    i = truth.size - 1                                      # in type 0's stretches and type 1's
    assert conf[i] < 0.75 < conf[:-1].min()
    assert {labels[i], alt[i]} == {labels[0], labels[5]}
    assert int(ds["chosen_k"]) == 4                         # never a type of one cell


def test_choose_k_consensus_and_pac():
    assert choose_k_consensus([2, 3, 4, 5], np.array([0.0, 0.05, 0.3, 0.02]), 0.1) == 5
    assert choose_k_consensus([2, 3, 4], np.array([0.4, 0.2, 0.3]), 0.1) == 3   # none: the least ambiguous
    c = np.array([[[1, 0.5, 1.0], [0.5, 1, 0.0], [1.0, 0.0, 1]]])
    assert ambiguous_fraction(c)[0] == pytest.approx(1 / 3)
    assert consensus_labels(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1.0]]), 2).tolist() == [0, 0, 1]


def test_cell_confidence_by_hand():
    c = np.array([[1, .9, .1, .0], [.9, 1, .3, .1], [.1, .3, 1, .8], [.0, .1, .8, 1.]])
    conf, alt, alt_value = cell_confidence(c, np.array([0, 0, 1, 1]))
    assert np.allclose(conf, [.9, .9, .8, .8])
    assert alt.tolist() == [1, 1, 0, 0]
    assert np.allclose(alt_value, [.05, .2, .2, .05])


def test_consensus_rule_needs_types_of_two_cells():
    pac = np.array([0.3, 0.05, 0.0, 0.0])
    assert choose_k_consensus([2, 3, 4, 5], pac, 0.1, smallest_type=[5, 3, 1, 1]) == 3
    assert choose_k_consensus([2, 3], np.array([0.5, 0.3]), 0.1, smallest_type=[1, 2]) == 3


def test_separating_features_names_the_planted_difference():
    import xarray as xr
    from retcodec.analysis.consensus import ari_interval, separating_features
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.1, size=(8, 4))
    x[4:, 2] += 2.0                                     # types differ only in feature "c"
    f = xr.DataArray(x, dims=("cell", "feature"), coords={"feature": list("abcd")})
    ds = separating_features(f, np.array([0] * 4 + [1] * 4), top=2)
    assert ds["separating_feature"].sel(type_a=0, type_b=1, rank=0).item() == "c"
    assert float(ds["separation"].sel(type_a=0, type_b=1, rank=0)) < -5
    assert float(ds["separation"].sel(type_a=1, type_b=0, rank=0)) > 5
    truth = np.repeat([0, 1, 2], 5)
    lo, hi = ari_interval(truth, truth, n_boot=50)
    assert lo == hi == 1.0
    lo, hi = ari_interval(truth, np.roll(truth, 2), n_boot=200)
    assert lo < hi < 1.0


def test_adjusted_rand_matches_sklearn():
    from sklearn.metrics import adjusted_rand_score
    from retcodec.analysis.consensus import adjusted_rand
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.integers(0, 4, 15), rng.integers(0, 3, 15)
        assert adjusted_rand(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand([0, 0, 1], ["x", "x", "y"]) == 1.0
    assert adjusted_rand([0, 0, 0], [1, 1, 1]) == 1.0


def test_ks_a_resample_cannot_try_are_left_out():
    make, n_time, truth = planted(n_types=3, per_type=3)          # 9 cells: at most 4 types of 2 cells
    ds = consensus_evidence(make, n_time, np.arange(truth.size), range(2, 9), n_resamples=10)
    assert ds["k"].values.max() <= 4 and np.isfinite(ds["pac"].values).all()
    assert int(ds["chosen_k"]) == 3
