"""Quadrature rules for the integrated-gradients path integral over alpha in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from retcodec.errors import ConfigurationError

__all__ = ["QUADRATURES", "quadrature_rule", "weighted_sum"]

QUADRATURES = ("trapezoid", "gauss-legendre", "simpson")


def quadrature_rule(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Path points ``α`` in [0, 1] and weights of a quadrature rule with ``steps`` intervals.

    ``trapezoid``: ``steps + 1`` uniform points; ``simpson``: the same points
    (``steps`` even); ``gauss-legendre``: ``steps`` Gauss-Legendre nodes. The
    weights integrate over [0, 1] (they sum to 1).
    """
    m = int(steps)
    if name == "trapezoid":
        w = np.full(m + 1, 1.0 / m)
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, m + 1), w
    if name == "simpson":
        if m % 2:
            raise ConfigurationError(f"quadrature='simpson' needs an even number of steps, got {m}")
        w = np.ones(m + 1)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        return np.linspace(0.0, 1.0, m + 1), w / (3.0 * m)
    if name == "gauss-legendre":
        nodes, w = np.polynomial.legendre.leggauss(m)
        return (nodes + 1) / 2, w / 2
    raise ConfigurationError(f"unknown quadrature {name!r}; use one of {list(QUADRATURES)}")


def weighted_sum(weights: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k x_k`` over the ``P`` blocks of ``x (P * B, ...)``, in place of a copy.

    Elementwise, so the result does not depend on the number of threads.
    """
    b = len(x) // len(weights)
    acc = x[:b] * float(weights[0])
    for k in range(1, len(weights)):
        acc.add_(x[k * b:(k + 1) * b], alpha=float(weights[k]))
    return acc
