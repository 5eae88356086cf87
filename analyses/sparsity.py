"""Layer statistics of contributions vs activations (the CODEC paper's retina layer statistics).

Reproduces, per hidden layer:

* Hoyer sparsity across channels, per window, of the contribution magnitude
  ``|C-| + C+`` vs the activation ``|a|`` (paper: contributions are much sparser
  than activations: few channels drive the output at any moment);
* the per-channel Pearson correlation over windows of ``C+`` and ``|C-|``
  (paper: excitatory and inhibitory contributions decorrelate with depth);
* dimensionality: principal components reaching 95% of the variance of the
  contributions ``(time, channel x sign)`` and of the activations ``(time, channel)``.

What to look at: ``sparsity.png``, where the red boxes (contributions) should sit above
the grey ones (activations) in every layer, and ``pos_neg_correlation.png``, where the
channels' E/I correlation should fall from conv0 to conv1.

    python analyses/sparsity.py [--results results] [--out analyses_output/sparsity]
"""
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import wilcoxon

import retcodec.report.figures as fg
from _common import ensure_results, open_dataset, parser, save

args = parser("sparsity", __doc__).parse_args()
results = ensure_results(args, ["statistics.nc"])
stats = open_dataset(results, "statistics.nc").load()
layers = [str(l) for l in stats["layer"].values]

print(f"\n{'layer':6} {'Hoyer C':>8} {'Hoyer a':>8} {'C>a':>6} {'Wilcoxon p':>11} {'r(C+,|C-|)':>11}"
      f" {'PCs95 C':>8} {'PCs95 a':>8} {'channels':>8}")
for layer in layers:
    s = stats.sel(layer=layer)
    c, a = s["contribution_sparsity"].values, s["activation_sparsity"].values
    ok = np.isfinite(c) & np.isfinite(a)
    p = wilcoxon(c[ok], a[ok]).pvalue if ok.sum() > 10 else np.nan
    print(f"{layer:6} {np.median(c[ok]):8.3f} {np.median(a[ok]):8.3f} {np.mean(c[ok] > a[ok]):6.0%} {p:11.1e}"
          f" {float(s['pos_neg_correlation_mean']):11.3f} {int(s['contribution_dimensionality']):8d}"
          f" {int(s['activation_dimensionality']):8d} {int(s['n_channels']):8d}")
print("(Hoyer: median over windows; C>a: share of windows where contributions are sparser; "
      "PCs95 C is over channel x sign, a over channels)")
for layer in layers:
    r = stats["pos_neg_correlation"].sel(layer=layer).dropna("channel")
    print(f"{layer} r(C+,|C-|) per channel: " + " ".join(f"{int(ch)}:{v:.2f}" for ch, v in
                                                        zip(r["channel"].values, r.values)))

save(fg.plot_sparsity(stats), args.out, "sparsity")

fig = Figure(figsize=(6.5, 3.0), layout="constrained")
ax_r, ax_d = fig.subplots(1, 2, width_ratios=[1.3, 1])
rng = np.random.default_rng(0)
for i, layer in enumerate(layers):
    r = stats["pos_neg_correlation"].sel(layer=layer).dropna("channel").values
    ax_r.scatter(i + rng.uniform(-0.12, 0.12, r.size), r, s=18, color="0.3")
    ax_r.hlines(np.mean(r), i - 0.25, i + 0.25, color=fg.SIGN_COLORS["pos"], lw=2)
ax_r.set_xticks(range(len(layers)), layers)
ax_r.axhline(0, color="0.6", lw=0.6)
ax_r.set(xlabel="layer", ylabel="r(C+, |C-|) per channel", title="E/I contribution correlation")
x = np.arange(len(layers))
for j, (name, label, color) in enumerate((("contribution_dimensionality", "contributions", fg.SIGN_COLORS["pos"]),
                                          ("activation_dimensionality", "activations", "0.45"))):
    ax_d.bar(x + (j - 0.5) * 0.38, stats[name].values, 0.36, color=color, label=label)
ax_d.set_xticks(x, layers)
ax_d.set(xlabel="layer", ylabel="PCs for 95% variance", title="dimensionality")
ax_d.legend(fontsize="small", loc="lower center", framealpha=0.9)
save(fig, args.out, "pos_neg_correlation")
