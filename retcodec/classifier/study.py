"""The whole classifier study in one call: results folder, figures and ``report.html``.

:func:`run_study` computes contributions (IG, 10 steps, top-1 logit), modes on
contributions and on activations per layer, mode–class correlations,
ablation/preservation controls for both kinds of modes, input maps of the
contribution modes and layer statistics, and writes::

    out/contributions.nc          per-image contributions (image, channel, sign)
    out/modes_contribution.nc     modes per layer (one group each)
    out/modes_activation.nc
    out/correlation_<source>.nc   (mode, class) per layer
    out/control_<source>.nc       ablation/preservation per layer
    out/statistics.nc
    out/summary.json              headline numbers
    out/figures/*.png|svg
    out/report.html
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from retcodec.report.figures import save_figure
from retcodec.modes import save_modes
from retcodec.io.provenance import provenance_attrs
from retcodec.report.html import CSS, embed_png, html_table
from retcodec.io.storage import atomic_path, write_netcdf_atomic
from .adapter import ClassifierAdapter
from .analysis import (DEFAULT_FRACTIONS, channel_order, classifier_statistics, control_experiments,
                       fit_modes, image_contributions, input_maps, mode_class_correlation)
from .images import as_image_set

__all__ = ["run_study", "headline"]

SOURCES = ("contribution", "activation")


def headline(correlation: xr.Dataset, control: xr.Dataset) -> dict[str, float]:
    """Summary numbers of one layer and one mode source.

    ``best_class_correlation``: mean over classes of the largest mode–class
    correlation; ``ablation_specificity`` / ``preservation_specificity``: mean
    over classes; ``positive_ablation_share``: share of classes whose ablation
    specificity is > 0.
    """
    corr = correlation["correlation"].values
    spec = control["specificity"]
    return {"best_class_correlation": float(np.nanmean(np.nanmax(corr, axis=0))),
            "ablation_specificity": float(spec.sel(kind="ablate").mean()),
            "preservation_specificity": float(spec.sel(kind="preserve").mean()),
            "positive_ablation_share": float((spec.sel(kind="ablate") > 0).mean()),
            "n_modes": int(correlation.sizes["mode"])}


# --------------------------------------------------------------------------- figures
def _plot_correlations(corrs: Mapping[str, xr.Dataset], layer: str) -> Figure:
    fig = Figure(figsize=(7.0, 3.2), constrained_layout=True)
    axes = fig.subplots(1, len(corrs))
    for ax, (source, ds) in zip(np.atleast_1d(axes), corrs.items()):
        c = ds["correlation"].values
        im = ax.imshow(c, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks(range(c.shape[1]), [str(n) for n in ds["class_name"].values], rotation=90, fontsize=6)
        ax.set_xlabel("class")
        ax.set_ylabel("mode")
        ax.set_title(f"{source} modes, layer {layer}", fontsize=8)
    fig.colorbar(im, ax=axes, label="Pearson r (loadings vs class)")
    return fig


def _plot_controls(controls: Mapping[str, xr.Dataset], layer: str) -> Figure:
    fig = Figure(figsize=(7.0, 5.0), constrained_layout=True)
    axes = fig.subplots(len(controls), 2, squeeze=False)
    for row, (source, ds) in enumerate(controls.items()):
        for col, kind in enumerate(ds["kind"].values):
            ax = axes[row, col]
            f = ds["fraction"].values
            for group, style in (("on", "-"), ("off", "--")):
                r = ds["ratio"].sel(kind=kind, group=group)
                for curve in r.values:
                    ax.plot(f, curve, style, color="C0" if group == "on" else "C1", alpha=0.25, lw=0.8)
                ax.plot(f, np.nanmean(r.values, axis=0), style, color="C0" if group == "on" else "C1",
                        lw=2, label=f"{group}-target (mean)")
            ax.set_title(f"{kind}, {source} modes, layer {layer}", fontsize=8)
            ax.set_xlabel("share of channels p")
            ax.set_ylabel("accuracy ratio")
            ax.legend(fontsize=6)
    return fig


def _plot_input_maps(images: np.ndarray, maps: np.ndarray, titles: Sequence[str]) -> Figure:
    n = len(images)
    fig = Figure(figsize=(1.4 * n, 1.6), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, img, m, title in zip(axes, images, maps, titles):
        ax.imshow(img.mean(axis=0), cmap="gray")
        ax.imshow(np.ma.masked_less_equal(m, 0), cmap="hot", alpha=0.6)
        ax.set_title(title, fontsize=6)
        ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------- study
def run_study(model: ClassifierAdapter, images: Any, out: str | Path, target: Any = "top_logit",
              steps: int | str = 10, superclasses: Mapping[str, str] | None = None,
              fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
              max_epochs: int = 300, n_map_images: int = 6, batch_size: int = 32,
              device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Run the classifier study on every layer of ``model``; write ``out`` (see module doc).

    Returns the summary dict (also written to ``summary.json``):
    ``{layer: {source: headline(...)}}`` plus ``accuracy`` and ``completeness_error``.
    """
    from retcodec.io.locking import hold_lock
    from retcodec.io.storage import check_output_folder

    out = check_output_folder(out, "out")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    with hold_lock(out / ".retcodec.lock", f"results folder {out}"):
        return _run_study(model, images, out, target, steps, superclasses, fractions, seed, max_epochs,
                          n_map_images, batch_size, device, progress)


def _run_study(model: ClassifierAdapter, images: Any, out: Path, target: Any, steps: int | str,
               superclasses: Mapping[str, str] | None, fractions: Sequence[float], seed: int,
               max_epochs: int, n_map_images: int, batch_size: int, device: str,
               progress: bool) -> dict[str, Any]:
    images = as_image_set(images, normalization=model.normalization)
    # streamed to disk; an interrupted study resumes its contributions
    tree = image_contributions(model, images, target=target, steps=steps, batch_size=batch_size,
                               device=device, progress=progress, out=out / "contributions.nc")
    labels = tree["label"].values
    names = [str(n) for n in tree["class_name"].values]
    summary: dict[str, Any] = {
        "accuracy": float(np.mean(tree["prediction"].values[labels >= 0] == labels[labels >= 0])),
        "completeness_error": float(np.nanmax(tree["completeness_error"].sel(statistic="total").values)),
        "layers": {}}
    modes_all: dict[str, dict[str, xr.Dataset]] = {s: {} for s in SOURCES}
    sections = []
    for layer in model.layers:
        corrs, controls = {}, {}
        for source in SOURCES:
            modes = fit_modes(tree, layer, source=source, random_state=seed, max_epochs=max_epochs)
            modes_all[source][layer] = modes
            corrs[source] = mode_class_correlation(modes["loadings"], labels, names, superclasses)
            controls[source] = control_experiments(model, images, modes, corrs[source], layer=layer,
                                                   fractions=fractions)
            write_netcdf_atomic(corrs[source], out / f"correlation_{source}_{layer}.nc")
            write_netcdf_atomic(controls[source], out / f"control_{source}_{layer}.nc")
        summary["layers"][layer] = {s: headline(corrs[s], controls[s]) for s in SOURCES}
        figs = [_save(out, f"correlation_{layer}", _plot_correlations(corrs, layer)),
                _save(out, f"control_{layer}", _plot_controls(controls, layer))]
        figs.append(_input_map_figure(out, model, images, layer, modes_all["contribution"][layer],
                                      controls["contribution"], names, target, n_map_images))
        sections.append(_layer_section(layer, summary["layers"][layer], figs))
    for source in SOURCES:
        save_modes(modes_all[source], out / f"modes_{source}.nc")
    stats = classifier_statistics(tree)
    write_netcdf_atomic(stats, out / "statistics.nc")
    summary["statistics"] = _stats_rows(stats)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    _write_report(out, tree, summary, sections)
    return summary


def _save(out: Path, stem: str, fig: Figure) -> Path:
    save_figure(fig, out / "figures" / stem)
    return out / "figures" / f"{stem}.png"


def _input_map_figure(out: Path, model: ClassifierAdapter, images: Any, layer: str, modes: xr.Dataset,
                      control: xr.Dataset, names: Sequence[str], target: Any, n: int) -> Path:
    """Input maps of the first class's best mode (its top quarter of channels) on its images."""
    c = int(control["class"].values[0])
    mode = int(control["mode"].sel({"class": c}))
    order = channel_order(modes, mode)
    top = order[:max(1, len(order) // 4)]
    idx = np.flatnonzero(images.labels == c)[:n]
    subset = images.subset(idx)
    maps = input_maps(model, subset, layer, top, target=target)
    fig = _plot_input_maps(subset[:], maps.values, [f"{names[c]} (mode {mode})"] * len(idx))
    return _save(out, f"input_maps_{layer}", fig)


def _stats_rows(stats: xr.Dataset) -> list[dict[str, Any]]:
    keys = ("contribution_sparsity_mean", "activation_sparsity_mean", "pos_neg_correlation_mean",
            "contribution_dimensionality", "activation_dimensionality", "class_dimensionality",
            "class_dimensionality_activation")
    return [{"layer": str(layer), **{k: float(stats[k].sel(layer=layer)) for k in keys if k in stats}}
            for layer in stats["layer"].values]


def _layer_section(layer: str, numbers: Mapping[str, Mapping[str, float]], figs: Sequence[Path]) -> str:
    rows = [{"modes from": s, **v} for s, v in numbers.items()]
    return (f"<h2>Layer <code>{html.escape(layer)}</code></h2>{html_table(rows)}"
            + "".join(embed_png(p) for p in figs))


def _write_report(out: Path, tree: xr.DataTree, summary: Mapping[str, Any], sections: Sequence[str]) -> Path:
    attrs = provenance_attrs()
    intro = (f"<h1>CODEC classifier study</h1><p>{tree.sizes['image']} images, "
             f"{tree.sizes['class']} classes, accuracy {summary['accuracy']:.3f}; target "
             f"<code>{html.escape(str(tree.attrs.get('target')))}</code>, {html.escape(str(tree.attrs.get('method')))} "
             f"with {tree.attrs.get('steps')} steps; largest total completeness error "
             f"{summary['completeness_error']:.3f}.</p>"
             "<p class='note'>best_class_correlation: mean over classes of the largest mode–class "
             "Pearson r. Specificity: ablation AUC(off) − AUC(on), preservation AUC(on) − AUC(off); "
             "positive means the class's mode matters more for that class.</p>")
    stats = f"<h2>Layer statistics</h2>{html_table(list(summary['statistics']))}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>CODEC classifier study</title>"
            f"<style>{CSS}</style></head><body>{intro}{''.join(sections)}{stats}"
            f"<p class='note'>retcodec {html.escape(str(attrs['retcodec_version']))}, "
            f"{html.escape(str(attrs['created']))}</p></body></html>")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
    return out / "report.html"
