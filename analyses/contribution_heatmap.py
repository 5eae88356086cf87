"""Contribution heat map over time, with the cell rates and mode loadings (the paper's
"contributions over time" figure panel for the retina).

For one layer and one stretch of the test stimulus: the positive (C+) and negative
(C-) contribution of every channel to the surprisal of the population response,
the model's ganglion-cell rates, and the loadings of the strongest modes below.

What to look at: contributions are sparse and bursty (a few channels at a time, at
image changes), while the rates respond broadly; each burst is a mode switching on
(its loading row lights up) and the modes' channels are the ones lit in the top panels.

    python analyses/contribution_heatmap.py [--layer conv1] [--start 0.4] [--duration 5]
"""
import numpy as np

import retcodec.report.figures as fg
from _common import ensure_results, open_tree, parser, save
from retcodec.modes import load_modes
from retcodec.report.descriptions import mode_channels

p = parser("contribution_heatmap", __doc__)
p.add_argument("--layer", default="conv0", help="layer to show (default conv0)")
p.add_argument("--start", type=float, help="first time shown, s (default: the first window)")
p.add_argument("--duration", type=float, default=5.0, help="seconds shown (default 5)")
p.add_argument("--modes", type=int, default=10, help="show the N modes most active in the window")
args = p.parse_args()
results = ensure_results(args, ["contributions.nc", "modes.nc"])

tree = open_tree(results, "contributions.nc")
node = tree[args.layer].to_dataset()
modes = load_modes(results / "modes.nc")[args.layer]
t = node["time"].values
start = t[0] if args.start is None else args.start
window = slice(start, start + args.duration - 1e-9)
contribution = node["contribution"].sel(time=window).load()
rates = tree.to_dataset()["output"].sel(time=window).load()
loadings = modes["loadings"].sel(time=window)
top = loadings.mean("time").values.argsort()[::-1][:args.modes]
loadings = loadings.isel(mode=np.sort(top))
print(f"{args.layer}: {contribution.sizes['time']} windows from {float(contribution.time[0]):.2f} to "
      f"{float(contribution.time[-1]):.2f} s, {contribution.sizes['channel']} channels, "
      f"{rates.sizes['cell']} cells")

magnitude = np.abs(contribution).sum("sign")                       # |C+| + |C-| per channel
share = magnitude.sum("time") / magnitude.sum()
top_channel = magnitude.argmax("channel")
print("share of |C| per channel: " + " ".join(
    f"{int(c)}:{v:.0%}" for c, v in zip(share["channel"].values, share.values)))
print(f"windows where one channel carries >50% of |C|: "
      f"{float(((magnitude.max('channel') / magnitude.sum('channel')) > 0.5).mean()):.0%}; "
      f"distinct top channels over the window: {np.unique(top_channel.values).size}")
active = modes["loadings"] > 0.05 * modes["loadings"].max("time")   # as in the mode combinations
print(f"\n{'mode':>4} {'mean loading':>12} {'active':>7}  channels (mode weight >= 50% of its max)")
for m in modes["mode"].values[top]:
    chans = ", ".join(mode_channels(modes["modes"], int(m))) or "none (all-zero weights: quiet windows)"
    print(f"{int(m):4d} {float(modes['loadings'].sel(mode=m, time=window).mean()):12.3f} "
          f"{float(active.sel(mode=m, time=window).mean()):7.0%}  {chans}")
fig = fg.plot_contribution_heatmap(node, rates, loadings, time_slice=(window.start, window.stop))
save(fig, args.out, f"contributions_{args.layer}_{start:.2f}s")
