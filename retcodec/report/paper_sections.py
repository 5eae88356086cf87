"""Report parts for the paper's analyses: layer trends (Fig. 3), ablation (Fig. 6), IRF statistics, intervals.

Each function turns a run's labelled outputs into HTML (tables with their
intervals, and sentences that say what the numbers mean); the figures
themselves are embedded by :mod:`retcodec.report.html`.
"""
from __future__ import annotations

import html
from typing import Any, Sequence

import numpy as np
import xarray as xr

from retcodec.analysis.layer_trends import paper_trend_notes
from retcodec.report.tables import fmt, fmt_interval, html_table

__all__ = ["trends_html", "ablation_html", "irf_similarity_rows", "fit_interval_text", "interneuron_rows",
           "interneuron_note", "stimulus_view_html"]


def _interval(ds: xr.Dataset, name: str, **where: Any) -> str:
    v = ds[name].sel(where) if where else ds[name]
    return fmt_interval(float(v), float(ds[f"{name}_low"].sel(where)), float(ds[f"{name}_high"].sel(where)))


def trends_html(stats: xr.Dataset) -> str:
    """Contributions vs activations per layer with intervals, and where the retina departs from ImageNet."""
    if "trend" not in stats:
        return ""
    rows = []
    for layer in stats["layer"].values:
        t = stats.sel(layer=layer)
        rows.append({
            "layer": str(layer),
            "sparsity: contributions": _interval(t, "trend", quantity="sparsity", source="contributions"),
            "sparsity: activations": _interval(t, "trend", quantity="sparsity", source="activations"),
            "E/I correlation (contributions)": _interval(t, "trend", quantity="ei_correlation",
                                                         source="contributions"),
            "dimensionality: contributions": _interval(t, "trend", quantity="dimensionality",
                                                       source="contributions"),
            "dimensionality: activations": _interval(t, "trend", quantity="dimensionality",
                                                     source="activations")})
    notes = paper_trend_notes(stats[["trend", "trend_low", "trend_high", "contrast", "contrast_low",
                                     "contrast_high", "depth_change", "depth_change_low", "depth_change_high"]])
    mark = {True: "agrees", False: "<b>differs</b>", None: "not resolved"}
    items = "".join(f"<li>{mark[agrees]}: {html.escape(text)}</li>" for text, agrees in notes)
    n = int(stats["n_windows"]) if "n_windows" in stats else None
    return ("<h3>Contributions vs activations across layers (the paper's Fig. 3)</h3>"
            "<p class='note'>Sparsity: median over windows of the Hoyer index across channels. E/I "
            "correlation: correlation over windows of each channel's C+ and |C−|, averaged over channels "
            "(activations have no E/I split). Dimensionality: principal components reaching 95 % of the "
            "variance. Brackets: 95 % block-bootstrap intervals over "
            + (f"the {n:,} windows" if n else "windows") + " (contiguous blocks, since neighbouring windows "
            "overlap).</p>" + html_table(rows)
            + "<p>Compared with the trends the paper reports for an ImageNet classifier (a difference counts "
              "only where its paired bootstrap interval excludes 0):</p><ul>" + items + "</ul>")


def ablation_html(curves: xr.Dataset | None) -> str:
    """Specificity of contribution vs activation modes per layer, with intervals over modes."""
    if curves is None or "specificity" not in curves:
        return ""
    rows = []
    for layer in curves["layer"].values:
        for source in curves["source"].values:
            n = int(curves["n_modes"].sel(layer=layer, source=source))
            if not n:
                continue
            row: dict[str, Any] = {"layer": str(layer), "modes": f"{source} ({n})"}
            for kind in curves["kind"].values:
                v = curves["specificity"].sel(layer=layer, source=source, kind=kind)
                row[f"{kind} specificity"] = fmt_interval(*(float(v.sel(statistic=s))
                                                            for s in ("median", "low", "high")))
            rows.append(row)
    return ("<h3>Ablation and preservation (the paper's Fig. 6)</h3>" + _specificity_sentence(curves)
            + "<p class='note'>The top-weighted "
            "channels of each mode were silenced (ablate) or kept alone (preserve) in growing shares. "
            "Specificity: ablate, AUC of the other cells' rate curve minus that of the mode's own cells; "
            "preserve, own minus others (higher: the mode's channels matter more for its own cells). Median "
            "over modes with a 95 % bootstrap interval over modes. Activation modes are the control; random "
            "channel sets of each mode's size are in the figure.</p>" + html_table(rows))


def _specificity_sentence(curves: xr.Dataset) -> str:
    """Per layer: are contribution modes more specific to their own cells than activation modes (ablation)?"""
    if not {"contribution", "activation"} <= set(str(v) for v in curves["source"].values):
        return ""
    parts = []
    for layer in curves["layer"].values:
        spec = curves["specificity"].sel(layer=layer, kind="ablate")
        c, a = spec.sel(source="contribution"), spec.sel(source="activation")
        if not np.isfinite([float(c.sel(statistic="median")), float(a.sel(statistic="median"))]).all():
            continue
        apart = float(c.sel(statistic="low")) > float(a.sel(statistic="high"))
        mine, other = (fmt_interval(*(float(v.sel(statistic=s)) for s in ("median", "low", "high"))) for v in (c, a))
        parts.append(f"{layer}: contribution modes {mine} vs activation modes {other}"
                     + (" (intervals apart: contribution modes are the more specific, as in the paper)" if apart
                        else " (intervals overlap: no difference shown)"))
    return ("<p>Ablation specificity (how much more silencing a mode's channels cuts its own cells' rate than "
            "the others'): " + "; ".join(parts) + ".</p>") if parts else ""


def irf_similarity_rows(irfs: xr.DataTree | None, layers: Sequence[str]) -> list[dict[str, Any]]:
    """Per layer: within/across similarity with intervals over cells, their difference, the shuffled-label p."""
    rows = []
    for layer in layers:
        if irfs is None or layer not in irfs.children:
            continue
        node = irfs[layer].to_dataset()
        if "within_set_similarity_pooled" not in node:
            continue
        combos = irfs[layer]["combinations"].to_dataset() if "combinations" in irfs[layer].children else None
        row: dict[str, Any] = {"layer": layer, "combinations": int(node.sizes.get("combination", 0))}
        if "n_moments" in node:
            row["moments per combination (min–max)"] = (f"{int(node['n_moments'].min())}–"
                                                         f"{int(node['n_moments'].max())}")
        if combos is not None:
            row["mean active modes"] = float(combos["n_active"].mean())
            row["no active mode (%)"] = 100 * float(combos["fraction_none"])
        if "within_similarity_low" in node:
            row["within"] = fmt_interval(float(node["within_set_similarity_pooled"]),
                                         float(node["within_similarity_low"]), float(node["within_similarity_high"]))
            row["across"] = fmt_interval(float(node["across_set_similarity_pooled"]),
                                         float(node["across_similarity_low"]), float(node["across_similarity_high"]))
            row["within − across"] = fmt_interval(float(node["similarity_difference"]),
                                                  float(node["difference_similarity_low"]),
                                                  float(node["difference_similarity_high"]))
            null = node["similarity_difference_null"].values
            row["shuffled-label null: 95th pct"] = float(np.nanquantile(null, 0.95)) if np.isfinite(null).any() \
                else None
            row[f"p ({null.size} shuffles)"] = float(node["similarity_difference_p"])
        else:
            row["within"] = float(node["within_set_similarity_pooled"])
            row["across"] = float(node["across_set_similarity_pooled"])
        rows.append(row)
    return rows


def fit_interval_text(stats: xr.Dataset, metric: str) -> str:
    """``median [low, high]`` of a fit metric over reliable cells (bootstrap over cells), or the median alone."""
    name = f"fit_{metric}"
    if "fit_median_interval" in stats and name in stats["fit_metric"].values:
        v = stats["fit_median_interval"].sel(fit_metric=name)
        return fmt_interval(*(float(v.sel(fit_statistic=s)) for s in ("median", "low", "high")))
    value = stats.attrs.get(f"fit_median_{metric}")
    return fmt(float(value)) if value is not None else "–"


def interneuron_rows(inter: xr.Dataset) -> list[dict[str, Any]]:
    """One row per interneuron: best unit, held-out r, chance, p-values (exact and Holm), significance."""
    rows = []
    for i in range(inter.sizes["interneuron"]):
        r: dict[str, Any] = {"interneuron": str(inter["interneuron"].values[i])}
        if "cell_type" in inter.coords:
            r["true type"] = str(inter["cell_type"].values[i]).replace("_", " ")
        r.update({"best unit": f"{inter['best_layer'].values[i]} ch {int(inter['best_channel'].values[i])}",
                  "held-out r": float(inter["heldout_correlation"].values[i]),
                  "chance p95 (re-selection)": float(inter["chance_p95"].values[i]),
                  "p (re-selection)": float(inter["p_value"].values[i])})
        if "exact_p_value" in inter:
            r["p (every shift)"] = float(inter["exact_p_value"].values[i])
            r["Holm p"] = float(inter["holm_p_value"].values[i])
            r["significant"] = bool(inter["significant"].values[i])
        if "best_unit_type" in inter:
            r["unit's type"] = str(inter["best_unit_type"].values[i]).replace("_", " ")
        rows.append(r)
    return rows


def interneuron_note(inter: xr.Dataset) -> str:
    """What the p-values mean, the stimulus they were computed on, and the correction."""
    n = inter.sizes["interneuron"]
    n_shifts = int(inter.attrs.get("n_shifts", inter.sizes.get("shift", 0)) or 0)
    stimulus = inter.attrs.get("exact_null_stimulus") or inter.attrs.get("stim_types") or "the files' stimulus"
    text = (f"<p class='note'>Matching used the interneuron recordings' own stimulus "
            f"(<b>{html.escape(str(stimulus))}</b>), not the ganglion-cell stimulus. The best unit is chosen on "
            f"alternate time blocks and scored on the others (held-out r). Two nulls: <i>re-selection</i> repeats "
            f"the whole choice for {n_shifts} random circular shifts of each recording (its smallest p is "
            f"1/({n_shifts}+1) = {fmt(1 / (n_shifts + 1), 3) if n_shifts else '–'}; the grey band of the "
            f"figure); ")
    if "exact_p_value" in inter:
        shifts = inter["exact_n_shifts"].values
        shifts = shifts[shifts > 0]
        significant = int(np.sum(inter["significant"].values))
        text += (f"<i>every shift</i> scores the unit chosen on the real data against the recording shifted by "
                 f"every offset of at least {int(inter.attrs.get('min_shift', 0))} bins "
                 + (f"({int(shifts.min()):,}–{int(shifts.max()):,} shifts)" if shifts.size else "")
                 + ". Significance uses one correction in the table and the figure: Holm over the "
                 f"{n} interneurons at 0.05, applied to the every-shift p (the re-selection p where that is "
                 f"missing). {significant} of {n} interneurons are significant.</p>")
    else:
        text += f"no correction for the {n} comparisons is applied.</p>"
    return text


def stimulus_view_html(view_seconds: float | None = None) -> str:
    """Text of the stimulus-aligned section (the figure follows)."""
    return ("<h2>Modes over time, aligned to the stimulus</h2><p class='note'>The stretch of the stimulus "
            "holding the most IRF moments of the shown cells (one cell per type): frames, the model's rate "
            "and the recorded trial average of each cell, each layer's mode loadings, and the receptive "
            "fields at numbered moments. Read it top to bottom: a change in the stimulus, the modes that "
            "become active, the cells that respond, and the receptive field that combination gives.</p>")
