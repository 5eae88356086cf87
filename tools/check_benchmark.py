"""CI check: the quick benchmark family end to end, with real properties of its scores.

Runs ``retcodec benchmark --quick`` on one tuning retina (simulated, fitted, analysed by
``retcodec run``, scored) in a temporary folder, then checks that the scoring holds its
known answers (true labels ARI 1, shuffled labels ARI about 0, true effects Spearman 1),
that every score is in its range, and that a rerun reuses every step and reproduces
``benchmark.nc`` byte for byte. Exits non-zero on any failure.

    python tools/check_benchmark.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr


def check(out: Path) -> list[str]:
    from retcodec.benchmark import benchmark

    t0 = time.perf_counter()
    written = benchmark(out, seeds=[1000], quick=True, progress=True)
    first = time.perf_counter() - t0
    problems = []
    root = xr.load_dataset(written["benchmark"], engine="h5netcdf")
    score = root["score"]

    def value(method: str, metric: str) -> float:
        return float(score.sel({"method": method, "metric": metric}).values[0])

    expect = {("celltypes/truth_labels", "ari"): (1.0, 1e-9), ("celltypes/shuffled_labels", "ari"): (0.0, 0.2),
              ("silencing/truth", "spearman"): (1.0, 1e-9), ("silencing/truth", "sign_accuracy"): (1.0, 1e-9)}
    for (method, metric), (target, tol) in expect.items():
        v = value(method, metric)
        if not abs(v - target) <= tol:
            problems.append(f"{method} {metric} = {v:.3f}, expected {target} +- {tol}")
    ranges = {"ari": (-1, 1), "spearman": (-1, 1), "sign_accuracy": (0, 1), "type_match_rate": (0, 1),
              "heldout_r": (-1, 1), "stability": (0, 1.0001), "test_r": (-1, 1)}
    for metric, (lo, hi) in ranges.items():
        v = score.sel({"metric": metric}).values
        v = v[np.isfinite(v)]
        if v.size == 0 or np.any((v < lo) | (v > hi)):
            problems.append(f"{metric} out of [{lo}, {hi}] or missing: {v}")
    primary_k = value("celltypes/primary", "k_error") + int(root["n_types"].values[0])
    if not 2 <= primary_k <= 8:
        problems.append(f"primary chose k = {primary_k}")
    before = Path(written["benchmark"]).read_bytes()
    t0 = time.perf_counter()
    again = benchmark(out, seeds=[1000], quick=True, progress=True)
    if Path(again["benchmark"]).read_bytes() != before:
        problems.append("a rerun changed benchmark.nc")
    print(f"quick benchmark: {first:.0f} s; rerun {time.perf_counter() - t0:.0f} s")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="benchmark folder to keep (default: a temporary one)")
    args = parser.parse_args()
    if args.keep:
        problems = check(args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            problems = check(Path(tmp) / "benchmark")
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    print("benchmark check: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
