"""Model uncertainty of the silencing predictions: the same experiment in an ensemble of models.

One fitted model is one draw of what the data allow: another seed or another held-out
block gives other channels, another interneuron match and another predicted effect.
The ensemble (``retcodec fit --members N``; the bundled default ships three models)
repeats the interneuron experiment in every member:

1. :func:`member_predictions` matches each recorded interneuron to the member's best
   unit (:func:`~retcodec.analysis.interneuron_match.match_interneurons`, cross-validated
   as for the primary model, on the same interneuron windows) and silences that unit's
   channel on the analysed windows (the effect and its standard error over time blocks);
2. :func:`combine_members` stacks the primary model's own channel prediction (member 0)
   with the members' into ``member_effect (member, interneuron, cell)``. The
   ensemble's ``predicted_effect`` is its centre, :data:`CENTER`: the primary model's
   own prediction (the mean and the median over models scored lower on the tuning
   retinas, ``docs/experiments.md``); its interval combines the spread over models
   (``model_spread``, the standard deviation over members) with the spread over time
   (the members' block standard errors): centre ± 1.96 √(time² + model²).
   ``sign_agreement`` is the share of members that predict the centre's sign, and a
   pair is ``stated`` -- a hypothesis worth testing -- only when every member agrees on
   the sign and the centre is at least :data:`MIN_STATED_EFFECT`, the interneuron has a
   model counterpart and the cell is fitted well.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.analysis.experiments import SilencingRuns, effect_scores, subsample_index
from retcodec.analysis.hypotheses import INTERVAL_Z
from retcodec.analysis.interneuron_match import match_interneurons
from retcodec.analysis.silencing_effects import N_BLOCKS, block_effects, standard_error
from retcodec.engine.model_inputs import model_input
from retcodec.engine.perturb import DEFAULT_BATCH_SIZE, Silencer
from retcodec.errors import ConfigurationError, ShapeError

__all__ = ["CENTER", "CENTERS", "MIN_STATED_EFFECT", "MEMBER_SHIFTS", "member_predictions", "combine_members",
           "ensemble_scores", "add_ensemble"]

#: a pair is stated only when the ensemble's |prediction| reaches this (the hypotheses' 10 %; docs/experiments.md)
MIN_STATED_EFFECT = 0.1
#: the ensemble's prediction: "mean" or "median" over models, or "primary" (member 0; the others then give
#: the interval and the agreement only). Chosen on tuning retinas (docs/experiments.md)
CENTER = "primary"
CENTERS = ("mean", "median", "primary")
#: circular shifts of the members' match (its chance level is not used: the primary's decides blind spots)
MEMBER_SHIFTS = 2


def member_predictions(model: torch.nn.Module, windows: Any, interneurons: Sequence[str | Path],
                       layers: Sequence[str], max_windows: int | None = None,
                       match_windows: int | None = None, n_blocks: int = N_BLOCKS,
                       random_state: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                       device: str | torch.device = "cpu") -> xr.Dataset:
    """One member's interneuron experiment: match, then silence each match's channel.

    ``windows``: the analysed stimulus (as for :func:`~retcodec.analysis.experiments.experiments`),
    subsampled to ``max_windows`` evenly spaced windows; ``interneurons``: the interneuron files,
    matched on their first ``match_windows`` windows per stimulus (None: all, as the primary's
    default: a member matched on less data picks noisier units).
    Returns ``effect``/``effect_se (interneuron, cell)`` (fractional change of the mean
    rate, its standard error over ``n_blocks`` time blocks), ``matched_unit`` and
    ``heldout_correlation (interneuron)``.
    """
    match = match_interneurons(model, [str(p) for p in interneurons], layers=layers, n_shifts=MEMBER_SHIFTS,
                               random_state=random_state, device=device, max_windows=match_windows)
    source, _, _, _ = model_input(model, windows)
    index = subsample_index(len(source), max_windows)
    runs = SilencingRuns(Silencer(model, source, list(layers), index=index, batch_size=batch_size,
                                  device=device))
    units = [(str(l), int(c)) for l, c in zip(match["best_layer"].values, match["best_channel"].values)]
    effect = np.stack([runs.effect(l, [c]) for l, c in units])
    se = np.stack([standard_error(block_effects(runs.rates(l, [c]), runs.intact, n_blocks)) for l, c in units])
    return xr.Dataset(
        {"effect": (("interneuron", "cell"), effect), "effect_se": (("interneuron", "cell"), se),
         "matched_unit": ("interneuron", np.array([f"{l}/{c}" for l, c in units], dtype=str)),
         "heldout_correlation": ("interneuron", np.asarray(match["heldout_correlation"].values, float))},
        coords={"interneuron": match["interneuron"].values})


def combine_members(result: xr.Dataset, members: Sequence[xr.Dataset], names: Sequence[str] | None = None,
                    min_effect: float = MIN_STATED_EFFECT, center: str = CENTER) -> xr.Dataset:
    """``result`` (``experiments.nc``) with the ensemble's prediction (see the module docstring).

    ``members``: :func:`member_predictions` of the extra models (the primary model is
    member 0, from ``result``); ``names``: a label per extra member (e.g. its file).
    Adds ``member_effect``/``member_effect_se (member, interneuron, cell)``,
    ``member_unit (member, interneuron)``, ``model_spread``, ``time_se``,
    ``sign_agreement``, ``stated (interneuron, cell)``, ``mapping_effect`` entry
    ``"ensemble"``, and sets ``predicted_effect``, ``effect_se``, ``effect_low`` and
    ``effect_high`` to the ensemble's.
    """
    if "predicted_effect" not in result:
        raise ConfigurationError("the ensemble needs the primary model's interneuron experiment "
                                 "(predicted_effect in experiments.nc)")
    ids = [str(i) for i in result["interneuron"].values]
    for k, m in enumerate(members):
        if [str(i) for i in m["interneuron"].values] != ids or m.sizes["cell"] != result.sizes["cell"]:
            raise ShapeError(f"ensemble member {k + 1} was run on other interneurons or cells than the primary "
                             f"model ({m.sizes.get('interneuron')} x {m.sizes.get('cell')} vs "
                             f"{len(ids)} x {result.sizes['cell']})")
    primary, primary_se = _primary_channel_prediction(result)
    effects = np.stack([primary] + [np.asarray(m["effect"].values, float) for m in members])
    ses = np.stack([primary_se] + [np.asarray(m["effect_se"].values, float) for m in members])
    units = np.stack([[f"{l}/{int(c)}" for l, c in zip(result["matched_layer"].values,
                                                          result["matched_channel"].values)]]
                     + [np.asarray(m["matched_unit"].values, str) for m in members])
    if center not in CENTERS:
        raise ConfigurationError(f"center must be one of {CENTERS}, got {center!r}")
    centre = {"mean": np.mean, "median": np.median}[center](effects, axis=0) if center != "primary" else primary
    spread = effects.std(axis=0, ddof=1) if len(effects) > 1 else np.zeros_like(centre)
    time_se = np.sqrt(np.mean(ses ** 2, axis=0))
    total = np.sqrt(time_se ** 2 + spread ** 2)
    agreement = np.mean(np.sign(effects) == np.sign(centre)[None], axis=0)
    stated = (agreement == 1.0) & (np.abs(centre) >= min_effect)
    if "blind_spot" in result:
        stated &= ~np.asarray(result["blind_spot"].values, bool)[:, None]
    if "poorly_fit" in result:
        stated &= ~np.asarray(result["poorly_fit"].values, bool)[None, :]
    labels = ["primary"] + [str(n) for n in (names if names is not None else
                                             [f"member {k + 1}" for k in range(len(members))])]
    out = result.assign_coords(member=np.arange(len(effects)), member_name=("member", np.array(labels, str)))
    pair = ("interneuron", "cell")
    out = out.assign(
        member_effect=(("member",) + pair, effects, {"long_name": "each model's predicted effect (its best "
                                                                  "channel silenced); member 0 is the primary"}),
        member_effect_se=(("member",) + pair, ses, {"long_name": "each model's standard error over time blocks"}),
        member_unit=(("member", "interneuron"), units, {"long_name": "each model's best-matching unit"}),
        model_spread=(pair, spread, {"long_name": "standard deviation of the prediction over models"}),
        time_se=(pair, time_se, {"long_name": "root-mean-square over models of the standard error over time"}),
        sign_agreement=(pair, agreement, {"long_name": "share of models predicting the ensemble's sign"}),
        stated=(pair, stated, {"long_name": f"every model agrees on the sign and the ensemble's |effect| >= "
                                            f"{min_effect}; a model counterpart; a well-fitted cell"}),
        predicted_effect=(pair, centre, {**result["predicted_effect"].attrs,
                                       "description": f"{center} over the {len(effects)} models of the ensemble "
                                                      f"of each model's best-matching channel silenced"}),
        effect_se=(pair, total, {"long_name": "standard error: spread over time and over models combined"}),
        effect_low=(pair, centre - INTERVAL_Z * total, {"long_name": "lower end of the 95 % interval"}),
        effect_high=(pair, centre + INTERVAL_Z * total, {"long_name": "upper end of the 95 % interval"}),
        prediction_mapping=("interneuron", np.array(["ensemble"] * len(ids), dtype=str)))
    if "mapping_effect" in out:                   # "ensemble" beside the primary's own mappings
        mappings = ["ensemble"] + [str(m) for m in out["mapping"].values]
        stacked = {v: (np.concatenate([extra[None], out[v].transpose("mapping", *pair).values]), out[v].attrs)
                   for v, extra in (("mapping_effect", centre), ("mapping_effect_se", total))}
        out = out.drop_dims("mapping").assign_coords(mapping=mappings)
        out = out.assign({v: (("mapping",) + pair, values, attrs) for v, (values, attrs) in stacked.items()})
    out.attrs.update(ensemble_members=len(effects), min_stated_effect=min_effect, ensemble_center=center)
    return out


def _primary_channel_prediction(result: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The primary model's best-channel prediction and its standard error, ``(interneuron, cell)``."""
    if "mapping_effect" in result and "channel" in result["mapping"].values:
        return (np.asarray(result["mapping_effect"].sel(mapping="channel").values, float),
                np.asarray(result["mapping_effect_se"].sel(mapping="channel").values, float))
    return np.asarray(result["predicted_effect"].values, float), np.asarray(result["effect_se"].values, float)


def ensemble_scores(result: xr.Dataset, threshold: float) -> dict[str, float]:
    """How the stated pairs score against ``true_effect``: their number, the ensemble's and the
    baseline's sign accuracy on those of them with true ``|effect| >= threshold``."""
    if "stated" not in result or "true_effect" not in result:
        return {}
    true = np.asarray(result["true_effect"].values, float)
    stated = np.asarray(result["stated"].values, bool) & np.isfinite(true)
    clear = stated & (np.abs(true) >= threshold)
    out = {"n_stated_pairs": float(stated.sum()), "n_stated_sign_pairs": float(clear.sum())}
    for prefix, name in (("stated_", "predicted_effect"), ("stated_baseline_", "baseline_prediction")):
        only_stated = np.where(stated, np.asarray(result[name].values, float), np.nan)
        out[f"{prefix}sign_accuracy"] = effect_scores(only_stated, true, threshold)["sign_accuracy"]
    return out


def add_ensemble(result: xr.Dataset, members: Sequence[tuple[str, torch.nn.Module]], recording: xr.Dataset,
                 interneurons: Sequence[str | Path], layers: Sequence[str], max_windows: int | None = None,
                 experiment_windows: int | None = None, match_windows: int | None = None,
                 truth: xr.Dataset | None = None, random_state: int = 0, device: str | torch.device = "cpu",
                 say: Any = None) -> xr.Dataset:
    """``result`` with the ensemble of the primary model and ``members`` ((name, model) pairs).

    Each member reads ``recording`` with its own normalisation (the first ``max_windows``
    windows, ``experiment_windows`` of them silenced, as for the primary). With ``truth``
    (the circuit's silencing effects) the result is scored again and gains the scores of
    the stated pairs (:func:`ensemble_scores`).
    """
    from retcodec.analysis.experiments import SIGN_THRESHOLD, score_against_truth
    from retcodec.io.recordings import model_windows

    cells = [int(c) for c in result["cell"].values]
    found = []
    for name, model in members:
        member_cells = (getattr(model, "meta", {}) or {}).get("cells")
        if member_cells is not None and [int(c) for c in member_cells] != cells:
            raise ShapeError(f"ensemble member {name} models cells {list(member_cells)[:8]}..., the primary "
                             f"model {cells[:8]}...: every member must be fitted to the same cells")
        if say:
            say(f"  ensemble member {name}: matching the interneurons and silencing their channels")
        found.append(member_predictions(model, model_windows(recording, model, max_windows), interneurons,
                                        layers, max_windows=experiment_windows, match_windows=match_windows,
                                        random_state=random_state, device=device))
    out = combine_members(result, found, names=[n for n, _ in members])
    if truth is not None and "true_effect" in result:
        threshold = float(result.attrs.get("sign_threshold", SIGN_THRESHOLD))
        out = score_against_truth(out, truth, threshold)
        for key, value in ensemble_scores(out, threshold).items():
            out[key] = ((), value)
    return out
