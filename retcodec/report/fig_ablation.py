"""Ablation and preservation curves of modes (the paper's Fig. 6), with intervals over modes."""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from retcodec.report.fig_trends import SOURCE_COLORS
from retcodec.report.figstyle import FULL_WIDTH, as_dataset, require_variable

__all__ = ["plot_ablation_curves"]

_SOURCE_NAMES = {"contribution": "contributions", "activation": "activations"}
_MODE_NAMES = {"contribution": "contribution modes", "activation": "activation modes (control)"}
_GROUP_STYLES = {"own cells": "-", "other cells": "--"}
_KIND_AXIS = {"ablate": "share of channels silenced\n(the mode's top-weighted first)",
              "preserve": "share of channels kept\n(the mode's top-weighted first)"}


def _color(source: str) -> str:
    return SOURCE_COLORS.get(_SOURCE_NAMES.get(source, source), "k")


def plot_ablation_curves(curves: xr.Dataset) -> Figure:
    """Rate kept vs share of channels silenced (ablate) or kept (preserve), per layer.

    ``curves`` is the Dataset of :func:`~retcodec.analysis.ablation.ablation_curves`.
    One row per layer: ablation, preservation (x: share of the layer's
    channels, the mode's top-weighted first; y: mean rate perturbed / intact),
    contribution modes red, activation modes grey, the mode's own cells solid
    and the other cells dashed, bands the bootstrap interval over modes. On
    the ablation panel, black crosses are random channel sets of each
    contribution mode's size (own cells; bars 2.5-97.5 % over sets) and red
    dots the mode's own set. Right: specificity (ablate: AUC others - AUC own;
    preserve: own - others), median over modes with its interval; higher =
    more specific to the mode's own cells.
    """
    curves = as_dataset(curves, "curves")
    curve = require_variable(curves, "curve", "curves").transpose("layer", "source", "kind", "group", "fraction")
    layers = [str(v) for v in curve["layer"].values]
    kinds = [str(v) for v in curve["kind"].values]
    sources = [str(v) for v in curve["source"].values]
    f = curve["fraction"].values
    fig = Figure(figsize=(FULL_WIDTH, 2.3 * len(layers) + 0.9), layout="constrained")
    axes = fig.subplots(len(layers), len(kinds) + 1, squeeze=False,
                        width_ratios=[1.0] * len(kinds) + [0.55])
    for i, layer in enumerate(layers):
        for k, kind in enumerate(kinds):
            ax = axes[i, k]
            for source in sources:
                n = int(curves["n_modes"].sel(layer=layer, source=source))
                if not n:
                    continue
                for group, style in _GROUP_STYLES.items():
                    sel = dict(layer=layer, source=source, kind=kind, group=group)
                    y = curve.sel(sel).values
                    if not np.isfinite(y).any():
                        continue
                    ax.plot(f, y, style, color=_color(source), lw=1.4, marker="o", ms=3)
                    ax.fill_between(f, curves["curve_low"].sel(sel).values, curves["curve_high"].sel(sel).values,
                                    color=_color(source), alpha=0.15, lw=0)
            if kind == "ablate" and "set_fraction" in curves:
                _draw_random_sets(ax, curves, layer)
            ax.axhline(1, color="0.6", lw=0.6)
            ax.set_ylim(bottom=0)
            ax.set_xlim(-0.03, 1.03)
            ax.set_title(f"{layer}: {kind}", fontsize="small", loc="left")
            if i == len(layers) - 1:
                ax.set_xlabel(_KIND_AXIS.get(kind, "share of channels"), fontsize="small")
            if k == 0:
                ax.set_ylabel("rate perturbed / intact", fontsize="small")
        _draw_specificity(axes[i, -1], curves, layer, sources, kinds, last=i == len(layers) - 1)
    counts = ", ".join(f"{_SOURCE_NAMES.get(s, s)} {int(curves['n_modes'].sel(source=s).sum())}" for s in sources)
    handles = [Patch(color=_color(s), label=_MODE_NAMES.get(s, f"{s} modes")) for s in sources]
    handles += [Line2D([], [], color="0.3", ls=st, label=g) for g, st in _GROUP_STYLES.items()]
    if "set_fraction" in curves:
        handles += [Line2D([], [], ls="", marker="x", color="k", label="random sets, mode's size (own cells)"),
                    Line2D([], [], ls="", marker="o", color=_color("contribution"), mfc="none",
                           label="mode's own set (own cells)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small")
    band = str(curves["curve_low"].attrs.get("long_name", "95% bootstrap interval over modes")).rsplit(",", 1)[0]
    fig.suptitle(f"ablation and preservation of modes ({counts} modes)\nbands: {band}", fontsize="medium")
    return fig


def _draw_random_sets(ax, curves: xr.Dataset, layer: str) -> None:
    sel = curves["set_layer"].values.astype(str) == layer
    if not sel.any():
        return
    x = curves["set_fraction"].values[sel]
    jitter = (np.arange(x.size) - (x.size - 1) / 2) * 0.008
    own = {"group": "own cells"}
    mean = curves["random_ratio"].sel(own).values[sel]
    lo, hi = curves["random_low"].sel(own).values[sel], curves["random_high"].sel(own).values[sel]
    ax.errorbar(x + jitter, mean, yerr=[np.clip(mean - lo, 0, None), np.clip(hi - mean, 0, None)], fmt="x",
                color="k", ms=4, lw=0.8, capsize=0, zorder=5)
    ax.plot(x + jitter, curves["set_ratio"].sel(own).values[sel], "o", mfc="none",
            color=_color("contribution"), ms=4, zorder=6)


def _draw_specificity(ax, curves: xr.Dataset, layer: str, sources: list[str], kinds: list[str],
                      last: bool) -> None:
    y = np.arange(len(kinds))
    for j, source in enumerate(sources):
        values = curves["specificity"].sel(layer=layer, source=source)
        med = values.sel(statistic="median").values
        lo, hi = values.sel(statistic="low").values, values.sel(statistic="high").values
        offset = (j - (len(sources) - 1) / 2) * 0.25
        ax.errorbar(med, y + offset, xerr=[np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)], fmt="o",
                    color=_color(source), ms=4, capsize=2)
    ax.axvline(0, color="0.6", lw=0.6)
    ax.set_yticks(y, kinds, fontsize="small")
    ax.set_ylim(-0.6, len(kinds) - 0.4)
    ax.invert_yaxis()
    ax.set_title("specificity", fontsize="small", loc="left")
    if last:
        ax.set_xlabel("AUC difference\n(> 0: own cells hit more)", fontsize="small")
