"""Contribution targets: the scalar ``S(y)`` of the model outputs that CODEC decomposes.

A target maps a batch of model outputs ``y`` of shape ``(batch, n_outputs)`` to one
differentiable scalar per sample, shape ``(batch,)``. Every target derives from
:class:`Target`, which also says how to record the target's parameters in the
contribution tree (:meth:`Target.parameters`, :meth:`Target.to_attrs`).

Retina targets: :class:`Surprisal` (the paper's default, see ``docs/method.md``
§2.1), :class:`CellRate`, :class:`SumOfRates`. Classifier targets (outputs are
logits): :class:`TopLogit`, :class:`TopKLogits`, :class:`SoftmaxEntropy`,
:class:`TopMargin`, :class:`ClassLogit`. Any function: :class:`CallableTarget`.

:func:`make_target` turns the ``target=`` argument of
:func:`retcodec.engine.contributions` (a name, a :class:`Target` or a callable) into a
target bound to the model's cells.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.errors import CellMismatchError, ConfigurationError, NonFiniteError, ShapeError

__all__ = ["Target", "Surprisal", "CellRate", "SumOfRates", "CallableTarget", "TopLogit",
           "TopKLogits", "SoftmaxEntropy", "TopMargin", "ClassLogit", "make_target",
           "TARGET_NAMES"]


# --------------------------------------------------------------------------- base
class Target:
    """A scalar function of the model outputs: ``(batch, n_outputs) -> (batch,)``.

    Subclasses implement :meth:`forward` (torch, differentiable) and may override
    :meth:`bind` (resolve cell ids against a model), :meth:`parameters` (xarray
    variables to store with the contributions) and :meth:`to_attrs`.
    """

    #: short identifier, stored as the ``target`` attribute of the results
    name: str = "target"
    #: minimum number of outputs the target needs
    min_outputs: int = 1

    def __call__(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2:
            raise ShapeError(f"target {self.name!r} expects outputs of shape (batch, n_outputs), "
                             f"got {tuple(outputs.shape)}")
        if outputs.shape[1] < self.min_outputs:
            raise ShapeError(f"target {self.name!r} needs at least {self.min_outputs} outputs, "
                             f"the model gives {outputs.shape[1]}")
        value = self.forward(outputs)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ShapeError(f"target {self.name!r} must return a floating-point tensor (batch,), got "
                             f"{getattr(value, 'dtype', type(value).__name__)}")
        if value.shape != outputs.shape[:1]:
            raise ShapeError(f"target {self.name!r} must return one value per sample, shape "
                             f"({outputs.shape[0]},), got {tuple(value.shape)}")
        if not bool(torch.isfinite(value.detach()).all()):
            bad = "the model outputs hold NaN or Inf" if not bool(torch.isfinite(outputs.detach()).all()) else \
                f"target {self.name!r} returns NaN or Inf for finite model outputs"
            raise NonFiniteError(f"{bad}; contributions to a non-finite target are meaningless. Fix the target "
                                 f"(e.g. clamp or add an epsilon) or the model")
        return value

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, cells: Sequence[Any] | None = None) -> "Target":
        """This target resolved against a model's output ids (``cells``); default: itself."""
        return self

    def parameters(self) -> dict[str, xr.DataArray]:
        """Variables recording the target's parameters (dims ``cell``/``cell2``)."""
        return {}

    def to_attrs(self) -> dict[str, Any]:
        """netCDF-safe attributes describing the target."""
        return {"target": self.name, "target_description": self.describe()}

    def describe(self) -> str:
        """One line saying what the target computes."""
        return self.name

    def fingerprint(self) -> str:
        """A hash of the target and its parameters (used to match resumed runs)."""
        h = hashlib.sha256(json.dumps(self.to_attrs(), sort_keys=True, default=str).encode())
        for key, var in sorted(self.parameters().items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(var.values, dtype=np.float64).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise NonFiniteError(f"{name} holds NaN or Inf; the target needs finite values")


# --------------------------------------------------------------------------- surprisal
class Surprisal(Target):
    """``S(y) = ½ (y − μ)ᵀ Σ⁻¹ (y − μ)``: how unexpected a population response is.

    Parameters
    ----------
    mean : (n,) array
        ``μ``, the mean model output (one entry per cell).
    cov : (n, n) array
        ``Σ``, the output covariance before regularisation.
    regularization : float in [0, 1] or None
        Shrinkage intensity ``λ`` toward the scaled identity: the covariance used
        is ``(1 − λ) Σ + λ (tr Σ / n) I``. ``None`` (or 0) uses ``Σ`` as given,
        and a singular or ill-conditioned ``Σ`` then raises
        :class:`~retcodec.errors.ConfigurationError`.
    method : str
        How ``λ`` was chosen (recorded in metadata), e.g. ``"ledoit-wolf"``.

    Attributes
    ----------
    mean, covariance, precision :
        ``μ``, the regularised ``Σ`` whose inverse is used, and that inverse
        (float64 NumPy arrays). ``sample_covariance`` is the ``Σ`` given.
    """

    name = "surprisal"
    #: largest condition number accepted for the covariance that is inverted
    max_condition = 1e10

    def __init__(self, mean: np.ndarray, cov: np.ndarray, regularization: float | None = None,
                 *, method: str = "explicit", n_samples: int | None = None) -> None:
        mean = np.asarray(mean, dtype=np.float64)
        cov = np.asarray(cov, dtype=np.float64)
        if mean.ndim != 1 or mean.size < 1:
            raise ShapeError(f"surprisal mean must be a non-empty 1-D array, got shape {mean.shape}")
        n = mean.size
        if cov.shape != (n, n):
            raise ShapeError(f"surprisal covariance must be ({n}, {n}) to match the mean, got {cov.shape}")
        _check_finite("surprisal mean", mean)
        _check_finite("surprisal covariance", cov)
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * max(1.0, float(np.abs(cov).max()))):
            raise ConfigurationError("surprisal covariance must be symmetric")
        lam = 0.0 if regularization is None else float(regularization)
        if not 0.0 <= lam <= 1.0:
            raise ConfigurationError(f"regularization (shrinkage intensity) must be in [0, 1] or None, "
                                     f"got {regularization!r}")
        self.mean = mean
        self.sample_covariance = (cov + cov.T) / 2
        self.shrinkage = lam
        self.method = method if lam > 0 else "none"
        self.n_samples = n_samples
        self.covariance = shrink_covariance(self.sample_covariance, lam)
        self.precision = _checked_inverse(self.covariance, lam, self.max_condition)
        self._tensors: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_outputs(cls, outputs: np.ndarray | torch.Tensor,
                     shrinkage: float | str | None = "ledoit-wolf") -> "Surprisal":
        """Fit ``μ`` and ``Σ`` to model outputs ``(n_samples, n_cells)`` (the paper's convention).

        ``Σ`` is the sample covariance (``ddof=1``, as ``numpy.cov``). ``shrinkage``:
        ``"ledoit-wolf"`` (default: the Ledoit-Wolf intensity, via scikit-learn),
        a float intensity in [0, 1], or ``None`` for no regularisation.
        """
        y = outputs.detach().cpu().numpy() if isinstance(outputs, torch.Tensor) else np.asarray(outputs)
        y = y.astype(np.float64, copy=False)
        if y.ndim != 2 or y.shape[0] < 2:
            raise ShapeError(f"surprisal needs outputs of shape (n_samples >= 2, n_cells), got {y.shape}")
        _check_finite("model outputs", y)
        cov = np.atleast_2d(np.cov(y, rowvar=False, ddof=1))
        method = "explicit"
        if isinstance(shrinkage, str):
            if shrinkage.lower().replace("_", "-") != "ledoit-wolf":
                raise ConfigurationError(f"unknown shrinkage {shrinkage!r}; use 'ledoit-wolf', "
                                         f"a float in [0, 1] or None")
            shrinkage, method = ledoit_wolf_intensity(y), "ledoit-wolf"
        return cls(y.mean(axis=0), cov, regularization=shrinkage, method=method, n_samples=y.shape[0])

    # ------------------------------------------------------------------ evaluation
    def _on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._tensors:
            self._tensors[key] = (torch.as_tensor(self.mean, dtype=dtype, device=device),
                                  torch.as_tensor(self.precision, dtype=dtype, device=device))
        return self._tensors[key]

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.shape[1] != self.mean.size:
            raise ShapeError(f"surprisal was fitted to {self.mean.size} cells but the model gives "
                             f"{outputs.shape[1]} outputs")
        mu, prec = self._on(outputs.device, outputs.dtype)
        d = outputs - mu
        return 0.5 * ((d @ prec) * d).sum(dim=1)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tensors"] = {}
        return state

    # ------------------------------------------------------------------ metadata
    def describe(self) -> str:
        return "S(y) = 1/2 (y - mu)^T Sigma^-1 (y - mu), mu and Sigma fitted to the model outputs"

    def regularization_text(self) -> str:
        if self.shrinkage == 0:
            return "none: the sample covariance is inverted as is"
        return (f"shrinkage toward the scaled identity, Sigma = (1 - lambda) S + lambda (tr S / n) I "
                f"with S the sample covariance (ddof=1) and lambda = {self.shrinkage:.6g} ({self.method})")

    def to_attrs(self) -> dict[str, Any]:
        attrs = super().to_attrs()
        attrs.update(surprisal_regularization=self.regularization_text(),
                     surprisal_shrinkage=float(self.shrinkage),
                     surprisal_shrinkage_method=self.method,
                     surprisal_condition_number=float(np.linalg.cond(self.covariance)))
        if self.n_samples is not None:
            attrs["surprisal_n_samples"] = int(self.n_samples)
        return attrs

    def parameters(self) -> dict[str, xr.DataArray]:
        reg = self.regularization_text()
        return {
            "surprisal_mean": xr.DataArray(self.mean, dims=("cell",),
                                           attrs={"long_name": "mean model output mu"}),
            "surprisal_cov": xr.DataArray(
                self.covariance, dims=("cell", "cell2"),
                attrs={"long_name": "covariance Sigma whose inverse the surprisal uses",
                       "regularization": reg, "shrinkage": float(self.shrinkage)}),
            "surprisal_sample_cov": xr.DataArray(
                self.sample_covariance, dims=("cell", "cell2"),
                attrs={"long_name": "sample covariance of the model outputs (ddof=1), "
                                    "before regularization"}),
        }


def shrink_covariance(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(1 − λ) Σ + λ (tr Σ / n) I``; ``λ = 0`` returns ``Σ`` unchanged."""
    if shrinkage == 0:
        return cov.copy()
    n = cov.shape[0]
    scale = np.trace(cov) / n
    if not scale > 0:
        raise ConfigurationError("cannot regularise the surprisal covariance: every output is "
                                 "constant (zero variance), so the surprisal is undefined")
    return (1 - shrinkage) * cov + shrinkage * scale * np.eye(n)


def ledoit_wolf_intensity(y: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage intensity in [0, 1] for samples ``y (n_samples, n_cells)``."""
    from sklearn.covariance import ledoit_wolf_shrinkage
    if np.all(np.var(y, axis=0) == 0):
        raise ConfigurationError("cannot fit the surprisal: every model output is constant over "
                                 "the stimulus set (zero variance)")
    return float(ledoit_wolf_shrinkage(y))


def _checked_inverse(cov: np.ndarray, shrinkage: float, max_condition: float) -> np.ndarray:
    eig = np.linalg.eigvalsh(cov)
    hint = ("pass regularization=<shrinkage in (0, 1]> (or shrinkage='ledoit-wolf' to "
            "Surprisal.from_outputs)" if shrinkage == 0 else "increase the regularization")
    if eig[-1] <= 0 or eig[0] <= eig[-1] / max_condition:
        cond = np.inf if eig[0] <= 0 else eig[-1] / eig[0]
        raise ConfigurationError(
            f"the surprisal covariance is singular or ill-conditioned (eigenvalues "
            f"{eig[0]:.3g} .. {eig[-1]:.3g}, condition number {cond:.3g} > {max_condition:.0e}); "
            f"silent or duplicated cells cause this: {hint}")
    inv = np.linalg.inv(cov)
    return (inv + inv.T) / 2


# --------------------------------------------------------------------------- rate targets
class CellRate(Target):
    """One cell's rate ``y_k``; ``cell_id`` is resolved against the model's cell ids.

    With ``cells=None`` (and no model cell ids at :meth:`bind`), ``cell_id`` is
    the output index.
    """

    name = "cell_rate"

    def __init__(self, cell_id: Any, cells: Sequence[Any] | None = None) -> None:
        self.cell_id = cell_id
        self.cells = None if cells is None else list(np.asarray(cells).tolist())
        self.index = self._resolve(cell_id, self.cells)

    @staticmethod
    def _resolve(cell_id: Any, cells: list[Any] | None) -> int:
        if cells is None:
            if not isinstance(cell_id, (int, np.integer)) or cell_id < 0:
                raise ConfigurationError(f"without cell ids, cell_id must be an output index >= 0, "
                                         f"got {cell_id!r}")
            return int(cell_id)
        key = cell_id.item() if isinstance(cell_id, np.generic) else cell_id
        if key not in cells:
            raise CellMismatchError(f"cell {cell_id!r} is not one of the model's cells {cells}")
        return cells.index(key)

    def bind(self, cells: Sequence[Any] | None = None) -> "CellRate":
        if cells is None or self.cells is not None:
            return self
        return CellRate(self.cell_id, cells)

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.index >= outputs.shape[1]:
            raise CellMismatchError(f"cell index {self.index} is out of range for {outputs.shape[1]} outputs")
        return outputs[:, self.index]

    def describe(self) -> str:
        return f"rate of cell {self.cell_id} (output index {self.index})"

    def to_attrs(self) -> dict[str, Any]:
        cell = self.cell_id.item() if isinstance(self.cell_id, np.generic) else self.cell_id
        return {**super().to_attrs(), "target_cell": cell if isinstance(cell, (int, float)) else str(cell),
                "target_output_index": self.index}


class SumOfRates(Target):
    """The summed rate of all cells, ``Σ_k y_k``."""

    name = "sum_of_rates"

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.sum(dim=1)

    def describe(self) -> str:
        return "sum of the rates of all cells"


# --------------------------------------------------------------------------- classifier targets
class TopLogit(Target):
    """The largest output (top-1 logit of a classifier)."""

    name = "top_logit"

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.max(dim=1).values

    def describe(self) -> str:
        return "largest output (top-1 logit)"


class TopKLogits(Target):
    """The sum of the ``k`` largest outputs."""

    name = "topk_logits"

    def __init__(self, k: int) -> None:
        if int(k) < 1:
            raise ConfigurationError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.min_outputs = self.k

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.topk(self.k, dim=1).values.sum(dim=1)

    def describe(self) -> str:
        return f"sum of the {self.k} largest outputs (top-{self.k} logits)"

    def to_attrs(self) -> dict[str, Any]:
        return {**super().to_attrs(), "target_k": self.k}


class SoftmaxEntropy(Target):
    """Entropy of the softmax of the outputs, ``−Σ p log p`` (nats)."""

    name = "softmax_entropy"

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(outputs, dim=1)
        return -(logp.exp() * logp).sum(dim=1)

    def describe(self) -> str:
        return "entropy of softmax(outputs) in nats"


class TopMargin(Target):
    """Top-1 minus top-2 output (the classifier's margin)."""

    name = "top_margin"
    min_outputs = 2

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        top = outputs.topk(2, dim=1).values
        return top[:, 0] - top[:, 1]

    def describe(self) -> str:
        return "largest minus second-largest output"


class ClassLogit(Target):
    """The output of one given class (index ``c``)."""

    name = "class_logit"

    def __init__(self, c: int) -> None:
        if not isinstance(c, (int, np.integer)) or c < 0:
            raise ConfigurationError(f"class index must be an int >= 0, got {c!r}")
        self.c = int(c)
        self.min_outputs = self.c + 1

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, self.c]

    def describe(self) -> str:
        return f"output of class {self.c}"

    def to_attrs(self) -> dict[str, Any]:
        return {**super().to_attrs(), "target_class": self.c}


# --------------------------------------------------------------------------- any function
class CallableTarget(Target):
    """Wraps ``fn(outputs: Tensor (B, n)) -> Tensor (B,)`` (must be differentiable)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigurationError(f"CallableTarget needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        value = self.fn(outputs)
        if not isinstance(value, torch.Tensor):
            raise ShapeError(f"target {self.name!r} must return a torch.Tensor, got {type(value).__name__}")
        return value

    def describe(self) -> str:
        return f"user function {self.name}"


# --------------------------------------------------------------------------- resolution
#: names accepted by ``make_target`` -> factory (``surprisal`` needs the outputs)
TARGET_NAMES: Mapping[str, Callable[[], Target]] = {
    "sum_of_rates": SumOfRates, "top_logit": TopLogit,
    "softmax_entropy": SoftmaxEntropy, "top_margin": TopMargin,
}


def make_target(spec: str | Target | Callable[[torch.Tensor], torch.Tensor], *,
                cells: Sequence[Any] | None = None,
                outputs: Callable[[], np.ndarray] | None = None,
                shrinkage: float | str | None = "ledoit-wolf") -> Target:
    """A :class:`Target` bound to ``cells`` from a name, a target or a callable.

    ``"surprisal"`` fits :class:`Surprisal` to ``outputs()`` (called only then:
    the model outputs over the whole stimulus set, ``(n_samples, n_cells)``).
    """
    if isinstance(spec, Target):
        return spec.bind(cells)
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        if key == "surprisal":
            if outputs is None:
                raise ConfigurationError("target 'surprisal' needs the model outputs to fit mu and Sigma")
            return Surprisal.from_outputs(outputs(), shrinkage=shrinkage)
        if key in TARGET_NAMES:
            return TARGET_NAMES[key]().bind(cells)
        raise ConfigurationError(f"unknown target {spec!r}; use one of {['surprisal', *TARGET_NAMES]}, "
                                 f"a retcodec.targets.Target (CellRate(cell_id), TopKLogits(k), "
                                 f"ClassLogit(c), ...) or a callable (B, n) -> (B,)")
    if callable(spec):
        return CallableTarget(spec)
    raise ConfigurationError(f"target must be a name, a Target or a callable, got {type(spec).__name__}")
