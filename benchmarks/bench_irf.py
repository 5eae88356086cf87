"""Benchmark: instantaneous receptive fields, batched first-layer transpose vs a plain autograd loop.

Model: a 17-cell published-layout ``VaryModel`` (15-11-21b layout: stacked 3x3
convolutions, 8 + 8 channels, convolutional ganglion layer) with random weights
and batch-norm statistics. Stimulus: random z-scored windows ``(n, 40, 50, 50)``.

Methods (same windows, same batch of windows per step):

* ``loop``: autograd to the input, one cell at a time: for every cell a full
  forward and backward pass of the batch (the straightforward way);
* ``batched``: :func:`retcodec.analysis.irf.irf` — ``conv0`` once per batch, one
  batched backward pass to its output for all cells, the first layer's
  transpose (stacked 3x3 kernels, the cheaper form) to the input;
* ``batched-collapsed``: the same with the collapsed 15x15 kernel's transpose.

Reported per method: throughput in (window × cell) IRFs per second, the speed
ratio to ``loop``, the largest absolute difference to ``loop`` relative to its
largest value, and the peak resident memory above the set-up (each method runs
in a fresh subprocess, so peaks do not mix).

Run::

    python benchmarks/bench_irf.py                     # 64 windows, batch 16, 1 thread
    python benchmarks/bench_irf.py --windows 128 --threads 2
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

N_CELLS = 17
CENTERS = [[16, 13], [20, 12], [19, 7], [19, 3], [21, 7], [22, 6], [21, 7], [25, 3], [23, 6],
           [26, 4], [24, 6], [26, 7], [27, 9], [26, 9], [27, 11], [26, 13], [24, 10]]
METHODS = ("loop", "batched", "batched-collapsed")


def make_model(seed: int = 0) -> torch.nn.Module:
    """A 17-cell published-layout model with random weights and batch-norm statistics."""
    from retcodec.io.architectures import AbsBatchNorm, build_model

    torch.manual_seed(seed)
    model = build_model("VaryModel", dict(n_units=N_CELLS, centers=np.array(CENTERS), drop_p=0.05))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, fan_in ** -0.5)
            if isinstance(module, AbsBatchNorm):
                module.running_mean.normal_(0.0, 0.3)
                module.running_var.uniform_(0.5, 1.5)
                module.scale.normal_(0.0, 1.0)
                module.shift.normal_(0.0, 0.3)
    return model.eval()


def make_windows(n: int, seed: int = 1) -> np.ndarray:
    return torch.randn(n, 40, 50, 50, generator=torch.Generator().manual_seed(seed)).numpy()


def loop_irf(model: torch.nn.Module, windows: np.ndarray, batch_size: int) -> np.ndarray:
    """``(n, cells, lag, y, x)`` by autograd to the input, one cell at a time (lag ascending)."""
    out = np.empty((len(windows), N_CELLS, 40, 50, 50), dtype=np.float32)
    model = model.requires_grad_(False)
    for start in range(0, len(windows), batch_size):
        x = torch.from_numpy(windows[start:start + batch_size])
        for k in range(N_CELLS):
            xx = x.clone().requires_grad_(True)
            grad, = torch.autograd.grad(model(xx)[:, k].sum(), xx)
            out[start:start + len(x), k] = grad.flip(1).numpy()
    return out


def run_method(method: str, n_windows: int, batch_size: int, threads: int, save: Path) -> dict:
    """Time one method (in this process) and save its result for the comparison."""
    from retcodec.analysis.irf import irf

    torch.set_num_threads(threads)
    model, windows = make_model(), make_windows(n_windows)
    warm = windows[:2]
    if method == "loop":
        loop_irf(model, warm, batch_size)
    else:
        irf(model, warm, transpose="stacked" if method == "batched" else "collapsed")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "loop":
        result = loop_irf(model, windows, batch_size)
    else:
        result = irf(model, windows, batch_size=batch_size, max_bytes=1 << 34,
                     transpose="stacked" if method == "batched" else "collapsed").values
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(save, result)
    return {"method": method, "seconds": seconds,
            "irfs_per_second": n_windows * N_CELLS / seconds,
            "peak_rss_above_setup_mb": (peak - baseline) / 1024,
            "result_mb": result.nbytes / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child, args.windows, args.batch_size, args.threads, args.save)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            save = Path(tmp) / f"{method}.npy"
            done = subprocess.run([sys.executable, __file__, "--child", method, "--save", str(save),
                                   "--windows", str(args.windows), "--batch-size", str(args.batch_size),
                                   "--threads", str(args.threads)],
                                  check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        reference = np.load(Path(tmp) / "loop.npy")
        scale = np.abs(reference).max()
        for row in rows:
            other = np.load(Path(tmp) / f"{row['method']}.npy")
            row["max_relative_difference"] = float(np.abs(other - reference).max() / scale)
    base = rows[0]["irfs_per_second"]
    print(f"IRFs of a {N_CELLS}-cell published-layout model: {args.windows} windows, batch "
          f"{args.batch_size}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'method':<20}{'IRFs/s':>10}{'speed-up':>10}{'max rel diff':>14}{'peak MB':>10}{'result MB':>11}")
    for row in rows:
        row["speed_ratio"] = row["irfs_per_second"] / base
        print(f"{row['method']:<20}{row['irfs_per_second']:>10.1f}{row['speed_ratio']:>10.2f}"
              f"{row['max_relative_difference']:>14.2e}{row['peak_rss_above_setup_mb']:>10.0f}"
              f"{row['result_mb']:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
