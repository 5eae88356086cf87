"""The benchmark of ground-truth retinas: family draws, splits, scoring, summaries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from retcodec.benchmark.scores import METRICS, score_clusterings, score_effects
from retcodec.benchmark.splits import SPLITS, retina_seeds, split_of
from retcodec.benchmark.summary import (TARGETS, bootstrap_median_interval, evaluate_targets,
                                        summary_statistics)
from retcodec.errors import ConfigurationError
from retcodec.insilico.circuit import CircuitConfig, InSilicoCircuit
from retcodec.insilico.family import FamilyConfig, FamilyRanges, circuit_from_json, draw_retina


# --------------------------------------------------------------------------- family
def test_family_draw_is_deterministic_and_within_its_ranges():
    r = FamilyRanges()
    for seed in range(1000, 1012):
        a, b = draw_retina(seed), draw_retina(seed)
        assert a.config.to_json() == b.config.to_json() and a.plan == b.plan
        p = a.parameters
        assert r.n_types[0] <= p["n_types"] <= r.n_types[1]
        counts = [a.config.count_of(t) for t in a.config.ganglion_types]
        assert all(r.cells_per_type[0] <= c <= r.cells_per_type[1] for c in counts)
        assert p["n_cells"] == sum(counts)
        assert r.mean_rate[0] <= p["mean_rate"] <= r.mean_rate[1]
        assert r.n_repeats[0] <= p["n_repeats"] <= r.n_repeats[1]
        pairs = [(d["excitation"], d["inhibition"]) for d in a.config.type_draws.values()]
        assert len(set(pairs)) == len(pairs)            # no two types share excitation and inhibition


def test_family_differs_between_seeds_and_holds_the_hard_cases():
    draws = [draw_retina(s) for s in range(1000, 1040)]
    assert len({d.config.to_json() for d in draws}) == 40
    assert len({d.parameters["n_types"] for d in draws}) >= 4
    assert any(d.parameters["n_sibling_types"] > 0 for d in draws)        # types differing only by inhibition
    assert any(d.parameters["n_object_motion_types"] > 0 for d in draws)
    assert any("on_off" in t for d in draws for t in d.config.ganglion_types)


def test_family_circuit_round_trips_through_its_json_and_builds_per_type_counts():
    draw = draw_retina(2000)
    text = draw.config.to_json()
    assert json.loads(text)["version"] == 3
    again = FamilyConfig.from_json(text)
    assert again == draw.config
    circuit = circuit_from_json(text)
    assert isinstance(circuit.config, FamilyConfig)
    types, counts = np.unique(circuit.cell_types, return_counts=True)
    assert dict(zip(types, counts)) == {t: draw.config.count_of(t) for t in draw.config.ganglion_types}
    # each cell's pooling radius scatters around its own type's value
    for t in draw.config.ganglion_types:
        sig = circuit.rf_sigma[circuit.cell_types == t]
        assert np.all(np.abs(np.log(sig / draw.config.rf_sigma_of(t))) < 5 * draw.config.jitter)


def test_v2_circuit_json_is_unchanged_by_the_family():
    text = CircuitConfig().to_json()
    assert json.loads(text)["version"] == 2
    assert "type_draws" not in text and "ganglion_rf_sigma_by_type" not in text
    circuit = InSilicoCircuit(0, calibrate=False)
    assert circuit.n_cells == 24


def test_family_rejects_a_probability_above_one():
    from retcodec.insilico.family import replace_ranges
    with pytest.raises(ConfigurationError, match="p_sibling"):
        draw_retina(1000, replace_ranges(p_sibling=1.5))


def test_family_rejects_bad_seeds():
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ConfigurationError):
            draw_retina(bad)


# --------------------------------------------------------------------------- splits
def test_splits_are_disjoint_and_fixed():
    assert set(SPLITS["tuning"]).isdisjoint(SPLITS["test"])
    assert retina_seeds("test", 3) == [2000, 2001, 2002]
    assert retina_seeds("tuning", 2) == [1000, 1001]
    assert split_of(2005) == "test" and split_of(1005) == "tuning" and split_of(7) == "none"
    with pytest.raises(ConfigurationError, match="unknown split"):
        retina_seeds("train", 2)
    with pytest.raises(ConfigurationError, match="number of retinas"):
        retina_seeds("test", 0)


# --------------------------------------------------------------------------- scoring
def test_truth_labels_score_one_and_shuffled_labels_about_zero():
    true = np.repeat([f"type{i}" for i in range(6)], 5)
    rows = score_clusterings({"perfect": np.repeat(np.arange(6), 5), "merged": np.repeat([0, 0, 1, 2, 3, 4], 5)},
                             true, chosen_k={"perfect": 6, "merged": 5})
    assert rows["truth_labels"]["ari"] == pytest.approx(1.0)
    assert rows["perfect"]["ari"] == pytest.approx(1.0) and rows["perfect"]["k_error"] == 0
    assert rows["merged"]["k_error"] == -1 and 0.5 < rows["merged"]["ari"] < 1
    assert abs(rows["shuffled_labels"]["ari"]) < 0.15


def test_shuffled_labels_average_zero_ari():
    from sklearn.metrics import adjusted_rand_score
    true = np.repeat(np.arange(5), 4)
    rng = np.random.default_rng(0)
    aris = [adjusted_rand_score(true, rng.permutation(true)) for _ in range(300)]
    assert abs(np.mean(aris)) < 0.02


def test_effect_scores_have_known_answers():
    true = np.array([[0.5, -0.9, 0.0], [0.3, np.nan, -0.4]])
    assert score_effects(true, true) == {"spearman": pytest.approx(1.0), "sign_accuracy": pytest.approx(1.0)}
    flipped = score_effects(-true, true)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["sign_accuracy"] == 0.0
    # NaN predictions are left out, not counted as wrong
    pred = true.copy()
    pred[0, 0] = np.nan
    assert score_effects(pred, true)["sign_accuracy"] == 1.0


def test_mismatched_clustering_is_refused():
    from retcodec.errors import MissingDataError
    with pytest.raises(MissingDataError, match="labels 3 cells"):
        score_clusterings({"x": [0, 1, 1]}, ["a", "b"])


# --------------------------------------------------------------------------- summaries
def _cube(values: dict[str, list[float]], metric: str = "ari") -> xr.DataArray:
    methods = list(values)
    n = len(next(iter(values.values())))
    data = np.full((n, len(methods), len(METRICS)), np.nan)
    for j, m in enumerate(methods):
        data[:, j, list(METRICS).index(metric)] = values[m]
    return xr.DataArray(data, dims=("retina", "method", "metric"),
                        coords={"retina": [f"r{i}" for i in range(n)], "method": methods, "metric": list(METRICS)})


def test_bootstrap_interval_holds_the_median_and_shrinks_with_more_retinas():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.7, 0.1, 8), rng.normal(0.7, 0.1, 200)
    for v in (small, large):
        lo, hi = bootstrap_median_interval(v)
        assert lo <= np.median(v) <= hi
    assert np.diff(bootstrap_median_interval(large)) < np.diff(bootstrap_median_interval(small))
    assert bootstrap_median_interval(small) == bootstrap_median_interval(small)       # seeded
    assert np.isnan(bootstrap_median_interval(np.array([np.nan]))[0])


def test_summary_statistics_and_targets():
    score = _cube({"celltypes/primary": [0.9, 0.95, 1.0, 0.55], "celltypes/rates": [0.5, 0.6, 0.7, 0.8]})
    s = summary_statistics(score)
    prim = s.sel({"method": "celltypes/primary", "metric": "ari"})
    assert float(prim.sel(statistic="median")) == pytest.approx(0.925)
    assert float(prim.sel(statistic="min")) == pytest.approx(0.55)
    assert int(prim.sel(statistic="n")) == 4
    assert int(s.sel({"method": "celltypes/primary", "metric": "spearman", "statistic": "n"})) == 0
    t = evaluate_targets(score).set_index(target="target")
    assert int(t["target_met"].sel(target="celltypes_median_ari")) == 1
    assert int(t["target_met"].sel(target="celltypes_worst_ari")) == 0          # one retina at 0.55
    assert float(t["target_value"].sel(target="celltypes_primary_vs_controls")) == pytest.approx(0.925 - 0.65)
    assert len(TARGETS) == t.sizes["target"]
