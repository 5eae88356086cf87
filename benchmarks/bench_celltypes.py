"""Benchmark: cell typing on several in-silico retinas, ARI vs the true types per method.

For each retina (a folder holding a fitted model ``*.pt`` and a recording
``**/naturalscene.h5`` with ``cell_type`` truth, or ``bundled`` for the bundled
retina and model), on ``--windows`` windows evenly spaced over the test split:

1. IG contributions to the surprisal (20 steps), sparse contribution modes and
   activation modes per layer, as ``retcodec run`` makes them;
2. :func:`retcodec.analysis.celltypes.cell_types_primary`: per-cell
   contributions on ``--typing-windows`` of those windows, the primary
   clustering (both layers' drive profiles) and every control, all with the
   same k rule;
3. the k each rule would choose for the primary features (``silhouette``,
   ``gap``, ``stability``, ``calinski``) and the ARI of k-means at that k;
4. stability of the primary typing on window subsamples (ARI of the
   clustering on 25/50/100% of the typing windows with the full one).

Prints one table per retina and a summary over retinas (mean ARI per method).
Intermediate files are cached in ``--cache`` (one folder per retina), so a rerun
only re-clusters.

Run (one thread; minutes per retina)::

    python benchmarks/bench_celltypes.py --retina bundled
    python benchmarks/bench_celltypes.py --retina /path/v2_seed0 /path/v2_seed1 --json out.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from retcodec.analysis.celltypes import (K_RULES, DEFAULT_K_RANGE, DEFAULT_TYPING_WINDOWS, PRIMARY_K_RULE,
                                         cell_types_primary, cluster_cells, kmeans_labels,
                                         typing_windows)
from retcodec.analysis.drive import drive_profiles
from retcodec.engine.contributions import contributions
from retcodec.engine.percell import per_cell_contributions
from retcodec.io.models import load_model
from retcodec.io.recordings import load_recording, windows as make_windows
from retcodec.modes import ContributionModes, fit_layer

LAYERS = ("conv0", "conv1")


def retina_files(spec: str) -> tuple[Path, Path, str]:
    """Model and natural-scene recording of a retina folder (or the bundled ones)."""
    if spec == "bundled":
        from retcodec.io.bundled import bundled_path
        return (bundled_path("models", "insilico_naturalscene.pt"),
                bundled_path("datasets", "insilico/naturalscene.h5"), "bundled")
    folder = Path(spec)
    models = sorted(p for p in folder.glob("*.pt") if "whitenoise" not in p.name)
    data = sorted(folder.rglob("naturalscene.h5"))
    if not models or not data:
        raise SystemExit(f"{folder}: need a model *.pt and a naturalscene.h5")
    return models[0], data[0], folder.name


def activation_modes(activation: xr.DataArray, seed: int) -> xr.Dataset:
    """As the pipeline's control: the sparse estimator on the centred, spatially summed activations."""
    x = activation.transpose("time", "channel").values.astype(np.float64)
    x = x - x.mean(axis=0)
    est = ContributionModes(random_state=seed, nonneg=False).fit(x)
    return xr.Dataset({"loadings": (("time", "mode"), est.transform(x))},
                      coords={"time": activation["time"].values})


def prepare(spec: str, cache: Path, n_windows: int, n_typing: int, seed: int) -> dict:
    """Windows, contributions, modes and per-cell contributions of one retina (cached)."""
    model_path, data_path, name = retina_files(spec)
    out = cache / name
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    rec = load_recording(data_path, split="test")
    history = int(model.img_shape[0])
    w = make_windows(rec, norm_stats=model.meta.get("norm_stats"), history=history)
    index = typing_windows(len(w), n_windows)
    x = np.stack([np.asarray(w[int(i):int(i) + 1])[0] for i in index]).astype(np.float32)
    timings = {}
    f = out / "contributions.nc"
    if not f.exists():
        t = time.perf_counter()
        contributions(model, x, layers=LAYERS, steps=20, progress=False).to_netcdf(f, engine="h5netcdf")
        timings["contributions_s"] = time.perf_counter() - t
    tree = xr.open_datatree(f, engine="h5netcdf").load()
    f = out / "modes.nc"
    if not f.exists():
        t = time.perf_counter()
        nodes = {}
        for layer in LAYERS:
            node = tree[layer].to_dataset()
            nodes[layer] = fit_layer(ContributionModes(random_state=seed), node["contribution"], layer=layer)
            nodes[f"{layer}_activation"] = activation_modes(node["activation"], seed)
        xr.DataTree.from_dict(nodes).to_netcdf(f, engine="h5netcdf")
        timings["modes_s"] = time.perf_counter() - t
    modes_tree = xr.open_datatree(f, engine="h5netcdf").load()
    f = out / "per_cell.nc"
    if not f.exists():
        t = time.perf_counter()
        per_cell_contributions(model, x, LAYERS, window_index=typing_windows(len(x), n_typing)
                               ).to_netcdf(f, engine="h5netcdf")
        timings["per_cell_s"] = time.perf_counter() - t
    per_cell = xr.open_datatree(f, engine="h5netcdf").load()
    truth = rec["cell_type"].values.astype(str)
    return dict(name=name, model=model, tree=tree, per_cell=per_cell, truth=truth, timings=timings,
                modes={l: modes_tree[l].to_dataset() for l in LAYERS},
                activation={l: modes_tree[f"{l}_activation"].to_dataset() for l in LAYERS})


def k_rule_table(per_cell: xr.DataTree, truth: np.ndarray, seed: int) -> dict[str, tuple[int, float]]:
    """k and ARI of the primary features under each k rule (and Calinski-Harabasz)."""
    from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score

    profile = drive_profiles(per_cell, LAYERS)
    out = {}
    for rule in K_RULES:
        ds = cluster_cells(profile, standardize=False, k_rule=rule, random_state=seed, true_types=truth)
        out[rule] = (int(ds["chosen_k"]), float(ds["ari_truth"]))
    x = profile.values - profile.values.mean(axis=0)
    ks = [k for k in DEFAULT_K_RANGE if k < len(x)]
    fits = {k: kmeans_labels(x, k, seed)[0] for k in ks}
    k = max(ks, key=lambda k: calinski_harabasz_score(x, fits[k]))
    out["calinski"] = (k, adjusted_rand_score(truth, fits[k]))
    return out


def feature_variants(per_cell: xr.DataTree, truth: np.ndarray, rule: str, seed: int) -> dict[str, tuple]:
    """(k, ARI at that k, ARI at the true k) of variants of the drive features (for analysis only)."""
    from sklearn.metrics import adjusted_rand_score

    n_true = len(set(truth))
    variants = {"combined": (drive_profiles(per_cell, LAYERS), False),
                "combined, standardised": (drive_profiles(per_cell, LAYERS), True)}
    for layer in LAYERS:
        variants[layer] = (drive_profiles(per_cell, [layer]), False)
    # per-window fractions, then averaged over windows
    blocks = []
    for layer in LAYERS:
        c = per_cell[layer]["contribution"].transpose("time", "cell", "channel", "sign").values
        c = c.reshape(c.shape[0], c.shape[1], -1)
        norm = np.abs(c).sum(-1, keepdims=True)
        blocks.append(np.divide(c, norm, out=np.zeros_like(c), where=norm > 0).mean(0))
    variants["per-window fractions"] = (xr.DataArray(np.concatenate(blocks, 1), dims=("cell", "feature")), False)
    out = {}
    for name, (f, std) in variants.items():
        ds = cluster_cells(f, standardize=std, k_rule=rule, random_state=seed, true_types=truth)
        x = ds["features"].values
        at_true = adjusted_rand_score(truth, kmeans_labels(x, n_true, seed)[0])
        out[name] = (int(ds["chosen_k"]), round(float(ds["ari_truth"]), 3), round(at_true, 3))
    return out


def subsample_table(per_cell: xr.DataTree, truth: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """ARI with the full-window clustering (and with truth) on evenly spaced subsets of the windows."""
    from sklearn.metrics import adjusted_rand_score

    n = per_cell[LAYERS[0]].sizes["time"]
    full = kmeans_labels(drive_profiles(per_cell, LAYERS).values, k, seed)[0]
    out = {}
    for frac in (0.25, 0.5):
        aris = []
        step = int(round(1 / frac))
        for offset in range(step):
            p = drive_profiles(per_cell, LAYERS, time_index=np.arange(offset, n, step)).values
            aris.append(adjusted_rand_score(full, kmeans_labels(p - p.mean(axis=0), k, seed)[0]))
        out[f"{int(frac * 100)}%"] = float(np.mean(aris))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--retina", nargs="+", default=["bundled"], help="retina folders, or 'bundled'")
    ap.add_argument("--windows", type=int, default=600, help="windows for contributions and modes")
    ap.add_argument("--typing-windows", type=int, default=DEFAULT_TYPING_WINDOWS)
    ap.add_argument("--cache", default="bench_celltypes_cache")
    ap.add_argument("--k-rule", default=PRIMARY_K_RULE, choices=K_RULES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    results = {}
    with threadpool_limits(1):
        for spec in args.retina:
            t0 = time.perf_counter()
            r = prepare(spec, Path(args.cache), args.windows, args.typing_windows, args.seed)
            res = cell_types_primary(r["model"], None, r["tree"], r["modes"], r["activation"],
                                     r["tree"].to_dataset()["output"], true_types=r["truth"],
                                     random_state=args.seed, per_cell=r["per_cell"], k_rule=args.k_rule)
            root = res.to_dataset()
            n_types = len(set(r["truth"]))
            print(f"\n=== {r['name']}: {root.sizes['cell']} cells, {n_types} true types, "
                  f"k rule {args.k_rule}, {r['per_cell'][LAYERS[0]].sizes['time']} typing windows "
                  f"({time.perf_counter() - t0:.0f} s; {r['timings']})")
            rows = {str(m): (int(k), float(a)) for m, k, a in
                    zip(root["clustering"].values, root["clustering_k"].values, root["clustering_ari_truth"].values)}
            for m, (k, a) in rows.items():
                print(f"  {m:34s} k={k:2d}  ARI={a:.3f}")
            agreement = dict(zip(root["family"].values.tolist(), root["layer_agreement"].values.tolist()))
            print("  conv0 vs conv1 agreement (ARI):", {k: round(v, 3) for k, v in agreement.items()})
            print(f"  even/odd window halves agreement (ARI): {float(root['half_agreement']):.3f}")
            print("  primary curve: k", root["k"].values.tolist(), "score",
                  np.round(root["k_score"].values, 3).tolist(), "ARI by k",
                  np.round(root["ari_truth_by_k"].values, 3).tolist())
            rules = k_rule_table(r["per_cell"], r["truth"], args.seed)
            print("  k rules on the primary features:", {k: (v[0], round(v[1], 3)) for k, v in rules.items()})
            variants = feature_variants(r["per_cell"], r["truth"], args.k_rule, args.seed)
            print("  feature variants (k, ARI, ARI at true k):", variants)
            sub = subsample_table(r["per_cell"], r["truth"], int(root["chosen_k"]), args.seed)
            print("  typing on window subsets vs all typing windows (ARI):", {k: round(v, 3) for k, v in sub.items()})
            results[r["name"]] = {"methods": rows, "layer_agreement": agreement, "k_rules": rules,
                                  "half_agreement": float(root["half_agreement"]), "subsets": sub,
                                  "variants": variants,
                                  "n_types": n_types, "timings": r["timings"]}
    if len(results) > 1:
        print("\n=== mean ARI over retinas")
        methods = list(next(iter(results.values()))["methods"])
        for m in methods:
            vals = [res["methods"][m][1] for res in results.values() if m in res["methods"]]
            print(f"  {m:34s} {np.mean(vals):.3f}   " + "  ".join(f"{v:.2f}" for v in vals))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
