"""Structured, plain-English hypotheses: the :class:`Hypothesis` record and the mode hypotheses.

:func:`mode_hypotheses` turns the mode experiments of
:func:`retcodec.analysis.experiments.experiments` (``experiments.nc``) into
:class:`Hypothesis` records, one per contribution mode whose silencing clearly
changes some cells. The interneuron hypotheses (one per interneuron type) and
the ranked list of all hypotheses are in :mod:`retcodec.analysis.lab_hypotheses`.
The experiment defaults that the sentences quote are declared here and
re-exported by :mod:`retcodec.analysis.experiments`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["mode_hypotheses", "Hypothesis", "cell_ranges", "type_map", "CELL_THRESHOLD", "WEIGHT_MASS",
           "CLEAR_EFFECT", "INTERVAL_Z", "MIN_FEVE"]

#: a mode's cells: Pearson r of rate with the mode's loadings at least this
CELL_THRESHOLD = 0.3
#: a mode's channels: the top channels carrying this share of its weight
WEIGHT_MASS = 0.8
#: |effect| from which a cell's change counts as clear in a hypothesis
CLEAR_EFFECT = 0.1
#: cells whose model explains less of their explainable variance than this get no hypothesis
MIN_FEVE = 0.4
#: normal quantile of the reported intervals (95 %)
INTERVAL_Z = 1.959964


@dataclass(frozen=True)
class Hypothesis:
    """One testable prediction: silence ``channels`` of ``layer`` (standing for ``subject``).

    ``decreases``/``increases``: cells predicted to change, with ``(low, high)``
    fractional changes (95 % intervals, e.g. ``(-0.95, -0.80)``); ``control``:
    median |effect| on those cells of random channel sets of the same size.
    ``score`` ranks hypotheses (effect size times confidence).
    """

    kind: str                   # "interneuron" | "mode"
    subject: str                # interneuron id or mode label
    layer: str
    channels: tuple[int, ...]
    description: str            # e.g. "OFF transient; best model match conv0 ch 7, held-out r = 0.93"
    decreases: tuple[int, ...]
    decrease_range: tuple[float, float]
    increases: tuple[int, ...]
    increase_range: tuple[float, float]
    control: float
    confidence: float
    score: float
    sentence: str = ""
    cell_groups: dict = field(default_factory=dict)
    recordings: tuple[str, ...] = ()      # the merged recordings of an interneuron hypothesis
    contradicted: bool = False            # the known truth meets the refuting outcome

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cell_ranges(cells: Sequence[int]) -> str:
    """``[4, 5, 6, 7, 9]`` -> ``"4-7, 9"``."""
    cells = sorted(int(c) for c in cells)
    out, start = [], None
    for a, b in zip(cells, cells[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ", ".join(out)


def _pct_range(lo: float, hi: float) -> str:
    a, b = sorted((abs(lo) * 100, abs(hi) * 100))
    return f"{a:.0f}-{b:.0f} %" if round(a) != round(b) else f"{a:.0f} %"


def _magnitude(low: np.ndarray, high: np.ndarray, down: bool) -> tuple[float, float]:
    """Range of the size of a change over cells: decreases as fractions cut (at most 1)."""
    if down:
        return float(np.min(np.abs(high))), float(min(np.max(np.abs(low)), 1.0))
    return float(np.min(low)), float(np.max(high))


def _cell_groups(cells: np.ndarray, sel: np.ndarray, low: np.ndarray, high: np.ndarray, down: bool,
                 types: Mapping[int, str] | None) -> dict[str, dict[str, Any]]:
    """Changed cells grouped by type: ``{type: {"cells", "direction", "range"}}``."""
    groups: dict[str, list[int]] = {}
    for k in np.flatnonzero(sel):
        groups.setdefault(types.get(int(cells[k]), "unknown") if types else "cells", []).append(int(k))
    direction = "decrease" if down else "increase"
    return {f"{t}|{direction}": {"type": t, "cells": [int(cells[k]) for k in ks], "direction": direction,
                                 "range": _magnitude(low[ks], high[ks], down)} for t, ks in groups.items()}


def _group_phrase(groups: Mapping[str, Mapping[str, Any]], typed: bool) -> str:
    parts = []
    for g in groups.values():
        n = len(g["cells"])
        kind = g["type"].replace("_", "-")
        name = f"{kind} cell{'s' if n > 1 else ''}" if typed else f"cell{'s' if n > 1 else ''}"
        parts.append(f"{name} {cell_ranges(g['cells'])} by {_pct_range(*g['range'])}")
    return ", ".join(parts)


def _sentence(action: str, desc: str, groups: Mapping[str, Mapping[str, Any]], control: float,
              n_chan: int, typed: bool) -> str:
    down = {t: g for t, g in groups.items() if g["direction"] == "decrease"}
    up = {t: g for t, g in groups.items() if g["direction"] == "increase"}
    parts = []
    if down:
        parts.append(f"cut the mean rate of {_group_phrase(down, typed)}")
    if up:
        parts.append(f"raise {_group_phrase(up, typed)}")
    control_text = f"median {abs(control) * 100:.0f} %" if np.isfinite(control) else "not computed"
    return (f"Silencing {action} ({desc}) should {' and '.join(parts)}; random {n_chan}-channel "
            f"silencing: {control_text}.")


def _changes(effect: np.ndarray, low: np.ndarray, high: np.ndarray, cells: np.ndarray, clear: float,
             types: Mapping[int, str] | None) -> tuple[dict[str, dict[str, Any]], np.ndarray, np.ndarray]:
    """Clear decreases and increases (``|effect| >= clear``, interval excluding 0), grouped by type."""
    dec = (effect <= -clear) & (high < 0)
    inc = (effect >= clear) & (low > 0)
    groups = {}
    for sel, down in ((dec, True), (inc, False)):
        groups.update(_cell_groups(cells, sel, low, high, down, types))
    return groups, dec, inc


def _summary(groups: Mapping[str, Mapping[str, Any]], direction: str
             ) -> tuple[tuple[int, ...], tuple[float, float]]:
    chosen = [g for g in groups.values() if g["direction"] == direction]
    if not chosen:
        return (), (float("nan"), float("nan"))
    cells = tuple(sorted(c for g in chosen for c in g["cells"]))
    return cells, (min(g["range"][0] for g in chosen), max(g["range"][1] for g in chosen))


def mode_hypotheses(result: xr.Dataset, clear: float = CLEAR_EFFECT,
                    types: Mapping[int, str] | None = None) -> list[Hypothesis]:
    """One hypothesis per contribution mode whose silencing clearly changes some cells.

    A cell's change is clear when ``|effect| >= clear`` and its 95 % interval
    excludes 0; confidence is the share of the effect above the random-control
    median. Modes that silence the same channels are merged.
    """
    if "mode_effect" not in result or "mode" not in result.dims:
        return []
    cells = result["cell"].values
    found = [h for h in (_mode_hypothesis(result, j, cells, clear, types)
                         for j in range(result.sizes["mode"])) if h is not None]
    return _merge_same_channels(found)


def _merge_same_channels(found: list[Hypothesis]) -> list[Hypothesis]:
    """Modes that silence the same channels make one hypothesis (the best scored), naming them all."""
    groups: dict[tuple[str, tuple[int, ...]], list[Hypothesis]] = {}
    for h in found:
        groups.setdefault((h.layer, h.channels), []).append(h)
    out = []
    for same in groups.values():
        best = max(same, key=lambda h: h.score)
        if len(same) > 1:
            rest = [h.subject for h in same if h is not best]
            others = ", ".join(rest[:5]) + (f" and {len(rest) - 5} more" if len(rest) > 5 else "")
            best = Hypothesis(**{**best.as_dict(), "subject": best.subject,
                                 "sentence": best.sentence[:-1] + f" (also the silencing set of modes {others})."})
        out.append(best)
    return out


def type_map(result: xr.Dataset, cell_types: Any) -> dict[int, str] | None:
    """``{cell id: ganglion type}`` from ``cell_types`` (mapping or sequence) or the ``ganglion_type`` coord."""
    cells = [int(c) for c in result["cell"].values]
    if cell_types is None and "ganglion_type" in result.coords:
        cell_types = result["ganglion_type"].values
    if cell_types is None:
        return None
    if isinstance(cell_types, Mapping):
        return {int(k): str(v) for k, v in cell_types.items()}
    return dict(zip(cells, (str(t) for t in cell_types)))


def _mode_hypothesis(result: xr.Dataset, j: int, cells: np.ndarray, clear: float,
                     types: Mapping[int, str] | None) -> Hypothesis | None:
    row = result.isel(mode=j)
    if str(row["mode_source"].values) != "contribution":
        return None
    eff, se = row["mode_effect"].values.astype(float), row["mode_effect_se"].values
    if "poorly_fit" in result:                 # cells the model fits poorly get no claim
        eff = np.where(np.asarray(result["poorly_fit"].values, bool), np.nan, eff)
    lo, hi = eff - INTERVAL_Z * se, eff + INTERVAL_Z * se
    groups, dec, inc = _changes(eff, lo, hi, cells, clear, types)
    if not groups:
        return None
    layer = str(row["mode_layer"].values)
    chans = tuple(int(c) for c in np.flatnonzero(row["mode_channels"].values))
    affected = dec | inc
    ctrl = row["mode_control_effect"].values[:, affected]
    control = float(np.nanmedian(np.abs(ctrl))) if np.isfinite(ctrl).any() else float("nan")
    size = float(np.max(np.abs(eff[affected])))
    confidence = float(np.clip(1 - (control if np.isfinite(control) else 0) / max(size, 1e-12), 0, 1))
    mode_cells = [int(c) for c in cells[row["mode_cell"].values.astype(bool)]]
    spec = float(row["specificity"].sel(kind="ablate").values)
    desc = (f"mode {row['mode'].values}, the channels carrying {WEIGHT_MASS:.0%} of its weight; "
            f"its cells (r >= {result.attrs.get('cell_threshold', CELL_THRESHOLD)}): "
            f"{cell_ranges(mode_cells) if mode_cells else 'none'}; ablation specificity "
            f"{f'{spec:+.2f}' if np.isfinite(spec) else 'n/a'}")
    action = f"{layer} channel{'s' if len(chans) > 1 else ''} {', '.join(map(str, chans))}"
    (d, dr), (u, ur) = _summary(groups, "decrease"), _summary(groups, "increase")
    return Hypothesis("mode", str(row["mode"].values), layer, chans, desc, d, dr, u, ur, control,
                      confidence, size * confidence,
                      _sentence(action, desc, groups, control, len(chans), types is not None), groups)
