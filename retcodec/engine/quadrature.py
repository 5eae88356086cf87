"""Quadrature rules for the integrated-gradients path integral over alpha in [0, 1].

Fixed rules (:func:`quadrature_rule`) and the error-controlled rule of
``steps="auto"`` (:func:`adaptive_trapezoid`).

Error control. The contribution of hidden unit ``h`` along the straight path is
``C_h = ∫₀¹ g_h(α) dh/dα dα`` with ``g_h = ∂S/∂h``, and over a whole layer the
contributions add up to ``ΔS = S(1) − S(0)`` (completeness). On one interval
``[a, b]`` the trapezoid rule on the hidden path gives the per-unit term
``T_h(a, b) = ½ (g_h(a) + g_h(b)) (h(b) − h(a))``, whose sum over the layer
should equal ``S(b) − S(a)``. Their difference

    e(a, b) = Σ_h T_h(a, b) − (S(b) − S(a))

is a local error of the rule that costs nothing to compute, and the whole
rule's completeness error is ``Σ e`` over its intervals (the ``S`` differences
telescope). :func:`adaptive_trapezoid` starts from ``INITIAL_STEPS`` uniform
intervals and, per sample, bisects the intervals with the largest ``|e|`` (the
fewest that hold ``MARK_FRACTION`` of ``Σ |e|``, largest error over the
layers), reusing every point already computed, until ``|Σ e| <= tol |ΔS|`` at
every layer or the sample has ``max_steps`` intervals. With ``max_steps =
INITIAL_STEPS`` it is the fixed trapezoid rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from retcodec.errors import ConfigurationError

__all__ = ["QUADRATURES", "quadrature_rule", "weighted_sum", "AUTO", "DEFAULT_TOL",
           "DEFAULT_MAX_STEPS", "INITIAL_STEPS", "MARK_FRACTION", "AUTO_VARIABLES", "AdaptiveResult",
           "adaptive_trapezoid", "adaptive_integrated_gradients", "is_auto", "auto_settings"]

QUADRATURES = ("trapezoid", "gauss-legendre", "simpson")
AUTO = "auto"                 # steps="auto": the error-controlled trapezoid rule
DEFAULT_TOL = 0.01            # relative completeness error per sample
DEFAULT_MAX_STEPS = 512       # most intervals per sample
INITIAL_STEPS = 8             # uniform intervals before any refinement
MARK_FRACTION = 0.5           # bisect the largest local errors that hold this share of their sum
# per-window outputs of steps="auto" (root variables along the sample dim)
AUTO_VARIABLES = {
    "quadrature_steps": {"long_name": "intervals of the adaptive trapezoid rule used for this window",
                         "units": "1"},
    "quadrature_error": {"long_name": "relative completeness error |sum C - dS| / |dS| the adaptive "
                                      "rule reached, largest over the layers", "units": "1"},
}


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


# =========================================================================== steps="auto"
def is_auto(steps: Any) -> bool:
    """True for ``steps="auto"`` (any case)."""
    return isinstance(steps, str) and steps.lower() == AUTO


def auto_settings(settings: Any, tol: float = DEFAULT_TOL, max_steps: int = DEFAULT_MAX_STEPS) -> Any:
    """The engine settings (a dataclass with ``steps``, ``tol``, ``max_steps``) switched to ``"auto"``.

    Raises :class:`ConfigurationError` for a rule other than the trapezoid, a
    method other than ``"ig"``, ``tol`` not in (0, 1) or ``max_steps < 1``.
    """
    if settings.method != "ig":
        raise ConfigurationError(f"steps='auto' controls the integrated-gradients path integral; "
                                 f"method {settings.method!r} has none (use method='ig')")
    if settings.quadrature != "trapezoid":
        raise ConfigurationError(f"steps='auto' refines the trapezoid rule; use quadrature='trapezoid' "
                                 f"(got {settings.quadrature!r})")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) \
            or not (math.isfinite(tol) and 0 < tol < 1):
        raise ConfigurationError(f"tol must be a relative error in (0, 1), e.g. 0.01, got {tol!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ConfigurationError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    return replace(settings, steps=AUTO, tol=float(tol), max_steps=int(max_steps))


# evaluate(sample index (P,), alpha (P,)) -> S (P,), hidden {layer: (P, ...)}, dS/dh {layer: (P, ...)}
Evaluate = Callable[[np.ndarray, np.ndarray],
                    tuple[torch.Tensor, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]]


@dataclass
class AdaptiveResult:
    """Output of :func:`adaptive_trapezoid` for ``B`` samples.

    contributions : layer -> ``(B, ...)`` per-unit contributions.
    steps : ``(B,)`` intervals used per sample.
    error : ``(B,)`` final relative completeness error ``|Σ e| / |ΔS|``, largest over layers.
    delta : ``(B,)`` ``S(1) − S(0)`` from the path points.
    evaluations : path points the network was run on (the shared baseline counted once).
    """

    contributions: dict[str, torch.Tensor]
    steps: np.ndarray
    error: np.ndarray
    delta: np.ndarray
    evaluations: int


@dataclass
class _Point:
    s: float                              # S at the point
    h: dict[str, torch.Tensor]            # hidden values per layer (one sample, no batch dim)
    g: dict[str, torch.Tensor]            # dS/dh per layer


def _term(a: _Point, b: _Point, name: str) -> torch.Tensor:
    """``½ (g(a) + g(b)) (h(b) − h(a))`` per unit."""
    return 0.5 * (a.g[name] + b.g[name]) * (b.h[name] - a.h[name])


class _SamplePath:
    """The path points of one sample sorted by ``α`` and the local errors of its intervals."""

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = tuple(layers)
        self.alphas: list[float] = []
        self.points: list[_Point] = []
        self.local = np.zeros((0, len(self.layers)))        # (intervals, layers)
        self._cache: dict[tuple[float, float], np.ndarray] = {}

    @property
    def steps(self) -> int:
        return len(self.alphas) - 1

    @property
    def delta(self) -> float:
        return self.points[-1].s - self.points[0].s

    def insert(self, alpha: float, point: _Point) -> None:
        k = int(np.searchsorted(self.alphas, alpha))
        self.alphas.insert(k, alpha)
        self.points.insert(k, point)

    def update_errors(self) -> None:
        """Local errors of every interval; each is computed once (one reduction per layer)."""
        rows = []
        for k in range(self.steps):
            key = (self.alphas[k], self.alphas[k + 1])
            if key not in self._cache:
                a, b = self.points[k], self.points[k + 1]
                self._cache[key] = np.array([float(_term(a, b, n).double().sum()) - (b.s - a.s)
                                             for n in self.layers])
            rows.append(self._cache[key])
        self.local = np.array(rows).reshape(-1, len(self.layers))

    def error(self) -> float:
        """``max_l |Σ e_l| / |ΔS|`` (with a floor on ``|ΔS|`` for windows where it vanishes)."""
        total = np.abs(self.local.sum(axis=0))
        scale = max(abs(self.delta), 1e-9 * (abs(self.points[0].s) + abs(self.points[-1].s)), 1e-30)
        return float(total.max() / scale)

    def midpoints(self, budget: int) -> list[float]:
        """Midpoints of the fewest intervals holding ``MARK_FRACTION`` of ``Σ |e|`` (at most ``budget``)."""
        size = np.abs(self.local).max(axis=1)
        order = np.argsort(-size, kind="stable")
        cum = np.cumsum(size[order])
        n = min(int(np.searchsorted(cum, MARK_FRACTION * cum[-1])) + 1, budget)
        return [0.5 * (self.alphas[k] + self.alphas[k + 1]) for k in order[:n]]

    def contributions(self) -> dict[str, torch.Tensor]:
        """Per-unit trapezoid sums over the final intervals, in ``α`` order."""
        out = {}
        for n in self.layers:
            acc = _term(self.points[0], self.points[1], n)
            for a, b in zip(self.points[1:-1], self.points[2:]):
                acc += _term(a, b, n)
            out[n] = acc
        return out


def adaptive_trapezoid(evaluate: Evaluate, n_samples: int, layers: Sequence[str],
                       tol: float = DEFAULT_TOL, max_steps: int = DEFAULT_MAX_STEPS,
                       initial_steps: int = INITIAL_STEPS, chunk: int = 128) -> AdaptiveResult:
    """Integrated gradients by the trapezoid rule, refined per sample until complete (module doc).

    Memory: every point's hidden values and gradients are kept until the end,
    ``B × (steps + 1) × units × 2`` numbers.

    Parameters
    ----------
    evaluate : runs the network on path points given as (sample index ``(P,)``, ``α (P,)``)
        and returns ``S (P,)`` and, per layer, the hidden values and ``∂S/∂h``, ``(P, ...)``.
    n_samples : ``B``; the samples share the baseline (``α = 0``), evaluated once.
    layers : the layer names ``evaluate`` returns.
    tol, max_steps : stop a sample when its completeness error is ``<= tol`` at every layer
        or it has ``max_steps`` intervals.
    initial_steps : uniform intervals to start from (capped at ``max_steps``).
    chunk : most points per ``evaluate`` call.
    """
    initial = max(1, min(int(initial_steps), int(max_steps)))
    paths = [_SamplePath(layers) for _ in range(n_samples)]
    base = _evaluate_points(evaluate, [(0, 0.0)], chunk)[0]
    for path in paths:
        path.insert(0.0, base)
    requests = [(i, float(a)) for i in range(n_samples) for a in np.linspace(0.0, 1.0, initial + 1)[1:]]
    evaluations = 1
    while requests:
        for (i, alpha), point in zip(requests, _evaluate_points(evaluate, requests, chunk)):
            paths[i].insert(alpha, point)
        evaluations += len(requests)
        requests = []
        for i, path in enumerate(paths):
            path.update_errors()
            if path.error() > tol and path.steps < max_steps:
                requests += [(i, a) for a in path.midpoints(int(max_steps) - path.steps)]
    sums = [p.contributions() for p in paths]
    return AdaptiveResult(contributions={n: torch.stack([c[n] for c in sums]) for n in layers},
                          steps=np.array([p.steps for p in paths], dtype=np.int64),
                          error=np.array([p.error() for p in paths]),
                          delta=np.array([p.delta for p in paths]), evaluations=evaluations)


def _evaluate_points(evaluate: Evaluate, requests: Sequence[tuple[int, float]], chunk: int) -> list[_Point]:
    points: list[_Point] = []
    for start in range(0, len(requests), chunk):
        part = requests[start:start + chunk]
        index = np.array([i for i, _ in part], dtype=np.int64)
        alpha = np.array([a for _, a in part], dtype=np.float64)
        values, hidden, grads = evaluate(index, alpha)
        values = values.detach().double().cpu().numpy()
        points += [_Point(float(values[k]), {n: h[k] for n, h in hidden.items()},
                          {n: g[k] for n, g in grads.items()}) for k in range(len(part))]
    return points


def adaptive_integrated_gradients(engine: Any, e_x: torch.Tensor, still: np.ndarray | None = None
                                  ) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """``steps="auto"`` for a batch of the contributions engine.

    ``engine`` provides ``net.run``, ``target``, ``e0`` (the baseline's entry
    value), ``settings`` (``layers``, ``tol``, ``max_steps``, ``batch_size``),
    ``dtype`` and ``device``; ``e_x (B, ...)`` are the windows' entry values.
    ``still (B,)`` marks windows equal to the baseline: their path has length zero, so
    they take 0 steps, get contributions 0 and a quadrature error of 0.
    Returns the contributions per layer ``(B, ...)`` and the per-window
    :data:`AUTO_VARIABLES` ``(B,)``.
    """
    s = engine.settings
    n = len(e_x)
    moving = np.flatnonzero(~np.asarray(still, dtype=bool)) if still is not None else np.arange(n)
    diff = (e_x - engine.e0)[torch.as_tensor(moving, device=e_x.device)]
    fmt = torch.channels_last if diff.ndim == 4 else torch.contiguous_format

    def evaluate(index: np.ndarray, alpha: np.ndarray):
        a = torch.as_tensor(alpha, dtype=engine.dtype, device=engine.device).view(-1, *[1] * (diff.ndim - 1))
        e = (engine.e0 + a * diff[torch.as_tensor(index, device=diff.device)]).contiguous(memory_format=fmt)
        with torch.enable_grad():
            e = e.requires_grad_(True).view_as(e)     # a view: hooks may refuse grads w.r.t. a leaf
            out, hidden, _ = engine.net.run(e)
            values = engine.target(out)
            grads = torch.autograd.grad(values.sum(), [hidden[n] for n in s.layers])
        return values.detach(), {n: hidden[n].detach() for n in s.layers}, dict(zip(s.layers, grads))

    steps, error = np.zeros(n, dtype=np.int64), np.zeros(n)
    if moving.size == n:
        result = adaptive_trapezoid(evaluate, n, s.layers, tol=s.tol, max_steps=s.max_steps,
                                    chunk=s.batch_size * (INITIAL_STEPS + 1))
        return result.contributions, {"quadrature_steps": result.steps, "quadrature_error": result.error}
    with torch.no_grad():
        hidden = engine.net.run(engine.e0)[1]
    contributions = {name: hidden[name].new_zeros((n, *hidden[name].shape[1:])) for name in s.layers}
    if moving.size:
        result = adaptive_trapezoid(evaluate, moving.size, s.layers, tol=s.tol, max_steps=s.max_steps,
                                    chunk=s.batch_size * (INITIAL_STEPS + 1))
        index = torch.as_tensor(moving, device=e_x.device)
        for name in s.layers:
            contributions[name][index] = result.contributions[name].to(contributions[name].dtype)
        steps[moving], error[moving] = result.steps, result.error
    return contributions, {"quadrature_steps": steps, "quadrature_error": error}
