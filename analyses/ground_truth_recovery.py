"""Ground-truth recovery on the in-silico retina: does CODEC recover the circuit?

The bundled default is a simulated retina whose ganglion types, their ON/OFF
polarity and their interneurons are known, so CODEC's answers can be scored
(a validation the paper could not do on real retinas). Reports:

(a) cell types: adjusted Rand index (ARI) vs the true ganglion types of clusterings on
    contribution modes, activation modes (control) and raw rates (control), per layer;
(b) per true ganglion type: the modes that drive it (highest mean rate-loading
    correlation over the type's cells, with the modes' channels) and the polarity of
    its IRFs (ON/OFF from the sign of the rank-1 filters, ``retcodec.report.html.describe_filter``,
    over all cells of the type and all mode combinations) vs the known polarity
    (on_transient: ON, off_*: OFF, on_off_transient: both);
(c) interneurons: how often the best-matching model unit has the recorded cell's true type.

Verdicts: ARI >= 0.9 recovered, >= 0.5 partial; IRF polarity ON when >= 75% of the
filters are ON, OFF when <= 25%, else both; type match recovered at >= 75%, partial above
chance (1 / number of interneuron types). Writes ``ground_truth_recovery.csv`` and ``.nc``.

    python analyses/ground_truth_recovery.py [--results results] [--out analyses_output/ground_truth_recovery]
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

import retcodec.report.figures as fg
from _common import ensure_results, open_dataset, open_tree, parser, save, true_types
from retcodec.modes import load_modes
from retcodec.report.descriptions import describe_filter, mode_channels

args = parser("ground_truth_recovery", __doc__).parse_args()
results = ensure_results(args, ["cell_types.nc", "modes.nc", "irfs.nc"])   # interneurons.nc: when recorded
types, irfs, modes = open_tree(results, "cell_types.nc"), open_tree(results, "irfs.nc"), load_modes(results / "modes.nc")
layers = list(types["controls/surprisal_modes"].children)
truth = true_types(types["controls/surprisal_modes"][layers[0]].to_dataset())
if truth is None:
    sys.exit("no true cell types in cell_types.nc: this study needs the in-silico retina (the bundled default)")


def grade(value, good, chance):
    return "recovered" if value >= good else "partial" if value > chance else "not recovered"


def expected_polarity(gtype):
    return "both" if gtype.startswith("on_off") else "ON" if gtype.startswith("on") else "OFF"


rows = []

# (a) cell types vs truth
ari = float(types["ari_truth"])
rows.append(dict(part="a", layer="-", item="primary (drive profiles)", value=ari, expected="ARI 1",
                 verdict=grade(ari, 0.9, 0.5)))
for group in ("surprisal_modes", "activation_modes"):
    for layer in layers:
        ari = float(types[f"controls/{group}"][layer]["ari_truth"])
        rows.append(dict(part="a", layer=layer, item=group.replace("_", " "), value=ari, expected="ARI 1",
                         verdict=grade(ari, 0.9, 0.5)))
ari = float(types["controls/rates"]["ari_truth"])
rows.append(dict(part="a", layer="-", item="raw rates", value=ari, expected="ARI 1", verdict=grade(ari, 0.9, 0.5)))

# (b) driving modes and IRF polarity per true type
for layer in layers:
    corr = types["controls/surprisal_modes"][layer].to_dataset()["correlation"]
    node = irfs[layer].to_dataset()
    for gtype in np.unique(truth):
        cells = corr["cell"].values[truth == gtype]
        r = corr.sel(cell=cells).mean("cell")
        top = r["mode"].values[np.argsort(-r.values)[:3]]
        drivers = "; ".join(f"{m} ({'/'.join(mode_channels(modes[layer]['modes'], int(m))) or '-'}, r={float(r.sel(mode=m)):.2f})"
                            for m in top)
        polarity = [describe_filter(node["spatial"].sel(combination=c, cell=k).values,
                                    node["temporal"].sel(combination=c, cell=k).values, node["lag"].values).split()[0]
                    for k in cells for c in node["combination"].values]
        n_on, n_off = polarity.count("ON"), polarity.count("OFF")
        on_share = n_on / max(n_on + n_off, 1)
        seen = "none" if n_on + n_off == 0 else "ON" if on_share >= 0.75 else "OFF" if on_share <= 0.25 else "both"
        rows.append(dict(part="b", layer=layer, item=gtype, value=on_share, expected=expected_polarity(gtype),
                         verdict=f"{seen} ({n_on} ON / {n_off} OFF): " + ("match" if seen == expected_polarity(gtype)
                                                                          else "mismatch"), drivers=drivers))

# (c) interneuron type matches
if (results / "interneurons.nc").exists():
    inter = open_dataset(results, "interneurons.nc")
    if "type_match" in inter:
        rate, chance = float(inter["type_match"].mean()), 1 / np.unique(inter["cell_type"].values).size
        rows.append(dict(part="c", layer="-", item="interneuron type match", value=rate,
                         expected=f"1 (chance {chance:.2f})", verdict=grade(rate, 0.75, chance)))

table = pd.DataFrame(rows)
with pd.option_context("display.max_colwidth", 70, "display.width", 200):
    print(table.fillna("").to_string(index=False, float_format="{:.2f}".format))
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
table.to_csv(out / "ground_truth_recovery.csv", index=False)
xr.Dataset({c: ("row", table[c].fillna("").to_numpy(dtype=float if c == "value" else str))
            for c in table.columns}).to_netcdf(out / "ground_truth_recovery.nc", engine="h5netcdf")
print(f"wrote {out / 'ground_truth_recovery.csv'}, {out / 'ground_truth_recovery.nc'}")

fig = Figure(figsize=(7.0, 3.0), layout="constrained")
ax_a, ax_b = fig.subplots(1, 2)
a = table[table.part == "a"]
ax_a.bar(range(len(a)), a["value"], color=[fg.SIGN_COLORS["pos"] if "contribution" in i else "0.5" for i in a["item"]])
ax_a.set_xticks(range(len(a)), [f"{i.split()[0][:7]}.\n{l}" if l != "-" else i.replace(" ", "\n") for i, l in zip(a["item"], a["layer"])], fontsize="x-small")
ax_a.set(ylim=(min(0, a["value"].min()), 1.05), ylabel="ARI vs true types", title="(a) cell types")
b = table[table.part == "b"]
gtypes = list(dict.fromkeys(b["item"]))
for j, layer in enumerate(layers):
    sel = b[b.layer == layer].set_index("item").loc[gtypes]
    ax_b.bar(np.arange(len(gtypes)) + (j - (len(layers) - 1) / 2) * 0.35, sel["value"], 0.33, label=layer)
target = [{"ON": 1.0, "OFF": 0.0, "both": 0.5}[expected_polarity(t)] for t in gtypes]
ax_b.scatter(range(len(gtypes)), target, marker="_", s=400, color="k", zorder=3, label="expected")
ax_b.set_xticks(range(len(gtypes)), [t.replace("_", "\n") for t in gtypes], fontsize="x-small")
ax_b.set(ylim=(-0.05, 1.05), ylabel="share of ON IRFs", title="(b) IRF polarity per true type")
ax_b.legend(fontsize="x-small")
save(fig, out, "ground_truth_recovery")
