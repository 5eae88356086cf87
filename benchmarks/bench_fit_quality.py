"""Quality of the bundled in-silico models against the repeat ceiling.

Recomputes, on each bundled model's test split: the per-cell correlation with
the trial-averaged rate, the jackknife oracle correlation (the reference,
measured in the same run from the repeats), their ratio and FEVE; prints the
medians next to the targets (natural scenes: correlation >= 0.7 and >= 80 % of
the oracle; the v2 bundle's targets: median correlation and FEVE >= 0.7), and,
for in-silico recordings, the same per true cell type with each type's mean rate.

    python benchmarks/bench_fit_quality.py [--model PATH --data PATH]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import retcodec as rc
from retcodec.io.bundled import bundled_path, default_recording_path
from retcodec.analysis.evaluation import format_evaluation

TARGET_CORRELATION = 0.7
TARGET_FRACTION = 0.8
TARGET_FEVE = 0.7


def per_type_table(ev, rec) -> str:
    """Mean test rate, median correlation and FEVE of each true cell type (in-silico data)."""
    if "cell_type" not in rec.coords:
        return "(no true cell types in this recording)"
    rate = rec["rate"].mean("time")
    lines = [f"{'type':18s} {'cells':>5s} {'rate Hz':>8s} {'median r':>9s} {'median FEVE':>12s}"]
    for gtype in dict.fromkeys(rec["cell_type"].values.tolist()):
        cells = rec["cell"].values[rec["cell_type"].values == gtype]
        r = ev["correlation"].sel(cell=cells)
        f = ev["feve"].sel(cell=cells) if "feve" in ev else r * np.nan
        lines.append(f"{gtype:18s} {cells.size:5d} {float(rate.sel(cell=cells).mean()):8.2f} "
                     f"{float(r.median()):9.3f} {float(f.median()):12.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: both bundled models)")
    ap.add_argument("--data", help="recording file matching --model")
    args = ap.parse_args()
    pairs = ([(args.model, args.data)] if args.model else
             [(bundled_path("models", f"insilico_{k}.pt"), default_recording_path(k))
              for k in ("naturalscene", "whitenoise")])
    for model_path, data in pairs:
        t0 = time.perf_counter()
        model = rc.load_model(model_path)
        rec = rc.load_recording(data, split="test", cells=model.meta.get("cells"))
        ev = rc.evaluate(model, rec)
        a = ev.attrs
        print(f"\n== {model_path} on {data} ({a['n_windows']} test windows, {time.perf_counter() - t0:.1f} s)")
        print(format_evaluation(ev))
        r, o = a["median_correlation"], a.get("median_oracle", np.nan)
        print(f"median correlation {r:.3f}  (target >= {TARGET_CORRELATION}: ratio {r / TARGET_CORRELATION:.2f})")
        print(f"median oracle      {o:.3f}  (reference, from the repeats in this run)")
        frac = a.get("median_normalized_correlation", np.nan)
        print(f"median r / ceiling {frac:.3f}  (noise-ceiling-normalised; target >= {TARGET_FRACTION}: "
              f"ratio {frac / TARGET_FRACTION:.2f})")
        feve = a.get("median_feve", np.nan)
        print(f"median FEVE        {feve:.3f}  (target >= {TARGET_FEVE}: ratio {feve / TARGET_FEVE:.2f})")
        print(per_type_table(ev, rec))


if __name__ == "__main__":
    main()
