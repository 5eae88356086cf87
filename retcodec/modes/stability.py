"""Seed stability of modes: Hungarian matching of modes by cosine similarity."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone

from retcodec.errors import ConfigurationError
from retcodec.modes.compact import unit_rows
from retcodec.modes.estimators import ModesBase, check_matrix, check_positive_int
from retcodec.modes.features import layer_matrix

__all__ = ["match_modes", "mode_stability", "stability_score", "unit_rows"]


def match_modes(reference: np.ndarray, candidate: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair modes one-to-one by maximal total cosine similarity (Hungarian algorithm).

    ``reference`` (n_a, d) and ``candidate`` (n_b, d); returns ``(rows, cols,
    cosine)``, ``min(n_a, n_b)`` pairs: ``reference[rows[i]]`` matches
    ``candidate[cols[i]]`` with cosine ``cosine[i]`` (0 for a zero-norm mode).
    """
    A = check_matrix(reference, nonneg=False, what="reference", allow_empty=True)
    B = check_matrix(candidate, nonneg=False, n_features=A.shape[1], what="candidate",
                      allow_empty=True)
    similarity = unit_rows(A) @ unit_rows(B).T
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return rows, cols, similarity[rows, cols]


def stability_score(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Seed stability of two sets of modes: matched cosine summed over pairs / the larger count.

    ``reference`` (n_a, d), ``candidate`` (n_b, d); modes are paired by
    :func:`match_modes`; a mode left unpaired counts 0, so returning a
    different number of modes lowers the score. 1 means the same directions;
    0 when either set is empty.
    """
    _, _, cosine = match_modes(reference, candidate)
    larger = max(len(reference), len(candidate))
    return float(cosine.sum() / larger) if larger and cosine.size else 0.0


def mode_stability(estimator: ModesBase, X: Any, seeds: Sequence[int] = (0, 1, 2),
                   n_top: int | None = None, fitted: Mapping[int, ModesBase] | None = None) -> xr.Dataset:
    """How much the modes depend on the seed: matched cosine similarity between fits.

    ``estimator`` is cloned and fitted once per seed (``random_state=seed``) on
    ``X`` (samples, features), or on a ``(time, channel, sign)`` DataArray
    (through :func:`layer_matrix` with the estimator's ``sign``). For each pair
    of seeds the modes (the first ``n_top`` of each, in mode order, if given)
    are paired by :func:`match_modes`. ``fitted`` maps seeds to estimators
    already fitted on ``X`` with those seeds (and otherwise the same
    parameters), which are used instead of refitting. Returns a Dataset over ``pair`` with
    ``seed_a``, ``seed_b``, ``stability`` (:func:`stability_score`: matched
    cosine summed / the larger count), ``mean_cosine`` and ``min_cosine`` (over
    the matched pairs only), ``n_matched``, and over ``seed`` with ``r2``,
    ``n_modes`` and ``l0``; attrs ``stability`` (mean over pairs, the number to
    report), ``stability_min``, ``mean_cosine`` / ``min_cosine`` over all pairs.
    """
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigurationError(f"seeds must hold at least two distinct seeds, got {seeds!r}")
    if n_top is not None:
        check_positive_int(n_top, "n_top")
    if isinstance(X, xr.DataArray):
        X = layer_matrix(X, getattr(estimator, "sign", "pos"))[0]
    fitted = dict(fitted or {})
    fits = [fitted[seed] if seed in fitted else clone(estimator).set_params(random_state=seed).fit(X)
            for seed in seeds]
    tops = [fit.components_[:n_top] for fit in fits]
    pairs = [(a, b) for a in range(len(seeds)) for b in range(a + 1, len(seeds))]
    cosines = [match_modes(tops[a], tops[b])[2] for a, b in pairs]
    scores = np.array([stability_score(tops[a], tops[b]) for a, b in pairs])
    mean = np.array([c.mean() if c.size else np.nan for c in cosines])
    low = np.array([c.min() if c.size else np.nan for c in cosines])
    return xr.Dataset(
        {"stability": ("pair", scores), "mean_cosine": ("pair", mean), "min_cosine": ("pair", low),
         "n_matched": ("pair", np.array([c.size for c in cosines])),
         "r2": ("seed", np.array([fit.r2_ for fit in fits])),
         "n_modes": ("seed", np.array([fit.n_modes_ for fit in fits])),
         "l0": ("seed", np.array([fit.l0_ for fit in fits]))},
        coords={"pair": np.arange(len(pairs)), "seed": list(seeds),
                "seed_a": ("pair", [seeds[a] for a, _ in pairs]),
                "seed_b": ("pair", [seeds[b] for _, b in pairs])},
        attrs={"estimator": type(estimator).__name__, "n_top": "None" if n_top is None else n_top,
               "stability": float(scores.mean()), "stability_min": float(scores.min()),
               "mean_cosine": float(np.nanmean(mean)) if np.isfinite(mean).any() else np.nan,
               "min_cosine": float(np.nanmin(low)) if np.isfinite(low).any() else np.nan})
