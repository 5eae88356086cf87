"""Summary rows of analysis results, for the report and the command line."""
from __future__ import annotations

from typing import Any

import xarray as xr

__all__ = ["type_summary", "summarize_types"]


def type_summary(tree: xr.DataTree) -> list[dict[str, Any]]:
    """One row per clustering of ``cell_types.nc``: features, layer, chosen k, ARI vs truth (when known)."""
    rows = []
    for group in ("contribution_modes", "activation_modes"):
        if group not in tree.children:
            continue
        for layer in tree[group].children:
            node = tree[group][layer].to_dataset()
            rows.append({"features": group.replace("_", " "), "layer": layer,
                         "k": int(node["chosen_k"]),
                         "ari_truth": float(node["ari_truth"]) if "ari_truth" in node else None})
    if "rates" in tree.children:
        node = tree["rates"].to_dataset()
        rows.append({"features": "raw rates", "layer": "-", "k": int(node["chosen_k"]),
                     "ari_truth": float(node["ari_truth"]) if "ari_truth" in node else None})
    return rows


def summarize_types(tree: xr.DataTree) -> str:
    """One line: each clustering's k and ARI vs truth."""
    return "; ".join(f"{r['features']} {r['layer']}: k={r['k']}"
                     + (f", ARI vs truth={r['ari_truth']:.2f}" if r["ari_truth"] is not None else "")
                     for r in type_summary(tree))
