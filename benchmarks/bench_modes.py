"""Benchmark: modes of synthetic contributions with known sparse non-negative modes.

Data: ``retcodec.modes.estimators.make_sparse_modes`` (6 unit-norm modes, each on ~35% of
16 features; each sample holds each mode with probability 0.25, exponential
loadings; 1% noise), 6000 samples to fit and 1500 held out.

For each method: R² on the fitted and on the held-out samples, recovery of the
true modes (cosine similarity after Hungarian matching; a true mode left
unmatched counts 0), number of modes, mean active modes per sample (L0),
epochs and fit time. Methods:

* ``paper``: the retina script's settings (lr 1e-5, 800 epochs, batch 128,
  H = d, K = 10·d, θ = 0.9, λ_D = 1e-4, PyTorch's default initialisation);
* ``paper+init``: the same with retcodec's initialisation (``init_active=0.1``,
  dictionary from data samples);
* ``default``: ``ContributionModes()`` defaults;
* ``default-init``: the defaults with PyTorch's default initialisation;
* ``nmf``, ``pca``: the baselines with the true number of modes.

Run (single-threaded, about 4 minutes with the paper settings)::

    python benchmarks/bench_modes.py                 # everything, seeds 0 1 2
    python benchmarks/bench_modes.py --methods default nmf pca --seeds 0
    python benchmarks/bench_modes.py --json results.json
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from retcodec.modes import (ContributionModes, NMFModes, PCAModes, explained_r2,
                            make_sparse_modes, match_modes)

N_FIT, N_HELD_OUT, N_FEATURES, N_TRUE_MODES = 6000, 1500, 16, 6


def paper_settings(seed: int) -> ContributionModes:
    """The retina analysis script's hyper-parameters and PyTorch's default initialisation."""
    return ContributionModes(multiplier=10, hidden=N_FEATURES, threshold=0.9,
                             l1_dictionary=1e-4, lr=1e-5, lr_decay=0.98, decay_every=25,
                             batch_size=128, max_epochs=800, patience=800,
                             init="random", init_active=None, random_state=seed)


METHODS = {
    "paper": paper_settings,
    "paper+init": lambda seed: paper_settings(seed).set_params(init="data", init_active=0.1),
    "default": lambda seed: ContributionModes(random_state=seed),
    "default-init": lambda seed: ContributionModes(init="random", init_active=None,
                                                   random_state=seed),
    "nmf": lambda seed: NMFModes(N_TRUE_MODES, random_state=seed),
    "pca": lambda seed: PCAModes(N_TRUE_MODES, random_state=seed),
}


def recovery(true_modes: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Cosine of each true mode with its Hungarian match (0 when left unmatched)."""
    cosine = np.zeros(len(true_modes))
    rows, _, matched = match_modes(true_modes, components)
    cosine[rows] = matched
    return cosine


def run_one(method: str, seed: int, X_fit: np.ndarray, X_out: np.ndarray,
            true_modes: np.ndarray) -> dict:
    estimator = METHODS[method](seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X_fit)
    seconds = time.perf_counter() - start
    held_out = explained_r2(X_out, estimator.inverse_transform(estimator.transform(X_out)))
    cosine = recovery(true_modes, estimator.components_)
    return {"method": method, "seed": seed, "r2": estimator.r2_, "r2_held_out": held_out,
            "cos_mean": float(cosine.mean()), "cos_min": float(cosine.min()),
            "n_modes": int(estimator.n_modes_), "l0": estimator.l0_,
            "epochs": int(getattr(estimator, "n_iter_", 0)), "seconds": seconds}


def summarise(rows: list[dict]) -> str:
    keys = ("r2", "r2_held_out", "cos_mean", "cos_min", "n_modes", "l0", "epochs", "seconds")
    lines = [f"{'method':<13}" + "".join(f"{k:>12}" for k in keys)]
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        means = {k: np.mean([row[k] for row in mine]) for k in keys}
        means["cos_min"] = min(row["cos_min"] for row in mine)  # worst over seeds
        lines.append(f"{method:<13}" + "".join(f"{means[k]:>12.3f}" for k in keys))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--json", help="also write the per-run rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X, true_modes, _ = make_sparse_modes(N_FIT + N_HELD_OUT, N_FEATURES, N_TRUE_MODES,
                                         random_state=args.data_seed)
    X_fit, X_out = X[:N_FIT], X[N_FIT:]
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            rows.append(run_one(method, seed, X_fit, X_out, true_modes))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{N_FIT} x {N_FEATURES} samples, {N_TRUE_MODES} true modes, "
          f"seeds {args.seeds} (means; cos_min: worst)")
    print(summarise(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
