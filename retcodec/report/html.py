"""A self-contained HTML report of a ``retcodec run``: overview, methods, results, provenance.

The report opens with an overview a collaborator can read on its own (what was
analysed, how well the model fits, what was found, the hypotheses and how they were
checked), then a short methods section, one section per analysis with its numbers
explained and its figures captioned, and the run's parameters, versions, input
checksums and stage times. Figures are embedded (PNG, base64); tables scroll inside
their own box instead of widening the page.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from retcodec.analysis.evaluation import FIT_METRICS
from retcodec.analysis.uncertainty import median_interval
from retcodec.io.provenance import versions
from retcodec.io.storage import atomic_path
from retcodec.modes.sweep import ROBUST_R2_LOSS, ROBUST_STABILITY
from retcodec.report.mode_summary import frontier_html, mode_table_rows, robustness_html
from retcodec.report.paper_sections import (ablation_html, fit_interval_text, interneuron_note, interneuron_rows,
                                            irf_similarity_rows, stimulus_view_html, trends_html)
from retcodec.report.type_sections import type_uncertainty_html
from retcodec.report.tables import fmt, fmt_interval, html_table

__all__ = ["write_report", "embed_png", "html_table", "fmt", "CSS", "CAPTIONS"]

CSS = """body{font-family:system-ui,-apple-system,sans-serif;max-width:1100px;margin:2em auto;padding:0 1.2em;
color:#222;line-height:1.45}h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.wrap{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}th{white-space:normal;vertical-align:bottom}td.t,th.t{text-align:left;white-space:normal;min-width:6em}
th{background:#f3f3f3}figure{margin:1.2em 0}img{max-width:100%;height:auto}figcaption{font-size:.9em;color:#444}
code{background:#f6f6f6;padding:0 .2em;word-break:break-all}pre{overflow-x:auto;background:#f8f8f8;padding:.6em}
.note{color:#555;font-size:.9em}.warn{background:#fff4e0;border-left:4px solid #e8a33d;padding:.4em .8em}
.box{background:#f4f8fc;border-left:4px solid #4a86c5;padding:.6em 1em}li{margin:.3em 0}dt{font-weight:600}
dd{margin:0 0 .5em 1.2em}"""

#: caption of each figure, by file-name prefix; ``{layer}`` is filled in
CAPTIONS = {
    "fit_quality": "Fit quality per cell: correlation of the model's rate with the trial-averaged test "
                   "response (y) against the noise ceiling of that trial average (x). A cell on the dashed "
                   "identity line is predicted as well as its trial-to-trial noise allows. Colours/markers: "
                   "cell types (when known).",
    "contributions": "Contributions of each {layer} channel to the surprisal of the population response over "
                     "time (red: excitatory/positive, blue: inhibitory/negative; summed over space), with the "
                     "model's firing rates and the mode loadings below. Look for channels that act together at "
                     "the same moments.",
    "modes": "The sparse contribution modes of {layer}: each row is one mode's weight on each channel's "
             "contribution, relative to its largest weight, ordered by the share of contribution energy it "
             "explains (right). The title says what the modes were fitted on: by default the excitatory part "
             "C+ only, as the paper (C\u2212 is then not modelled and not shown); with sign='both' the "
             "excitatory (red) and inhibitory (blue) parts of each mode. A mode is a group of model "
             "interneurons that act together; it is active at a time bin when its loading is non-zero.",
    "modes_sweep": "Robustness of the modes (fitted on the same contribution parts as above) to their settings, "
                   "one changed at a time as in the paper's supplement: stability of the modes against the "
                   "default fit (dashed: the level a robust setting keeps), R², L0 (active modes per bin) and "
                   "the number of modes.",
    "cell_types": "Control features: correlation of each cell's rate with each {layer} surprisal mode's loading "
                  "(the paper's cell-type features), cells grouped by the primary types (grey strip) and "
                  "labelled by their true type when known.",
    "types_primary": "The primary cell types. Left: the primary features of every cell (rows grouped by type; "
                     "strips: the types found and the true types when known). Middle: the consensus, how often "
                     "two cells fell in one type over resamples of windows (blocks) and cells, and each cell's "
                     "confidence (its mean consensus with its type-mates; orange below 0.8, with the alternative "
                     "type). Right: the evidence for each number of types (fraction of ambiguous cell pairs, "
                     "silhouette), the chosen k and, when known, the true k.",
    "irfs": "Instantaneous receptive fields in {layer}: rank-1 spatial maps (cropped around the cells) and "
            "temporal filters (s before the response) of representative cells, per combination of active "
            "modes (active: non-zero loading, the same definition as the modes table; modes fitted on the "
            "contribution parts stated there). Changes across rows show how the active modes reshape what a "
            "cell responds to.",
    "interneurons": "Model units vs recorded interneurons: held-out correlation of each interneuron's best "
                    "model unit against the chance level from circularly shifted recordings, and correlation "
                    "maps of example units.",
    "sparsity": "Hoyer sparsity of contributions and of activations across channels, per layer (1: one "
                "channel carries everything; 0: all channels equal).",
    "layer_trends": "Contributions (red) vs activations (grey) per layer, as in the paper's Fig. 3: sparsity, "
                    "E/I correlation (contributions only) and dimensionality; bars are 95 % block-bootstrap "
                    "intervals over windows.",
    "ablation": "Ablation and preservation curves, as in the paper's Fig. 6: the mean rate of each mode's own "
                "cells (solid) and of the other cells (dashed) when the mode's top-weighted channels are "
                "silenced (left) or kept alone (middle), for contribution modes (red) and the activation-mode "
                "control (grey); bands: 95 % bootstrap intervals over modes. Crosses: random channel sets of "
                "each contribution mode's size (own cells, bars 2.5–97.5 % over sets); open circles: the "
                "mode's own set. Right: specificity, median over modes.",
    "ensemble": "The ensemble's silencing predictions. Left: every model's predicted change of each cell's "
                "mean rate when a recorded interneuron is silenced (one column per interneuron-cell pair, sorted "
                "by the ensemble's prediction, black line); red pairs are stated (every model agrees on the sign "
                "and the change is large enough), grey pairs are not. Right, when the truth is known: the "
                "ensemble's prediction against the true change, thin bars ±1.96 × the spread over models, thick "
                "bars ±1.96 × the spread over time; the dashed diagonal is a perfect prediction; both axes are "
                "linear within ±20 % and logarithmic beyond.",
    "stimulus_view": "A stretch of the stimulus with the cells' rates (model in colour, recorded trial average "
                     "in grey), each layer's mode loadings and the IRF moments (triangles); the numbered "
                     "moments' rank-1 spatial receptive fields are below (red centre = ON, blue = OFF).",
    "meis": "Input-space view of the {layer} modes (the retina counterpart of the paper's Fig. 7): the "
            "stimulus window that drives each mode's loading most, found by gradient ascent on the projection "
            "of the window's contributions (activation × gradient of the surprisal) onto the mode's weights, at "
            "a fixed RMS contrast of 1 (z-scored units; the ascent concentrates it on a few pixels, so local "
            "contrast far exceeds the stimulus'). Shown as its rank-1 spatial map (red: brightening drives the "
            "mode) and temporal profile.",
    "layer_agreement": "Cell-type clusterings from the first and second layer side by side (the paper's "
                       "Fig. 8C): the number of cells in each pair of clusters, matched clusters on the "
                       "diagonal, with the adjusted Rand index.",
}

#: what each table column means, shown under the table
COLUMN_HELP = {
    "completeness median / p95 / max": "|Σ contributions − ΔS| / |ΔS| per window: how far the contributions "
                                       "fall short of the change of the target they decompose (0 = exact).",
    "modes": "number of modes (how it was chosen: 'count rule'; the count may exceed the channels).",
    "R²": "variance of the contributions explained by the modes (held-out: on bins left out of the fit).",
    "L0": "mean number of active modes per time bin; a mode is active when its loading is non-zero (the "
          "model zeroes every loading whose part of the reconstruction is below its activity cut); "
          "'no active mode': share of bins where none is. Multi-channel: no channel carries more than 80 % "
          "of the mode's weight.",
    "stability": "Hungarian-matched cosine of the modes across seeds, summed over matched pairs and divided "
                 "by the larger count (1 = the same modes every time): the mean over seed pairs, with the "
                 "lowest pair beside it (the spread over seeds).",
    "ARI": "adjusted Rand index against the true cell types (1 = identical partition, 0 = chance).",
}


def embed_png(path: Path, caption: str | None = None) -> str:
    """A figure with its caption (``caption`` or the file name) and a pointer to its SVG."""
    raw = Path(path).read_bytes()
    data = base64.b64encode(raw).decode()
    text = html.escape(caption) if caption else html.escape(Path(path).stem.replace("_", " "))
    width = _png_width(raw)
    style = f' style="width:{int(width * 0.65)}px;max-width:100%"' if width else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}"{style}>'
            f"<figcaption>{text} <span class='note'>(vector version: "
            f"<code>figures/{html.escape(Path(path).stem)}.svg</code>)</span></figcaption></figure>")


def _png_width(raw: bytes) -> int | None:
    """Pixel width from a PNG header (shown at 0.65 x, i.e. about 130 px per inch at 200 dpi)."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 24:
        return None
    return int.from_bytes(raw[16:20], "big")


def _caption(path: Path) -> str:
    stem = path.stem
    for prefix, text in sorted(CAPTIONS.items(), key=lambda item: -len(item[0])):   # longest prefix first
        if stem == prefix or stem.startswith(prefix + "_"):
            layer = stem[len(prefix) + 1:] if stem != prefix else ""
            return text.format(layer=layer or "the layer")
    return stem.replace("_", " ")


def _figures(figures: Sequence[Path], prefix: str) -> str:
    return "".join(embed_png(p, _caption(p)) for p in figures
                   if p.suffix == ".png" and (p.stem == prefix or p.stem.startswith(prefix + "_")))


def _scalar(ds: xr.Dataset | None, name: str) -> float | None:
    if ds is None or name not in ds:
        return None
    value = np.asarray(ds[name].values)
    return float(value) if value.size == 1 else None


# --------------------------------------------------------------------------- sections
def _fit_rows(stats: xr.Dataset) -> tuple[str, dict[str, float]]:
    medians = {k[len("fit_median_"):]: float(v) for k, v in stats.attrs.items() if k.startswith("fit_median_")}
    rows = [{"metric": k.replace("_", " "), "median over reliable cells [95 % interval]": fit_interval_text(stats, k),
             "meaning": FIT_METRICS.get(k, "")} for k, v in medians.items() if k in FIT_METRICS]
    return html_table(rows, text_columns=("metric", "meaning")), medians


def _completeness(stats: xr.Dataset, layers: Sequence[str]) -> tuple[str, float]:
    comp = stats.get("completeness_error")
    rows, worst = [], 0.0
    for layer in layers:
        r: dict[str, Any] = {"layer": layer}
        if comp is not None and layer in comp["layer"].values:
            for st in comp["statistic"].values:
                r[f"completeness {st}"] = float(comp.sel(layer=layer, statistic=st))
            worst = max(worst, float(comp.sel(layer=layer, statistic="p95")))
        for var, label in (("contribution_sparsity_mean", "contribution sparsity (mean over windows)"),
                           ("activation_sparsity_mean", "activation sparsity (mean over windows)"),
                           ("contribution_dimensionality", "contribution dimensionality"),
                           ("pos_neg_correlation_mean", "E/I correlation")):
            if var in stats and "layer" in stats[var].dims and layer in stats["layer"].values:
                r[label] = float(stats[var].sel(layer=layer))
        rows.append(r)
    return html_table(rows), worst


def _mode_rows(modes: Mapping[str, xr.Dataset], layers: Sequence[str]) -> list[dict[str, Any]]:
    return mode_table_rows(modes, layers)


def _feature_name(name: Any) -> str | None:
    if name is None:
        return None
    text = str(name)
    return "the primary features" if text == "primary" else \
        text.replace("_", " ").replace("/", ": ")


def _type_rows(types: xr.DataTree) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    root = types.to_dataset()
    info: dict[str, Any] = {"k": int(root["chosen_k"]) if "chosen_k" in root else None,
                            "ari": _scalar(root, "ari_truth"), "winner": _feature_name(root.attrs.get("winner")),
                            "primary": root.attrs.get("primary", "")}
    rows = []
    if "clustering_k" in root:
        for i, name in enumerate(root["clustering"].values):
            row = {"features": f"primary: {root.attrs.get('primary', 'drive')}" if str(name) == "primary"
                   else str(name).replace("_", " ").replace("/", ": "),
                   "k": int(root["clustering_k"].values[i])}
            if "clustering_ari_truth" in root:
                row["ARI vs truth"] = float(root["clustering_ari_truth"].values[i])
            rows.append(row)
    for var in ("layer_agreement", "half_agreement"):
        if var in root:
            info[var] = root[var]
    info["uncertainty"] = type_uncertainty_html(root)
    return rows, info


def _interneuron_section(inter: xr.Dataset | None) -> tuple[str, dict[str, Any]]:
    if inter is None:
        return "<p class='note'>No interneuron files were given; this stage was skipped.</p>", {}
    n = inter.sizes["interneuron"]
    rows, note = interneuron_rows(inter), interneuron_note(inter)
    median_r = median_interval(inter["heldout_correlation"].values)
    info = {"median_r": median_r[0], "median_r_interval": median_r[1:],
            "chance": float(np.nanmedian(inter["chance_p95"])), "n": n,
            "type_match": inter.attrs.get("type_match_rate")}
    extra = (f"<p>The best unit's type matches the interneuron's true type for "
             f"{fmt(100 * info['type_match'], 0)} % of the interneurons.</p>"
             if info["type_match"] is not None else "")
    if "significant" in inter:
        info["n_significant"] = int(np.sum(inter["significant"].values))
    return html_table(rows) + note + extra, info


_CENTER_WORDS = {"primary": "the primary model's (the others give its spread)", "mean": "the mean over models",
                 "median": "the median over models"}


def _ensemble_html(exp: xr.Dataset, figures: str) -> str:
    """How the ensemble makes the predictions, and how its stated pairs score against the truth."""
    names = ", ".join(str(n) for n in exp["member_name"].values[1:])
    text = (f"<p><b>Model uncertainty.</b> The interneuron predictions come from an ensemble of "
            f"{exp.sizes['member']} models fitted to the same recording with different seeds and held-out "
            f"blocks (the primary model and {html.escape(names)}). Each model matches every recorded interneuron "
            f"to its own best unit and silences that unit's channel; the prediction is "
            f"{_CENTER_WORDS.get(str(exp.attrs.get('ensemble_center')), 'the ensemble centre')} and "
            f"its 95 % interval combines the spread over models with the spread over time. A change is stated "
            f"only when every model predicts its sign and the predicted change is at least "
            f"{100 * float(exp.attrs.get('min_stated_effect', np.nan)):.0f} %: "
            f"{int(np.asarray(exp['stated'].values).sum())} of {int(np.asarray(exp['stated'].values).size)} "
            f"pairs.")
    if "stated_sign_accuracy" in exp and np.isfinite(float(exp["stated_sign_accuracy"])):
        text += (f" Against the truth, the stated pairs with a true change of at least 20 % "
                 f"({int(float(exp['n_stated_sign_pairs']))}) have the right sign for "
                 f"<b>{100 * float(exp['stated_sign_accuracy']):.0f} %</b> (the correlational baseline on the "
                 f"same pairs: {100 * float(exp['stated_baseline_sign_accuracy']):.0f} %).")
    return text + "</p>" + figures


def _experiment_section(exp: xr.Dataset | None, cell_types: Any, ablation_figures: str = "",
                        random_state: int = 0, ensemble_figures: str = "") -> tuple[str, list[str], dict[str, Any]]:
    if exp is None:
        return "<p class='note'>No experiments were run.</p>", [], {}
    from retcodec.analysis.ablation import ablation_curves
    from retcodec.analysis.experiments import hypotheses, hypothesis_lines

    curves = ablation_curves(exp, random_state=random_state) if "ratio" in exp else None

    hyps = hypotheses(exp, cell_types=cell_types)
    lines = [h.sentence for h in hyps]
    notes = hypothesis_lines(exp, hyps, cell_types)[len(lines):]
    info: dict[str, Any] = {k: _scalar(exp, k) for k in ("spearman", "sign_accuracy", "baseline_spearman",
                                                           "baseline_sign_accuracy", "n_scored_pairs",
                                                           "n_sign_pairs")}
    info["n_hypotheses"] = len(hyps)
    info["notes"] = notes
    if "mapping" in exp.coords and "direction" in exp["mapping"].values:
        how = ("<p>Each recorded interneuron was silenced in the model in two ways: its best-matching model "
               "channel set to zero after its batch norm and ReLU, and its <i>direction</i> — the non-negative "
               "combination of channels of both hidden layers that best predicts its held-out membrane potential "
               "— projected out of each layer's activity (both in experiments.nc; the predictions and hypotheses "
               "below use the mapping named in its <code>prediction_mapping</code>, by default the single "
               "channel, which scored best on the benchmark's tuning retinas). ")
    else:
        how = ("<p>Each recorded interneuron was silenced in the model as its best-matching model channel, set "
               "to zero after its batch norm and ReLU (<code>retcodec run --directions</code> adds the "
               "direction mapping as a scored alternative). ")
    parts = [how + "Each mode's top channels were "
             "set to zero. Every "
             "ganglion cell's mean rate over the analysed stimulus was compared with the intact model. "
             "Effect = (silenced − intact) / intact; intervals are 95 % ranges over time blocks and over the "
             "recordings of one interneuron type, which make one hypothesis. Interneurons without a model "
             "counterpart and cells the model fits poorly get no hypothesis (listed below).</p>"]
    if info["spearman"] is not None:
        parts.append(
            "<p class='box'><b>Checked against the ground truth</b> (the in-silico circuit with the same "
            "interneuron type silenced and re-simulated): "
            f"Spearman r between predicted and true effects over {fmt(int(info['n_scored_pairs'] or 0))} "
            f"(interneuron, cell) pairs = <b>{fmt(info['spearman'])}</b> (baseline: the matched channel's "
            f"correlation with each cell's rate, {fmt(info['baseline_spearman'])}); sign correct on "
            f"<b>{fmt(100 * (info['sign_accuracy'] or np.nan), 0)} %</b> of the {fmt(int(info['n_sign_pairs'] or 0))} "
            f"pairs whose true effect is at least 20 % (baseline {fmt(100 * (info['baseline_sign_accuracy'] or np.nan), 0)} %).</p>")
    if "member_effect" in exp:
        parts.append(_ensemble_html(exp, ensemble_figures))
    parts.append(ablation_html(curves) + ablation_figures)
    parts.append("<h3>Hypotheses to take to the rig</h3>")
    parts.append("<ol>" + "".join(f"<li>{html.escape(s)}</li>" for s in lines) + "</ol>" if lines else
                 "<p class='note'>No silencing had a clear effect (|effect| ≥ 10 % with an interval "
                 "excluding 0).</p>")
    if notes:
        parts.append("<h3>What the model cannot predict, and how it scores</h3><ul>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in notes) + "</ul>")
    return "".join(parts), lines, info


def _methods(cfg: Any, n_windows: int) -> str:
    return (
        "<h2>Methods in brief</h2><dl>"
        f"<dt>Contributions</dt><dd>Integrated gradients ({html.escape(cfg.method)}, {cfg.steps} steps, "
        "zero baseline) of the <i>surprisal</i> of the population response — ½ (y − μ)ᵀ Σ⁻¹ (y − μ), with "
        "μ, Σ the mean and (Ledoit–Wolf shrunk) covariance of the model's outputs — decomposed at each hidden "
        "layer (the convolution outputs before batch norm), split into positive (excitatory) and negative "
        f"(inhibitory) parts and summed over space, for {fmt(n_windows)} test windows.</dd>"
        "<dt>Modes</dt><dd>A thresholded sparse autoencoder fitted to each layer's contributions supplies "
        "candidate directions; atoms that are scaled copies are merged, and modes (patterns over channels) are "
        "grown one at a time on held-out reconstruction. A mode is active in a time bin when its loading "
        "passes the model's activity threshold (otherwise its loading is exactly 0); the number of modes is "
        "chosen on the held-out R²–L0 frontier (rule in the Modes section); stability across seeds is "
        "reported.</dd>"
        "<dt>Cell types</dt><dd>Each cell's own rate is decomposed into contributions of every channel "
        "(E and I apart) of both layers — its drive profile — and cells are clustered by k-means, k chosen "
        "by a fixed rule; controls (activation modes, surprisal-mode correlations, raw rates) are clustered "
        "with the same rule.</dd>"
        "<dt>Instantaneous receptive fields</dt><dd>The gradient of each cell's rate with respect to the "
        "stimulus at single moments, grouped by which modes are active, summarised by rank-1 filters.</dd>"
        "<dt>Interneurons</dt><dd>Each recorded interneuron's best model unit is chosen on half of the "
        "data and scored on the other half; chance from circularly shifted recordings.</dd>"
        "<dt>Silencing experiments</dt><dd>A recorded interneuron is silenced by setting its best-matching "
        "channel to zero after batch norm and ReLU (a silenced interneuron transmits nothing) and, as a second "
        "mapping, by projecting its fitted direction (a non-negative combination of channels) out of the "
        "hidden layers' activity; a mode's channels are set to zero. The "
        "change of each cell's mean rate is measured, with single channels and random channel sets as "
        "controls.</dd></dl>"
        "<p class='note'>The method and every file layout are documented in the repository's "
        "<code>docs/</code> (method.md, modes.md, celltypes.md, experiments.md, formats.md).</p>")


def _overview(run: Any, n_windows: int, medians: Mapping[str, float], mode_rows: list[dict[str, Any]],
              type_info: Mapping[str, Any], inter_info: Mapping[str, Any], exp_info: Mapping[str, Any],
              hyps: Sequence[str], worst_completeness: float, simulated: bool,
              differences: Sequence[str] = ()) -> str:
    rec = run.inputs.recording
    items = [f"<b>Data.</b> {fmt(n_windows)} test windows of 10 ms ({fmt(n_windows * 0.01, 0)} s) of "
             f"{html.escape(str(rec.attrs.get('stim_type', 'stimulus')))} stimulation, {rec.sizes['cell']} ganglion "
             f"cells" + (" of the bundled in-silico retina (simulated, with known ground truth)" if simulated
                         else "") + "."]
    if medians:
        items.append(f"<b>Model quality.</b> The model's rate correlates with the trial-averaged response at "
                     f"median r = {fmt(medians.get('correlation'))}, which is "
                     f"{fmt(100 * medians.get('normalized_correlation', np.nan), 0)} % of the noise ceiling "
                     f"of that average; it explains {fmt(100 * medians.get('feve', np.nan), 0)} % of the "
                     f"explainable variance (FEVE).")
    if mode_rows:
        items.append("<b>Modes.</b> " + "; ".join(
            f"{r['layer']}: {r['modes']} modes explain {fmt(100 * r['R²'], 0)} % of the contribution "
            f"variance with {fmt(r['L0'])} active per time bin on average "
            f"({fmt(r['multi-channel modes (%)'], 0)} % of them multi-channel; seed stability "
            f"{fmt(r['stability'], 3)})" for r in mode_rows) + ".")
    if differences:
        items.append("<b>Where this retina model departs from the paper's ImageNet trends.</b> "
                     + " ".join(html.escape(d) for d in differences))
    if type_info.get("k") is not None:
        text = f"<b>Cell types.</b> The drive profiles split the cells into {type_info['k']} types"
        if type_info.get("ari") is not None:
            text += f", agreeing with the true types at ARI = {fmt(type_info['ari'])}"
        if type_info.get("winner"):
            text += f"; of all feature sets compared, {html.escape(str(type_info['winner']))} match the truth best"
        items.append(text + ".")
    if inter_info:
        items.append(f"<b>Interneurons.</b> The best model unit of each of {inter_info['n']} recorded "
                     f"interneurons predicts it on held-out data at median r = "
                     f"{fmt_interval(inter_info['median_r'], *inter_info.get('median_r_interval', (None, None)))} "
                     f"(chance 95th percentile {fmt(inter_info['chance'])})"
                     + (f"; {inter_info['n_significant']} of {inter_info['n']} are significant after Holm "
                        f"correction" if "n_significant" in inter_info else "") + ".")
    if exp_info.get("n_hypotheses") is not None:
        text = f"<b>Experiments.</b> {exp_info['n_hypotheses']} silencing predictions have a clear effect"
        if exp_info.get("spearman") is not None:
            text += (f"; against the circuit's true silencing effects they reach Spearman r = "
                     f"{fmt(exp_info['spearman'])} (baseline {fmt(exp_info['baseline_spearman'])}) and "
                     f"{fmt(100 * exp_info['sign_accuracy'], 0)} % correct signs on large effects")
        items.append(text + ".")
    trust = (f"<b>How far to trust it.</b> In 95 % of the windows the contributions add up to the change "
             f"of the target to within {fmt(100 * worst_completeness, 1)} %")
    trust += (" — <span class='warn'>the rest, mostly windows where the target barely changes, are "
              "approximate (more steps or steps='auto' fix this)</span>" if worst_completeness > 0.05 else "")
    trust += ("; the data are simulated, so the findings test the method, not a retina" if simulated else "")
    items.append(trust + ".")
    top = "".join(f"<li>{html.escape(h)}</li>" for h in hyps[:3])
    return ("<h2>Overview</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
            + (f"<p><b>Top hypotheses</b> (all in <a href='#experiments'>Experiments</a>):</p><ol>{top}</ol>"
               if top else ""))


def _trend_differences(stats: xr.Dataset) -> list[str]:
    """The layer-trend sentences that go against the paper's ImageNet trends."""
    from retcodec.analysis.layer_trends import paper_trend_notes

    if "contrast" not in stats:
        return []
    return [text for text, agrees in paper_trend_notes(stats) if agrees is False]


def _provenance(run: Any) -> str:
    params = json.dumps(run.params, indent=1, default=str)
    timing_rows = []
    for stage, seconds in run.timings.items():
        reused = any(line.startswith(f"[{stage}] skipped") for line in getattr(run, "log", []))
        timing_rows.append({"stage": stage, "seconds": float(seconds),
                            "this run": "reused (time of the original computation)" if reused else "computed"})
    return ("<h2>Parameters and provenance</h2><pre>" + html.escape(params) + "</pre>"
            "<h3>Versions</h3><pre>" + html.escape(json.dumps(versions(), indent=1)) + "</pre>"
            "<h3>Input checksums (sha256)</h3>"
            + html_table([{"file": Path(k).name, "path": k, "sha256": v[:16] + "…"}
                          for k, v in run.inputs.checksums.items()])
            + "<h3>Stage times</h3>" + html_table(timing_rows))


# --------------------------------------------------------------------------- the report
def write_report(run: Any, results: Mapping[str, Any]) -> Path:
    """Write ``report.html`` and ``hypotheses.txt`` into the run's folder (atomically); return the report path.

    ``run`` carries ``cfg``, ``inputs`` (model/recording paths, recording, checksums), ``params``,
    ``timings``, ``log`` and ``out``; ``results`` maps stage names to their outputs.
    """
    cfg, rec = run.cfg, run.inputs.recording
    layers = list(cfg.layers)
    contrib, modes, types = results["contributions"], results["modes"], results["types"]
    stats, figures = results["statistics"], [Path(p) for p in results.get("figures", [])]
    simulated = bool(rec.attrs.get("truth_circuit"))
    n_windows = int(contrib[layers[0]].sizes["time"])
    cell_types = rec["cell_type"].values if "cell_type" in rec.coords else None

    fit_table, medians = _fit_rows(stats)
    comp_table, worst = _completeness(stats, layers)
    mode_rows = _mode_rows(modes, layers)
    type_rows, type_info = _type_rows(types)
    inter_html, inter_info = _interneuron_section(results.get("interneurons"))
    exp_html, hyps, exp_info = _experiment_section(results.get("experiments"), cell_types,
                                                   _figures(figures, "ablation"), int(cfg.random_state or 0),
                                                   _figures(figures, "ensemble"))

    s: list[str] = []
    s.append(f"<h1>retcodec report</h1><p>Model <code>{html.escape(str(run.inputs.model_path))}</code> on "
             f"<code>{html.escape(str(run.inputs.recording_path))}</code> (test split).</p>")
    if simulated:
        s.append("<p class='warn'>This is the bundled <b>in-silico retina</b>: simulated data whose cell "
                 "types, interneurons and wiring are known, not a recording of a real retina.</p>")
    s.append(_overview(run, n_windows, medians, mode_rows, type_info, inter_info, exp_info, hyps, worst,
                       simulated, _trend_differences(stats)))
    s.append(_methods(cfg, n_windows))
    s.append("<h2>Model fit (test split)</h2>" + fit_table + _figures(figures, "fit_quality"))
    s.append(f"<h2>Contributions</h2><p class='note'>{COLUMN_HELP['completeness median / p95 / max']} "
             "Sparsity: Hoyer index across channels. E/I correlation: correlation over time of each "
             "channel's positive and negative parts.</p>" + comp_table
             + (f"<p class='warn'>In 5 % of the windows the completeness error exceeds {fmt(100 * worst, 1)} % "
                "(relative errors blow up where the target barely changes): treat single-window "
                "contributions there as approximate, or use steps='auto'.</p>" if worst > 0.05 else "")
             + _figures(figures, "contributions") + trends_html(stats) + _figures(figures, "layer_trends"))
    s.append("<h2>Contribution modes</h2><p class='note'>" + " ".join(
        f"<b>{k}</b>: {v}" for k, v in COLUMN_HELP.items() if k in ("modes", "R²", "L0", "stability"))
        + " Activation modes: the same estimator on the activations (the control).</p>"
        + html_table([{k: v for k, v in r.items() if k != "count rule"} for r in mode_rows],
                     text_columns=("layer", "fitted on"))
        + "".join(f"<p class='note'><b>Count rule, {html.escape(str(r['layer']))}</b>: "
                  f"{html.escape(str(r['count rule']))}</p>" for r in mode_rows if r.get("count rule"))
        + frontier_html(modes, layers)
        + robustness_html(modes, results.get("mode_sweeps") or {}, layers, ROBUST_STABILITY, ROBUST_R2_LOSS) + _figures(figures, "modes"))
    type_text = (f"<p>Primary answer: <b>{type_info['k']} cell types</b> from "
                 f"{html.escape(str(type_info.get('primary') or 'the drive profiles'))}"
                 + (f", ARI vs truth {fmt(type_info['ari'])}" if type_info.get("ari") is not None else "")
                 + (f". Best-matching features: {html.escape(str(type_info['winner']))}" if type_info.get("winner") else "")
                 + ".</p>") if type_info.get("k") is not None else ""
    agree = ""
    if "layer_agreement" in type_info:
        la = type_info["layer_agreement"]
        agree = ("<p>Agreement of the two layers' clusterings (ARI; the paper reports that they agree): "
                 + ", ".join(f"{html.escape(str(f))} {fmt(float(v))}" for f, v in
                             zip(la[la.dims[0]].values, la.values)) + ".</p>")
    s.append("<h2>Cell types</h2>" + type_text + "<p class='note'>Every row is one clustering of the cells, "
             f"k chosen by the same rule. {COLUMN_HELP['ARI']}</p>" + html_table(type_rows)
             + type_info.get("uncertainty", "") + _figures(figures, "types_primary") + agree
             + _figures(figures, "layer_agreement") + _figures(figures, "cell_types"))
    rows = irf_similarity_rows(results.get("irfs"), layers)
    s.append("<h2>Instantaneous receptive fields</h2><p class='note'>Pearson correlation of a cell's rank-1 "
             "spatial filters at moments with the same combination of active modes (within) vs different "
             "combinations (across): within > across means the modes predict how the receptive field "
             "changes. A mode is active where its loading is non-zero, as in the modes table, so the mean "
             "number of active modes here is that table's L0. Brackets: 95 % bootstrap intervals over cells; "
             "p: the within − across difference against 1000 shuffles of the combination labels of each "
             "cell's moments. Sign convention of the maps: each temporal filter is positive at its peak lag, "
             "so the spatial map carries the polarity (red centre = ON, blue = OFF).</p>"
             + html_table(rows, text_columns=("layer",)) + _figures(figures, "irfs"))
    s.append("<h2>What drives each mode, in stimulus space</h2>" + _figures(figures, "meis"))
    s.append(stimulus_view_html() + _figures(figures, "stimulus_view"))
    s.append("<h2>Model interneurons vs recordings</h2>" + inter_html + _figures(figures, "interneurons"))
    s.append("<h2 id='experiments'>Experiments and hypotheses</h2>" + exp_html)
    s.append("<h2>Sparsity</h2>" + _figures(figures, "sparsity"))
    s.append(_provenance(run))
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' "
           f"content='width=device-width, initial-scale=1'><title>retcodec report</title>"
           f"<style>{CSS}</style></head><body>{''.join(s)}</body></html>")
    path = Path(run.out) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    with atomic_path(Path(run.out) / "hypotheses.txt") as tmp:
        tmp.write_text("\n".join([*hyps, *exp_info.get("notes", [])]) + "\n", encoding="utf-8")
    return path
