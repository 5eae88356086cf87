"""Instantaneous receptive fields (IRFs) under single modes vs mode combinations (the paper's
"receptive fields change with the combination of active modes" analysis).

At every window a set of modes is active (its *combination*). For each frequent
combination and each cell, IRFs (d rate / d stimulus) at windows of that
combination are reduced to rank-1 spatial and temporal filters. Reproduces:

* the spatial and temporal filters per combination (single modes such as ``"0"``
  and combinations such as ``"0+6"``), for a few cells;
* within- vs across-combination similarity: the Pearson correlation of a cell's
  spatial filters at two windows of the same combination vs at windows of two
  different combinations (paper: within > across, i.e. a cell's RF is set by
  which modes are active).

What to look at: ``irfs_<layer>.png`` (does the RF of a cell change shape or sign
between rows?) and ``similarity.png`` (cells above the identity line).

    python analyses/irf_combinations.py [--cells 0,4,8,12] [--crop 3]
"""
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import wilcoxon

import retcodec.report.figures as fg
from _common import ensure_results, open_tree, parser, save

p = parser("irf_combinations", __doc__)
p.add_argument("--cells", help="cells to draw, e.g. 0,4,8,12 (default: 4 spread over the cell list)")
p.add_argument("--crop", type=int, default=3, help="margin (px) around the drawn RFs; -1: whole field")
args = p.parse_args()
results = ensure_results(args, ["irfs.nc"])
tree = open_tree(results, "irfs.nc")
layers = [name for name in tree.children if "spatial" in tree[name].dataset]

fig_sim = Figure(figsize=(3.2 * len(layers), 3.2), layout="constrained")
for ax, layer in zip(fig_sim.subplots(1, len(layers), squeeze=False)[0], layers):
    node, combos = tree[layer].to_dataset(), tree[layer]["combinations"].to_dataset()
    print(f"\n{layer}: {node.sizes['combination']} frequent combinations "
          f"(windows with no active mode: {float(combos['fraction_none']):.1%})")
    print(f"  {'combination':14} {'windows':>8} {'share':>6} {'cells':>5} {'within':>7} {'across':>7}")
    for c in node["combination"].values:
        row = node.sel(combination=c)
        print(f"  {c:14} {int(combos['count'].sel(combination=c)):8d} "
              f"{float(combos['fraction'].sel(combination=c)):6.1%} {int((row['n_times'] > 1).sum()):5d} "
              f"{float(row['within_set_similarity'].mean()):7.2f} {float(row['across_set_similarity'].mean()):7.2f}")
    within, across = node["within_set_similarity_cell"].values, node["across_set_similarity_cell"].values
    ok = np.isfinite(within) & np.isfinite(across)
    test = wilcoxon(within[ok], across[ok]).pvalue if ok.sum() >= 6 else np.nan
    print(f"  pooled similarity: within {float(node['within_set_similarity_pooled']):.3f} vs across "
          f"{float(node['across_set_similarity_pooled']):.3f}; within > across for {int((within > across)[ok].sum())}"
          f" of {int(ok.sum())} cells (Wilcoxon p = {test:.2g})")

    cells = [int(c) for c in args.cells.split(",")] if args.cells else \
        node["cell"].values[np.linspace(0, node.sizes["cell"] - 1, min(4, node.sizes["cell"])).astype(int)]
    spatial, temporal = node["spatial"].sel(cell=cells), node["temporal"].sel(cell=cells)
    if args.crop >= 0:                  # the box holding the drawn RFs, plus a margin
        energy = np.abs(spatial).fillna(0).sum(("combination", "cell"))
        ys, xs = np.nonzero(energy.values > 0.05 * float(energy.max()))
        spatial = spatial.isel(y=slice(max(ys.min() - args.crop, 0), ys.max() + args.crop + 1),
                               x=slice(max(xs.min() - args.crop, 0), xs.max() + args.crop + 1))
    save(fg.plot_irf_filters(spatial, temporal, max_cells=len(cells)), args.out, f"irfs_{layer}")

    ax.scatter(across[ok], within[ok], s=20, color="0.3")
    for cell, x, y in zip(node["cell"].values[ok], across[ok], within[ok]):
        ax.annotate(str(cell), (x, y), textcoords="offset points", xytext=(3, 2), fontsize="xx-small")
    lo = min(0.0, np.nanmin(across), np.nanmin(within))
    ax.plot([lo, 1], [lo, 1], ls="--", color="0.5", lw=0.8)
    ax.set(xlim=(lo, 1.02), ylim=(lo, 1.02), aspect="equal", title=layer,
           xlabel="across-combination similarity", ylabel="within-combination similarity")
save(fig_sim, args.out, "similarity")
