"""Model interneurons vs recorded interneurons (the paper's bipolar/amacrine comparison).

For every recorded interneuron, the best-matching model unit (layer, channel,
position) is chosen on one half of the recording and its correlation is scored on
the other half (held-out r). Chance is the same held-out procedure on circularly
shifted recordings (mean, 95th percentile, p-value). The in-sample r, the
published statistic (unit chosen and scored on the same data), is printed beside
it: it is biased upward by the choice of the best of many units. In silico, each
model unit also gets the true interneuron type it resembles, and "type match" says
whether the best unit's type is the recorded cell's type.

What to look at: ``interneurons.png``: filled dots (held-out) above the grey
chance bands, and how far the open diamonds (in-sample) sit above the dots.

    python analyses/interneurons.py [--results results] [--out analyses_output/interneurons]
"""
import sys

import numpy as np

import retcodec.report.figures as fg
from _common import ensure_results, open_dataset, parser, save

p = parser("interneurons", __doc__)
p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
args = p.parse_args()
results = ensure_results(args, ["interneurons.nc"])
if not (results / "interneurons.nc").exists():
    sys.exit(f"{results} has no interneurons.nc: the run had no interneuron recordings "
             "(give rc.run interneurons=[files] or use the bundled default)")
match = open_dataset(results, "interneurons.nc").load()

columns = ["cell_class", "cell_type", "best_layer", "best_channel", "heldout_correlation",
           "insample_correlation", "chance_p95", "p_value", "best_unit_type", "type_match"]
table = match.reset_coords()[[c for c in columns if c in match.variables]].to_dataframe()
table.columns = [c.replace("_correlation", " r").replace("cell_type", "true type").replace("_", " ")
                 for c in table.columns]
print(table.to_string(float_format="{:.3f}".format))

heldout, insample = match["heldout_correlation"].values, match["insample_correlation"].values
significant = match["p_value"].values < args.alpha
print(f"\n{significant.sum()} of {significant.size} interneurons beat chance (p < {args.alpha:g}); "
      f"held-out r > chance p95 for {(heldout > match['chance_p95'].values).sum()}")
for cls in np.unique(match["cell_class"].values):
    sel = match["cell_class"].values == cls
    print(f"  {cls:9}: median held-out r {np.median(heldout[sel]):.2f}, in-sample r {np.median(insample[sel]):.2f}, "
          f"chance p95 {np.median(match['chance_p95'].values[sel]):.2f}, significant {significant[sel].sum()}/{sel.sum()}")
print(f"in-sample minus held-out r: median {np.median(insample - heldout):+.3f} (selection bias of the "
      f"published statistic)")
if "type_match" in match:
    print(f"type-match rate: {match['type_match'].values.mean():.0%} "
          f"({match['type_match'].values.sum()} of {match.sizes['interneuron']})")

save(fg.plot_interneuron_matches(match, alpha=args.alpha), args.out, "interneurons")
