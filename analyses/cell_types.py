"""Ganglion-cell types from the modes that drive them (the paper's cell-type analysis).

Each cell is described by the correlation of its model rate with every mode's
loadings (``correlation (cell, mode)``); cells are clustered (k-means, k by
silhouette; Ward linkage for the dendrogram) separately with the conv0 and the
conv1 modes. Reproduces:

* the mode-by-cell correlation heat map per layer, rows ordered by the dendrogram,
  with the cluster (and, in silico, the true type) as colour strips;
* the agreement (adjusted Rand index) of the conv0 and conv1 clusterings (paper:
  both layers give nearly the same cell types);
* the ARI vs the true types of clusterings on contribution modes, on activation
  modes (control) and on the raw rates (control), when the truth is known.

What to look at: in ``cell_types_<layer>.png`` each cluster has its own block of
modes; ``ari.png`` compares the feature sets.

    python analyses/cell_types.py [--results results] [--out analyses_output/cell_types]
"""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import retcodec.report.figures as fg
from _common import ensure_results, open_tree, parser, save, true_types

args = parser("cell_types", __doc__).parse_args()
results = ensure_results(args, ["cell_types.nc"])
tree = open_tree(results, "cell_types.nc")
layers = list(tree["controls/surprisal_modes"].children)
groups = {"surprisal modes": "controls/surprisal_modes", "activation modes": "controls/activation_modes",
          "drive profiles": "drive"}
root = tree.to_dataset()

rows = [{"features": "primary (drive profiles, all layers)", "layer": "-", "k": int(root["chosen_k"]),
         "ARI truth (k-means)": float(root.get("ari_truth", np.nan)),
         "ARI truth (Ward)": float(root.get("hierarchical_ari_truth", np.nan))}]
for label, group in groups.items():
    for layer in layers:
        if layer not in tree[group].children:
            continue
        node = tree[group][layer].to_dataset()
        rows.append({"features": label, "layer": layer, "k": int(node["chosen_k"]),
                     "ARI truth (k-means)": float(node.get("ari_truth", np.nan)),
                     "ARI truth (Ward)": float(node.get("hierarchical_ari_truth", np.nan))})
rates = tree["controls/rates"].to_dataset()
rows.append({"features": "raw rates", "layer": "-", "k": int(rates["chosen_k"]),
             "ARI truth (k-means)": float(rates.get("ari_truth", np.nan)),
             "ARI truth (Ward)": float(rates.get("hierarchical_ari_truth", np.nan))})
table = pd.DataFrame(rows)
print(table.to_string(index=False, float_format="{:.2f}".format))
if "layer_agreement" in root:
    agreement = root["layer_agreement"]
    for family, value in zip(agreement[agreement.dims[0]].values, agreement.values):
        print(f"agreement of the layers' clusterings ({family}): ARI = {float(value):.2f}")

for layer in layers:
    node = tree["controls/surprisal_modes"][layer].to_dataset()
    truth = true_types(node)
    if truth is not None:
        print(f"\n{layer}: clusters (rows) vs true types (columns)")
        print(pd.crosstab(node["cluster"].values, truth, rownames=["cluster"], colnames=["type"]).to_string())
    else:
        print(f"\n{layer}: cluster sizes " + str(np.bincount(node["cluster"].values).tolist()))
    save(fg.plot_mode_cell_matrix(node["correlation"], root["cluster"],
                                  node["linkage"].values if "linkage" in node else None, truth),
         args.out, f"cell_types_{layer}")

if table["ARI truth (k-means)"].notna().any():
    fig = Figure(figsize=(5.0, 0.35 * len(table) + 1.0), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{r.features}, {r.layer}" if r.layer != "-" else r.features for r in table.itertuples()]
    colors = [{"surprisal modes": fg.SIGN_COLORS["pos"], "activation modes": "0.45"}.get(f, "0.75")
              for f in table["features"]]
    ax.barh(range(len(table)), table["ARI truth (k-means)"], color=colors)
    ax.set_yticks(range(len(table)), names, fontsize="small")
    ax.invert_yaxis()
    ax.set(xlim=(min(0, table["ARI truth (k-means)"].min()), 1.05), xlabel="ARI vs true types",
           title="cell types recovered (k chosen automatically)")
    save(fig, args.out, "ari")
