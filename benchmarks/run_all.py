"""Run every benchmark, one after the other: ``python benchmarks/run_all.py``.

Each benchmark measures retcodec against a reference measured in the same run
and prints the ratios:

* ``bench_fit_quality.py``: bundled models vs the repeat ceiling (oracle);
* ``bench_contributions.py``: contribution engine vs the authors' plain set-up
  and Captum (windows/s, peak memory, max relative difference, arithmetic);
* ``bench_irf.py``: batched IRFs vs a per-cell autograd loop;
* ``bench_modes.py``: the sparse autoencoder's defaults vs the paper's settings,
  NMF and PCA on a synthetic problem with known modes.

``--quick`` uses smaller sizes (minutes instead of tens of minutes).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    args = ap.parse_args()
    runs = [["bench_fit_quality.py"],
            ["bench_contributions.py"] + (["--n", "100"] if args.quick else []),
            ["bench_irf.py"] + (["--windows", "32"] if args.quick else []),
            ["bench_modes.py"] + (["--seeds", "0"] if args.quick else [])]
    failed = []
    for cmd in runs:
        print(f"\n######## {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]])
        print(f"######## {cmd[0]} finished in {time.perf_counter() - t0:.0f} s (exit {rc})", flush=True)
        if rc:
            failed.append(cmd[0])
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
