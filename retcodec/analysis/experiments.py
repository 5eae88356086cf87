"""In-silico experiments: silence model channels, predict each cell's change, test it against the truth.

Every effect is a **fractional change of a cell's mean rate** over the analysed
windows, ``(mean silenced - mean intact) / mean intact`` (``-1``: the cell
falls silent; ``0``: no change). Channels are silenced after their layer's
ReLU (:mod:`retcodec.engine.perturb`).

* :func:`mode_experiments` (the paper's causal test of modes, for the retina):
  for each mode, dose curves (silence the top ``round(p C)`` channels ranked by
  the mode's weights, or keep only them), the effect of silencing the mode's
  channels overall and at the moments the mode is active, random channel sets
  of the same size as a null distribution, and specificity (ablation:
  AUC off - AUC on of the ratio-vs-fraction curves; preservation: on - off)
  where a mode's cells are those whose rate correlates with its loadings at
  ``r >= cell_threshold``. Activation modes go through the same analysis as
  the control.
* :func:`interneuron_experiments`: each recorded interneuron is silenced as its
  direction in the hidden activity (:mod:`retcodec.analysis.interneuron_directions`,
  projected out of each layer) and, as the control, as its best-matching model
  channel (held-out match of :func:`retcodec.match_interneurons`);
  ``predicted_effect (interneuron, cell)`` with an interval over held-out time
  blocks, a correlational baseline (minus the correlation of the channel's
  activity with each cell's rate), and the blind spots (``blind_spot``,
  ``poorly_fit``).
* :func:`score_against_truth`: Spearman correlation and sign accuracy of the
  predictions (and of the baseline) against true silencing effects.
* :func:`experiments`: all of it in one Dataset (``experiments.nc``).
* :func:`hypotheses`: ranked, structured, plain-English hypotheses, one per
  silenced interneuron type and per mode, and :func:`hypothesis_lines` (the text of
  ``hypotheses.txt``, with what the model cannot predict and how it scores);
  from :mod:`retcodec.analysis.lab_hypotheses`, re-exported here with :class:`Hypothesis`.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.analysis.hypotheses import (CELL_THRESHOLD, CLEAR_EFFECT, INTERVAL_Z, MIN_FEVE, WEIGHT_MASS,
                                         Hypothesis)
from retcodec.analysis.lab_hypotheses import hypotheses, hypothesis_lines
from retcodec.analysis.silencing_effects import (N_BLOCKS, block_effects, channel_match_variables,
                                                 check_same_interneurons,
                                                 consistent_directions, direction_experiments, direction_variables,
                                                 fit_variables, fractional_change, standard_error)
from retcodec.analysis.interneuron_directions import MIN_MATCH_R
from retcodec.analysis.statistics import pearson
from retcodec.engine.perturb import (DEFAULT_BATCH_SIZE, KINDS, Silencer, check_fractions, curve_auc,
                                     dose_sets, model_input, specificity)
from retcodec.errors import ConfigurationError, MissingDataError, ShapeError

__all__ = ["experiments", "effect_scores", "SilencingRuns", "mode_experiments", "interneuron_experiments",
           "score_against_truth", "summary",
           "hypotheses", "hypothesis_lines", "Hypothesis", "fractional_change", "block_effects", "subsample_index",
           "mode_weights", "mode_channel_set", "truth_type", "DEFAULT_FRACTIONS", "CELL_THRESHOLD",
           "SIGN_THRESHOLD", "MAX_WINDOWS", "N_RANDOM", "N_BLOCKS", "MATCH_MARGIN", "WEIGHT_MASS",
           "ACTIVE_QUANTILE", "CLEAR_EFFECT", "MIN_FEVE", "MIN_MATCH_R"]

# CELL_THRESHOLD, WEIGHT_MASS, CLEAR_EFFECT and INTERVAL_Z are declared in retcodec.analysis.hypotheses
# (its sentences quote them) and imported from there.

#: shares of a layer's channels silenced along a dose curve (8 channels: 0, 1, 2, 4, 6, 8)
DEFAULT_FRACTIONS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
#: true |effect| from which the sign of a prediction is scored
SIGN_THRESHOLD = 0.2
#: windows analysed (evenly spaced over the stimulus); None: all
MAX_WINDOWS = 1500
#: random channel sets per mode (the null distribution)
N_RANDOM = 20
#: channels whose peak correlation with an interneuron is within this of the best are alternatives
MATCH_MARGIN = 0.05
#: how each interneuron is silenced: "heldout" (its direction where that predicts the recording
#: better on held-out data than the best single unit, else that unit's channel), "direction", "channel".
#: The default scored best on the tuning retinas (mean Spearman over tuning-1000/1001: channel 0.57,
#: heldout 0.53, direction 0.42); the direction is still computed, kept and scored as a mapping.
MAPPINGS = ("heldout", "direction", "channel")
MAPPING = "channel"
#: held-out r by which a direction must beat the best single unit to be preferred
MAPPING_MARGIN = 0.0
#: restrict each interneuron's direction to channels acting like its class (bipolar: excitation)
CLASS_CONSISTENT = True
#: a mode is active where its loading exceeds this quantile
ACTIVE_QUANTILE = 0.9
#: names of the true effect ``(interneuron_type, cell)`` in a truth Dataset
TRUTH_VARIABLES = ("effect", "silencing_effect")


# =========================================================================== small pieces
def subsample_index(n: int, max_windows: int | None) -> np.ndarray:
    """``max_windows`` evenly spaced window indices out of ``n`` (all when ``None`` or ``>= n``)."""
    if n < 1:
        raise ConfigurationError("there are no windows to analyse")
    if max_windows is None or max_windows >= n:
        return np.arange(n)
    if max_windows < 2 * N_BLOCKS:
        raise ConfigurationError(f"max_windows must be at least {2 * N_BLOCKS}, got {max_windows}")
    return np.unique(np.linspace(0, n - 1, int(max_windows)).round().astype(np.int64))


def mode_weights(modes: xr.Dataset, mode: Any) -> np.ndarray:
    """Channel weights of one mode, ``(channel,)``: the ``pos`` part, or magnitudes of a signed dictionary."""
    w = modes["modes"].sel(mode=mode)
    if "sign" in w.dims:
        return np.asarray(w.sel(sign="pos").values if "pos" in w["sign"].values else
                          np.abs(w).sum("sign").values, dtype=np.float64)
    return np.abs(np.asarray(w.values, dtype=np.float64))


def mode_channel_set(weights: np.ndarray, mass: float = WEIGHT_MASS) -> np.ndarray:
    """The top channels whose weights add up to ``mass`` of the total (at least one)."""
    w = np.clip(np.asarray(weights, np.float64), 0, None)
    order = np.argsort(-w, kind="stable")
    total = w.sum()
    if total <= 0:
        return order[:0]
    k = int(np.searchsorted(np.cumsum(w[order]) / total, mass - 1e-12) + 1)
    return np.sort(order[:k])


def _random_sets(n_channels: int, size: int, n_random: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_random`` distinct random subsets of ``size`` channels (all of them when there are fewer)."""
    total = math.comb(n_channels, size)
    if total <= n_random:
        return [np.array(c) for c in itertools.combinations(range(n_channels), size)]
    seen: set[tuple[int, ...]] = set()
    out = []
    while len(out) < n_random:
        c = tuple(sorted(rng.choice(n_channels, size=size, replace=False).tolist()))
        if c not in seen:
            seen.add(c)
            out.append(np.array(c))
    return out


class SilencingRuns:
    """Rates of single-layer silenced sets over a :class:`Silencer`'s windows, each computed once.

    Sets are keyed by the silenced mask, so a set kept alone (``keep=True``) and
    its complement silenced share one run. ``intact``: the unperturbed rates.
    """

    def __init__(self, silencer: Silencer) -> None:
        self.silencer = silencer
        self.intact = silencer.intact().astype(np.float64)
        self._cache: dict[tuple, np.ndarray] = {}

    def rates(self, layer: str, channels: Sequence[int], keep: bool = False) -> np.ndarray:
        mask = self.silencer.masks({layer: list(channels)}, keep=keep)[layer]
        key = (layer, mask.tobytes())
        if key not in self._cache:
            self._cache[key] = (self.intact if not mask.any() else
                                self.silencer.rates({layer: np.flatnonzero(mask)}).astype(np.float64))
        return self._cache[key]

    def effect(self, layer: str, channels: Sequence[int], keep: bool = False,
               where: np.ndarray | None = None) -> np.ndarray:
        return fractional_change(self.rates(layer, channels, keep), self.intact, where)

    @property
    def n_runs(self) -> int:
        return len(self._cache)


def _align_loadings(loadings: xr.DataArray, windows: Any, index: np.ndarray) -> np.ndarray:
    """Loadings ``(time, mode)`` at the analysed windows (by time coordinate, else by position)."""
    z = loadings.transpose("time", "mode")
    times = getattr(windows, "time", None)
    if times is not None and "time" in z.coords:
        want = np.asarray(times)[index]
        have = np.asarray(z["time"].values, dtype=np.float64)
        pos = np.searchsorted(have, want)
        pos = np.clip(pos, 0, len(have) - 1)
        if np.allclose(have[pos], want, atol=1e-9, rtol=0):
            return np.asarray(z.values, np.float64)[pos]
    if z.sizes["time"] == len(windows):
        return np.asarray(z.values, np.float64)[index]
    raise ShapeError(f"the modes' loadings cover {z.sizes['time']} time points that do not match the "
                     f"{len(windows)} analysed windows; pass the windows the modes were fitted on")


# =========================================================================== mode experiments
def mode_experiments(runs: SilencingRuns, modes: Mapping[str, xr.Dataset], windows: Any, index: np.ndarray,
                     source: str = "contribution", fractions: Sequence[float] = DEFAULT_FRACTIONS,
                     n_random: int = N_RANDOM, cell_threshold: float = CELL_THRESHOLD,
                     active_quantile: float = ACTIVE_QUANTILE, mass: float = WEIGHT_MASS,
                     n_blocks: int = N_BLOCKS, random_state: int = 0) -> xr.Dataset:
    """Dose curves, effects, random controls and specificity of every mode of ``modes`` (layer -> Dataset).

    Returns a Dataset over ``mode`` (labels ``"<layer>/<mode>"`` for
    contribution modes, ``"<layer>/activation/<mode>"`` for activation modes)
    with ``ratio (mode, kind, fraction, cell)`` (mean rate perturbed / intact),
    ``auc (mode, kind, group)``, ``specificity (mode, kind)``,
    ``cell_correlation`` and ``mode_cell (mode, cell)``,
    ``mode_channels (mode, channel)``, ``mode_effect``, ``mode_effect_se``,
    ``mode_effect_active (mode, cell)`` and ``mode_control_effect (mode, draw, cell)``.
    """
    f = check_fractions(fractions)
    rng = np.random.default_rng(random_state)
    intact = runs.intact
    rows: list[dict[str, Any]] = []
    null_sets: dict[tuple[str, int], list[np.ndarray]] = {}
    n_channels = max(runs.silencer.points[layer].n_channels for layer in modes)
    for layer, ds in modes.items():
        if layer not in runs.silencer.points:
            raise ConfigurationError(f"modes of layer {layer!r} but silencing is set up for "
                                     f"{list(runs.silencer.points)}")
        C = runs.silencer.points[layer].n_channels
        if ds.sizes.get("channel") != C:
            raise ShapeError(f"modes of {layer!r} have {ds.sizes.get('channel')} channels, the layer {C}")
        Z = _align_loadings(ds["loadings"], windows, index)
        for j, mode in enumerate(ds["mode"].values):
            w = mode_weights(ds, mode)
            if not (w > 0).any():
                continue
            rows.append(_one_mode(runs, layer, mode, source, w, Z[:, j], f, n_random, cell_threshold,
                                  active_quantile, mass, n_blocks, rng, intact, n_channels, null_sets))
    return _modes_dataset(rows, f, intact.shape[1], n_channels, n_random, source)


def _one_mode(runs: SilencingRuns, layer: str, mode: Any, source: str, w: np.ndarray, z: np.ndarray,
              f: np.ndarray, n_random: int, cell_threshold: float, active_quantile: float,
              mass: float, n_blocks: int, rng: np.random.Generator, intact: np.ndarray,
              n_channels: int, null_sets: dict) -> dict[str, Any]:
    C = len(w)
    order = np.argsort(-w, kind="stable")
    ratio = np.full((len(KINDS), len(f), intact.shape[1]), np.nan)
    base = intact.mean(axis=0)
    for k, kind in enumerate(KINDS):
        for i, top in enumerate(dose_sets(order, f)):
            ratio[k, i] = runs.rates(layer, top, keep=kind == "preserve").mean(axis=0) / base
    r = pearson(intact, z[:, None], axis=0)
    cells = np.nan_to_num(r, nan=-np.inf) >= cell_threshold
    auc = curve_auc(f, np.moveaxis(ratio, 1, -1))              # (kind, cell)
    groups = np.stack([_group_mean(auc, cells), _group_mean(auc, ~cells)], axis=-1)  # (kind, group)
    spec = np.array([specificity(groups[k, 0], groups[k, 1], kind) for k, kind in enumerate(KINDS)])
    chans = mode_channel_set(w, mass)
    silenced = runs.rates(layer, chans)
    threshold = np.quantile(z, active_quantile)
    active = (z >= threshold) & (z > 0) if (z > 0).any() else z >= threshold
    control = np.full((_n_random_max(n_random, C), intact.shape[1]), np.nan)
    key = (layer, len(chans))
    if key not in null_sets:            # one null distribution per layer and set size
        null_sets[key] = _random_sets(C, len(chans), n_random, rng)
    for d, s in enumerate(null_sets[key]):
        control[d] = runs.effect(layer, s)
    in_layer = np.zeros(n_channels, dtype=bool)
    in_layer[chans] = True
    label = f"{layer}/{mode}" if source == "contribution" else f"{layer}/{source}/{mode}"
    number = int(mode) if isinstance(mode, (int, np.integer)) else -1
    return {"label": label, "layer": layer, "number": number, "ratio": ratio, "auc": groups,
            "spec": spec, "r": r, "cells": cells, "channels": in_layer,
            "effect": fractional_change(silenced, intact),
            "effect_se": standard_error(block_effects(silenced, intact, n_blocks)),
            "effect_active": fractional_change(silenced, intact, active), "control": control,
            "weights": np.pad(w / max(w.max(), 1e-300), (0, n_channels - C), constant_values=np.nan)}


def _n_random_max(n_random: int, n_channels: int) -> int:
    """Rows of the random-control array: ``n_random`` (or fewer sets exist for every size)."""
    return min(int(n_random), max(math.comb(n_channels, k) for k in range(n_channels + 1)))


def _group_mean(auc: np.ndarray, where: np.ndarray) -> np.ndarray:
    return auc[:, where].mean(axis=1) if where.any() else np.full(auc.shape[0], np.nan)


def _modes_dataset(rows: list[dict[str, Any]], f: np.ndarray, n_cells: int, n_channels: int,
                   n_random: int, source: str) -> xr.Dataset:
    if not rows:
        return xr.Dataset()
    draws = max(1, max(r["control"].shape[0] for r in rows))

    def stack(key: str) -> np.ndarray:
        return np.stack([r[key] for r in rows])

    control = np.full((len(rows), draws, n_cells), np.nan)
    for i, r in enumerate(rows):
        control[i, :r["control"].shape[0]] = r["control"]
    return xr.Dataset(
        {"ratio": (("mode", "kind", "fraction", "cell"), stack("ratio"),
                   {"long_name": "mean rate perturbed / mean rate intact"}),
         "auc": (("mode", "kind", "group"), stack("auc"),
                 {"long_name": "area under ratio vs fraction, averaged over the group's cells"}),
         "specificity": (("mode", "kind"), stack("spec"),
                         {"long_name": "ablate: AUC off - AUC on; preserve: AUC on - AUC off"}),
         "cell_correlation": (("mode", "cell"), stack("r"),
                              {"long_name": "Pearson r of the cell's rate with the mode's loadings"}),
         "mode_cell": (("mode", "cell"), stack("cells"), {"long_name": "cell_correlation >= threshold"}),
         "mode_channels": (("mode", "channel"), stack("channels"),
                           {"long_name": "channels silenced as the mode's channels"}),
         "mode_weight": (("mode", "channel"), stack("weights"),
                         {"long_name": "channel weight / largest weight of the mode"}),
         "mode_effect": (("mode", "cell"), stack("effect"),
                    {"long_name": "fractional change of mean rate, mode's channels silenced"}),
         "mode_effect_se": (("mode", "cell"), stack("effect_se"),
                       {"long_name": "standard error of effect over time blocks"}),
         "mode_effect_active": (("mode", "cell"), stack("effect_active"),
                           {"long_name": "fractional change of mean rate where the mode is active"}),
         "mode_control_effect": (("mode", "draw", "cell"), control,
                            {"long_name": "fractional change, random channel set of the same size "
                                          "in the same layer"})},
        coords={"mode": [r["label"] for r in rows], "mode_layer": ("mode", [r["layer"] for r in rows]),
                "mode_number": ("mode", [r["number"] for r in rows],
                                {"long_name": "mode index in its layer's modes (-1: not an integer)"}),
                "mode_source": ("mode", [source] * len(rows)),
                "kind": list(KINDS), "fraction": f, "group": ["on", "off"],
                "channel": np.arange(n_channels), "draw": np.arange(draws)})


# =========================================================================== interneuron experiments
def _peak_correlations(match: xr.Dataset, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Per interneuron and channel: the largest all-data r over positions, ``{layer: (interneuron, channel)}``."""
    out = {}
    for layer in layers:
        name = f"correlation_map_{layer}"
        if name in match:
            maps = np.asarray(match[name].values, np.float64)
            out[layer] = np.nanmax(maps.reshape(*maps.shape[:2], -1), axis=-1)
    return out


def interneuron_experiments(runs: SilencingRuns, match: xr.Dataset, n_blocks: int = N_BLOCKS,
                            margin: float = MATCH_MARGIN, directions: xr.Dataset | None = None,
                            min_match_r: float = MIN_MATCH_R, class_consistent: bool = CLASS_CONSISTENT,
                            mapping: str = MAPPING) -> xr.Dataset:
    """Silence each recorded interneuron in the model; predicted effect on every cell.

    ``mapping`` chooses per interneuron (see :func:`experiments`); both are kept
    (``mapping`` dim of ``mapping_effect``/``mapping_effect_se``):
    ``"direction"`` projects the interneuron's fitted direction (``directions``,
    from :func:`retcodec.analysis.interneuron_directions.map_interneurons`) out of
    each hidden layer; ``"channel"`` (the control) silences its best-matching
    channel. ``predicted_effect`` and its interval are those of the direction
    (of the channel when no directions are given or an interneuron's direction is
    empty; ``prediction_mapping`` says which), with ``effect_se`` over ``n_blocks``
    time blocks and ``effect_low``/``effect_high`` (95 %; for the channel widened
    to the alternative channels whose peak r is within ``margin`` of the best).
    Also ``block_effect (interneuron, block, cell)``, ``baseline_prediction``
    (minus the Pearson r of the matched channel's summed activity with the
    rate), ``single_effect (unit, cell)``, the match (``matched_layer``,
    ``matched_channel``, ``heldout_correlation``, ``alternatives``) and, with
    directions, ``direction (interneuron, unit)``, ``direction_heldout_correlation``,
    ``direction_chance_p95`` and ``blind_spot (interneuron)`` (no model
    counterpart: :func:`~retcodec.analysis.interneuron_directions.blind_spots`). With
    ``class_consistent``, a bipolar cell's direction keeps only channels that act as
    excitation in the model and an amacrine cell's only inhibitory ones
    (:func:`~retcodec.analysis.silencing_effects.consistent_directions`).
    """
    points = runs.silencer.points
    intact = runs.intact
    layers = list(points)
    units = [(l, c) for l in layers for c in range(points[l].n_channels)]
    single = np.stack([runs.effect(l, [c]) for l, c in units])
    se_single = np.stack([standard_error(block_effects(runs.rates(l, [c]), intact, n_blocks))
                          for l, c in units])
    peaks = _peak_correlations(match, layers)
    best_layer = [str(v) for v in match["best_layer"].values]
    best_channel = [int(v) for v in match["best_channel"].values]
    missing = sorted(set(best_layer) - set(layers))
    if missing:
        raise ConfigurationError(f"interneurons are matched to layers {missing} that are not silenced "
                                 f"(silencing is set up for {layers})")
    n = len(best_layer)
    pred = np.zeros((n, intact.shape[1]))
    se, low, high = np.zeros_like(pred), np.zeros_like(pred), np.zeros_like(pred)
    blocks = np.zeros((n, n_blocks, intact.shape[1]))
    baseline = np.full_like(pred, np.nan)
    alternatives = []
    activity = {l: _activity(runs, l) for l in layers}
    for i, (layer, ch) in enumerate(zip(best_layer, best_channel)):
        u = units.index((layer, ch))
        pred[i], se[i] = single[u], se_single[u]
        blocks[i] = block_effects(runs.rates(layer, [ch]), intact, n_blocks)
        alts = _alternatives(peaks, i, layer, ch, margin)
        ids = [units.index(a) for a in alts]
        low[i] = np.min(single[ids] - INTERVAL_Z * se_single[ids], axis=0)
        high[i] = np.max(single[ids] + INTERVAL_Z * se_single[ids], axis=0)
        alternatives.append(",".join(f"{l}/{c}" for l, c in alts))
        if activity[layer] is not None:
            baseline[i] = -pearson(activity[layer][:, ch][:, None], intact, axis=0)
    mappings, effects, ses = ["channel"], [pred.copy()], [se.copy()]
    used = np.array(["channel"] * n, dtype=object)
    extra: dict[str, Any] = channel_match_variables(match, min_match_r)
    if directions is not None:
        check_same_interneurons(match, directions)
        if class_consistent and "cell_class" in match.coords:
            directions = consistent_directions(directions, single, [f"{l}/{c}" for l, c in units],
                                               match["cell_class"].values)
        found = direction_experiments(runs.silencer, intact, directions, n_blocks)
        mappings, effects, ses = ["direction", "channel"], [found["effect"], pred.copy()], [found["se"], se.copy()]
        ok = ~found["empty"] & _prefer_direction(match, directions, mapping)
        pred[ok], se[ok], blocks[ok] = found["effect"][ok], found["se"][ok], found["blocks"][ok]
        low[ok] = pred[ok] - INTERVAL_Z * se[ok]
        high[ok] = pred[ok] + INTERVAL_Z * se[ok]
        used[ok] = "direction"
        extra = direction_variables(directions, min_match_r, [f"{l}/{c}" for l, c in units], match, ok)
    coords = {"interneuron": match["interneuron"].values, "block": np.arange(n_blocks),
              "unit": [f"{l}/{c}" for l, c in units], "unit_layer": ("unit", [l for l, _ in units]),
              "unit_channel": ("unit", [c for _, c in units]), "mapping": mappings}
    for name in ("file", "cell_index", "cell_class", "cell_type"):
        if name in match.coords:
            coords[name] = ("interneuron", match[name].values)
    return xr.Dataset(
        {"predicted_effect": (("interneuron", "cell"), pred, {
            "long_name": "(mean silenced rate - mean intact rate) / mean intact rate",
            "description": "the interneuron silenced in the model: its direction projected out of the "
                           "hidden layers' activity (prediction_mapping 'direction') or its best-matching "
                           "channel set to 0 after its ReLU ('channel')"}),
         "prediction_mapping": ("interneuron", used.astype(str)),
         "mapping_effect": (("mapping", "interneuron", "cell"), np.stack(effects), {
             "long_name": "predicted effect under each interneuron-to-model mapping"}),
         "mapping_effect_se": (("mapping", "interneuron", "cell"), np.stack(ses), {
             "long_name": "standard error over time blocks of each mapping's effect"}),
         "effect_se": (("interneuron", "cell"), se, {"long_name": "standard error over time blocks"}),
         "effect_low": (("interneuron", "cell"), low, {"long_name": "lower end of the 95 % interval"}),
         "effect_high": (("interneuron", "cell"), high, {"long_name": "upper end of the 95 % interval"}),
         "block_effect": (("interneuron", "block", "cell"), blocks,
                          {"long_name": "predicted effect within each contiguous time block"}),
         "baseline_prediction": (("interneuron", "cell"), baseline, {
             "long_name": "baseline: -Pearson r of the matched channel's summed activity with the rate"}),
         "single_effect": (("unit", "cell"), single,
                           {"long_name": "fractional change with this channel alone silenced"}),
         "matched_layer": ("interneuron", np.array(best_layer, dtype=str)),
         "matched_channel": ("interneuron", np.array(best_channel)),
         "heldout_correlation": ("interneuron", np.asarray(match["heldout_correlation"].values, float)),
         "alternatives": ("interneuron", np.array(alternatives, dtype=str), {
             "long_name": f"channels whose peak r is within {margin} of the best channel's"}),
         **extra},
        coords=coords)


def _prefer_direction(match: xr.Dataset, directions: xr.Dataset, mapping: str) -> np.ndarray:
    """Which interneurons are silenced as their direction (bool ``(interneuron,)``), by ``mapping``."""
    if mapping not in MAPPINGS:
        raise ConfigurationError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    n = directions.sizes["interneuron"]
    if mapping != "heldout":
        return np.full(n, mapping == "direction")
    direction_r = np.nan_to_num(np.asarray(directions["heldout_correlation"].values, float), nan=-np.inf)
    channel_r = np.nan_to_num(np.asarray(match["heldout_correlation"].values, float), nan=-np.inf)
    return direction_r > channel_r + MAPPING_MARGIN


def _activity(runs: SilencingRuns, layer: str) -> np.ndarray | None:
    try:
        return runs.silencer.activity(layer)
    except ConfigurationError:
        return None


def _alternatives(peaks: Mapping[str, np.ndarray], i: int, layer: str, ch: int,
                  margin: float) -> list[tuple[str, int]]:
    if layer not in peaks:
        return [(layer, ch)]
    best = peaks[layer][i, ch]
    alts = [(l, int(c)) for l, p in peaks.items() for c in np.flatnonzero(p[i] >= best - margin)]
    return alts if (layer, ch) in alts else [(layer, ch), *alts]


# =========================================================================== ground truth
def truth_type(cell_type: str, cell_class: str | None, truth_types: Sequence[str]) -> str | None:
    """The truth's ``interneuron_type`` for a recorded cell: its type, or ``<class>_<type>``; None if absent."""
    types = [str(t) for t in truth_types]
    for name in (str(cell_type), f"{cell_class}_{cell_type}", f"{cell_class}/{cell_type}"):
        if name in types:
            return name
    return None


def effect_scores(predicted: np.ndarray, true: np.ndarray, threshold: float = SIGN_THRESHOLD) -> dict[str, float]:
    """``spearman`` of predicted vs true effects over pairs where both are finite, and
    ``sign_accuracy`` over those with ``|true| >= threshold`` (NaN when too few pairs)."""
    from scipy.stats import spearmanr

    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    use = np.isfinite(predicted) & np.isfinite(true)
    clear = use & (np.abs(true) >= threshold)
    rho = float(spearmanr(predicted[use], true[use]).statistic) if use.sum() > 2 else np.nan
    sign = float(np.mean(np.sign(predicted[clear]) == np.sign(true[clear]))) if clear.any() else np.nan
    return {"spearman": rho, "sign_accuracy": sign}


def score_against_truth(result: xr.Dataset, truth: xr.Dataset,
                        threshold: float = SIGN_THRESHOLD) -> xr.Dataset:
    """Score ``predicted_effect`` and ``baseline_prediction`` against true silencing effects.

    ``truth``: ``effect`` or ``silencing_effect (interneuron_type, cell)``; each interneuron's type comes
    from the ``cell_type`` (and ``cell_class``) coordinates of ``result``.
    Adds ``true_effect (interneuron, cell)`` and the scalars ``spearman``,
    ``sign_accuracy`` (pairs with true ``|effect| >= threshold``),
    ``baseline_spearman``, ``baseline_sign_accuracy``, ``n_scored_pairs``,
    ``n_sign_pairs``.
    """
    name = next((v for v in TRUTH_VARIABLES if v in truth), None)
    if name is None or set(truth[name].dims) != {"interneuron_type", "cell"}:
        raise ShapeError(f"the truth needs one of {list(TRUTH_VARIABLES)} with dims (interneuron_type, cell)")
    if "cell_type" not in result.coords:
        raise ConfigurationError("scoring needs each interneuron's true cell_type; the interneuron "
                                 "files carry none")
    effect = truth[name]
    cells = result["cell"].values
    absent = [c for c in cells.tolist() if c not in effect["cell"].values.tolist()]
    if absent:
        raise ShapeError(f"the truth has no effects for cells {absent}")
    effect = effect.sel(cell=cells)
    classes = result["cell_class"].values if "cell_class" in result.coords else [None] * result.sizes["interneuron"]
    types = [truth_type(t, c, effect["interneuron_type"].values)
             for t, c in zip(result["cell_type"].values, classes)]
    true = np.full((result.sizes["interneuron"], len(cells)), np.nan)
    for i, t in enumerate(types):
        if t is not None:
            true[i] = effect.sel(interneuron_type=t).values
    out = result.assign(true_effect=(("interneuron", "cell"), true, {
        "long_name": "true fractional change of the mean rate when the interneuron's type is silenced"}))
    ok = np.isfinite(true)
    scores: dict[str, float] = {}
    for prefix, name in (("", "predicted_effect"), ("baseline_", "baseline_prediction")):
        for key, value in effect_scores(result[name].values, true, threshold).items():
            scores[f"{prefix}{key}"] = value
    if "mapping_effect" in result:
        effects = result["mapping_effect"].transpose("mapping", "interneuron", "cell").values
        per_method = [effect_scores(e, true, threshold) for e in effects]
        for key in ("spearman", "sign_accuracy"):
            out[f"mapping_{key}"] = ("mapping", [row[key] for row in per_method], {
                "long_name": f"{key.replace('_', ' ')} of each interneuron-to-model mapping's predictions"})
    scores["n_scored_pairs"] = int(ok.sum())
    scores["n_sign_pairs"] = int((ok & (np.abs(true) >= threshold)).sum())
    long = {"spearman": "Spearman r of predicted vs true effects over (interneuron, cell) pairs",
            "sign_accuracy": f"share of pairs with true |effect| >= {threshold} whose sign is predicted",
            "baseline_spearman": "Spearman r of the baseline predictor",
            "baseline_sign_accuracy": "sign accuracy of the baseline predictor",
            "n_scored_pairs": "pairs with a known true effect",
            "n_sign_pairs": f"pairs with true |effect| >= {threshold}"}
    for k, v in scores.items():
        out[k] = ((), v, {"long_name": long[k]})
    out.attrs["unscored_interneurons"] = ",".join(str(i) for i, t in zip(result["interneuron"].values, types)
                                                  if t is None)
    out.attrs["sign_threshold"] = threshold
    return out


# =========================================================================== everything
def _split_modes(modes: Mapping[str, xr.Dataset] | None
                 ) -> tuple[dict[str, xr.Dataset], dict[str, xr.Dataset]]:
    contribution, activation = {}, {}
    for key, ds in (modes or {}).items():
        if str(key).endswith("_activation"):
            activation[str(key)[:-len("_activation")]] = ds
        else:
            contribution[str(key)] = ds
    return contribution, activation


def _read_truth(truth: Any) -> xr.Dataset | None:
    if truth is None or isinstance(truth, xr.Dataset):
        return truth
    try:
        from retcodec.io.truth import read_truth
    except ImportError as err:
        raise MissingDataError(f"cannot read the truth file {truth}: retcodec.io.truth is missing") from err
    return read_truth(truth)


def experiments(model: torch.nn.Module, windows: Any, modes: Mapping[str, xr.Dataset] | None = None,
                interneurons: xr.Dataset | None = None, truth: xr.Dataset | str | Path | None = None,
                cell_types: Sequence[str] | None = None, max_windows: int | None = MAX_WINDOWS,
                fractions: Sequence[float] = DEFAULT_FRACTIONS, n_random: int = N_RANDOM,
                cell_threshold: float = CELL_THRESHOLD, n_blocks: int = N_BLOCKS,
                margin: float = MATCH_MARGIN, sign_threshold: float = SIGN_THRESHOLD,
                how: str = "zero", random_state: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                device: str | torch.device = "cpu", progress: bool = False,
                directions: xr.Dataset | None = None, fit_quality: xr.Dataset | None = None,
                min_match_r: float = MIN_MATCH_R, min_feve: float = MIN_FEVE,
                class_consistent: bool = CLASS_CONSISTENT, mapping: str = MAPPING) -> xr.Dataset:
    """Mode and interneuron silencing experiments, scored against the truth when given.

    Parameters
    ----------
    model : the retina CNN.
    windows : the analysed stimulus (a Windows, array or recording Dataset), the
        windows the modes were fitted on.
    modes : layer -> modes Dataset (``modes (mode, channel, sign)``,
        ``loadings (time, mode)``); keys ``"<layer>_activation"`` are activation
        modes (the control), as in the run's ``modes.nc``.
    interneurons : the Dataset of :func:`retcodec.match_interneurons` (``interneurons.nc``).
    truth : a Dataset with ``effect`` or ``silencing_effect (interneuron_type, cell)``, or a
        truth file path; scored when the interneurons carry their true ``cell_type``
        (attr ``truth_scored`` says whether it was).
    cell_types : optional type of every cell (for the hypotheses).
    max_windows : analyse this many evenly spaced windows (None: all).
    fractions, n_random, cell_threshold : dose steps, random sets per mode, mode-cell threshold.
    n_blocks, margin : time blocks and match margin of the uncertainty.
    sign_threshold : true |effect| from which signs are scored.
    how : ``"zero"`` (silence) or ``"mean"`` (clamp to the mean map), see :func:`retcodec.silence`.
    random_state, batch_size, device, progress : as elsewhere.
    directions : the Dataset of :func:`retcodec.analysis.interneuron_directions.map_interneurons`:
        each interneuron is then silenced as its direction (the single channel stays as the control).
    fit_quality : per-cell ``correlation`` and ``feve (cell)`` of the model on held-out data
        (:func:`retcodec.evaluate`); cells with ``feve < min_feve`` are marked ``poorly_fit``.
    min_match_r : interneurons whose direction's held-out r is below this (or not above chance)
        are marked ``blind_spot``.
    class_consistent : silence only the channels of a direction that act like the
        interneuron's class in the model (bipolar: excitation, amacrine: inhibition).
    mapping : which mapping makes ``predicted_effect``: ``"channel"`` (the best unit's
        channel, the default), ``"direction"``, or ``"heldout"`` (each interneuron's direction
        where it predicts the recording better on held-out data than its best single unit, else
        that unit's channel). Both mappings are kept in ``mapping_effect``.

    Returns
    -------
    Dataset (``experiments.nc``): the variables of :func:`interneuron_experiments`
    (``predicted_effect (interneuron, cell)``, ...), of :func:`mode_experiments`
    (``ratio (mode, kind, fraction, cell)``, ...), ``intact_rate (cell)``, the
    scores of :func:`score_against_truth` when ``truth`` is given, and the
    parameters in the attrs.
    """
    source, _, _, cells = model_input(model, windows)
    contribution, activation = _split_modes(modes)
    layers = list(dict.fromkeys([*contribution, *activation] + (
        [str(l) for l in interneurons["best_layer"].values] if interneurons is not None else []) + (
        [str(l) for l in directions["unit_layer"].values] if directions is not None else [])))
    if not layers:
        raise ConfigurationError("nothing to do: give modes and/or interneurons")
    index = subsample_index(len(source), max_windows)
    silencer = Silencer(model, source, layers, index=index, how=how, batch_size=batch_size,
                        device=device, progress=progress)
    runs = SilencingRuns(silencer)
    parts = []
    if contribution:
        parts.append(mode_experiments(runs, contribution, source, index, "contribution", fractions,
                                      n_random, cell_threshold, n_blocks=n_blocks,
                                      random_state=random_state))
    if activation:
        parts.append(mode_experiments(runs, activation, source, index, "activation", fractions,
                                      0, cell_threshold, n_blocks=n_blocks,        # no null for the control
                                      random_state=random_state))
    parts = [p for p in parts if p.sizes.get("mode")]
    result = xr.concat(parts, dim="mode", data_vars="all", coords="minimal", join="outer",
                       fill_value=np.nan) if len(parts) > 1 else (parts[0] if parts else xr.Dataset())
    if interneurons is not None:
        result = xr.merge([result, interneuron_experiments(runs, interneurons, n_blocks, margin,
                                                                    directions, min_match_r, class_consistent,
                                                                    mapping)],
                          compat="no_conflicts", join="outer", combine_attrs="drop")
    n_cells = runs.intact.shape[1]
    cells = np.asarray(cells) if len(cells) == n_cells else np.arange(n_cells)
    result = result.assign_coords(cell=cells)
    result["intact_rate"] = ("cell", runs.intact.mean(axis=0), {"units": "Hz",
                                                                "long_name": "mean intact model rate"})
    if cell_types is not None:
        result = result.assign_coords(ganglion_type=("cell", np.asarray(cell_types, dtype=str)))
    if fit_quality is not None:
        result = result.assign(fit_variables(fit_quality, n_cells, min_feve))
    truth_ds = _read_truth(truth)
    scored = (truth_ds is not None and interneurons is not None and "cell_type" in result.coords
              and any(v in truth_ds for v in TRUTH_VARIABLES))
    if scored:
        result = score_against_truth(result, truth_ds, sign_threshold)
    from retcodec.io.provenance import provenance_attrs
    params = {"max_windows": max_windows, "n_windows": int(index.size), "fractions": list(map(float, fractions)),
              "n_random": n_random, "cell_threshold": cell_threshold, "n_blocks": n_blocks,
              "match_margin": margin, "sign_threshold": sign_threshold, "random_state": random_state,
              "weight_mass": WEIGHT_MASS, "active_quantile": ACTIVE_QUANTILE, "layers": layers,
              "how": how, "directions": directions is not None, "min_match_r": min_match_r,
              "class_consistent": class_consistent, "mapping": mapping,
              "min_feve": min_feve}
    result.attrs.update(provenance_attrs(params, method="experiments", n_windows=int(index.size),
                                         n_silenced_runs=runs.n_runs,
                                         silenced_at="output of each layer's ReLU (after batch norm)",
                                         effect="(mean silenced rate - mean intact rate) / mean intact rate",
                                         cell_threshold=cell_threshold, sign_threshold=sign_threshold,
                                         min_match_r=min_match_r, min_feve=min_feve,
                                         truth_scored=int(scored)))
    return result


def summary(result: xr.Dataset) -> dict[str, float | int]:
    """Headline numbers of an experiments Dataset (for logs and reports).

    ``n_interneurons``, ``n_modes``, ``median_abs_predicted_effect``, the truth
    scores when present, and the median ablation specificity of contribution
    and activation modes.
    """
    out: dict[str, float | int] = {"n_windows": int(result.attrs.get("n_windows", -1))}
    if "predicted_effect" in result:
        out["n_interneurons"] = int(result.sizes["interneuron"])
        out["median_abs_predicted_effect"] = float(np.nanmedian(np.abs(result["predicted_effect"].values)))
    for k in ("spearman", "sign_accuracy", "baseline_spearman", "baseline_sign_accuracy", "n_stated_pairs",
              "stated_sign_accuracy", "stated_baseline_sign_accuracy"):
        if k in result:
            out[k] = float(result[k])
    if "specificity" in result:
        spec = result["specificity"].sel(kind="ablate")
        for source in ("contribution", "activation"):
            values = spec.values[result["mode_source"].values == source]
            out[f"n_{source}_modes"] = int(values.size)
            if np.isfinite(values).any():
                out[f"median_specificity_{source}"] = float(np.nanmedian(values))
    return out
