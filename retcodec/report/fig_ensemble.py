"""The ensemble's silencing predictions: agreement between models, and the truth when known."""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from retcodec.report.figstyle import FULL_WIDTH, as_dataset, require_variable

__all__ = ["plot_ensemble_predictions"]

_STATED, _UNSTATED = "#c0392b", "#9a9a9a"
#: the truth panel's axes are linear within ± this many % and logarithmic beyond
SYMLOG_PERCENT = 20.0


def plot_ensemble_predictions(exp: xr.Dataset) -> Figure:
    """Each model's predicted effect per (interneuron, cell) pair, and the ensemble vs the truth.

    ``exp``: ``experiments.nc`` with an ensemble (``member_effect (member, interneuron,
    cell)``, ``predicted_effect``, ``model_spread``, ``time_se``, ``stated``). Left: every
    model's prediction (dots, one column per pair) and the ensemble's prediction (its
    centre, line), pairs sorted by it; red: stated (every model agrees on the sign, |mean| large enough),
    grey: not stated. Right (with ``true_effect``): the ensemble's prediction against the
    true effect, bars ±1.96 × the spread over models (thin) and over time (thick); the
    diagonal is a perfect prediction; axes linear within ±20 % and logarithmic beyond.
    Effects in % of the intact rate.
    """
    exp = as_dataset(exp, "exp")
    for name in ("member_effect", "predicted_effect", "model_spread", "time_se", "stated"):
        require_variable(exp, name, "the experiments of an ensemble (retcodec run with ensemble members)")
    members = exp["member_effect"].transpose("member", "interneuron", "cell").values.reshape(
        exp.sizes["member"], -1) * 100
    mean = exp["predicted_effect"].transpose("interneuron", "cell").values.ravel() * 100
    center = str(exp.attrs.get("ensemble_center", "centre"))
    stated = exp["stated"].transpose("interneuron", "cell").values.ravel().astype(bool)
    has_truth = "true_effect" in exp and np.isfinite(exp["true_effect"].values).any()
    fig = Figure(figsize=(FULL_WIDTH, 3.4), layout="constrained")
    axes = fig.subplots(1, 2 if has_truth else 1, squeeze=False)[0]
    order = np.argsort(mean)
    x = np.arange(len(order))
    ax = axes[0]
    for k in range(members.shape[0]):
        colors = np.where(stated[order], _STATED, _UNSTATED)
        ax.scatter(x, members[k, order], s=5, c=colors, alpha=0.6, linewidths=0)
    ax.plot(x, mean[order], color="k", lw=1, label=f"ensemble prediction ({center})")
    ax.axhline(0, color="k", lw=0.5, ls=":")
    ax.set_xlabel("interneuron-cell pairs, sorted")
    ax.set_ylabel("predicted change of the mean rate (%)")
    ax.set_title(f"{members.shape[0]} models: {int(stated.sum())} of {stated.size} pairs stated", fontsize=9)
    ax.scatter([], [], s=10, c=_STATED, label="a model, pair stated")
    ax.scatter([], [], s=10, c=_UNSTATED, label="a model, pair not stated")
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    _clip(ax, members)
    if has_truth:
        true = exp["true_effect"].transpose("interneuron", "cell").values.ravel() * 100
        spread = exp["model_spread"].transpose("interneuron", "cell").values.ravel() * 100
        time_se = exp["time_se"].transpose("interneuron", "cell").values.ravel() * 100
        ok = np.isfinite(true) & np.isfinite(mean)
        ax = axes[1]
        for mask, color, label in ((ok & ~stated, _UNSTATED, "not stated"), (ok & stated, _STATED, "stated")):
            ax.errorbar(true[mask], mean[mask], yerr=1.96 * spread[mask], fmt="none", ecolor=color, lw=0.5,
                        alpha=0.5)
            ax.errorbar(true[mask], mean[mask], yerr=1.96 * time_se[mask], fmt="o", ms=2.5, color=color,
                        ecolor=color, lw=1.5, alpha=0.8, label=f"{label} ({int(mask.sum())})")
        lim = np.nanmax(np.abs(np.r_[true[ok], mean[ok]])) * 1.2 if ok.any() else 100.0
        ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.5, ls="--")
        ax.set_xscale("symlog", linthresh=SYMLOG_PERCENT)      # effects span -100 % to several hundred %
        ax.set_yscale("symlog", linthresh=SYMLOG_PERCENT)
        ax.axhline(0, color="k", lw=0.5, ls=":")
        ax.axvline(0, color="k", lw=0.5, ls=":")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("true change (%)")
        ax.set_ylabel("ensemble prediction (%)")
        title = "ensemble vs truth"
        if "spearman" in exp:
            title += f": Spearman {float(exp['spearman']):.2f}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    return fig


def _clip(ax, values: np.ndarray) -> None:
    """Limit the y axis to the central 99 % of ``values`` (a few huge effects would flatten the rest)."""
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        pad = 0.05 * max(hi - lo, 1.0)
        ax.set_ylim(lo - pad, hi + pad)
