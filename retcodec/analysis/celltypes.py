"""Cell types from modes (``docs/method.md`` §6).

For each layer, every cell is described by how its rate follows each mode:
``M[k, j] = corr(z_j, y_k)``, the Pearson correlation over windows of mode
``j``'s loadings and cell ``k``'s rate (NaN, from a constant series, → 0).
The columns of ``M`` are standardised across cells, and the cells are clustered
with k-means (``k`` chosen by the silhouette score over ``k_range``) and with
Ward's hierarchical linkage. Clusterings of different layers are compared by
the adjusted Rand index (the paper's finding: layer-1 and layer-2 modes give
nearly the same cell types), and with the true types when they are known.

Controls: :func:`cluster_rates` clusters the cells by their raw rates (rows of
the cell-by-cell rate correlation matrix); activation modes go through
:func:`cell_types` like contribution modes.

Cluster labels are canonical: numbered ``0, 1, …`` in order of first
appearance along the cell axis, so equal partitions get equal labels.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from retcodec.defaults import DEVICE, RANDOM_STATE
from retcodec.errors import ConfigurationError, ShapeError
from retcodec.io.provenance import provenance_attrs
from retcodec.analysis.statistics import align_time, pearson
from retcodec.analysis.kmeans import kmeans
from retcodec.analysis.consensus import (N_CONSENSUS_RESAMPLES, N_CONTROL_RESAMPLES, PAC_THRESHOLD, Resampler, cell_confidence,
                                         consensus_evidence, correlation_resampler)
from retcodec.analysis.labels import canonical_labels, standardize_columns

__all__ = ["cell_types", "cluster_rates", "cluster_cells", "mode_rate_correlation",
           "clustering_agreement", "canonical_labels", "standardize_columns", "kmeans_labels",
           "gap_statistic", "subsample_stability", "choose_k", "K_RULES", "cell_types_primary",
           "typing_windows", "PRIMARY_K_RULE", "DEFAULT_TYPING_WINDOWS"]

DEFAULT_K_RANGE = range(2, 9)
LINKAGE_COLUMNS = ["cluster_a", "cluster_b", "distance", "size"]


# =========================================================================== helpers
def mode_rate_correlation(loadings: xr.DataArray, rates: xr.DataArray) -> xr.DataArray:
    """``M (cell, mode)``: Pearson correlation over windows of each mode's loadings and each cell's rate.

    Times are matched (``rates`` must hold every time of ``loadings``); a
    correlation with a constant series is set to 0.
    """
    loadings, rates = _check_pair(loadings, rates)
    z = loadings.values.astype(np.float64)                   # (time, mode)
    y = rates.values.astype(np.float64)                      # (time, cell)
    m = pearson(y[:, :, None], z[:, None, :], axis=0)        # (cell, mode)
    return xr.DataArray(np.nan_to_num(m, nan=0.0), dims=("cell", "mode"),
                        coords={"cell": rates["cell"].values, "mode": loadings["mode"].values},
                        name="correlation",
                        attrs={"long_name": "corr over windows of mode loadings and cell rates (NaN -> 0)"})


def _check_pair(loadings: Any, rates: Any) -> tuple[xr.DataArray, xr.DataArray]:
    from retcodec.analysis.combinations import check_loadings

    loadings = check_loadings(loadings)
    if not isinstance(rates, xr.DataArray) or set(rates.dims) != {"time", "cell"}:
        raise ShapeError(f"rates must be a DataArray (time, cell), got "
                         f"{getattr(rates, 'dims', type(rates).__name__)}")
    rates = rates.transpose("time", "cell")
    if "cell" not in rates.coords:
        rates = rates.assign_coords(cell=np.arange(rates.sizes["cell"]))
    loadings, rates = align_time(loadings, rates, names=("loadings", "rates"))
    if loadings.sizes["time"] < 3:
        raise ShapeError(f"need at least 3 common windows to correlate, got {loadings.sizes['time']}")
    return loadings, rates


def _valid_ks(k_range: Iterable[int], n_cells: int) -> list[int]:
    ks = sorted({int(k) for k in k_range})
    valid = [k for k in ks if 2 <= k <= n_cells - 1]
    if not valid:
        raise ConfigurationError(f"k_range {ks} has no k with 2 <= k <= n_cells - 1 = {n_cells - 1}; "
                                 f"silhouette scores need at least 2 clusters and one cell more "
                                 f"than clusters")
    return valid


def clustering_agreement(labels: Mapping[str, Sequence[Any]]) -> xr.DataArray:
    """Adjusted Rand index between every pair of clusterings of the same cells.

    Returns ``DataArray (clustering, clustering2)``, symmetric with ones on the diagonal.
    """
    from sklearn.metrics import adjusted_rand_score

    names = list(labels)
    arrays = [np.asarray(labels[n]) for n in names]
    if len({a.size for a in arrays}) > 1:
        raise ShapeError(f"clusterings label different numbers of cells: "
                         f"{ {n: a.size for n, a in zip(names, arrays)} }")
    ari = np.array([[adjusted_rand_score(a, b) for b in arrays] for a in arrays], dtype=np.float64)
    return xr.DataArray(ari.reshape(len(names), len(names)), dims=("clustering", "clustering2"),
                        coords={"clustering": names, "clustering2": names}, name="agreement",
                        attrs={"long_name": "adjusted Rand index between clusterings"})


# =========================================================================== choosing k
K_RULES = ("silhouette", "gap", "stability", "silhouette_gap", "consensus", "combined")
DEFAULT_N_RESAMPLES = 20
#: ``rule="stability"``: the largest k whose mean resampling ARI reaches this
DEFAULT_STABILITY_THRESHOLD = 0.8
#: fraction of cells kept in each subsample of ``rule="stability"``
SUBSAMPLE_FRACTION = 0.8
#: fraction of the variance kept (principal axes) for the gap statistic
GAP_VARIANCE = 0.9


def kmeans_labels(x: np.ndarray, k: int, random_state: int = 0, n_init: int = 10) -> tuple[np.ndarray, float]:
    """k-means labels and inertia of the rows of ``x`` (best of ``n_init`` starts; :func:`kmeans`)."""
    return kmeans(x, k, random_state, n_init)


def gap_statistic(x: np.ndarray, ks: Sequence[int], random_state: int = 0, n_init: int = 10,
                  n_references: int = DEFAULT_N_RESAMPLES,
                  variance: float = GAP_VARIANCE) -> tuple[np.ndarray, np.ndarray]:
    """Gap statistic ``Gap(k) = E*[log W*_k] − log W_k`` and its standard error ``s_k``, per ``k``.

    ``W_k``: the k-means within-cluster sum of squares; ``W*_k``: the same for
    ``n_references`` data sets drawn uniformly in the bounding box of ``x``
    rotated to its principal axes (only the leading axes that explain
    ``variance`` of the total: few cells in many dimensions leave the rest as
    noise); ``s_k = sd(log W*_k) sqrt(1 + 1/B)``.
    ``k = 1`` is allowed (``W_1``: the total sum of squares).
    """
    rng = np.random.default_rng(random_state)
    centred = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    keep = max(1, int(np.searchsorted(np.cumsum(sv ** 2) / max((sv ** 2).sum(), 1e-300), variance) + 1))
    rotated = centred @ vt[:keep].T
    centred = rotated
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)

    def log_w(data: np.ndarray, k: int) -> float:
        if k == 1:
            return float(np.log(((data - data.mean(axis=0)) ** 2).sum() + 1e-300))
        return float(np.log(kmeans_labels(data, k, random_state, n_init)[1] + 1e-300))

    observed = np.array([log_w(centred, k) for k in ks])
    refs = np.array([[log_w(rng.uniform(lo, hi, size=rotated.shape), k) for k in ks]
                     for _ in range(n_references)])
    gap = refs.mean(axis=0) - observed
    se = refs.std(axis=0) * np.sqrt(1.0 + 1.0 / n_references)
    return gap, se


def subsample_stability(x: np.ndarray, ks: Sequence[int], random_state: int = 0, n_init: int = 10,
                        n_resamples: int = DEFAULT_N_RESAMPLES,
                        fraction: float = SUBSAMPLE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over resamples of the ARI between k-means of a cell subsample and of all cells.

    Each resample keeps ``fraction`` of the cells (without replacement),
    clusters them with ``k`` and compares with the full clustering on the kept cells.
    """
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(random_state)
    n = len(x)
    m = max(3, int(round(fraction * n)))
    subsets = [np.sort(rng.choice(n, size=m, replace=False)) for _ in range(n_resamples)]
    mean, se = np.full(len(ks), np.nan), np.full(len(ks), np.nan)
    for i, k in enumerate(ks):
        if k >= m:
            continue
        full = kmeans_labels(x, k, random_state, n_init)[0]
        aris = [adjusted_rand_score(full[s], kmeans_labels(x[s], k, random_state + 1 + b, n_init)[0])
                for b, s in enumerate(subsets)]
        mean[i], se[i] = np.mean(aris), np.std(aris) / np.sqrt(len(aris))
    return mean, se


def choose_k(ks: Sequence[int], score: np.ndarray, se: np.ndarray, rule: str,
             threshold: float = DEFAULT_STABILITY_THRESHOLD) -> int:
    """The ``k`` a rule picks from its curve.

    ``silhouette``: the largest score (ties: the smaller k). ``gap``: the
    smallest k with ``Gap(k) >= Gap(k+1) − s_{k+1}`` (Tibshirani's rule; the
    largest k if none). ``stability``: the largest k whose mean ARI is at least
    ``threshold`` (the smallest k if none is).
    """
    ks, score = list(ks), np.asarray(score, dtype=np.float64)
    finite = np.isfinite(score)
    if not finite.any():
        raise ConfigurationError(f"no k in {ks} has a finite {rule} score")
    if rule == "silhouette":
        return ks[int(np.nanargmax(score))]
    if rule == "gap":
        for i in range(len(ks) - 1):
            if finite[i] and finite[i + 1] and score[i] >= score[i + 1] - se[i + 1]:
                return ks[i]
        return ks[int(np.flatnonzero(finite)[-1])]
    if rule == "stability":
        ok = [k for k, s, f in zip(ks, score, finite) if f and s >= threshold]
        return max(ok) if ok else ks[int(np.flatnonzero(finite)[0])]
    raise ConfigurationError(f"unknown k rule {rule!r}; use one of {list(K_RULES)}")


# =========================================================================== clustering
def cluster_cells(features: xr.DataArray, k_range: Iterable[int] = DEFAULT_K_RANGE,
                  random_state: int = 0, n_init: int = 10,
                  true_types: Sequence[Any] | None = None, k_rule: str = "silhouette",
                  standardize: bool = True, n_resamples: int = DEFAULT_N_RESAMPLES,
                  stability_threshold: float = DEFAULT_STABILITY_THRESHOLD, resample: Resampler | None = None,
                  pac_threshold: float = PAC_THRESHOLD,
                  consensus_resamples: int = N_CONSENSUS_RESAMPLES) -> xr.Dataset:
    """Cluster cells described by ``features (cell, feature)`` (standardised per feature first).

    k-means for each ``k`` in ``k_range`` (``n_init`` starts, ``random_state``),
    ``k`` chosen by ``k_rule`` (:func:`choose_k`: ``"silhouette"``, the
    largest silhouette score; ``"gap"``, the gap statistic; ``"stability"``,
    agreement of clusterings of cell subsamples; ``"silhouette_gap"``, the
    larger of the silhouette and gap choices, ``k_score`` then holding the gap
    curve; ``"consensus"``, the largest k whose clusters reappear over resamples
    of windows and cells, :mod:`retcodec.analysis.consensus`, which needs
    ``resample``); Ward linkage of the same
    features; the Ward tree cut into the same number of clusters.
    ``resample`` (how to rebuild the features on resampled windows) adds the
    consensus evidence whatever the rule: ``consensus (k, cell, cell2)``,
    ``pac (k)``, ``consensus_cluster (k, cell)`` (the types at every k, -1 where
    k was not tried), ``smallest_type (k)``, and at the chosen k the per-cell
    ``confidence``, ``alternative`` and ``alternative_consensus``.
    ``standardize=False`` clusters the features as given (for features that
    already share one scale, e.g. drive fractions).

    Returns
    -------
    xarray.Dataset
        ``features (cell, feature)`` (standardised), ``cluster (cell)`` (k-means,
        canonical labels), ``hierarchical_cluster (cell)`` (Ward cut at ``k``),
        ``silhouette (k)`` (NaN for ``k`` outside ``2..n_cells-1`` or above the
        number of distinct feature vectors), ``inertia (k)``,
        ``k_score (k)`` and ``k_score_se (k)`` (the curve of ``k_rule``),
        ``linkage (merge, linkage_column)`` (scipy's linkage matrix: merged
        clusters, distance, size; for a dendrogram), attr/variable ``chosen_k``;
        with ``true_types``: ``ari_truth``, ``hierarchical_ari_truth`` and
        ``ari_truth_by_k (k)`` (the k-means clustering at every k vs truth).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    if k_rule not in K_RULES:
        raise ConfigurationError(f"unknown k rule {k_rule!r}; use one of {list(K_RULES)}")
    if not isinstance(features, xr.DataArray) or features.ndim != 2 or "cell" not in features.dims:
        raise ShapeError(f"features must be a DataArray (cell, feature), got "
                         f"{getattr(features, 'dims', type(features).__name__)}")
    feature_dim = next(d for d in features.dims if d != "cell")
    features = features.transpose("cell", feature_dim)
    raw = features.values.astype(np.float64)
    if not np.isfinite(raw).all():
        raise ConfigurationError("cell features hold NaN or Inf")
    n_cells = raw.shape[0]
    x = standardize_columns(raw) if standardize else raw - raw.mean(axis=0)
    all_ks = sorted({int(k) for k in k_range})
    ks = _valid_ks(all_ks, n_cells)
    n_distinct = np.unique(x, axis=0).shape[0]
    if n_distinct < 2:
        raise ConfigurationError("all cells have the same features; cell types cannot be told apart")
    silhouette = np.full(len(all_ks), np.nan)
    inertia = np.full(len(all_ks), np.nan)
    fits: dict[int, np.ndarray] = {}
    for i, k in enumerate(all_ks):
        if k not in ks or k > n_distinct:        # more clusters than distinct cells: undefined
            continue
        fits[k], inertia[i] = kmeans_labels(x, k, random_state, n_init)
        if np.unique(fits[k]).size >= 2:
            silhouette[i] = silhouette_score(x, fits[k])
    if not np.isfinite(silhouette).any():
        raise ConfigurationError(f"no k in k_range {all_ks} gave two or more clusters (the cells have "
                                 f"{n_distinct} distinct feature vectors)")
    usable = [k for k in all_ks if k in fits]
    score, se = np.full(len(all_ks), np.nan), np.full(len(all_ks), np.nan)
    at = [all_ks.index(k) for k in usable]
    if k_rule == "silhouette":
        score = silhouette.copy()
        chosen_k = choose_k(all_ks, score, se, "silhouette")
    elif k_rule == "gap":
        gap, gap_se = gap_statistic(x, [1] + usable, random_state, n_init, n_resamples)
        score[at], se[at] = gap[1:], gap_se[1:]
        chosen_k = max(usable[0], choose_k([1] + usable, gap, gap_se, "gap"))
    elif k_rule == "silhouette_gap":
        gap, gap_se = gap_statistic(x, [1] + usable, random_state, n_init, n_resamples)
        score[at], se[at] = gap[1:], gap_se[1:]
        chosen_k = max(choose_k(all_ks, silhouette, se, "silhouette"),
                       usable[0], choose_k([1] + usable, gap, gap_se, "gap"))
    elif k_rule == "stability":
        stab, stab_se = subsample_stability(x, usable, random_state, n_init, n_resamples)
        score[at], se[at] = stab, stab_se
        chosen_k = choose_k(all_ks, score, se, "stability", stability_threshold)
    evidence = None
    if resample is not None:
        cells = features["cell"].values if "cell" in features.coords else np.arange(n_cells)
        evidence = consensus_evidence(resample.make, resample.n_time, cells, usable, pac_threshold,
                                      consensus_resamples, random_state=random_state, standardize=standardize)
    if k_rule in ("consensus", "combined"):
        if evidence is None:
            raise ConfigurationError(f"k_rule={k_rule!r} needs resample= (how to rebuild the features on "
                                     f"resampled windows)")
        score = evidence["pac"].reindex(k=all_ks).values
        chosen_k = int(evidence["chosen_k"])
        if k_rule == "combined":                  # the parts choose among the k the consensus could try
            tried = [k for k in usable if k in evidence["k"].values]
            sil = np.where(np.isin(all_ks, tried), silhouette, np.nan)
            gap, gap_se = gap_statistic(x, [1] + tried, random_state, n_init, n_resamples)
            chosen_k = max(chosen_k, choose_k(all_ks, sil, se, "silhouette"),
                           tried[0], choose_k([1] + tried, gap, gap_se, "gap"))
    labels = canonical_labels(fits[chosen_k])
    tree = linkage(x, method="ward")
    hierarchical = canonical_labels(fcluster(tree, t=chosen_k, criterion="maxclust"))
    coords = {"cell": features["cell"].values if "cell" in features.coords else np.arange(n_cells),
              "k": np.array(all_ks), "linkage_column": LINKAGE_COLUMNS}
    for name, coord in features.coords.items():
        if coord.dims == (feature_dim,):
            coords[name] = (feature_dim, coord.values)
    ds = xr.Dataset(
        {"features": (("cell", feature_dim), x,
                      {"long_name": "features standardised across cells" if standardize
                       else "features centred across cells"}),
         "cluster": ("cell", labels, {"long_name": "k-means cluster (canonical labels)"}),
         "hierarchical_cluster": ("cell", hierarchical,
                                  {"long_name": "Ward linkage cut into chosen_k clusters (canonical)"}),
         "silhouette": ("k", silhouette, {"long_name": "silhouette score of k-means with k clusters"}),
         "inertia": ("k", inertia, {"long_name": "k-means inertia"}),
         "k_score": ("k", score, {"long_name": f"k-selection curve ({k_rule})"}),
         "k_score_se": ("k", se, {"long_name": f"standard error of the {k_rule} curve"}),
         "linkage": (("merge", "linkage_column"), tree,
                     {"long_name": "Ward linkage matrix (scipy.cluster.hierarchy.linkage)"}),
         "chosen_k": ((), chosen_k, {"long_name": f"k chosen by the {k_rule} rule"})},
        coords=coords,
        attrs={"n_init": n_init, "random_state": random_state, "k_rule": k_rule,
               "standardize": int(standardize)})
    if evidence is not None:
        ds = _with_consensus(ds, evidence, labels, chosen_k)
    if true_types is not None:
        truth = _check_truth(true_types, n_cells)
        ds = ds.assign_coords(true_type=("cell", truth))
        ds["ari_truth"] = ((), adjusted_rand_score(truth, labels),
                           {"long_name": "adjusted Rand index of the k-means clusters vs the true types"})
        ds["hierarchical_ari_truth"] = ((), adjusted_rand_score(truth, hierarchical),
                                        {"long_name": "adjusted Rand index of the Ward clusters vs truth"})
        ds["ari_truth_by_k"] = ("k", [adjusted_rand_score(truth, fits[k]) if k in fits else np.nan
                                      for k in all_ks],
                                {"long_name": "adjusted Rand index vs truth of k-means with k clusters"})
    return ds


def _with_consensus(ds: xr.Dataset, evidence: xr.Dataset, labels: np.ndarray, chosen_k: int) -> xr.Dataset:
    """Add the consensus evidence (on ``ds``'s ``k`` axis) and the per-cell confidence at ``chosen_k``."""
    ev = evidence.reindex(k=ds["k"].values)
    ev["consensus_cluster"] = ev["consensus_cluster"].fillna(-1).astype(np.int64)
    ev["smallest_type"] = ev["smallest_type"].fillna(0).astype(np.int64)
    if chosen_k in evidence["k"].values:
        confidence, alternative, alt_value = cell_confidence(evidence["consensus"].sel(k=chosen_k).values, labels)
    else:                                          # the rule chose a k the resamples could not try
        confidence, alt_value = np.full(labels.size, np.nan), np.full(labels.size, np.nan)
        alternative = np.full(labels.size, -1, dtype=np.int64)
    for name in ("consensus", "pac", "consensus_cluster", "smallest_type"):
        ds[name] = ev[name]
    ds["confidence"] = ("cell", confidence, evidence["confidence"].attrs)
    ds["alternative"] = ("cell", alternative, evidence["alternative"].attrs)
    ds["alternative_consensus"] = ("cell", alt_value, evidence["alternative_consensus"].attrs)
    ds["consensus_k"] = ((), int(evidence["chosen_k"]), evidence["chosen_k"].attrs)
    ds.attrs.update({f"consensus_{k}": v for k, v in evidence.attrs.items()})
    return ds


def _check_truth(true_types: Any, n_cells: int) -> np.ndarray:
    if isinstance(true_types, xr.DataArray):
        true_types = true_types.values
    truth = np.asarray(true_types).astype(str)
    if truth.shape != (n_cells,):
        raise ShapeError(f"true_types must hold one type per cell ({n_cells}), got shape {truth.shape}")
    return truth


def cell_types(loadings_by_layer: Mapping[str, xr.DataArray], rates: xr.DataArray,
               k_range: Iterable[int] = DEFAULT_K_RANGE, random_state: int = 0, n_init: int = 10,
               true_types: Sequence[Any] | xr.DataArray | None = None,
               k_rule: str = "silhouette", consensus: bool = False,
               pac_threshold: float = PAC_THRESHOLD) -> xr.DataTree:
    """Cluster cells by the correlation of their rates with each layer's modes.

    Parameters
    ----------
    loadings_by_layer : layer name -> ``loadings (time, mode)`` of that layer's
        modes (contribution or activation modes).
    rates : ``(time, cell)`` rates (e.g. the model's); must hold every time of
        each layer's loadings.
    k_range : numbers of clusters to try (those outside ``2..n_cells-1`` are skipped).
    random_state, n_init : k-means seed and restarts.
    true_types : one type per cell (e.g. the recording's ``cell_type``
        coordinate) to score each clustering against.
    k_rule : how k is chosen (:func:`choose_k`).
    consensus : add the consensus evidence (correlations recomputed on resampled
        windows; always with ``k_rule="consensus"``).

    Returns
    -------
    xarray.DataTree
        One child per layer: :func:`cluster_cells` of ``M (cell, mode)``, plus
        ``correlation (cell, mode)``, the unstandardised ``M``. Root:
        ``agreement (layer, layer2)`` (adjusted Rand index of the k-means
        clusterings), ``ari_truth (layer)`` and the ``true_type (cell)``
        coordinate when ``true_types`` is given.
    """
    if not loadings_by_layer:
        raise ConfigurationError("loadings_by_layer is empty: give at least one layer's loadings")
    children: dict[str, xr.Dataset] = {}
    for name, loadings in loadings_by_layer.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigurationError(f"layer names must be non-empty strings without '/', got {name!r}")
        correlation = mode_rate_correlation(loadings, rates)
        resample = None
        if consensus or k_rule in ("consensus", "combined"):
            z, y = _check_pair(loadings, rates)
            resample = correlation_resampler(y.values, z.values)
        node = cluster_cells(correlation, k_range, random_state, n_init, true_types, k_rule=k_rule,
                             resample=resample, consensus_resamples=N_CONTROL_RESAMPLES,
                             pac_threshold=pac_threshold)
        node["correlation"] = correlation
        node.attrs["layer"] = name
        children[name] = node
    cells = next(iter(children.values()))["cell"].values
    root = _agreement_root({name: node["cluster"].values for name, node in children.items()}, cells)
    if true_types is not None:
        root = root.assign_coords(true_type=("cell", _check_truth(true_types, cells.size)))
        root["ari_truth"] = ("layer", [float(children[n]["ari_truth"]) for n in children],
                             {"long_name": "adjusted Rand index of each layer's clusters vs the true types"})
    root.attrs = provenance_attrs({"k_range": sorted(int(k) for k in k_range),
                                   "random_state": random_state, "n_init": n_init, "k_rule": k_rule},
                                  method="cell_types", features="corr(mode loadings, cell rate)")
    return xr.DataTree.from_dict({"/": root, **children})


def _agreement_root(labels: Mapping[str, np.ndarray], cells: np.ndarray) -> xr.Dataset:
    agreement = clustering_agreement(labels).rename(clustering="layer", clustering2="layer2")
    return xr.Dataset({"agreement": agreement.assign_attrs(
        long_name="adjusted Rand index between the layers' k-means clusterings")},
        coords={"cell": cells})


def cluster_rates(rates: xr.DataArray, k_range: Iterable[int] = DEFAULT_K_RANGE, random_state: int = 0,
                  n_init: int = 10, true_types: Sequence[Any] | xr.DataArray | None = None,
                  k_rule: str = "silhouette", consensus: bool = False,
                  pac_threshold: float = PAC_THRESHOLD) -> xr.Dataset:
    """Control: cluster cells by their raw rates.

    Each cell is described by its row of the cell-by-cell Pearson correlation
    matrix of the rates over windows (NaN → 0), then clustered as in
    :func:`cluster_cells`. Compare with :func:`cell_types` through
    :func:`clustering_agreement` or ``ari_truth``. ``consensus``: as in :func:`cell_types`.

    Returns the :func:`cluster_cells` Dataset (feature dim ``cell2``) plus
    ``correlation (cell, cell2)``.
    """
    if not isinstance(rates, xr.DataArray) or set(rates.dims) != {"time", "cell"}:
        raise ShapeError(f"rates must be a DataArray (time, cell), got "
                         f"{getattr(rates, 'dims', type(rates).__name__)}")
    rates = rates.transpose("time", "cell")
    cells = rates["cell"].values if "cell" in rates.coords else np.arange(rates.sizes["cell"])
    y = rates.values.astype(np.float64)
    corr = np.nan_to_num(pearson(y[:, :, None], y[:, None, :], axis=0), nan=0.0)
    correlation = xr.DataArray(corr, dims=("cell", "cell2"), coords={"cell": cells, "cell2": cells},
                               name="correlation",
                               attrs={"long_name": "Pearson correlation of cell rates (NaN -> 0)"})
    resample = correlation_resampler(y, y) if consensus or k_rule in ("consensus", "combined") else None
    ds = cluster_cells(correlation, k_range, random_state, n_init, true_types, k_rule=k_rule, resample=resample,
                       consensus_resamples=N_CONTROL_RESAMPLES, pac_threshold=pac_threshold)
    ds["correlation"] = correlation
    ds.attrs.update(provenance_attrs({"k_range": sorted(int(k) for k in k_range)},
                                     method="cluster_rates", features="rows of the rate correlation matrix"))
    return ds


# =========================================================================== the primary answer
#: windows used for per-cell contributions (evenly spaced over the stimulus)
DEFAULT_TYPING_WINDOWS = 400
#: the k rule of the primary clustering and of every control (validated on simulated retinas)
PRIMARY_K_RULE = "combined"
#: the primary features: each cell's drive decomposed over both layers' contribution modes (fractions per layer)
PRIMARY_FEATURES = "drive over the contribution modes of all layers"
#: the primary features when no contribution modes are given: the drive of every channel (E and I) of all layers
FALLBACK_FEATURES = "drive profiles (channels) of all layers combined"


def typing_windows(n_windows: int, max_windows: int | None = DEFAULT_TYPING_WINDOWS) -> np.ndarray:
    """Indices of ``max_windows`` windows evenly spaced over ``0..n_windows-1`` (all if ``None`` or more)."""
    if max_windows is None or max_windows >= n_windows:
        return np.arange(n_windows)
    if max_windows < 3:
        raise ConfigurationError(f"max_windows must be at least 3, got {max_windows}")
    return np.unique(np.linspace(0, n_windows - 1, int(max_windows)).round().astype(np.int64))


def cell_types_primary(model: Any, windows: Any, contributions_tree: xr.DataTree | None,
                       modes: Mapping[str, xr.Dataset], activation_modes: Mapping[str, xr.Dataset] | None,
                       rates: xr.DataArray, true_types: Sequence[Any] | xr.DataArray | None = None,
                       random_state: int = RANDOM_STATE, device: Any = DEVICE, *, layers: Sequence[str] | None = None,
                       max_windows: int | None = DEFAULT_TYPING_WINDOWS, steps: int | None = None,
                       k_range: Iterable[int] = DEFAULT_K_RANGE, k_rule: str = PRIMARY_K_RULE,
                       per_cell: xr.DataTree | None = None, n_init: int = 10,
                       progress: bool = False, pac_threshold: float = PAC_THRESHOLD) -> xr.DataTree:
    """The cell types: cells clustered by the drive profiles of their own rates, with controls.

    The rule (fixed, see ``docs/celltypes.md``): per-cell contributions
    (:func:`retcodec.engine.percell.per_cell_contributions`, IG to each cell's
    own rate, on ``max_windows`` evenly spaced windows) give each cell a drive
    profile per layer (:func:`retcodec.analysis.drive.drive_profiles`); the
    profiles of all ``layers`` concatenated are clustered by k-means, k chosen
    by ``k_rule``. Every control is clustered with the same k rule.

    Parameters
    ----------
    model : the fitted model.
    windows : the windows the contributions were computed on (array, recording or ``Windows``).
    contributions_tree : the surprisal contribution tree (its layers are the default ``layers``); may be None.
    modes : layer -> contribution modes Dataset (``loadings``, ``modes``); keys ending in
        ``_activation`` are ignored.
    activation_modes : layer -> activation modes Dataset (``loadings``), or None.
    rates : ``(time, cell)`` model rates over the windows of the modes.
    true_types : one type per cell, when known.
    per_cell : a precomputed per-cell contribution tree (skips that computation).

    Returns
    -------
    xarray.DataTree
        Root: the primary clustering (:func:`cluster_cells` of the combined
        drive profiles: ``cluster (cell)``, ``features``, ``k_score (k)``,
        ``silhouette (k)``, ``chosen_k``, ...), ``true_type`` coordinate and
        ``ari_truth`` when known, ``clustering_k (clustering)`` and ``clustering_ari_truth
        (clustering)`` for every clustering, ``layer_agreement (family)`` (ARI of the
        first two layers' clusterings per feature family), ``half_agreement``
        (ARI of the primary clusterings of the even and odd halves of the
        windows at the chosen k) and attrs ``primary``, ``winner``. Children:
        ``drive/<layer>``, ``drive/modes`` and ``controls/surprisal_modes/<layer>``,
        ``controls/activation_modes/<layer>``, ``controls/rates``.
    """
    from retcodec.analysis.drive import drive_over_modes, drive_profiles, drive_resampler
    from retcodec.engine.percell import DEFAULT_PER_CELL_STEPS, per_cell_contributions

    layers = _primary_layers(layers, contributions_tree, modes)
    if per_cell is None:
        n = len(windows)
        per_cell = per_cell_contributions(model, windows, layers, steps=steps or DEFAULT_PER_CELL_STEPS,
                                          window_index=typing_windows(n, max_windows), device=device,
                                          progress=progress)
    kw = dict(k_range=k_range, random_state=random_state, n_init=n_init, true_types=true_types, k_rule=k_rule,
              pac_threshold=pac_threshold)
    contribution_modes = {l: modes[l] for l in layers if l in modes}
    over_modes = len(contribution_modes) == len(layers) and all("modes" in ds for ds in contribution_modes.values())
    if over_modes:
        profile, resample = drive_over_modes(per_cell, contribution_modes, layers)
        profile = profile.rename(layer="feature_layer", mode="feature_mode")
        # e.g. one mode per layer: every cell's drive over the modes is the same
        over_modes = np.unique(profile.values.round(12), axis=0).shape[0] >= 2
    if not over_modes:                             # no (separating) contribution modes: the channels' drive
        profile, resample = drive_profiles(per_cell, layers), drive_resampler(per_cell, layers)
        profile = profile.rename(layer="feature_layer", channel="feature_channel", sign="feature_sign")
    # the root's feature dim has its own name: DataTree children share the parent's dims
    profile = profile.rename(feature="primary_feature")
    root = cluster_cells(profile, standardize=False, resample=resample, **kw)
    root["drive_profile"] = profile.assign_attrs(features=PRIMARY_FEATURES if over_modes else FALLBACK_FEATURES)
    nodes: dict[str, xr.Dataset] = {}
    skipped: dict[str, str] = {}

    def control(name: str, make: Any) -> None:
        """A secondary clustering; one whose features cannot separate any cells is skipped, with the reason."""
        try:
            made = make()
        except ConfigurationError as err:
            skipped[name] = str(err)
            return
        nodes.update(made if isinstance(made, dict) else {name: made})

    if over_modes:
        control("drive/channels", lambda: cluster_cells(drive_profiles(per_cell, layers), standardize=False,
                                                        resample=drive_resampler(per_cell, layers),
                                                        consensus_resamples=N_CONTROL_RESAMPLES, **kw))
    for layer in layers:
        control(f"drive/{layer}",
                lambda layer=layer: cluster_cells(drive_profiles(per_cell, [layer]), standardize=False,
                                                  resample=drive_resampler(per_cell, [layer]),
                                                  consensus_resamples=N_CONTROL_RESAMPLES, **kw))
    tree_kw = dict(k_range=k_range, random_state=random_state, n_init=n_init, true_types=true_types,
                   k_rule=k_rule, consensus=True, pac_threshold=pac_threshold)
    for family, source in (("surprisal_modes", contribution_modes), ("activation_modes", activation_modes or {})):
        loadings = {l: source[l]["loadings"] for l in layers if l in source}
        for l in loadings:
            control(f"controls/{family}/{l}",
                    lambda l=l, loadings=loadings: cell_types({l: loadings[l]}, rates, **tree_kw)[l].to_dataset())
    control("controls/rates", lambda: cluster_rates(rates, **tree_kw))
    root = _primary_summary(root, nodes, layers, resample, n_init, kw)
    root = _diagnostics(root, profile)
    if skipped:
        root.attrs["skipped_clusterings"] = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    root.attrs.update(provenance_attrs({"k_range": sorted(int(k) for k in k_range), "k_rule": k_rule,
                                        "random_state": random_state, "layers": list(layers),
                                        "n_windows": int(per_cell.sizes.get("time", 0)),
                                        "per_cell": dict(per_cell.attrs).get("parameters", "")},
                                       method="cell_types_primary", primary=PRIMARY_FEATURES))
    return xr.DataTree.from_dict({"/": root, **nodes})


def _diagnostics(root: xr.Dataset, profile: xr.DataArray) -> xr.Dataset:
    """The features that separate every pair of primary types; the ARI's bootstrap interval when truth is known."""
    from retcodec.analysis.consensus import ari_interval, separating_features

    root = root.merge(separating_features(profile, root["cluster"].values))
    if "true_type" in root.coords:
        lo, hi = ari_interval(root["true_type"].values, root["cluster"].values)
        root["ari_truth_interval"] = ("bound", [lo, hi], {
            "long_name": "95% bootstrap interval (cells resampled) of the ARI vs the true types"})
        root = root.assign_coords(bound=["low", "high"])
    return root


def _primary_layers(layers: Sequence[str] | None, tree: xr.DataTree | None,
                    modes: Mapping[str, xr.Dataset]) -> list[str]:
    if layers is not None:
        out = list(layers)
    elif tree is not None and tree.children:
        out = [name for name in tree.children if "contribution" in tree[name].ds]
    else:
        out = [name for name in modes if not str(name).endswith("_activation")]
    if not out:
        raise ConfigurationError("no layers: give layers=, a contribution tree or contribution modes")
    return out


def _primary_summary(root: xr.Dataset, nodes: Mapping[str, xr.Dataset], layers: Sequence[str],
                     resample: Resampler, n_init: int, kw: Mapping[str, Any]) -> xr.Dataset:
    from sklearn.metrics import adjusted_rand_score

    names = ["primary"] + list(nodes)
    sets = [root] + list(nodes.values())
    root["clustering_k"] = ("clustering", [int(ds["chosen_k"]) for ds in sets], {"long_name": "chosen k"})
    root = root.assign_coords(clustering=names)
    if "ari_truth" in root:
        ari = [float(ds["ari_truth"]) for ds in sets]
        root["clustering_ari_truth"] = ("clustering", ari, {"long_name": "adjusted Rand index vs the true types"})
        root.attrs["winner"] = names[int(np.argmax(ari))]
    families, agreement = [], []
    for family in ("drive", "controls/surprisal_modes", "controls/activation_modes"):
        found = [f"{family}/{l}" for l in layers[:2] if f"{family}/{l}" in nodes]
        if len(found) == 2:
            families.append(family.split("/")[-1])
            agreement.append(adjusted_rand_score(nodes[found[0]]["cluster"].values,
                                                 nodes[found[1]]["cluster"].values))
    if families:
        root["layer_agreement"] = ("family", agreement,
                                   {"long_name": f"adjusted Rand index of the {layers[0]} and {layers[1]} "
                                                 f"clusterings of each feature family"})
        root = root.assign_coords(family=families)
    n_time = resample.n_time
    if n_time >= 6:
        k = int(root["chosen_k"])
        halves = [resample.make(np.arange(i, n_time, 2)) for i in (0, 1)]
        labels = [kmeans_labels(h - h.mean(axis=0), k, kw["random_state"], n_init)[0] for h in halves]
        root["half_agreement"] = ((), adjusted_rand_score(*labels), {
            "long_name": "ARI of the primary clusterings (chosen k) of the even and odd windows"})
    return root
