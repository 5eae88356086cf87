"""A self-contained HTML report of a ``retcodec run``, with generated hypotheses.

The report embeds its figures (PNG as base64), states every number a reader
needs (fit quality, completeness, mode quality and stability, cell-type
clusters against the truth and controls, IRF similarity, interneuron matches
with chance levels), the run's parameters, library versions and input
checksums, and a short list of testable hypotheses derived from the modes.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from retcodec.report.hypotheses import generate_hypotheses, image_onsets

__all__ = ["embed_png", "html_table", "write_report", "CSS"]


# --------------------------------------------------------------------------- html
def embed_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
            f"<figcaption>{html.escape(path.stem.replace('_', ' '))} "
            f"(<code>figures/{html.escape(path.stem)}.svg</code>)</figcaption></figure>")


def html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if not np.isfinite(v) else f"{v:.3f}"
    return html.escape(str(v))


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}code{background:#f6f6f6}
.note{color:#555;font-size:.9em}li{margin:.4em 0}"""


def write_report(run: Any, contrib: xr.DataTree, modes: dict[str, xr.Dataset], types: xr.DataTree,
                 irfs: xr.DataTree, inter: xr.Dataset | None, stats: xr.Dataset,
                 figures: Sequence[Path]) -> Path:
    """Write ``report.html`` into the run's folder (atomically) and return its path."""
    from retcodec.io.provenance import versions
    from retcodec.io.storage import atomic_path

    cfg, rec = run.cfg, run.inputs.recording
    layers = list(cfg.layers)
    truth = rec["cell_type"].values if "cell_type" in rec.coords else None
    onsets = image_onsets(rec["stimulus"]) if rec.attrs.get("stim_type") == "naturalscene" else None
    sections: list[str] = []

    simulated = bool(rec.attrs.get("truth_circuit"))
    sections.append(
        f"<h1>retcodec report</h1><p>Model <code>{html.escape(str(run.inputs.model_path))}</code> on "
        f"<code>{html.escape(str(run.inputs.recording_path))}</code> (test split, "
        f"{contrib[layers[0]].sizes['time']} windows, {rec.sizes['cell']} cells).</p>"
        + ("<p class='note'>This is the bundled <b>in-silico retina</b>: simulated data whose cell types "
           "and interneurons are known, not a recording of a real retina.</p>" if simulated else ""))

    fit_rows = [{"metric": k.replace("fit_median_", "median "), "value": float(v)}
                for k, v in stats.attrs.items() if k.startswith("fit_median_")]
    sections.append("<h2>Model fit (test split)</h2>" + html_table(fit_rows))

    comp = stats.get("completeness_error")
    rows = []
    for layer in layers:
        r = {"layer": layer}
        if comp is not None and layer in comp["layer"].values:
            for st in comp["statistic"].values:
                r[f"completeness {st}"] = float(comp.sel(layer=layer, statistic=st))
        for var in ("contribution_sparsity_mean", "activation_sparsity_mean", "contribution_dimensionality",
                    "activation_dimensionality", "pos_neg_correlation_mean"):
            if var in stats and "layer" in stats[var].dims and layer in stats["layer"].values:
                r[var.replace("_", " ")] = float(stats[var].sel(layer=layer))
        rows.append(r)
    sections.append(f"<h2>Contributions ({html.escape(cfg.method)}, {cfg.steps} steps, surprisal target)</h2>"
                    "<p class='note'>Completeness: |Σ contributions − ΔS| / |ΔS| per window. "
                    "Sparsity: Hoyer index across channels.</p>" + html_table(rows))

    rows = []
    for layer in layers:
        ds = modes[layer]
        rows.append({"layer": layer, "alive modes": int(ds.sizes["mode"]), "R²": float(ds["r2"]),
                     "stability (matched cosine)": ds.attrs.get("stability_matched_cosine_mean"),
                     "activation-mode R²": float(modes[f"{layer}_activation"]["r2"])})
    sections.append("<h2>Contribution modes</h2>" + html_table(rows))

    from retcodec.report.tables import type_summary
    trows = type_summary(types)
    agree = types["contribution_modes"].to_dataset().get("agreement")
    agree_txt = ""
    if agree is not None and len(layers) > 1:
        agree_txt = (f"<p>Agreement of the {layers[0]} and {layers[1]} clusterings (ARI): "
                     f"{float(agree.sel(layer=layers[0], layer2=layers[1])):.2f}</p>")
    sections.append("<h2>Cell types from mode patterns</h2><p class='note'>k-means on the standardised "
                    "correlation of each mode's loadings with each cell's model rate; k by silhouette. "
                    "Controls: the same on activation modes and on raw rates. ARI vs truth where the "
                    "truth is known.</p>" + html_table(trows) + agree_txt)

    rows = []
    for layer in layers:
        node = irfs[layer].to_dataset()
        if "within_set_similarity_pooled" in node:
            rows.append({"layer": layer, "combinations": int(node.sizes.get("combination", 0)),
                         "within-combination similarity": float(node["within_set_similarity_pooled"]),
                         "across-combination similarity": float(node["across_set_similarity_pooled"])})
    sections.append("<h2>Instantaneous receptive fields by mode combination</h2><p class='note'>Pearson "
                    "correlation of rank-1 spatial filters of the same cell, within vs across "
                    "combinations of active modes.</p>" + html_table(rows))

    if inter is not None:
        rows = []
        for i in range(inter.sizes["interneuron"]):
            r = {"interneuron": str(inter["interneuron"].values[i]), "class": str(inter["cell_class"].values[i])}
            if "cell_type" in inter.coords:
                r["true type"] = str(inter["cell_type"].values[i])
            r.update({"best unit": f"{inter['best_layer'].values[i]} ch {int(inter['best_channel'].values[i])}",
                      "held-out r": float(inter["heldout_correlation"].values[i]),
                      "in-sample r": float(inter["insample_correlation"].values[i]),
                      "chance p95": float(inter["chance_p95"].values[i]), "p": float(inter["p_value"].values[i])})
            if "type_match" in inter:
                r["type match"] = bool(inter["type_match"].values[i])
            rows.append(r)
        extra = (f"<p>Best unit's type matches the interneuron's true type for "
                 f"{inter.attrs['type_match_rate']:.0%} of cells.</p>" if "type_match_rate" in inter.attrs else "")
        sections.append("<h2>Model interneurons vs recordings</h2><p class='note'>Best unit chosen on half "
                        "of the data and scored on the other half; chance from circularly shifted "
                        "recordings.</p>" + html_table(rows) + extra)

    hyps: list[str] = []
    for layer in layers:
        tnode = types["contribution_modes"][layer].to_dataset()
        inode = irfs[layer].to_dataset() if layer in irfs.children else None
        hyps += generate_hypotheses(layer, modes[layer], tnode, inode, onsets, truth)
    sections.append("<h2>Generated hypotheses</h2><ol>" + "".join(f"<li>{html.escape(h)}</li>" for h in hyps)
                    + "</ol>")

    sections.append("<h2>Figures</h2>" + "".join(embed_png(p) for p in figures if p.suffix == ".png"))
    params = json.dumps(run.params, indent=1, default=str)
    sections.append("<h2>Parameters and provenance</h2><pre>" + html.escape(params) + "</pre>"
                    + "<h3>Versions</h3><pre>" + html.escape(json.dumps(versions(), indent=1)) + "</pre>"
                    + "<h3>Input checksums (sha256)</h3>" + html_table(
                        [{"file": k, "sha256": v} for k, v in run.inputs.checksums.items()])
                    + "<h3>Stage timings (s)</h3>" + html_table(
                        [{"stage": k, "seconds": round(v, 1)} for k, v in run.timings.items()]))
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>retcodec report</title>"
           f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>")
    path = Path(run.out) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    (Path(run.out) / "hypotheses.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    return path
