"""Silencing hypotheses a lab can act on: one per interneuron type, blind spots stated, truth beside.

From an experiments Dataset (``experiments.nc``):

* :func:`hypotheses` -- all hypotheses ranked (these and the mode hypotheses of
  :func:`retcodec.analysis.hypotheses.mode_hypotheses`); :func:`hypothesis_lines`
  -- the text of ``hypotheses.txt``.
* :func:`manipulation_hypotheses` -- one :class:`~retcodec.analysis.hypotheses.Hypothesis`
  per distinct manipulation: recordings of one interneuron type (``cell_type``) are
  merged (a recording of unknown type is its own manipulation). Recordings
  without a model counterpart (``blind_spot``) and ganglion cells the model fits
  poorly (``poorly_fit``) are left out. Per cell, the prediction is the mean over
  the merged recordings, its interval spans their 95 % intervals, and a change is
  stated only when it is clear (``|effect| >= clear``, interval excluding 0) and
  every recording predicts the same sign; with an ensemble of models
  (:mod:`retcodec.analysis.ensemble`) only when it is ``stated`` for every recording
  (every model agrees on the sign), and the models' range is quoted. Changes are grouped by ganglion-cell
  type. Each hypothesis names the manipulation, the stimulus, the predicted
  direction and size with its interval, the control and the refuting outcome; with
  ``true_effect`` the true change stands beside it and a contradicted hypothesis
  (the truth meets the refuting outcome) is flagged.
* :func:`blind_spot_statements` -- what the model cannot predict.
* :func:`score_statement` -- how the predictions score against the truth, in one sentence.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from retcodec.analysis.hypotheses import CLEAR_EFFECT, Hypothesis, cell_ranges, mode_hypotheses, type_map

__all__ = ["hypotheses", "hypothesis_lines", "manipulation_hypotheses", "blind_spot_statements",
           "score_statement", "UNKNOWN"]

#: interneuron classes named after the type's other words
CLASSES = ("bipolar", "amacrine")
#: changes named in one hypothesis (the largest first; the rest are in experiments.nc)
MAX_CHANGES = 3
#: the cell_type of a recording whose type is not known
UNKNOWN = "unknown"
#: channels named in a direction's description: weight at least this share of its largest
MAIN_WEIGHT = 0.25


def _label(name: str) -> str:
    """A type name in biologists' words: ``"bipolar_on_transient"`` -> ``"ON-transient bipolar"``."""
    words = [w for w in str(name).replace("-", "_").split("_") if w]
    cls = [w for w in words if w in CLASSES]
    rest = [{"on": "ON", "off": "OFF", "widefield": "wide-field"}.get(w, w) for w in words if w not in CLASSES]
    polarity = "-".join(w for w in rest if w in ("ON", "OFF"))
    others = " ".join(w for w in rest if w not in ("ON", "OFF"))
    joint = "-" if polarity.count("-") == 0 else " "             # "OFF-sustained", "ON-OFF transient"
    text = joint.join(x for x in (polarity, others) if x)
    return " ".join(x for x in (text, *cls) if x) or str(name)


def _groups(result: xr.Dataset) -> dict[str, list[int]]:
    """Interneuron rows per manipulation: by ``cell_type`` when known, else one per recording."""
    ids = result["interneuron"].values.astype(str)
    types = result["cell_type"].values.astype(str) if "cell_type" in result.coords else [UNKNOWN] * len(ids)
    out: dict[str, list[int]] = {}
    for i, (rid, t) in enumerate(zip(ids, types)):
        out.setdefault(rid if t == UNKNOWN else t, []).append(i)
    return out


def _flag(result: xr.Dataset, name: str, size: int) -> np.ndarray:
    return np.asarray(result[name].values, bool) if name in result else np.zeros(size, bool)


def _match_r(result: xr.Dataset) -> np.ndarray:
    name = "match_correlation" if "match_correlation" in result else "heldout_correlation"
    return np.asarray(result[name].values, float)


def _counterpart(result: xr.Dataset, rows: list[int]) -> str:
    """The model counterpart of the recordings, e.g. ``"conv0 ch 1, 2 + conv1 ch 3, held-out r 0.57-0.60"``."""
    r = _match_r(result)[rows]
    quality = f"held-out r {np.nanmin(r):.2f}" + (f"-{np.nanmax(r):.2f}" if len(rows) > 1 else "")
    mapping = str(result["prediction_mapping"].values[rows[0]]) if "prediction_mapping" in result else "channel"
    if mapping == "direction":
        w = np.nanmean(np.asarray(result["direction"].values, float)[rows], axis=0)
        main = np.flatnonzero(w >= MAIN_WEIGHT * max(float(w.max()), 1e-300))
        layers, chans = result["unit_layer"].values.astype(str), result["unit_channel"].values
        parts = [f"{l} ch {', '.join(str(int(c)) for c in chans[main][layers[main] == l])}"
                 for l in dict.fromkeys(layers[main])]
        return f"a direction over {' + '.join(parts)}, {quality}"
    layer, ch = result["matched_layer"].values[rows[0]], int(result["matched_channel"].values[rows[0]])
    return f"best model match {layer} ch {ch}, {quality}"


def _cell_name(t: str, n: int, typed: bool) -> str:
    return f"{_label(t)} cell{'s' if n > 1 else ''}" if typed else f"cell{'s' if n > 1 else ''}"


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f} %"


def _group_effects(result: xr.Dataset, rows: list[int], keep_cells: np.ndarray, clear: float,
                   types: Mapping[int, str] | None) -> list[dict[str, Any]]:
    """Clear, agreed changes of the merged recordings, grouped by ganglion type and direction."""
    eff = np.asarray(result["predicted_effect"].values, float)[rows]
    lo = np.nanmin(np.asarray(result["effect_low"].values, float)[rows], axis=0)
    hi = np.nanmax(np.asarray(result["effect_high"].values, float)[rows], axis=0)
    mean = eff.mean(axis=0)
    agree = np.all(np.sign(eff) == np.sign(mean), axis=0)
    clear_cell = keep_cells & agree & (np.abs(mean) >= clear) & ((hi < 0) | (lo > 0))
    if "stated" in result:                          # an ensemble: every model agrees for every recording
        clear_cell &= np.asarray(result["stated"].values, bool)[rows].all(axis=0)
    models = _model_range(result, rows)
    true = np.asarray(result["true_effect"].values, float)[rows].mean(axis=0) if "true_effect" in result else None
    cells = result["cell"].values
    groups: dict[tuple[str, bool], list[int]] = {}
    for k in np.flatnonzero(clear_cell):
        t = types.get(int(cells[k]), UNKNOWN) if types else "cells"
        groups.setdefault((t, bool(mean[k] < 0)), []).append(int(k))
    out = []
    for (t, down), ks in groups.items():
        g = {"type": t, "down": down, "cells": [int(cells[k]) for k in ks], "size": float(np.median(mean[ks])),
             "interval": (float(np.median(lo[ks])), float(np.median(hi[ks]))),
             "cell_range": (float(np.min(mean[ks])), float(np.max(mean[ks]))),
             "member_range": (float(np.median(eff[:, ks].min(axis=0))), float(np.median(eff[:, ks].max(axis=0))))}
        if models is not None:
            g["model_range"] = (float(np.median(models[0][ks])), float(np.median(models[1][ks])))
            g["n_models"] = int(result.sizes["member"])
        if true is not None and np.isfinite(true[ks]).any():
            g["true"] = float(np.nanmedian(true[ks]))
            g["contradicted"] = bool(not (np.sign(g["true"]) == np.sign(g["size"]) and abs(g["true"]) >= clear))
        out.append(g)
    return sorted(out, key=lambda g: -abs(g["size"]))


def _model_range(result: xr.Dataset, rows: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per cell, the smallest and largest prediction over the ensemble's models (mean over ``rows``)."""
    if "member_effect" not in result:
        return None
    per_model = np.asarray(result["member_effect"].transpose("member", "interneuron", "cell").values,
                           float)[:, rows].mean(axis=1)
    return per_model.min(axis=0), per_model.max(axis=0)


def _change_text(g: Mapping[str, Any], typed: bool, n_members: int) -> str:
    verb = "fall" if g["down"] else "rise"
    lo, hi = sorted((abs(g["interval"][0]), abs(g["interval"][1])))
    if g["down"]:
        hi = min(hi, 1.0)
    text = (f"{_cell_name(g['type'], len(g['cells']), typed)} {cell_ranges(g['cells'])} should {verb} by "
            f"{_pct(g['size'])} (95 % interval {lo * 100:.0f}-{hi * 100:.0f} %")
    if n_members > 1:
        a, b = sorted((abs(g["member_range"][0]), abs(g["member_range"][1])))
        text += f"; the {n_members} recordings predict {a * 100:.0f}-{b * 100:.0f} %"
    if "model_range" in g:
        a, b = sorted((abs(g["model_range"][0]), abs(g["model_range"][1])))
        text += f"; the {g['n_models']} models of the ensemble agree on the sign and predict {a * 100:.0f}-{b * 100:.0f} %"
    text += ")"
    if "true" in g:
        mark = "CONTRADICTED by the truth" if g["contradicted"] else "agrees"
        text += f" [true change {g['true'] * 100:+.0f} %: {mark}]"
    return text


def manipulation_hypotheses(result: xr.Dataset, clear: float = CLEAR_EFFECT,
                            types: Mapping[int, str] | None = None) -> list[Hypothesis]:
    """One hypothesis per silenced interneuron type with a clear, agreed effect (see the module docstring)."""
    n = result.sizes["interneuron"]
    blind = _flag(result, "blind_spot", n)
    keep_cells = ~_flag(result, "poorly_fit", result.sizes["cell"])
    stimulus = str(result.attrs.get("stimulus", "the analysed stimulus"))
    typed = types is not None
    r_all = _match_r(result)
    out = []
    for name, rows in _groups(result).items():
        used = [i for i in rows if not blind[i]]
        if not used:
            continue
        groups = _group_effects(result, used, keep_cells, clear, types)
        if not groups:
            continue
        subject = _label(name) + " cells" + (f" ({len(used)} recordings)" if len(used) > 1 else "")
        if len(used) < len(rows):
            subject += f"; {len(rows) - len(used)} more recording(s) without a model counterpart left out"
        desc = f"model counterpart: {_counterpart(result, used)}"
        shown = groups[:MAX_CHANGES]
        control = _control(result, sorted({c for g in shown for c in g["cells"]}))
        changes = "; ".join(_change_text(g, typed, len(used)) for g in shown)
        if len(groups) > len(shown):
            changes += f"; and {len(groups) - len(shown)} smaller change(s) (experiments.nc)"
        sentence = (f"Silencing {subject} [{desc}] on {stimulus}: {changes}. Control: the same stimulus "
                    f"without the silencing (in the model, a random single channel silenced changes these "
                    f"cells by a median {_pct(control)}). Refuted if any of these changes is absent (less than "
                    f"{clear * 100:.0f} % in the predicted direction).")
        confidence = float(np.clip(np.nanmedian(r_all[used]), 0, 1))
        size = max(abs(g["size"]) for g in groups)
        down = [g for g in shown if g["down"]]
        up = [g for g in shown if not g["down"]]
        out.append(Hypothesis(
            "interneuron", str(name), str(result["matched_layer"].values[used[0]]),
            tuple(int(result["matched_channel"].values[i]) for i in used[:1]), desc,
            tuple(c for g in down for c in g["cells"]), _span(down), tuple(c for g in up for c in g["cells"]),
            _span(up), control, confidence, size * confidence, sentence,
            {f"{g['type']}|{'decrease' if g['down'] else 'increase'}": g for g in shown},
            recordings=tuple(str(result["interneuron"].values[i]) for i in used),
            contradicted=any(g.get("contradicted", False) for g in shown)))
    return out


def _span(groups: list[Mapping[str, Any]]) -> tuple[float, float]:
    if not groups:
        return float("nan"), float("nan")
    return min(g["interval"][0] for g in groups), max(g["interval"][1] for g in groups)


def _control(result: xr.Dataset, cells: list[int]) -> float:
    """Median |effect| on ``cells`` of silencing any single channel (the random-channel control)."""
    if "single_effect" not in result or not cells:
        return float("nan")
    idx = [int(np.flatnonzero(result["cell"].values == c)[0]) for c in cells]
    return float(np.nanmedian(np.abs(np.asarray(result["single_effect"].values, float)[:, idx])))


def blind_spot_statements(result: xr.Dataset, types: Mapping[int, str] | None = None) -> list[str]:
    """What the model cannot predict: interneuron types without a counterpart, cells it fits poorly."""
    lines = []
    if "blind_spot" in result:
        blind = np.asarray(result["blind_spot"].values, bool)
        r = _match_r(result)
        chance = (np.asarray(result["match_chance_p95"].values, float) if "match_chance_p95" in result
                  else np.full(len(r), np.nan))
        threshold = result.attrs.get("min_match_r", None)
        for name, rows in _groups(result).items():
            bad = [i for i in rows if blind[i]]
            if not bad:
                continue
            share = "all" if len(bad) == len(rows) else f"{len(bad)} of"
            top = chance[bad][np.isfinite(chance[bad])]
            lines.append(f"No model counterpart for {_label(name)} ({share} {len(rows)} recording(s): held-out "
                         f"r {np.nanmin(r[bad]):.2f}-{np.nanmax(r[bad]):.2f}"
                         + (f", chance p95 up to {top.max():.2f}" if top.size else "")
                         + (f", below the {float(threshold):.2f} needed" if threshold is not None else "")
                         + "): what silencing them does is not predicted.")
    if "poorly_fit" in result and np.asarray(result["poorly_fit"].values, bool).any():
        bad = np.flatnonzero(np.asarray(result["poorly_fit"].values, bool))
        cells = result["cell"].values[bad]
        feve = np.asarray(result["fit_feve"].values, float)[bad]
        by_type: dict[str, list[int]] = {}
        for c in cells:
            by_type.setdefault(types.get(int(c), "cells") if types else "cells", []).append(int(c))
        what = "; ".join(f"{_label(t)} cells {cell_ranges(cs)}" if t != "cells" else f"cells {cell_ranges(cs)}"
                         for t, cs in by_type.items())
        lines.append(f"The model fits {what} poorly (FEVE {np.nanmin(feve):.2f}-{np.nanmax(feve):.2f}, below "
                     f"{float(result.attrs.get('min_feve', np.nan)):.2f}): no effect on them is stated.")
    return [f"What the model cannot predict: {line}" for line in lines]


def score_statement(result: xr.Dataset, found: list[Hypothesis]) -> str | None:
    """How the predictions score against the truth (None without ``true_effect``)."""
    if "spearman" not in result:
        return None
    text = (f"Against the circuit's true silencing effects the predictions reach Spearman r = "
            f"{float(result['spearman']):.2f} over {int(result['n_scored_pairs'])} (interneuron, cell) pairs "
            f"(correlational baseline {float(result['baseline_spearman']):.2f}")
    if "mapping_spearman" in result:
        mappings = result["mapping"].values.astype(str)
        others = [f"{m} mapping {float(v):.2f}" for m, v in zip(mappings, result["mapping_spearman"].values)]
        text += "; " + ", ".join(others)
    text += (f") and the right sign on {float(result['sign_accuracy']) * 100:.0f} % of the "
             f"{int(result['n_sign_pairs'])} pairs with a true change of at least "
             f"{float(result.attrs.get('sign_threshold', 0.2)) * 100:.0f} % (baseline "
             f"{float(result['baseline_sign_accuracy']) * 100:.0f} %).")
    claims = [g for h in found if h.kind == "interneuron" for g in h.cell_groups.values() if "true" in g]
    if claims:
        bad = [h for h in found if h.contradicted]
        n_bad = sum(bool(g["contradicted"]) for g in claims)
        text += (f" Of the {len(claims)} changes the interneuron hypotheses state, {len(claims) - n_bad} agree with "
                 f"the truth and {n_bad} are contradicted"
                 + (f" (in the hypotheses on {', '.join(_label(h.subject) for h in bad)})." if bad else "."))
    return text


def hypotheses(result: xr.Dataset, clear: float = CLEAR_EFFECT,
               cell_types: Mapping[int, str] | Sequence[str] | None = None) -> list[Hypothesis]:
    """Ranked hypotheses: one per silenced interneuron type and per mode with a clear effect.

    Interneurons: confidence = median held-out match r of the merged recordings
    (clipped to [0, 1]); modes: the share of the effect above the random-control
    median. Ranked by (largest clear |effect|) x confidence.
    """
    types = type_map(result, cell_types)
    found: list[Hypothesis] = []
    if "predicted_effect" in result:
        found += manipulation_hypotheses(result, clear, types)
    found += mode_hypotheses(result, clear, types)
    return sorted(found, key=lambda h: -h.score)


def hypothesis_lines(result: xr.Dataset, found: list[Hypothesis] | None = None,
                     cell_types: Mapping[int, str] | Sequence[str] | None = None) -> list[str]:
    """The text of ``hypotheses.txt``: the hypotheses, what the model cannot predict, and the score."""
    found = hypotheses(result, cell_types=cell_types) if found is None else found
    lines = [h.sentence for h in found]
    lines += blind_spot_statements(result, type_map(result, cell_types))
    score = score_statement(result, found)
    return lines + ([score] if score else [])
