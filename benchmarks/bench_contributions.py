"""Benchmark of the contribution engine against the plain analysis set-up and Captum.

    python benchmarks/bench_contributions.py [--model PATH] [--n 500] [--steps 20]

Implementations, each timed in its own subprocess (peak memory = its ``ru_maxrss``):

(a) ``fast``: :func:`retcodec.engine.contributions` (affine first layer once per window,
    the rest of the network on the path batch, gradients to hidden tensors only);
(b) ``plain``: the authors' analysis set-up, reimplemented: stacked convolutions
    collapsed into single 15x15 / 11x11 convolutions, forward hooks on the
    convolution outputs, the ``steps + 1`` path points of each window in one
    batch, gradients back to the input; same trapezoid rule as (a);
(c) ``captum``: Captum's ``LayerConductance`` (``riemann_trapezoid``), one call
    per layer, where Captum is installed. Captum sums left points (first order),
    so its results differ from (a) and (b) by O(1/steps).

All share one surprisal target fitted beforehand (not timed). Accuracy: each
result against a float64 computation of the same quantity (the retcodec fast
path in float64, itself checked against the plain path in float64 on the first
``--n-truth`` windows). The arithmetic of
each implementation is counted with ``torch.utils.flop_counter`` (convolutions
and matrix products, forward and backward); the ratio of the counts bounds the
speed-up. Last, the completeness error of every quadrature of (a) is measured
against the number of steps.

Default model and windows: the bundled in-silico model and its recording; when
they are missing, a randomly initialised published-layout VaryModel (17 cells,
batch-norm statistics calibrated on the windows) and white-noise windows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAYERS = ("conv0", "conv1")
IMPLEMENTATIONS = ("fast", "plain", "captum")


# =========================================================================== inputs
def calibrate_batchnorm(model: torch.nn.Module, x: np.ndarray, seed: int = 0) -> None:
    """Set batch-norm statistics to those of ``x`` (as after training); random scales/shifts."""
    from retcodec.io.architectures import AbsBatchNorm
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        h = torch.as_tensor(x)
        for module in model.sequential:
            if isinstance(module, AbsBatchNorm):
                dims = [0] + list(range(2, h.ndim))
                n = module.n_units
                module.running_mean.copy_(h.mean(dims) + 0.3 * h.std(dims) * torch.randn(n, generator=g))
                module.running_var.copy_(h.var(dims) * (0.5 + torch.rand(n, generator=g)))
                module.scale.copy_(torch.randn(n, generator=g).abs() + 0.5)
                module.shift.copy_(0.5 * torch.randn(n, generator=g))
            h = module(h)


def random_inputs(n: int, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray, str]:
    from retcodec.io.architectures import build_model
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_cells = 17
    model = build_model("VaryModel", dict(n_units=n_cells, centers=rng.integers(12, 38, (n_cells, 2))))
    model.eval()
    x = rng.standard_normal((n, 40, 50, 50)).astype(np.float32)
    calibrate_batchnorm(model, x[:64], seed)
    return model, x, ("randomly initialised published-layout VaryModel (17 cells, batch-norm "
                      "calibrated) on white-noise windows")


def bundled_inputs(model_path: str | None, n: int) -> tuple[torch.nn.Module, np.ndarray, str]:
    import retcodec
    from retcodec.io import bundled as bundled
    path = Path(model_path) if model_path else bundled.default_model_path()
    model = retcodec.load_model(path).eval()
    recording = retcodec.load_recording(bundled.default_recording_path())
    windows = retcodec.windows(recording, norm_stats=model.meta.get("norm_stats"),
                               history=model.img_shape[0])
    x = np.asarray(windows[:n], dtype=np.float32)
    return model, x, f"model {path} on the first {len(x)} windows of its recording"


def load_inputs(args: argparse.Namespace) -> tuple[torch.nn.Module, np.ndarray, str]:
    try:
        return bundled_inputs(args.model, args.n)
    except Exception as err:  # noqa: BLE001 - any failure falls back, and says why
        if args.model:
            raise
        print(f"bundled model/recording not usable ({type(err).__name__}: {err}); falling back")
        return random_inputs(args.n)


# =========================================================================== implementations
def split_sum(c: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W) -> (B, C, 2)``: negative and positive parts summed over space."""
    return torch.stack([c.clamp(max=0).sum((2, 3)), c.clamp(min=0).sum((2, 3))], -1).detach().numpy()


class AuthorsReference:
    """The authors' set-up: collapsed convolutions, hooks, batched path, gradients to the input."""

    def __init__(self, model: torch.nn.Module, target: Any, steps: int) -> None:
        import copy
        self.model = copy.deepcopy(model).collapse().eval().requires_grad_(False)
        self.target, self.steps = target, steps
        self.captured: dict[str, torch.Tensor] = {}
        for name in LAYERS:
            self.model.layers[name].register_forward_hook(
                lambda m, a, out, name=name: self.captured.__setitem__(name, out))

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        p, b = self.steps + 1, len(x)
        alphas = torch.linspace(0, 1, p).view(p, 1, 1, 1, 1)
        path = (alphas * x.unsqueeze(0)).flatten(0, 1).requires_grad_(True)   # baseline 0
        s = self.target(self.model(path)).sum()
        hidden = [self.captured[n] for n in LAYERS]
        for h in hidden:
            h.retain_grad()
        s.backward()                                     # gradients all the way to the input
        out = {}
        for name, h in zip(LAYERS, hidden):
            h, g = h.detach().unflatten(0, (p, b)), h.grad.unflatten(0, (p, b))
            out[name] = split_sum((0.5 * (g[1:] + g[:-1]) * (h[1:] - h[:-1])).sum(0))
        return out


class CaptumConductance:
    def __init__(self, model: torch.nn.Module, target: Any, steps: int) -> None:
        from captum.attr import LayerConductance
        import copy
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = steps
        forward = lambda inp: target(self.model(inp))        # noqa: E731
        self.methods = {n: LayerConductance(forward, self.model.layers[n]) for n in LAYERS}

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        return {n: split_sum(lc.attribute(x, baselines=torch.zeros_like(x), n_steps=self.steps,
                                          method="riemann_trapezoid"))
                for n, lc in self.methods.items()}


class Fast:
    def __init__(self, model: torch.nn.Module, target: Any, steps: int, batch_size: int) -> None:
        self.model, self.target, self.steps, self.batch_size = model, target, steps, batch_size

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from retcodec.engine.contributions import contributions
        tree = contributions(self.model, x, layers=LAYERS, steps=self.steps, target=self.target,
                             batch_size=self.batch_size, chunk_size=len(x), progress=False)
        return {n: tree[n]["contribution"].values for n in LAYERS}


def run_batched(impl: Any, x: np.ndarray, batch_size: int, as_tensor: bool) -> dict[str, np.ndarray]:
    if not as_tensor:
        return impl(x)
    parts = [impl(torch.as_tensor(x[s:s + batch_size])) for s in range(0, len(x), batch_size)]
    return {n: np.concatenate([p[n] for p in parts]) for n in LAYERS}


# =========================================================================== worker
def worker(args: argparse.Namespace) -> None:
    """One implementation in this process: count MACs, warm up, time, record peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    from retcodec.io.architectures import build_model
    from retcodec.engine.targets import Surprisal
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    saved = torch.load(work / "model.pt", weights_only=True)
    model = build_model(saved["model_type"], saved["hyps"])
    model.load_state_dict(saved["state"])
    model.eval()
    x = np.load(work / "windows.npy")
    with np.load(work / "target.npz") as z:
        target = Surprisal(z["mean"], z["cov"], regularization=float(z["shrinkage"]))
    impl: Any
    if args.worker == "fast":
        impl = Fast(model, target, args.steps, args.batch_size)
    elif args.worker == "plain":
        impl = AuthorsReference(model, target, args.steps)
    elif args.worker == "captum":
        impl = CaptumConductance(model, target, args.steps)
    else:                                    # "floor": loading only, for the memory baseline
        print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    as_tensor = args.worker != "fast"
    warm = x[:args.batch_size]
    with FlopCounterMode(display=False) as counter:
        run_batched(impl, warm, args.batch_size, as_tensor)
    macs = counter.get_total_flops() / 2 / len(warm)
    run_batched(impl, warm, args.batch_size, as_tensor)               # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_batched(impl, x, args.batch_size, as_tensor)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    np.savez(work / f"result_{args.worker}.npz", **result)
    print(json.dumps({"seconds": seconds, "windows_per_s": len(x) / seconds, "macs_per_window": macs,
                      "windows_per_cpu_s": len(x) / cpu,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def spawn(impl: str, args: argparse.Namespace, work: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--worker", impl, "--workdir", str(work), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {impl}: failed\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def float64_truth(model: torch.nn.Module, x: np.ndarray, target: Any, steps: int,
                  fast: bool) -> dict[str, np.ndarray]:
    """The same trapezoid contributions computed in float64."""
    from retcodec.engine.contributions import contributions
    tree = contributions(model, x, layers=LAYERS, steps=steps, target=target, fast=fast,
                         dtype="float64", batch_size=16 if fast else 4, progress=False)
    return {n: tree[n]["contribution"].values for n in LAYERS}


# =========================================================================== completeness
def completeness_sweep(model: torch.nn.Module, x: np.ndarray, target: Any,
                       steps_list: list[int]) -> dict[str, dict[int, float]]:
    """Total relative completeness error (max over layers) per quadrature and number of steps."""
    from retcodec.engine.contributions import QUADRATURES, contributions
    out: dict[str, dict[int, float]] = {}
    for quad in QUADRATURES:
        out[quad] = {}
        for steps in steps_list:
            if quad == "simpson" and steps % 2:
                continue
            start = time.perf_counter()
            tree = contributions(model, x, layers=LAYERS, steps=steps, target=target, quadrature=quad,
                                 progress=False, chunk_size=len(x))
            err = float(tree["completeness_error"].sel(statistic="total").max())
            out[quad][steps] = err
            print(f"  {quad:15s} steps {steps:4d}: error {err:.2e}  "
                  f"({len(x) / (time.perf_counter() - start):6.1f} windows/s)")
    return out


def steps_to_reach(errors: dict[int, float], level: float) -> str:
    reached = [s for s, e in sorted(errors.items()) if e <= level]
    return str(reached[0]) if reached else f"> {max(errors)}"


# =========================================================================== main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model checkpoint (default: the bundled one)")
    parser.add_argument("--n", type=int, default=500, help="windows to time (default 500)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16, help="windows per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of the timed processes (default PASSIVE: threads sleep "
                             "instead of spinning, which matters on a machine shared with other "
                             "jobs; '' leaves it unset)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds (median)")
    parser.add_argument("--n-truth", type=int, default=16,
                        help="windows on which the float64 truth is checked against the plain path")
    parser.add_argument("--n-completeness", type=int, default=16, help="windows for the quadrature sweep")
    parser.add_argument("--skip", nargs="*", default=[], choices=IMPLEMENTATIONS)
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args()


def available_implementations(skip: list[str]) -> list[str]:
    impls = [i for i in IMPLEMENTATIONS if i not in skip]
    if "captum" in impls:
        try:
            import captum  # noqa: F401
        except ImportError:
            print("captum: not installed, skipped")
            impls.remove("captum")
    return impls


def time_implementations(args: argparse.Namespace, model: torch.nn.Module, x: np.ndarray, target: Any
                         ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]], float]:
    """Timings (median over interleaved rounds), results and the memory floor (MB)."""
    impls = available_implementations(args.skip)
    rounds: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
    results: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hyps = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in model.hyps.items()}
        torch.save({"model_type": model.model_type, "hyps": hyps, "state": model.state_dict()},
                   work / "model.pt")
        np.save(work / "windows.npy", x)
        np.savez(work / "target.npz", mean=target.mean, cov=target.sample_covariance,
                 shrinkage=target.shrinkage)
        floor = spawn("floor", args, work)["maxrss_mb"]
        print(f"memory floor (imports, model, windows): {floor:.0f} MB", flush=True)
        for r in range(args.rounds):          # interleaved, so that a busy machine hits all alike
            for impl in impls:
                t = spawn(impl, args, work)
                if t is None:
                    continue
                rounds[impl].append(t)
                print(f"  round {r + 1} {impl:7s} {t['windows_per_s']:8.2f} windows/s "
                      f"({t['windows_per_cpu_s']:7.2f} per CPU-s)  peak RSS "
                      f"{t['maxrss_mb']:6.0f} MB  {t['macs_per_window'] / 1e6:9.1f} MMAC/window", flush=True)
                with np.load(work / f"result_{impl}.npz") as z:
                    results[impl] = {n: z[n] for n in LAYERS}
    timings = {i: {"windows_per_s": float(np.median([t["windows_per_s"] for t in ts])),
                   "best_windows_per_s": max(t["windows_per_s"] for t in ts),
                   "windows_per_s_rounds": [t["windows_per_s"] for t in ts],
                   "windows_per_cpu_s": float(np.median([t["windows_per_cpu_s"] for t in ts])),
                   "maxrss_mb": max(t["maxrss_mb"] for t in ts),
                   "macs_per_window": ts[0]["macs_per_window"]}
               for i, ts in rounds.items() if ts}
    for impl, t in timings.items():
        print(f"{impl:7s} median {t['windows_per_s']:8.2f} windows/s (best {t['best_windows_per_s']:.2f}); "
              f"peak RSS {t['maxrss_mb']:.0f} MB (floor {floor:.0f} MB); "
              f"{t['macs_per_window'] / 1e6:.1f} MMAC/window")
    return timings, results, floor


def rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray], q: float = 100.0) -> float:
    """Quantile ``q`` of ``|a - b| / max|b|`` over windows x channels x signs, worst layer."""
    return max(float(np.percentile(np.abs(a[n] - b[n]), q) / np.abs(b[n]).max()) for n in LAYERS)


def rel_l2(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """``‖a - b‖ / ‖b‖`` over windows x channels x signs, worst layer."""
    return max(float(np.linalg.norm(a[n] - b[n]) / np.linalg.norm(b[n])) for n in LAYERS)


def report_accuracy(args: argparse.Namespace, model: torch.nn.Module, x: np.ndarray, target: Any,
                    results: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    n_check = min(args.n_truth, len(x))
    print(f"float64 ground truth (retcodec fast path in float64; checked against the plain path "
          f"in float64 on {n_check} windows) ...", flush=True)
    truth = float64_truth(model, x, target, args.steps, fast=True)
    check = float64_truth(model, x[:n_check], target, args.steps, fast=False)
    fast_vs_plain64 = rel({n: truth[n][:n_check] for n in LAYERS}, check)
    print(f"  float64 fast vs plain path: {fast_vs_plain64:.1e}")
    errors = {impl: {"max": rel(res, truth), "p99.9": rel(res, truth, 99.9), "median": rel(res, truth, 50),
                     "l2": rel_l2(res, truth)} for impl, res in results.items()}
    print("relative error vs float64: |a - b| / max|b| over windows x channels x signs (max, p99.9, "
          "median) and ||a - b|| / ||b||:")
    for impl, e in errors.items():
        print(f"  {impl:7s} max {e['max']:.1e}  p99.9 {e['p99.9']:.1e}  median {e['median']:.1e}  "
              f"L2 {e['l2']:.1e}")
    print("  (float32 maxima: a few units whose ReLU lies within rounding of its kink at a path point "
          "switch side, a jump of the size of the trapezoid's own error; captum's gap is its "
          "first-order left-point sum)")
    return {"float64_fast_vs_plain": fast_vs_plain64, "rel_error_vs_float64": errors}


def report_speed(timings: dict[str, dict[str, Any]], results: dict[str, dict[str, np.ndarray]],
                 errors: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "fast" not in timings:
        return out
    fast = timings["fast"]
    for other in ("plain", "captum"):
        if other not in timings:
            continue
        t = timings[other]
        entry = {"speedup_median": fast["windows_per_s"] / t["windows_per_s"],
                 "speedup_best": fast["best_windows_per_s"] / t["best_windows_per_s"],
                 "speedup_cpu_time": fast["windows_per_cpu_s"] / t["windows_per_cpu_s"],
                 "arithmetic_bound": t["macs_per_window"] / fast["macs_per_window"],
                 "max_rel_diff": rel(results["fast"], results[other]),
                 "p99.9_rel_diff": rel(results["fast"], results[other], 99.9),
                 "l2_rel_diff": rel_l2(results["fast"], results[other])}
        out[f"fast_vs_{other}"] = entry
        print(f"fast vs {other}: {entry['speedup_median']:.1f}x faster (median rounds; best rounds "
              f"{entry['speedup_best']:.1f}x; per CPU-second {entry['speedup_cpu_time']:.1f}x); "
              f"arithmetic ratio {entry['arithmetic_bound']:.1f}x (measured speed-up = "
              f"{100 * entry['speedup_median'] / entry['arithmetic_bound']:.0f}% of it); relative "
              f"difference max {entry['max_rel_diff']:.1e}, p99.9 {entry['p99.9_rel_diff']:.1e}, "
              f"L2 {entry['l2_rel_diff']:.1e}")
    if "fast_vs_plain" in out:
        fast_ok = out["fast_vs_plain"]["speedup_median"] >= 5
        verdict = {m: errors["fast"][m] <= 1e-4 for m in ("max", "p99.9", "l2")}
        print(f"target >= 5x faster than plain: {'met' if fast_ok else 'NOT met'}; relative error vs "
              f"float64 <= 1e-4: " + ", ".join(f"{m} {'met' if v else 'NOT met'}" for m, v in verdict.items())
              + (f" (plain float32: max {errors['plain']['max']:.1e})" if "plain" in errors else ""))
    return out


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker(args)
    torch.set_num_threads(args.threads)
    from retcodec.engine.targets import Surprisal
    model, x, what = load_inputs(args)
    print(f"inputs: {what}; {len(x)} windows; steps {args.steps}; batch {args.batch_size} windows; "
          f"torch {torch.__version__}, {args.threads} threads on {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f}), OMP_WAIT_POLICY={args.omp_wait_policy or 'unset'}")
    with torch.no_grad():
        y = torch.cat([model(torch.as_tensor(x[s:s + 64])) for s in range(0, len(x), 64)]).double().numpy()
    target = Surprisal.from_outputs(y)
    numbers: dict[str, Any] = {"inputs": what, "n": len(x), "steps": args.steps, "threads": args.threads,
                               "omp_wait_policy": args.omp_wait_policy}
    timings, results, floor = time_implementations(args, model, x, target)
    numbers.update(timings=timings, memory_floor_mb=floor)
    numbers.update(report_accuracy(args, model, x, target, results))
    numbers.update(report_speed(timings, results, numbers["rel_error_vs_float64"]))

    print(f"completeness error vs steps ({min(args.n_completeness, len(x))} windows; "
          f"total |sum C - dS| / sum |dS|, worst layer):")
    sweep = completeness_sweep(model, x[:args.n_completeness], target, [5, 10, 20, 40, 80, 160, 320, 640])
    for quad, errors in sweep.items():
        print(f"  {quad}: steps to reach 1e-3: {steps_to_reach(errors, 1e-3)}")
    numbers["completeness"] = {q: {str(k): v for k, v in e.items()} for q, e in sweep.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
