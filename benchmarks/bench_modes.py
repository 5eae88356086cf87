"""Benchmark: modes of planted problems with known sparse non-negative modes.

Data: ``retcodec.modes.make_sparse_modes`` - unit-norm modes on a share of the
features, sparse loadings with continuous magnitudes (mean 1), Gaussian noise;
``N_FIT`` samples to fit and ``N_HELD_OUT`` held out. Several configurations
(``CONFIGS``: sizes, overlaps, magnitudes, noise levels).

For each configuration and method, over seeds: recovery of the true modes
(cosine after Hungarian matching, a true mode left unmatched counts 0; mean
and worst), number of modes found vs true, R² on the fitted and held-out
samples, mean active modes per sample (L0), empty modes (zero-norm rows),
seed stability (``stability_score``: matched cosine summed over pairs / the
larger count, mean and worst over seed pairs) and fit time. Methods:

* ``default``: ``ContributionModes()`` - compact modes (atoms merged by
  direction, NNLS loadings, count by held-out R²);
* ``atoms``: the same autoencoder, its alive atoms as modes (``compact=False``);
* ``paper``: the retina script's settings (lr 1e-5, 800 epochs, batch 128,
  H = d, K = 10·d, θ = 0.9, λ_D = 1e-4, PyTorch's default initialisation),
  atoms as modes, as published;
* ``paper-compact``: the same autoencoder, compact modes;
* ``nmf``, ``pca``: the baselines, told the true number of modes.

Run (``--threads 1`` or ``2``; the paper settings take minutes per fit)::

    python benchmarks/bench_modes.py                           # default, atoms, nmf on every config
    python benchmarks/bench_modes.py --methods paper paper-compact --configs 6in16
    python benchmarks/bench_modes.py --seeds 0 1 2 --json results.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from retcodec.modes import (ContributionModes, NMFModes, PCAModes, explained_r2,
                            make_sparse_modes, match_modes, stability_score)
from retcodec.modes.synthetic import mode_overlap

N_FIT, N_HELD_OUT = 6000, 1500

CONFIGS = {  # name -> make_sparse_modes arguments
    "6in16": dict(n_features=16, n_modes=6),
    "6in16-noisy": dict(n_features=16, n_modes=6, noise=0.1),
    "6in16-overlap": dict(n_features=16, n_modes=6, support_fraction=0.6, active_probability=0.4),
    "4in8-lognormal": dict(n_features=8, n_modes=4, magnitude="lognormal", noise=0.05),
    "10in16-overlap": dict(n_features=16, n_modes=10, support_fraction=0.5, noise=0.05),
    "12in32": dict(n_features=32, n_modes=12, support_fraction=0.2, noise=0.05),
}


def paper_settings(seed: int, compact: bool = False) -> ContributionModes:
    """The retina analysis script's hyper-parameters and PyTorch's default initialisation."""
    return ContributionModes(multiplier=10, hidden=None, threshold=0.9, l1_dictionary=1e-4,
                             lr=1e-5, lr_decay=0.98, decay_every=25, batch_size=128,
                             max_epochs=800, patience=800, init="random", init_active=None,
                             compact=compact, random_state=seed)


def make(method: str, seed: int, n_features: int, n_true: int):
    """The estimator of ``method`` (H = d for the paper settings)."""
    if method == "default":
        return ContributionModes(random_state=seed)
    if method == "atoms":
        return ContributionModes(compact=False, random_state=seed)
    if method in ("paper", "paper-compact"):
        return paper_settings(seed, method == "paper-compact").set_params(hidden=n_features)
    if method == "nmf":
        return NMFModes(n_true, init="random", random_state=seed)
    if method == "pca":
        return PCAModes(n_true, random_state=seed)
    raise ValueError(method)


METHODS = ("default", "atoms", "paper", "paper-compact", "nmf", "pca")


def recovery(true_modes: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Cosine of each true mode with its Hungarian match (0 when left unmatched)."""
    cosine = np.zeros(len(true_modes))
    rows, _, matched = match_modes(true_modes, components)
    cosine[rows] = matched
    return cosine


def run_one(method: str, seed: int, X_fit: np.ndarray, X_out: np.ndarray,
            true_modes: np.ndarray) -> tuple[dict, np.ndarray]:
    estimator = make(method, seed, X_fit.shape[1], len(true_modes))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X_fit)
    seconds = time.perf_counter() - start
    held_out = explained_r2(X_out, estimator.inverse_transform(estimator.transform(X_out)))
    cosine = recovery(true_modes, estimator.components_)
    norms = np.linalg.norm(estimator.components_, axis=1)
    row = {"method": method, "seed": seed, "r2": estimator.r2_, "r2_held_out": held_out,
           "cos_mean": float(cosine.mean()), "cos_min": float(cosine.min()),
           "n_modes": int(estimator.n_modes_), "n_true": len(true_modes),
           "empty": int((norms <= 1e-12 * max(norms.max(initial=0), 1e-300)).sum()),
           "l0": estimator.l0_, "epochs": int(getattr(estimator, "n_iter_", 0)),
           "seconds": seconds}
    return row, estimator.components_


KEYS = ("n_modes", "cos_mean", "cos_min", "stab_mean", "stab_min", "r2", "r2_held_out", "l0",
        "empty", "seconds")


def summarise(rows: list[dict]) -> str:
    """One line per (config, method): means over seeds; *_min and empty: worst."""
    lines = [f"{'config':<16}{'method':<14}{'true':>5}" + "".join(f"{k:>12}" for k in KEYS)]
    for config, method in dict.fromkeys((row["config"], row["method"]) for row in rows):
        mine = [row for row in rows if row["config"] == config and row["method"] == method]
        value = {k: float(np.mean([row[k] for row in mine])) for k in KEYS}
        for k in ("cos_min", "stab_min"):
            value[k] = min(row[k] for row in mine)
        value["empty"] = max(row["empty"] for row in mine)
        lines.append(f"{config:<16}{method:<14}{mine[0]['n_true']:>5}"
                     + "".join(f"{value[k]:>12.3f}" for k in KEYS))
    return "\n".join(lines)


def run_config(name: str, methods: list[str], seeds: list[int], data_seed: int) -> list[dict]:
    X, true_modes, _ = make_sparse_modes(N_FIT + N_HELD_OUT, random_state=data_seed,
                                         **CONFIGS[name])
    X_fit, X_out = X[:N_FIT], X[N_FIT:]
    rows = []
    for method in methods:
        fits = [run_one(method, seed, X_fit, X_out, true_modes) for seed in seeds]
        pairs = list(itertools.combinations(range(len(seeds)), 2))
        scores = [stability_score(fits[a][1], fits[b][1]) for a, b in pairs] or [np.nan]
        for row, _ in fits:
            row.update(config=name, overlap=mode_overlap(true_modes),
                       stab_mean=float(np.mean(scores)), stab_min=float(np.min(scores)))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["default", "atoms", "nmf"],
                        choices=METHODS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 or 2)")
    parser.add_argument("--json", help="also write the per-run rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.configs:
        rows += run_config(name, args.methods, args.seeds, args.data_seed)
    print(f"\n{N_FIT} fitted + {N_HELD_OUT} held-out samples, seeds {args.seeds}, "
          f"data seed {args.data_seed}, {args.threads} thread(s); means over seeds, "
          f"*_min and empty: worst")
    print(summarise(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
