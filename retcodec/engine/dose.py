"""Dose curves of silencing: top-channel sets, areas under ratio-vs-fraction curves, specificity.

Re-exported by :mod:`retcodec.engine.perturb`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retcodec.errors import ConfigurationError

__all__ = ["KINDS", "dose_sets", "check_fractions", "curve_auc", "specificity"]

#: perturbation kinds of a dose curve: silence the top channels, or keep only them
KINDS = ("ablate", "preserve")


def dose_sets(order: Sequence[int] | np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    """The top ``round(p * C)`` channels of ``order`` for each fraction ``p`` (``C = len(order)``)."""
    order = np.asarray(order, dtype=np.int64)
    f = check_fractions(fractions)
    return [order[:round(float(p) * len(order))] for p in f]


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """Fractions as a float array increasing within [0, 1] (>= 2 values), else ConfigurationError."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 2 or (np.diff(f) <= 0).any() or f[0] < 0 or f[-1] > 1:
        raise ConfigurationError(f"fractions must increase within [0, 1] (>= 2 values), got {f.tolist()}")
    return f


def curve_auc(fractions: Sequence[float] | np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Trapezoid area under ratio-vs-fraction curves along the last axis."""
    return np.trapezoid(np.asarray(ratio, dtype=np.float64), np.asarray(fractions, dtype=np.float64),
                        axis=-1)


def specificity(auc_on: np.ndarray, auc_off: np.ndarray, kind: str = "ablate") -> np.ndarray:
    """Specificity of a perturbation: ablate ``off - on``; preserve ``on - off``.

    Positive when the perturbation hurts the targeted group more (ablation) or
    spares it more (preservation).
    """
    if kind not in KINDS:
        raise ConfigurationError(f"kind must be one of {KINDS}, got {kind!r}")
    on, off = np.asarray(auc_on, dtype=np.float64), np.asarray(auc_off, dtype=np.float64)
    return off - on if kind == "ablate" else on - off
