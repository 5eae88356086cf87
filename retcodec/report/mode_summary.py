"""The modes part of the report: the modes table, the frontier the count was chosen on, robustness.

One definition of an active mode serves the table, the combinations and the
text: a mode is active at a time bin when its loading is non-zero (the model
zeroes loadings below its activity cut; ``docs/modes.md``).
"""
from __future__ import annotations

import html
import json
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["MULTI_CHANNEL_MAX_SHARE", "multi_channel_share", "mode_table_rows", "fitted_on",
           "frontier_html", "robustness_html", "robustness_sentence"]

#: a mode is a multi-channel combination when no channel carries more than this share of its weight
MULTI_CHANNEL_MAX_SHARE = 0.8


def multi_channel_share(modes: xr.DataArray, max_share: float = MULTI_CHANNEL_MAX_SHARE) -> float:
    """Share of modes in which no channel carries more than ``max_share`` of the mode's summed |weight|.

    ``modes`` is ``(mode, channel[, sign])``; a channel's weight is the sum of
    its |C+| and |C−| weights.
    """
    weights = np.abs(modes.transpose("mode", "channel", ...).values).reshape(modes.sizes["mode"],
                                                                            modes.sizes["channel"], -1)
    per_channel = weights.sum(axis=2)
    total = per_channel.sum(axis=1)
    if not len(total):
        return float("nan")
    largest = np.divide(per_channel.max(axis=1), total, out=np.ones_like(total), where=total > 0)
    return float(np.mean(largest <= max_share))


def fitted_on(ds: xr.Dataset) -> str:
    """What the modes were fitted on, in words."""
    return {"pos": "C+ (E only, as the paper)", "both": "|C−| and C+ (E and I)"}.get(str(ds.attrs.get("sign")),
                                                                                  str(ds.attrs.get("sign", "")))


def mode_table_rows(modes: Mapping[str, xr.Dataset], layers: Sequence[str]) -> list[dict[str, Any]]:
    """One row per layer: count, R², L0, bins with no active mode, multi-channel share, stability, rule."""
    rows = []
    for layer in layers:
        ds, act = modes[layer], modes.get(f"{layer}_activation")
        seeds = json.loads(ds.attrs.get("stability_seeds", "[]"))
        rows.append({"layer": layer, "modes": int(ds.sizes["mode"]), "fitted on": fitted_on(ds),
                     "R²": float(ds["r2"]), "held-out R²": _chosen(ds, "frontier_r2"),
                     "L0": float(ds.attrs.get("l0", np.nan)),
                     "no active mode (%)": 100 * float(ds.attrs.get("fraction_none", np.nan)),
                     "multi-channel modes (%)": 100 * multi_channel_share(ds["modes"]),
                     "stability": float(ds.attrs.get("stability", np.nan)),
                     "lowest seed pair": float(ds.attrs.get("stability_min", np.nan)),
                     "seeds": len(seeds) if seeds else None,
                     "count rule": str(ds.attrs.get("count_rule", "")),
                     "activation modes": int(act.sizes["mode"]) if act is not None else None,
                     "activation R²": float(act["r2"]) if act is not None else None})
    return rows


def _chosen(ds: xr.Dataset, name: str) -> float | None:
    if name not in ds or "frontier_chosen" not in ds:
        return None
    return float(ds[name].values[np.asarray(ds["frontier_chosen"].values, bool)][0])


def frontier_html(modes: Mapping[str, xr.Dataset], layers: Sequence[str]) -> str:
    """The reconstruction-sparsity frontier of each layer (held-out R² and L0 per candidate count)."""
    parts = []
    for layer in layers:
        ds = modes[layer]
        if "frontier_r2" not in ds:
            continue
        chosen = np.asarray(ds["frontier_chosen"].values, bool)
        points = ", ".join(
            (f"<b>{n}: R² {r:.3f}, L0 {l:.2f}</b>" if c else f"{n}: R² {r:.3f}, L0 {l:.2f}")
            for n, r, l, c in zip(ds["frontier_n_modes"].values, ds["frontier_r2"].values,
                                  ds["frontier_l0"].values, chosen))
        parts.append(f"<li>{html.escape(layer)} (modes: held-out R², L0; bold: the operating point): "
                     f"{points}</li>")
    if not parts:
        return ""
    return ("<p class='note'>Reconstruction–sparsity frontier, stored in <code>modes.nc</code> "
            "(<code>frontier_*</code>): candidate counts grown one mode at a time, scored on held-out bins.</p>"
            "<ul class='note'>" + "".join(parts) + "</ul>")


def robustness_sentence(sweep: xr.Dataset) -> str:
    """Whether the paper's robustness claim holds for one layer's sweep, per setting, in words."""
    verdict = json.loads(sweep.attrs.get("verdict", "{}"))
    names = {"threshold": "threshold θ", "multiplier": "dictionary size", "l1_dictionary": "dictionary L1",
             "random_state": "seed"}
    held = [names.get(k, k) for k, v in verdict.items() if v["robust"]]
    failed = [f"{names.get(k, k)} (stability {v['worst_stability']:.2f} at {v['worst_value']}, "
              f"lowest R² {v['lowest_r2']:.3f})" for k, v in verdict.items() if not v["robust"]]
    text = ("robust to " + ", ".join(held)) if held else "robust to none of the settings"
    if failed:
        text += "; not robust to " + "; ".join(failed)
    return text


def robustness_html(modes: Mapping[str, xr.Dataset], sweeps: Mapping[str, xr.Dataset], layers: Sequence[str],
                    robust_stability: float, robust_r2_loss: float) -> str:
    """The report's statement on robustness: the sweeps' verdicts (layer -> sweep), or how to run them."""
    sweeps = {layer: sweeps[layer] for layer in layers if layer in sweeps}
    seeds = "; ".join(f"{layer}: {float(modes[layer].attrs.get('stability', np.nan)):.3f} over "
                      f"{len(json.loads(modes[layer].attrs.get('stability_seeds', '[]')))} seeds"
                      for layer in layers)
    head = (f"<p><b>Robustness.</b> The paper reports that its modes are robust to the threshold (0.5–0.9), "
            f"the dictionary size (1–5× the channels), the L1 strength and the seed. Seed stability of these "
            f"modes: {seeds}. ")
    if not sweeps:
        return head + ("The settings sweep was not run (<code>retcodec run --mode-sweep</code> or "
                       "<code>retcodec modes contributions.nc --sweep</code>; a few minutes).</p>")
    rule = (f"A setting counts as robust when every value keeps the modes (stability to the default "
            f"≥ {robust_stability:g}) and R² within {robust_r2_loss:g} of the default's.")
    return head + rule + " " + " ".join(
        f"{html.escape(layer)}: {robustness_sentence(sweep)}." for layer, sweep in sweeps.items()) + "</p>"
