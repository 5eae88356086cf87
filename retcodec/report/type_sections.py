"""Report text on the cell types' uncertainty: uncertain cells, the closest types and what separates them."""
from __future__ import annotations

import html

import numpy as np
import xarray as xr

from retcodec.report.fig_types import CONFIDENT
from retcodec.report.tables import fmt

__all__ = ["type_uncertainty_html"]


def _closest_pairs(root: xr.Dataset, n: int = 2) -> list[tuple[int, int, float]]:
    """The ``n`` pairs of types whose cells share a type most often over the resamples (mean consensus)."""
    k, labels = int(root["chosen_k"]), root["cluster"].values
    consensus = root["consensus"].sel(k=k).values
    types = np.unique(labels)
    pairs = [(int(a), int(b), float(consensus[np.ix_(labels == a, labels == b)].mean()))
             for i, a in enumerate(types) for b in types[i + 1:]]
    return sorted(pairs, key=lambda p: -p[2])[:n]


def type_uncertainty_html(root: xr.Dataset) -> str:
    """How sure the typing is: k evidence, uncertain cells with both candidate types, closest pairs' features."""
    if "consensus" not in root or "confidence" not in root:
        return ""
    k = int(root["chosen_k"])
    parts = [f"k = {k} by the {html.escape(str(root.attrs.get('k_rule', '')))} rule"]
    if "pac" in root:
        pac = root["pac"]
        near = [f"k = {int(kk)}: {fmt(100 * float(pac.sel(k=kk)), 0)} %" for kk in (k - 1, k, k + 1)
                if kk in pac["k"].values and np.isfinite(float(pac.sel(k=kk)))]
        parts.append("ambiguous cell pairs over the resamples " + ", ".join(near))
    if "ari_truth_interval" in root:
        lo, hi = root["ari_truth_interval"].values
        parts.append(f"ARI vs truth {fmt(float(root['ari_truth']))} (95 % bootstrap interval over cells "
                     f"{fmt(float(lo))}–{fmt(float(hi))})")
    text = "<p>" + "; ".join(parts) + ".</p>"
    conf, alt = root["confidence"].values, root["alternative"].values
    cells, labels = root["cell"].values, root["cluster"].values
    uncertain = [(cells[i], labels[i], alt[i], conf[i]) for i in np.argsort(conf) if conf[i] < CONFIDENT]
    if uncertain:
        text += ("<p>Cells whose type is uncertain (mean consensus with their own type below "
                 f"{CONFIDENT}): " + ", ".join(f"cell {c}: type {t} or {a} ({fmt(v)})" for c, t, a, v in uncertain)
                 + ".</p>")
    else:
        text += f"<p>Every cell shares its type with its type-mates in at least {int(100 * CONFIDENT)} % of the resamples.</p>"
    if "separating_feature" in root:
        rows = []
        for a, b, value in _closest_pairs(root):
            names = root["separating_feature"].sel(type_a=a, type_b=b).values
            sep = root["separation"].sel(type_a=a, type_b=b).values
            feats = ", ".join(f"{html.escape(str(f))} ({'+' if d > 0 else '−'}{fmt(abs(float(d)), 1)} SD)"
                              for f, d in zip(names, sep) if str(f))
            rows.append(f"types {a} and {b} (together in {fmt(100 * value, 0)} % of resamples) differ most in {feats}")
        text += "<p>Closest types and the features that separate them (type a minus type b, in pooled " \
                "within-type SD): " + "; ".join(rows) + ".</p>"
    return text
