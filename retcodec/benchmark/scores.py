"""Scores of one analysed retina against its truth: a ``(method, metric)`` table.

Every method ``retcodec run`` offers is scored the same way, from the files of the
run's results folder and the recording's truth group:

* **cell types** (``cell_types.nc``): every clustering (the primary, each layer's
  drive profiles, drive over modes, surprisal and activation modes, rates) --
  ``ari`` (adjusted Rand index with the true types) and ``k_error`` (chosen k minus
  the true number of types); two reference rows, ``truth_labels`` (the true types:
  ARI 1 by construction) and ``shuffled_labels`` (the mean over 200 permutations of
  them: ARI about 0),
  check the scoring itself;
* **silencing** (``experiments.nc``): the interneuron predictions (the primary
  prediction, and each interneuron-to-model mapping apart: ``direction_mapping``,
  ``single_channel``, ``ensemble``) and the correlational baseline -- ``spearman`` over (interneuron, cell)
  pairs with a known true effect and ``sign_accuracy`` on pairs with true ``|effect| >= 0.2``; with an
  ensemble also ``ensemble_stated`` (the pairs it states) and ``baseline_on_stated`` (the baseline on them);
* **interneuron matching** (``interneurons.nc``): ``type_match_rate``,
  ``heldout_r`` (median) and ``chance_p95`` (median);
* **modes** (``modes.nc``): ``stability``, ``r2``, ``n_modes``, ``l0`` per layer;
* **model fit** (``statistics.nc``): median ``test_r`` and ``feve``, and per true
  type (``fit_by_type``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import xarray as xr
from sklearn.metrics import adjusted_rand_score

from retcodec.analysis.experiments import SIGN_THRESHOLD, effect_scores as score_effects
from retcodec.errors import MissingDataError

__all__ = ["METRICS", "score_retina", "score_clusterings", "score_effects", "cell_type_methods",
           "SHUFFLE_SEED", "SIGN_THRESHOLD"]

#: every metric of the benchmark, with what it measures
METRICS: dict[str, str] = {
    "ari": "adjusted Rand index of the clustering with the true cell types",
    "k_error": "number of clusters chosen minus the true number of types",
    "spearman": "Spearman r of predicted vs true silencing effects over (interneuron, cell) pairs",
    "sign_accuracy": "share of pairs with true |effect| >= 0.2 whose sign is predicted",
    "type_match_rate": "share of recorded interneurons whose best model unit has their true type",
    "heldout_r": "median held-out correlation of a recorded interneuron with its best model unit",
    "chance_p95": "median 95th percentile of the circular-shift null of that correlation",
    "stability": "matched-mode similarity over fitting seeds",
    "r2": "held-out R^2 of the modes' reconstruction",
    "n_modes": "number of modes",
    "l0": "mean number of active modes per time bin",
    "test_r": "median correlation of model and recorded trial-averaged rate on the test split",
    "feve": "median fraction of explainable variance explained on the test split",
}
#: benchmark row of each interneuron-to-model mapping of ``experiments.nc`` (``silencing/<row>``)
MAPPING_ROWS = {"direction": "direction_mapping", "channel": "single_channel", "ensemble": "ensemble"}
#: seed and number of the shuffled reference clusterings (their mean ARI is reported)
SHUFFLE_SEED = 12345
N_SHUFFLES = 200


def cell_type_methods(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """Every clustering in a ``cell_types.nc`` tree, by method name (``primary`` at the root)."""
    out: dict[str, xr.Dataset] = {}
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        if "cluster" not in ds:
            continue
        name = "primary" if node.path == "/" else node.path.strip("/").replace("controls/", "").replace("/", "_")
        out[name] = ds
    return out


def score_clusterings(clusterings: Mapping[str, Iterable[int]], true_types: Iterable[str],
                      chosen_k: Mapping[str, int] | None = None) -> dict[str, dict[str, float]]:
    """``{method: {"ari": .., "k_error": ..}}`` for each clustering, plus the reference rows
    ``truth_labels`` and ``shuffled_labels``."""
    true = np.asarray(list(true_types)).astype(str)
    n_true = len(np.unique(true))
    rows: dict[str, dict[str, float]] = {}
    labelled = dict(clusterings)
    labelled.update(truth_labels=true)
    for name, labels in labelled.items():
        labels = np.asarray(list(labels))
        if labels.shape != true.shape:
            raise MissingDataError(f"clustering {name!r} labels {labels.size} cells, the truth {true.size}")
        k = (chosen_k or {}).get(name, len(np.unique(labels)))
        rows[name] = {"ari": float(adjusted_rand_score(true, labels)), "k_error": float(k - n_true)}
    rng = np.random.default_rng(SHUFFLE_SEED)
    shuffled = [adjusted_rand_score(true, rng.permutation(true)) for _ in range(N_SHUFFLES)]
    rows["shuffled_labels"] = {"ari": float(np.mean(shuffled)), "k_error": 0.0}
    return rows


def _cell_type_rows(results: Path, true_types: np.ndarray) -> dict[str, dict[str, float]]:
    tree = xr.open_datatree(results / "cell_types.nc", engine="h5netcdf")
    methods = cell_type_methods(tree)
    labels = {name: ds["cluster"].values for name, ds in methods.items()}
    chosen = {name: int(ds["chosen_k"]) for name, ds in methods.items() if "chosen_k" in ds}
    return {f"celltypes/{name}": row for name, row in score_clusterings(labels, true_types, chosen).items()}


def _experiment_rows(results: Path) -> dict[str, dict[str, float]]:
    ds = xr.open_dataset(results / "experiments.nc", engine="h5netcdf")
    if "true_effect" not in ds:
        return {}
    true = ds["true_effect"].values
    rows = {"silencing/interneuron_prediction": score_effects(ds["predicted_effect"].values, true),
            "silencing/correlational_baseline": score_effects(ds["baseline_prediction"].values, true),
            "silencing/truth": score_effects(true, true)}
    if "mapping_effect" in ds:              # each interneuron-to-model mapping (direction; channel: the control)
        effects = ds["mapping_effect"].transpose("mapping", "interneuron", "cell").values
        for name, effect in zip(ds["mapping"].values.astype(str), effects):
            rows[f"silencing/{MAPPING_ROWS.get(name, name)}"] = score_effects(effect, true)
    if "stated" in ds:                      # an ensemble: the pairs it states, and the baseline on the same pairs
        stated = np.asarray(ds["stated"].values, bool)
        for row, name in (("ensemble_stated", "predicted_effect"), ("baseline_on_stated", "baseline_prediction")):
            rows[f"silencing/{row}"] = score_effects(np.where(stated, ds[name].values, np.nan), true)
    return rows


def _interneuron_rows(results: Path) -> dict[str, dict[str, float]]:
    ds = xr.open_dataset(results / "interneurons.nc", engine="h5netcdf")
    row = {"heldout_r": float(np.nanmedian(ds["heldout_correlation"].values)),
           "chance_p95": float(np.nanmedian(ds["chance_p95"].values))}
    if "type_match_rate" in ds.attrs:          # over interneurons of known type
        row["type_match_rate"] = float(ds.attrs["type_match_rate"])
    return {"interneurons/best_unit": row}


def _mode_rows(results: Path) -> dict[str, dict[str, float]]:
    tree = xr.open_datatree(results / "modes.nc", engine="h5netcdf")
    rows = {}
    for node in tree.children.values():
        attrs = node.to_dataset(inherit=False).attrs
        if "stability" not in attrs:
            continue
        rows[f"modes/{node.name}"] = {"stability": float(attrs["stability"]), "r2": float(attrs.get("r2", np.nan)),
                                      "n_modes": float(attrs.get("n_modes", np.nan)),
                                      "l0": float(attrs.get("l0", np.nan))}
    return rows


def _fit_rows(results: Path, true_types: np.ndarray) -> tuple[dict[str, dict[str, float]], xr.Dataset]:
    ds = xr.open_dataset(results / "statistics.nc", engine="h5netcdf")
    r, feve = ds["fit_correlation"].values, ds["fit_feve"].values
    row = {"test_r": float(np.nanmedian(r)), "feve": float(np.nanmedian(feve))}
    per_cell = xr.Dataset({"test_r": ("cell", r), "feve": ("cell", feve)},
                          coords={"cell": np.arange(r.size), "cell_type": ("cell", true_types)})
    return {"model/fit": row}, per_cell


def score_retina(results: str | Path, recording: str | Path) -> xr.Dataset:
    """Score the results folder of one ``retcodec run`` against the truth of its recording.

    Returns a Dataset with ``score (method, metric)`` (NaN where a metric does not apply
    to a method) and the per-cell fit ``test_r``/``feve (cell)`` with the true ``cell_type``.
    """
    from retcodec.io.truth import read_truth

    results = Path(results)
    truth = read_truth(recording)
    if truth is None or "cell_type" not in truth:
        raise MissingDataError(f"{recording} holds no truth group with cell types; the benchmark needs "
                               f"in-silico retinas (retcodec.insilico)")
    true_types = truth["cell_type"].values.astype(str)
    missing = [f for f in ("cell_types.nc", "experiments.nc", "interneurons.nc", "modes.nc", "statistics.nc")
               if not (results / f).is_file()]
    if missing:
        raise MissingDataError(f"{results} lacks {', '.join(missing)}: run `retcodec run` there first")
    rows: dict[str, dict[str, float]] = {}
    rows.update(_cell_type_rows(results, true_types))
    rows.update(_experiment_rows(results))
    rows.update(_interneuron_rows(results))
    rows.update(_mode_rows(results))
    fit_rows, per_cell = _fit_rows(results, true_types)
    rows.update(fit_rows)
    methods = list(rows)
    metrics = list(METRICS)
    table = np.full((len(methods), len(metrics)), np.nan)
    for i, m in enumerate(methods):
        for j, k in enumerate(metrics):
            table[i, j] = rows[m].get(k, np.nan)
    out = per_cell.assign(score=(("method", "metric"), table))
    out = out.assign_coords(method=methods, metric=metrics,
                            metric_description=("metric", [METRICS[k] for k in metrics]))
    out.attrs.update(n_cells=int(true_types.size), n_types=int(np.unique(true_types).size),
                     results=str(results), recording=str(recording))
    return out
