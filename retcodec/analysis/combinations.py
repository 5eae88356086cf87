"""Mode combinations and how instantaneous receptive fields change with them (``docs/method.md`` §7).

At each window some modes are active. By default a mode is active where its
loading is non-zero: retcodec's modes are sparse by construction (their model
zeroes every loading below its activity cut, ``docs/modes.md``), so the modes
table, these combinations and the report count the same thing. The
set of active modes is the window's *combination*, labelled by the active modes'
coordinate values joined with ``"+"`` in mode order (``"0+3"``); a window with no
active mode is labelled ``"none"``. :func:`mode_combinations` finds the
combinations and the frequent ones; :func:`combination_irfs` computes, for each
frequent combination and each cell firing above a threshold, IRFs at windows
where the combination is active, their rank-1 filters, and whether the filters
are more alike within a combination than across combinations.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.analysis.irf_similarity import similarity_statistics
from retcodec.analysis.irf import DEFAULT_PAIRED_BATCH_SIZE, IRF_UNITS, iter_paired_irf
from retcodec.analysis.irf_inputs import model_cells, resolve_stimulus, window_shape
from retcodec.analysis.rank1 import rank1_matrices
from retcodec.io.provenance import provenance_attrs
from retcodec.analysis.statistics import align_time, match_times
from retcodec.compat import accept_seed_alias

__all__ = ["mode_combinations", "combination_irfs", "combination_label", "NONE_LABEL"]

#: label of a window where no mode is active
NONE_LABEL = "none"
SEPARATOR = "+"


# =========================================================================== combinations
def check_loadings(loadings: Any) -> xr.DataArray:
    """``loadings`` as a finite ``(time, mode)`` DataArray with a ``mode`` coordinate, or a clear error."""
    if not isinstance(loadings, xr.DataArray) or set(loadings.dims) != {"time", "mode"}:
        raise ShapeError(f"loadings must be a DataArray (time, mode), got "
                         f"{getattr(loadings, 'dims', type(loadings).__name__)}")
    loadings = loadings.transpose("time", "mode")
    if "mode" not in loadings.coords:
        loadings = loadings.assign_coords(mode=np.arange(loadings.sizes["mode"]))
    if not np.isfinite(loadings.values).all():
        raise ConfigurationError("loadings hold NaN or Inf")
    return loadings


def combination_label(active: np.ndarray, modes: Sequence[Any]) -> str:
    """``"0+3"`` for the active entries of one window (``"none"`` when none is active)."""
    names = [str(m) for m, on in zip(modes, active) if on]
    return SEPARATOR.join(names) if names else NONE_LABEL


def active_modes(loadings: xr.DataArray, threshold: float = 0.0, relative: bool = False) -> xr.DataArray:
    """Boolean ``(time, mode)``: loading ``> threshold`` (absolute; default: non-zero, the modes'
    own definition) or ``> threshold × max over time of that mode`` (``relative``, for dense
    loadings such as NMF's). A mode whose loadings never exceed 0 is never active."""
    loadings = check_loadings(loadings)
    if not threshold >= 0:
        raise ConfigurationError(f"threshold must be >= 0, got {threshold}")
    values = loadings.values
    if relative:
        peak = values.max(axis=0) if values.size else np.zeros(values.shape[1])
        cut = np.where(peak > 0, threshold * peak, np.inf)
    else:
        cut = np.full(values.shape[1], float(threshold))
    return xr.DataArray(values > cut, dims=("time", "mode"), coords=loadings.coords, name="active")


def mode_combinations(loadings: xr.DataArray, threshold: float = 0.0, *, relative: bool = False,
                      min_count: int = 1, max_sets: int | None = None) -> xr.Dataset:
    """The set of active modes at each window, and the frequent sets.

    Parameters
    ----------
    loadings : ``(time, mode)`` non-negative mode loadings.
    threshold : a mode is active at a window when its loading exceeds
        ``threshold`` (``relative=False``, default 0: the loading is non-zero,
        as the sparse modes define it) or ``threshold`` times that mode's
        largest loading (``relative=True``, for dense loadings).
    min_count : frequent sets occur at ``>= min_count`` windows.
    max_sets : keep at most this many frequent sets (the most frequent).

    Returns
    -------
    xarray.Dataset
        ``active (time, mode)`` bool, ``n_active (time)``, ``combination_label
        (time)`` (e.g. ``"0+3"``, ``"none"``); over ``combination`` (label
        strings of the frequent non-empty sets, most frequent first, ties by
        label): ``count``, ``fraction`` (of all windows), ``n_modes`` and
        ``members (combination, mode)``. ``fraction_none`` (scalar): the share of
        windows with no active mode.
    """
    loadings = check_loadings(loadings)
    if int(min_count) < 1:
        raise ConfigurationError(f"min_count must be >= 1, got {min_count}")
    if max_sets is not None and int(max_sets) < 1:
        raise ConfigurationError(f"max_sets must be >= 1 or None, got {max_sets}")
    active = active_modes(loadings, threshold, relative)
    modes = loadings["mode"].values
    labels = np.array([combination_label(row, modes) for row in active.values], dtype=object)
    frequent = _frequent_sets(labels, int(min_count), max_sets)
    n_time = max(labels.size, 1)
    counts = np.array([np.sum(labels == s) for s in frequent], dtype=np.int64)
    members = np.array([[str(m) in s.split(SEPARATOR) for m in modes] for s in frequent],
                       dtype=bool).reshape(len(frequent), len(modes))
    ds = xr.Dataset(
        {"active": active,
         "n_active": ("time", active.values.sum(axis=1), {"long_name": "number of active modes"}),
         "combination_label": ("time", labels.astype(str),
                               {"long_name": "active modes joined with '+' ('none': no active mode)"}),
         "count": ("combination", counts, {"long_name": "windows with exactly this set active"}),
         "fraction": ("combination", counts / n_time, {"long_name": "share of all windows"}),
         "n_modes": ("combination", members.sum(axis=1)),
         "members": (("combination", "mode"), members),
         "fraction_none": ((), float(np.sum(labels == NONE_LABEL)) / n_time,
                           {"long_name": "share of windows with no active mode"})},
        coords={"time": loadings["time"], "mode": loadings["mode"],
                "combination": ("combination", np.array(frequent, dtype=str))},
        attrs=provenance_attrs({"threshold": threshold, "relative": relative, "min_count": min_count,
                                "max_sets": max_sets}, method="mode_combinations",
                               threshold_rule=("loading > threshold * max over time of the mode"
                                               if relative else "loading > threshold")))
    return ds


def _frequent_sets(labels: np.ndarray, min_count: int, max_sets: int | None) -> list[str]:
    """Non-empty labels occurring ``>= min_count`` times, most frequent first (ties by label)."""
    values, counts = np.unique(labels.astype(str), return_counts=True)
    ranked = sorted((int(-c), str(v)) for v, c in zip(values, counts)
                    if v != NONE_LABEL and c >= min_count)
    chosen = [label for _, label in ranked]
    return chosen[:max_sets] if max_sets is not None else chosen


# =========================================================================== IRFs per combination
def _combination_table(loadings: xr.DataArray, combinations: Any,
                       threshold: float) -> tuple[np.ndarray, list[str]]:
    """Per-window labels (time of ``loadings``) and the combinations to analyse."""
    if isinstance(combinations, xr.Dataset):
        if "combination_label" not in combinations or "combination" not in combinations.coords:
            raise ShapeError("combinations must be the Dataset of mode_combinations (with "
                             "'combination_label (time)' and a 'combination' coordinate) or labels")
        labels = combinations["combination_label"]
        index = match_times(labels["time"].values, loadings["time"].values,
                            what="combinations (time)", reference="loadings")
        return labels.values[index].astype(str), [str(c) for c in combinations["combination"].values]
    table = mode_combinations(loadings, threshold)
    if combinations is None:
        return table["combination_label"].values.astype(str), [str(c) for c in table["combination"].values]
    wanted = [str(c) for c in np.atleast_1d(combinations)]
    if not wanted:
        raise ConfigurationError("combinations is empty")
    return table["combination_label"].values.astype(str), wanted


def _select_times(labels: np.ndarray, firing: np.ndarray, sets: list[str], max_times: int,
                  seed: int) -> list[list[np.ndarray]]:
    """``[set][cell] -> sorted row indices`` (at most ``max_times``, drawn without replacement)."""
    rng = np.random.default_rng(seed)
    chosen: list[list[np.ndarray]] = []
    for label in sets:
        in_set = labels == label
        per_cell = []
        for k in range(firing.shape[1]):
            rows = np.flatnonzero(in_set & firing[:, k])
            if rows.size > max_times:
                rows = np.sort(rng.choice(rows, size=max_times, replace=False))
            per_cell.append(rows)
        chosen.append(per_cell)
    return chosen


def _rate_thresholds(rates: xr.DataArray, rate_threshold: float | None) -> np.ndarray:
    if rate_threshold is None:
        return rates.mean("time").values.astype(np.float64)
    if not np.isfinite(rate_threshold):
        raise ConfigurationError(f"rate_threshold must be a finite rate in Hz or None, got {rate_threshold}")
    return np.full(rates.sizes["cell"], float(rate_threshold))


def _correlations(filters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlations between all rows of ``filters`` (one array per set) and each row's set."""
    owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(filters)])
    stacked = np.concatenate(filters)
    centred = stacked - stacked.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    unit = np.divide(centred, norms[:, None], out=np.zeros_like(centred), where=norms[:, None] > 0)
    corr = unit @ unit.T
    corr[norms == 0, :] = np.nan                     # a flat filter has no correlation
    corr[:, norms == 0] = np.nan
    return corr, owner


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def _pairwise_similarity(filters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Within/across-combination correlations of one cell's per-window spatial filters.

    ``filters[i]``: ``(n_i, pixels)`` for combination ``i``. Returns, per
    combination, the mean correlation over pairs of distinct windows inside it
    and over pairs of one of its windows and a window of another combination;
    then the correlations of all within pairs and of all across pairs (each
    unordered pair once), for pooling.
    """
    n_sets = len(filters)
    within, across = np.full(n_sets, np.nan), np.full(n_sets, np.nan)
    corr, owner = _correlations(filters)
    distinct = ~np.eye(len(owner), dtype=bool)
    for i in range(n_sets):
        mine = owner == i
        within[i] = _nanmean(corr[np.ix_(mine, mine)][distinct[np.ix_(mine, mine)]])
        across[i] = _nanmean(corr[np.ix_(mine, ~mine)].ravel())
    upper = np.triu(np.ones(corr.shape, dtype=bool), k=1)
    same = owner[:, None] == owner[None, :]
    return within, across, corr[upper & same], corr[upper & ~same]


@accept_seed_alias
def combination_irfs(model: nn.Module, stimulus: Any, loadings: xr.DataArray, rates: xr.DataArray,
                     combinations: xr.Dataset | Sequence[str] | None = None,
                     cells: Sequence[int] | None = None, *, rate_threshold: float | None = None,
                     max_times_per_set: int = 20, random_state: int = 0, threshold: float = 0.0,
                     mean_irf: bool = True, batch_size: int = DEFAULT_PAIRED_BATCH_SIZE,
                     device: str | torch.device = "cpu", progress: bool = False) -> xr.Dataset:
    """IRFs at windows where a mode combination is active, per combination and cell.

    For each combination ``s`` and cell ``k``: the windows labelled ``s`` where
    the cell's rate exceeds its threshold (at most ``max_times_per_set`` drawn
    at random with ``random_state``); the IRFs there (:func:`retcodec.analysis.irf.irf`), each
    IRF's rank-1 filters (:func:`retcodec.analysis.irf.rank1`), their averages, and the
    similarity of the spatial filters within and across combinations.

    Parameters
    ----------
    model, stimulus : as for :func:`retcodec.analysis.irf.irf`. The windows' ``time``
        (seconds for recordings and Windows, the window index for arrays) must
        hold every time of ``loadings``.
    loadings : ``(time, mode)`` mode loadings at those windows.
    rates : ``(time, cell)`` firing rates (model or recorded, Hz) holding every
        time of ``loadings`` and the analysed cells.
    combinations : the Dataset of :func:`mode_combinations` (its per-window
        labels and its ``combination`` coordinate are used), a list of labels
        (windows labelled with ``threshold``), or None (the frequent sets of
        ``mode_combinations(loadings, threshold)``).
    cells : cell ids (default the model's cells).
    rate_threshold : a cell fires when its rate exceeds this (Hz); None: its
        mean rate over ``loadings``' windows.
    max_times_per_set : windows per (combination, cell), drawn without replacement.
    mean_irf : also return the average IRF per (combination, cell).

    Returns
    -------
    xarray.Dataset
        Over ``combination``, ``cell``, ``lag``, ``y``, ``x``, ``draw``:

        * ``spatial (combination, cell, y, x)``, ``temporal (combination, cell, lag)``:
          averages of the per-window unit-norm rank-1 filters (sign convention of
          :func:`~retcodec.analysis.rank1.rank1`); ``singular_value_share (combination, cell)``;
        * ``mean_irf (combination, cell, lag, y, x)`` (with ``mean_irf=True``);
        * ``n_times (combination, cell)`` and ``selected_time (combination, cell,
          draw)`` (NaN-padded) of the windows used;
        * ``within_set_similarity (combination, cell)``: mean Pearson correlation of
          the spatial filters over pairs of distinct windows of the combination
          (NaN with fewer than two windows); ``across_set_similarity (combination,
          cell)``: over pairs of one window of the combination and one of another
          combination (same cell); ``*_cell (cell)``: pooled over all pairs of the
          cell; ``*_pooled``: over all pairs of all cells;
        * ``members (combination, mode)``, ``rate_threshold (cell)``.
        All entries of a (combination, cell) without windows are NaN.
    """
    if int(max_times_per_set) < 1:
        raise ConfigurationError(f"max_times_per_set must be >= 1, got {max_times_per_set}")
    loadings = check_loadings(loadings)
    if not isinstance(rates, xr.DataArray) or set(rates.dims) != {"time", "cell"}:
        raise ShapeError(f"rates must be a DataArray (time, cell), got {getattr(rates, 'dims', rates)}")
    loadings, rates = align_time(loadings, rates.transpose("time", "cell"), names=("loadings", "rates"))
    cell_ids = model_cells(model) if cells is None else np.atleast_1d(np.asarray(cells))
    rates = _rates_of_cells(rates, cell_ids)
    labels, sets = _combination_table(loadings, combinations, threshold)
    if not sets:
        raise ConfigurationError("there is no combination to analyse (no frequent set of active modes); "
                                 "lower the threshold or pass combinations=")
    source = resolve_stimulus(model, stimulus)
    window_of_row = match_times(source.time, loadings["time"].values,
                                what="the stimulus windows (time)", reference="loadings")
    thresholds = _rate_thresholds(rates, rate_threshold)
    firing = rates.values > thresholds[None, :]
    chosen = _select_times(labels, firing, sets, int(max_times_per_set), random_state)
    result = _irfs_of_choice(model, source, cell_ids, chosen, window_of_row, mean_irf,
                             batch_size, device, progress)
    return _combination_dataset(result, chosen, sets, cell_ids, loadings, thresholds,
                                window_shape(source), mean_irf,
                                dict(rate_threshold=rate_threshold, max_times_per_set=max_times_per_set,
                                     seed=random_state, threshold=threshold, batch_size=batch_size,
                                     device=str(device)))


def _rates_of_cells(rates: xr.DataArray, cell_ids: np.ndarray) -> xr.DataArray:
    have = (rates["cell"].values if "cell" in rates.coords else np.arange(rates.sizes["cell"])).tolist()
    position = {c: i for i, c in enumerate(have)}
    missing = [c for c in cell_ids.tolist() if c not in position]
    if missing:
        raise ShapeError(f"rates lack cells {missing} (they hold {have})")
    return rates.isel(cell=[position[c] for c in cell_ids.tolist()])


def _irfs_of_choice(model: nn.Module, source: Any, cell_ids: np.ndarray, chosen: list[list[np.ndarray]],
                    window_of_row: np.ndarray, mean_irf: bool, batch_size: int, device: Any,
                    progress: bool) -> dict[str, dict]:
    """``filters``: ``(set, cell position, row) -> (spatial, temporal, share)``; ``sums``:
    ``(set, cell position) -> sum of the IRFs`` (with ``mean_irf``).

    One IRF per needed (row, cell) pair (:func:`~retcodec.analysis.irf.iter_paired_irf`),
    a batch at a time, reduced at once: nothing larger than a batch is held.
    """
    needed: dict[tuple[int, int], list[int]] = {}        # (row, cell position) -> [set]
    for s, per_cell in enumerate(chosen):
        for k, rows in enumerate(per_cell):
            for row in rows.tolist():
                needed.setdefault((int(row), k), []).append(s)
    pairs = sorted(needed)
    filters: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}
    sums: dict[tuple[int, int], np.ndarray] = {}
    if not pairs:
        return {"filters": filters, "sums": sums}
    rows = np.array([row for row, _ in pairs], dtype=np.int64)
    cells = cell_ids[np.array([k for _, k in pairs], dtype=np.int64)]
    for sl, block in iter_paired_irf(model, source, window_of_row[rows], cells, batch_size=batch_size,
                                     device=device, progress=progress):
        values = block.astype(np.float64)                      # (b, lag, y, x)
        spatial, temporal, _, share, _, _ = rank1_matrices(values.reshape(len(values), values.shape[1], -1))
        for j, (row, k) in enumerate(pairs[sl]):
            for s in needed[(row, k)]:
                filters[(s, k, row)] = (spatial[j], temporal[j], share[j])
                if mean_irf:
                    sums[(s, k)] = sums.get((s, k), 0.0) + values[j]
    return {"filters": filters, "sums": sums}


def _combination_dataset(result: dict[str, Any], chosen: list[list[np.ndarray]], sets: list[str],
                         cell_ids: np.ndarray, loadings: xr.DataArray, thresholds: np.ndarray,
                         window_shape: tuple[int, ...], mean_irf: bool,
                         params: dict[str, Any]) -> xr.Dataset:
    n_lag, height, width = window_shape
    n_sets, n_cells = len(sets), len(cell_ids)
    n_draw = max([len(r) for per_cell in chosen for r in per_cell] + [0])
    spatial = np.full((n_sets, n_cells, height * width), np.nan)
    temporal = np.full((n_sets, n_cells, n_lag), np.nan)
    share = np.full((n_sets, n_cells), np.nan)
    n_times = np.zeros((n_sets, n_cells), dtype=np.int64)
    selected = np.full((n_sets, n_cells, n_draw), np.nan)
    within = np.full((n_sets, n_cells), np.nan)
    across = np.full((n_sets, n_cells), np.nan)
    within_cell, across_cell = np.full(n_cells, np.nan), np.full(n_cells, np.nan)
    within_pairs, across_pairs = [], []
    per_cell_corr: list[tuple[np.ndarray, np.ndarray]] = []
    time_values = loadings["time"].values.astype(np.float64)
    filters = result["filters"]
    for k in range(n_cells):
        per_set = []
        for s in range(n_sets):
            rows = chosen[s][k]
            n_times[s, k] = rows.size
            selected[s, k, :rows.size] = time_values[rows]
            got = [filters[(s, k, int(r))] for r in rows]
            per_set.append(np.array([g[0] for g in got]).reshape(len(got), height * width))
            if got:
                spatial[s, k] = per_set[-1].mean(axis=0)
                temporal[s, k] = np.mean([g[1] for g in got], axis=0)
                share[s, k] = np.mean([g[2] for g in got])
        within[:, k], across[:, k], w_pairs, a_pairs = _pairwise_similarity(per_set)
        per_cell_corr.append(_correlations(per_set) if per_set else (np.zeros((0, 0)), np.zeros(0)))
        within_cell[k], across_cell[k] = _nanmean(w_pairs), _nanmean(a_pairs)
        within_pairs.append(w_pairs)
        across_pairs.append(a_pairs)
    pooled = (_nanmean(np.concatenate(within_pairs)), _nanmean(np.concatenate(across_pairs)))
    spread = similarity_statistics(per_cell_corr, random_state=int(params.get("seed") or 0))
    coords = {"combination": ("combination", np.array(sets, dtype=str)), "cell": ("cell", cell_ids),
              "lag": ("lag", np.arange(1, n_lag + 1) * 0.01, {"units": "s"}),
              "y": ("y", np.arange(height), {"units": "stimulus pixels"}),
              "x": ("x", np.arange(width), {"units": "stimulus pixels"}),
              "mode": loadings["mode"].values}
    modes = [str(m) for m in loadings["mode"].values]
    members = np.array([[m in label.split(SEPARATOR) for m in modes] for label in sets],
                       dtype=bool).reshape(n_sets, len(modes))
    ds = xr.Dataset(
        {"spatial": (("combination", "cell", "y", "x"), spatial.reshape(n_sets, n_cells, height, width),
                     {"long_name": "mean over windows of the unit-norm rank-1 spatial filters"}),
         "temporal": (("combination", "cell", "lag"), temporal,
                      {"long_name": "mean over windows of the unit-norm rank-1 temporal filters"}),
         "singular_value_share": (("combination", "cell"), share,
                                  {"long_name": "mean rank-1 variance share s1^2 / sum s^2"}),
         "n_times": (("combination", "cell"), n_times, {"long_name": "windows used"}),
         "selected_time": (("combination", "cell", "draw"), selected,
                           {"long_name": "time of the windows used (NaN padded)",
                            **({"units": loadings["time"].attrs["units"]}
                               if "units" in loadings["time"].attrs else {})}),
         "within_set_similarity": (("combination", "cell"), within, {
             "long_name": "mean Pearson correlation of spatial filters over pairs of distinct "
                          "windows of the combination (same cell)"}),
         "across_set_similarity": (("combination", "cell"), across, {
             "long_name": "mean Pearson correlation of spatial filters over pairs of a window of the "
                          "combination and a window of another combination (same cell)"}),
         "within_set_similarity_cell": ("cell", within_cell,
                                        {"long_name": "within-combination pairs of the cell, pooled"}),
         "across_set_similarity_cell": ("cell", across_cell,
                                        {"long_name": "across-combination pairs of the cell, pooled"}),
         "within_set_similarity_pooled": ((), pooled[0], {"long_name": "all within pairs, all cells"}),
         "across_set_similarity_pooled": ((), pooled[1], {"long_name": "all across pairs, all cells"}),
         **_spread_variables(spread),
         "n_moments": ("combination", n_times.sum(axis=1),
                       {"long_name": "moments (windows) used, summed over cells"}),
         "members": (("combination", "mode"), members),
         "rate_threshold": ("cell", thresholds, {"units": "Hz"})},
        coords=coords,
        attrs=provenance_attrs(params, method="combination_irfs",
                               similarity="Pearson correlation over pixels of rank-1 spatial filters"))
    if mean_irf:
        irf = np.full((n_sets, n_cells, n_lag, height, width), np.nan)
        for (s, k), total in result["sums"].items():
            irf[s, k] = total / n_times[s, k]
        ds["mean_irf"] = (("combination", "cell", "lag", "y", "x"), irf.astype(np.float32),
                          {"long_name": "mean IRF over the windows used", "units": IRF_UNITS})
    return ds


def _spread_variables(spread: dict[str, Any]) -> dict[str, tuple]:
    """Bootstrap intervals (over cells) and the shuffled-label null of the pooled similarities."""
    out: dict[str, tuple] = {}
    for name in ("within", "across", "difference"):
        for end in ("low", "high"):
            out[f"{name}_similarity_{end}"] = ((), spread[f"{name}_{end}"], {
                "long_name": f"pooled {name} similarity, 95% bootstrap interval over cells, {end}"})
    out["similarity_difference"] = ((), spread["difference"], {"long_name": "pooled within - across similarity"})
    out["similarity_difference_null"] = (("shuffle",), spread["null"], {
        "long_name": "within - across with the combination labels of each cell's moments shuffled"})
    out["similarity_difference_p"] = ((), spread["p_value"], {
        "long_name": "(1 + #{null >= observed}) / (1 + shuffles)"})
    return out
