"""Benchmark: the experiments stage (silencing) on the bundled retina — time, and stability of its shortcuts.

The stage analyses ``max_windows`` evenly spaced windows of the test stimulus
(default 1500 of ~6000) with coarse dose steps (fractions 0, 1/8, 1/4, 1/2, 3/4,
1). This benchmark times it with its defaults, then repeats it on every window
with the finest dose steps (every channel count) as the reference, and reports
how far the effects move:

* ``predicted_effect (interneuron, cell)``: largest absolute difference and
  Pearson r between the default and the reference;
* ``mode_effect (mode, cell)`` and the ablation ``specificity (mode)``: the same;
* ``spearman``/``sign_accuracy`` against the truth when ``--truth`` is given.

Inputs: the bundled model and test stimulus; modes and interneuron matches from
a finished ``retcodec run`` (``--results``, reading ``modes.nc`` and
``interneurons.nc``); without them, synthetic sparse modes (3 x channels per
layer, 2-3 channels each, random loadings) and one synthetic match per channel.

Wall time depends on what else runs on the machine; ``cpu_seconds`` (all
threads together) and the 1-minute load average are printed beside it.

Run::

    python benchmarks/bench_experiments.py --threads 2                 # synthetic modes
    python benchmarks/bench_experiments.py --results results --threads 2
    python benchmarks/bench_experiments.py --no-reference               # time only
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr


def synthetic_modes(windows, n_channels: int = 8, seed: int = 0) -> dict[str, xr.Dataset]:
    """Sparse modes like the bundled ones: 3 x channels per layer, 2-3 channels each."""
    rng = np.random.default_rng(seed)
    t = np.asarray(windows.time)
    out = {}
    for layer in ("conv0", "conv1"):
        k = 3 * n_channels
        w = np.zeros((k, n_channels, 2))
        for m in range(k):
            chans = rng.choice(n_channels, size=rng.integers(2, 4), replace=False)
            w[m, chans, 1] = rng.uniform(0.5, 3.0, len(chans))
        z = rng.exponential(1.0, (len(t), k)) * (rng.random((len(t), k)) < 0.3)
        out[layer] = xr.Dataset({"modes": (("mode", "channel", "sign"), w),
                                 "loadings": (("time", "mode"), z)},
                                coords={"mode": np.arange(k), "channel": np.arange(n_channels),
                                        "sign": ["neg", "pos"], "time": t})
    return out


def synthetic_match(n_channels: int = 8) -> xr.Dataset:
    """One recorded 'interneuron' per model channel, matched to it (held-out r 0.9)."""
    names = [(l, c) for l in ("conv0", "conv1") for c in range(n_channels)]
    return xr.Dataset({"best_layer": ("interneuron", np.array([l for l, _ in names])),
                       "best_channel": ("interneuron", np.array([c for _, c in names])),
                       "heldout_correlation": ("interneuron", np.full(len(names), 0.9))},
                      coords={"interneuron": [f"synthetic/{i}" for i in range(len(names))]})


def load_inputs(results: Path | None, windows):
    if results is not None and (results / "modes.nc").exists():
        from retcodec.modes import load_modes
        modes = load_modes(results / "modes.nc")
        match = (xr.open_dataset(results / "interneurons.nc", engine="h5netcdf").load()
                 if (results / "interneurons.nc").exists() else synthetic_match())
        return modes, match, f"modes and matches of {results}"
    return synthetic_modes(windows), synthetic_match(), "synthetic modes and matches"


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    r = float(np.corrcoef(a, b)[0, 1]) if a.size > 2 and a.std() > 0 and b.std() > 0 else float("nan")
    return {"max_abs_diff": float(np.max(np.abs(a - b))) if a.size else float("nan"), "pearson_r": r,
            "n": int(a.size)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled natural-scene model)")
    ap.add_argument("--data", default=None, help="recording file (default: the bundled test split)")
    ap.add_argument("--results", type=Path, default=None, help="a retcodec run folder (modes.nc, interneurons.nc)")
    ap.add_argument("--truth", default=None, help="truth file for scoring (retcodec.io.truth.read_truth)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=None, help="override the stage default")
    ap.add_argument("--max-modes", type=int, default=None, help="use the first N modes of each layer")
    ap.add_argument("--no-reference", action="store_true", help="skip the all-windows, fine-dose reference")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import retcodec
    from retcodec.analysis import experiments as ex
    from retcodec.engine import perturb
    from retcodec.io.bundled import default_data_root, default_model_path
    from retcodec.io.recordings import load_recording, windows

    model = retcodec.load_model(args.model or default_model_path())
    data = args.data or default_data_root() / model.meta["dataset"] / f"{model.meta['stim_type']}.h5"
    cells = model.meta.get("cells")
    rec = load_recording(data, split="test", cells=cells if isinstance(cells, list) else None)
    w = windows(rec, norm_stats=model.meta["norm_stats"], history=model.img_shape[0])
    modes, match, source = load_inputs(args.results, w)
    if args.max_modes is not None:
        modes = {k: v.isel(mode=slice(0, args.max_modes)) for k, v in modes.items()}
    n_modes = {k: int(v.sizes["mode"]) for k, v in modes.items()}
    print(f"inputs: {len(w)} windows, {model.n_cells} cells, {source}; modes per layer {n_modes}, "
          f"{match.sizes['interneuron']} interneurons; {args.threads} thread(s)", flush=True)

    kw = {} if args.max_windows is None else {"max_windows": args.max_windows}
    t0, c0 = time.perf_counter(), time.process_time()
    fast = ex.experiments(model, w, modes, match, truth=args.truth, **kw)
    seconds = time.perf_counter() - t0
    report = {"seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - c0, 1),
              "load_average_1min": round(os.getloadavg()[0], 1), "n_windows": int(fast.attrs["n_windows"]),
              "silenced_runs": int(fast.attrs["n_silenced_runs"]),
              "fractions": list(ex.DEFAULT_FRACTIONS), "budget_seconds": 90}
    print("default:", json.dumps(report), flush=True)
    if "spearman" in fast:
        print("truth:", json.dumps({k: float(fast[k]) for k in ("spearman", "sign_accuracy",
                                                                 "baseline_spearman",
                                                                 "baseline_sign_accuracy")}))
    if args.no_reference:
        return 0
    perturb.MAX_DECOMPOSED_ENTRIES = 1 << 29        # the reference keeps every window's channel cache
    n_ch = max(int(c) for c in model.chans)
    fine = tuple(np.arange(n_ch + 1) / n_ch)
    t0, c0 = time.perf_counter(), time.process_time()
    ref = ex.experiments(model, w, modes, match, truth=args.truth, max_windows=None, fractions=fine)
    print("reference:", json.dumps({"seconds": round(time.perf_counter() - t0, 1),
                                    "cpu_seconds": round(time.process_time() - c0, 1),
                                    "n_windows": int(ref.attrs["n_windows"]),
                                    "silenced_runs": int(ref.attrs["n_silenced_runs"])}), flush=True)
    stability = {"predicted_effect": compare(fast["predicted_effect"].values, ref["predicted_effect"].values),
                 "mode_effect": compare(fast["mode_effect"].values, ref["mode_effect"].values),
                 "specificity_ablate": compare(fast["specificity"].sel(kind="ablate").values,
                                               ref["specificity"].sel(kind="ablate").values)}
    same_sign = np.sign(fast["predicted_effect"].values) == np.sign(ref["predicted_effect"].values)
    big = np.abs(ref["predicted_effect"].values) >= 0.1
    stability["predicted_sign_agreement_where_ref_abs_ge_0.1"] = float(same_sign[big].mean()) if big.any() else None
    print("stability (default vs reference):", json.dumps(stability, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
