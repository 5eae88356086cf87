"""Benchmark on a real ImageNet network: EfficientNet-Lite0 (``retcodec[imagenet]``), blocks 5 and 10.

    python benchmarks/bench_imagenet.py [--images 2] [--steps 16] [--fixed 16,64,256] [--tols 0.05,0.01]
                                        [--threads 1] [--device cpu]

Images: crops of the offline photographs (scikit-learn's china.jpg and
flower.jpg first, then matplotlib's grace_hopper.jpg and mirrored copies),
RGB scaled to [-1, 1]. Target: the top-1 logit; baseline: the zero image.
Every measurement runs in its own subprocess (peak memory = its ``ru_maxrss``):

1. **Against Captum.** retcodec (both layers in one pass, ``steps`` trapezoid
   intervals on the hidden path) and Captum's ``LayerConductance``
   (``riemann_trapezoid`` points, one call per layer, as Captum works), timed
   in the same run, each on one image's ``steps + 1`` path points per batch
   (retcodec ``batch_size=1``, Captum ``internal_batch_size=steps + 1``).
   Captum sums ``g(α_k) (h(α_{k+1}) − h(α_k))`` (left points);
   the same call on the reversed path (``inputs`` = baseline, ``baselines`` =
   image) gives minus the right-point sum, so ``½ (forward − reversed)`` is the
   trapezoid rule retcodec uses, at the same points. In float64 (one image,
   4 steps) the two agree unit by unit to ~1e-15; in float32 they differ by
   ~1e-3 of the largest unit at a few units, where rounding (different
   batches, path points 1e-8 apart) flips a ReLU6 whose gradient jumps.
2. **Completeness against cost.** The per-image error ``|ΣC − ΔS| / |ΔS|``
   (worst of the two layers) and the network evaluations per image for fixed
   steps and for ``steps="auto"`` at each tolerance. The engine's fixed rule
   runs all ``steps + 1`` points of a batch in one pass (about 80 MB per
   EfficientNet image in the graph), too much for hundreds of steps; the fixed
   rules of the curve are therefore computed as
   :func:`~retcodec.engine.quadrature.adaptive_trapezoid` with
   ``initial_steps = max_steps = m`` (the same uniform trapezoid rule,
   evaluated 16 points at a time) on the network's hooked layers.
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

LAYERS = ("_blocks.5", "_blocks.10")


# =========================================================================== inputs
def load_images(n: int) -> np.ndarray:
    """``n`` images ``(n, 3, 224, 224)`` in [-1, 1]: the offline photographs, then mirrored copies."""
    from retcodec.classifier import offline_photographs, preprocess_image
    from retcodec.classifier.imagenet import EFFICIENTNET_LITE0_NORMALIZATION

    base = [preprocess_image(p, normalization=EFFICIENTNET_LITE0_NORMALIZATION)
            for p in offline_photographs().values()]
    images = base + [b[:, :, ::-1] for b in base]
    if n > len(images):
        raise SystemExit(f"only {len(images)} offline images; use --images <= {len(images)}")
    return np.ascontiguousarray(np.stack(images[:n]))


def load_model(layers=LAYERS, device: str = "cpu"):
    from retcodec.classifier import load_classifier
    from retcodec.classifier.imagenet import EFFICIENTNET_LITE0_NORMALIZATION, efficientnet_lite0

    return load_classifier(efficientnet_lite0(), list(layers), device=device,
                           normalization=EFFICIENTNET_LITE0_NORMALIZATION)


# =========================================================================== workers
def retcodec_worker(x: np.ndarray, steps: int | str, tol: float, device: str, maps: bool) -> dict:
    from retcodec.engine.contributions import contributions

    model = load_model(device=device)
    start = time.perf_counter()
    tree = contributions(model, x, layers=LAYERS, steps=steps, tol=tol, target="top_logit",
                         batch_size=len(x) if steps == "auto" else 1, device=device, maps=maps,
                         progress=False, fast=False)
    seconds = time.perf_counter() - start
    delta = tree["target"].values.astype(np.float64) - tree["target_baseline"].values
    errors = np.stack([np.abs(tree[n]["completeness_residual"].values) / np.abs(delta) for n in LAYERS])
    if steps == "auto":
        evaluations = float(tree["quadrature_steps"].values.sum() + 1) / len(x)
        used = tree["quadrature_steps"].values.tolist()
    else:
        evaluations, used = float(steps + 1), [steps] * len(x)
    out = {"seconds": seconds, "error": errors.max(0).tolist(), "steps": used,
           "evaluations_per_image": evaluations}
    arrays = {n: tree[n]["contribution_map"].values for n in LAYERS} if maps else {}
    return out, arrays


class TopLogit(torch.nn.Module):
    """The network's largest logit as a ``(B, 1)`` output, for Captum (``target=0``)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).max(dim=1, keepdim=True).values


def captum_worker(x: np.ndarray, steps: int, device: str, reverse: bool) -> dict:
    from captum.attr import LayerConductance

    model = load_model(device=device)
    net = model.net.eval().requires_grad_(False)
    forward = TopLogit(net)
    images = torch.as_tensor(x, device=device)
    zeros = torch.zeros_like(images)
    inputs, baselines = (zeros, images) if reverse else (images, zeros)
    modules = dict(net.named_modules())
    arrays, start = {}, time.perf_counter()
    for name in LAYERS:                           # Captum attributes one layer per call
        lc = LayerConductance(forward, modules[name])
        arrays[name] = lc.attribute(inputs, baselines=baselines, target=0, n_steps=steps,
                                    method="riemann_trapezoid",
                                    internal_batch_size=steps + 1).detach().cpu().numpy()
    return {"seconds": time.perf_counter() - start}, arrays


def float64_worker(x: np.ndarray, steps: int) -> dict:
    """max |retcodec − ½ (Captum forward − Captum reversed)| / max |retcodec| per layer, in float64."""
    from captum.attr import LayerConductance
    from retcodec.engine.contributions import contributions

    model = load_model()
    x = x.astype(np.float64)
    tree = contributions(model, x, layers=LAYERS, steps=steps, target="top_logit", dtype="float64",
                         maps=True, progress=False, fast=False)
    net = model.net.double().eval().requires_grad_(False)
    modules, forward = dict(net.named_modules()), TopLogit(net)
    images = torch.as_tensor(x)
    zeros = torch.zeros_like(images)
    out = {}
    for name in LAYERS:
        lc = LayerConductance(forward, modules[name])
        fwd = lc.attribute(images, baselines=zeros, target=0, n_steps=steps, method="riemann_trapezoid")
        rev = lc.attribute(zeros, baselines=images, target=0, n_steps=steps, method="riemann_trapezoid")
        ours = tree[name]["contribution_map"].values
        out[name] = float(np.abs(ours - 0.5 * (fwd - rev).detach().numpy()).max() / np.abs(ours).max())
    return {"rel_diff_float64": out}, {}


def uniform_worker(x: np.ndarray, steps: int, device: str) -> dict:
    """The fixed ``steps``-interval trapezoid rule, evaluated 16 path points at a time."""
    from retcodec.engine.quadrature import adaptive_trapezoid

    net = load_model(device=device).net.eval().requires_grad_(False)
    modules, captured = dict(net.named_modules()), {}
    for name in LAYERS:
        modules[name].register_forward_hook(lambda m, a, o, name=name: captured.__setitem__(name, o))
    images = torch.as_tensor(x, device=device)

    def evaluate(index: np.ndarray, alpha: np.ndarray):
        a = torch.as_tensor(alpha, dtype=images.dtype, device=device).view(-1, 1, 1, 1)
        path = (a * images[torch.as_tensor(index, device=device)]).requires_grad_(True)   # baseline 0
        values = net(path.view_as(path)).max(dim=1).values
        grads = torch.autograd.grad(values.sum(), [captured[n] for n in LAYERS])
        return values.detach(), {n: captured[n].detach() for n in LAYERS}, dict(zip(LAYERS, grads))

    start = time.perf_counter()
    result = adaptive_trapezoid(evaluate, len(x), LAYERS, max_steps=steps, initial_steps=steps, chunk=16)
    return {"seconds": time.perf_counter() - start, "error": result.error.tolist(), "steps": [steps] * len(x),
            "evaluations_per_image": float(steps + 1)}, {}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x = load_images(args.images)
    kind, _, value = args.worker.partition(":")
    if kind == "float64":
        out, arrays = float64_worker(x[:1], int(value))
    elif kind == "fixed":
        out, arrays = retcodec_worker(x, int(value), 0.01, args.device, maps=True)
    elif kind == "uniform":
        out, arrays = uniform_worker(x, int(value), args.device)
    elif kind == "auto":
        out, arrays = retcodec_worker(x, "auto", float(value), args.device, maps=False)
    else:
        out, arrays = captum_worker(x, int(value), args.device, reverse=kind == "captum_reverse")
    if arrays:
        np.savez(args.save, **arrays)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def run_worker(name: str, args: argparse.Namespace, save: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--save", str(save), "--images", str(args.images),
           "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"worker {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# =========================================================================== main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16, help="steps of the Captum comparison")
    ap.add_argument("--fixed", default="16,64,256", help="fixed steps of the completeness curve")
    ap.add_argument("--tols", default="0.05,0.01", help="tolerances of steps='auto'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    try:
        import captum  # noqa: F401
        have_captum = True
    except ImportError:
        have_captum = False
    print(f"EfficientNet-Lite0, layers {', '.join(LAYERS)}, {args.images} images, {args.threads} thread(s), "
          f"device {args.device}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = run_worker(f"fixed:{args.steps}", args, tmp / "ours.npz")
        results["retcodec"] = ours
        if have_captum:
            fwd = run_worker(f"captum:{args.steps}", args, tmp / "fwd.npz")
            rev = run_worker(f"captum_reverse:{args.steps}", args, tmp / "rev.npz")
            a, f, r = np.load(tmp / "ours.npz"), np.load(tmp / "fwd.npz"), np.load(tmp / "rev.npz")
            diff = {n: float(np.abs(a[n] - 0.5 * (f[n] - r[n])).max() / np.abs(a[n]).max()) for n in LAYERS}
            left = {n: float(np.abs(a[n] - f[n]).max() / np.abs(a[n]).max()) for n in LAYERS}
            check = run_worker("float64:4", args, tmp / "f64.npz")
            results["captum"] = {**fwd, "rel_diff_trapezoid": diff, "rel_diff_left_points": left,
                                 "speed_ratio": fwd["seconds"] / ours["seconds"], **check}
            print(f"\n1. {args.steps} steps: retcodec {ours['seconds']:.1f} s ({ours['maxrss_mb']:.0f} MB peak), "
                  f"Captum LayerConductance {fwd['seconds']:.1f} s ({fwd['maxrss_mb']:.0f} MB): retcodec "
                  f"{fwd['seconds'] / ours['seconds']:.2f}x faster")
            for n in LAYERS:
                print(f"   {n}: max |retcodec - (Captum fwd - Captum reversed)/2| / max|retcodec| = {diff[n]:.2e}"
                      f" (against Captum's left-point sum alone: {left[n]:.2e}); float64, 1 image, 4 steps: "
                      f"{check['rel_diff_float64'][n]:.1e}")
        else:
            print("captum: not installed, comparison skipped")
        print("\n2. completeness |sum C - dS| / |dS| per image (worst layer) against cost")
        print(f"   {'rule':>14} {'evals/image':>12} {'seconds':>8} {'peak MB':>8}  errors")
        curve = []
        for name in [f"uniform:{m}" for m in args.fixed.split(",") if m] + \
                    [f"auto:{t}" for t in args.tols.split(",") if t]:
            res = run_worker(name, args, tmp / "x.npz")
            curve.append({"rule": name, **res})
            print(f"   {name:>14} {res['evaluations_per_image']:12.0f} {res['seconds']:8.1f} "
                  f"{res['maxrss_mb']:8.0f}  {' '.join(f'{e:.4f}' for e in res['error'])}"
                  + (f"  steps {res['steps']}" if name.startswith("auto") else ""))
        results["completeness"] = curve
    print("\nRESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
