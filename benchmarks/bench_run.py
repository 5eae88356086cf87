"""The whole bundled ``retcodec run``: per-stage times and peak memory, against a reference.

    python benchmarks/bench_run.py [--quick] [--out DIR] [--keep]

Runs ``retcodec run`` on the bundled default in a child process (fresh results folder)
and prints each stage's compute time, the total and the child's peak resident memory.
The reference, measured in the same run on the same machine, is one forward pass of
the bundled model over every test window (``retcodec.predict``): the ratio total/reference
says how many "forward passes over the test set" a whole analysis costs, which moves
far less between machines than seconds do. A rerun in the same folder is timed too (it
must only verify and skip). Targets (issue: a report in <= 4 min on 2 idle cores,
< 1 GB; the quick option < 1 min) are printed next to the measurements.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = {False: 240.0, True: 60.0}
TARGET_MB = 1024.0


def reference_seconds() -> float:
    import retcodec as rc
    from retcodec.io.bundled import default_model_path, default_recording_path

    model = rc.load_model(default_model_path())
    rec = rc.load_recording(default_recording_path(), split="test", cells=model.meta.get("cells"))
    t0 = time.perf_counter()
    rc.predict(model, rec)
    return time.perf_counter() - t0


def run_child(out: Path, quick: bool) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "retcodec", "run", "--out", str(out), "--quiet"] + (["--quick"] if quick else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024.0
    stages = json.loads((out / ".stages.json").read_text())
    return wall, peak_mb, {k: v.get("seconds") for k, v in stages.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="benchmark `retcodec run --quick`")
    ap.add_argument("--out", type=Path, help="results folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the results folder")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_run_")) / "results"
    if out.exists():
        shutil.rmtree(out)
    ref = reference_seconds()
    wall, peak, stages = run_child(out, args.quick)
    rerun, _, _ = run_child(out, args.quick)
    print(f"reference: predict over the bundled test set {ref:.1f} s")
    print(f"{'stage':<16}{'seconds':>10}")
    for name, sec in stages.items():
        print(f"{name:<16}{sec:>10.1f}")
    target = TARGET_S[args.quick]
    print(f"{'total (wall)':<16}{wall:>10.1f}   target <= {target:.0f} s: {'met' if wall <= target else 'MISSED'}"
          f"   ({wall / ref:.0f} x reference)")
    print(f"{'peak memory':<16}{peak:>10.0f} MB  target < {TARGET_MB:.0f} MB: "
          f"{'met' if peak < TARGET_MB else 'MISSED'}")
    print(f"{'rerun (skips)':<16}{rerun:>10.1f}")
    if not args.keep and args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
