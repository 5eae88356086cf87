"""Contributions of hidden units to a scalar target: the core of CODEC (``docs/method.md`` §3-4).

:func:`contributions` computes, for every stimulus window and every requested
hidden layer, each unit's contribution ``C_h`` to the target ``S(F(x))``, splits
it into its negative and positive parts (E/I) and sums those over space per
channel. The result is an :class:`xarray.DataTree` (root: targets and their
parameters; one child per layer), optionally streamed to a netCDF file.

Methods (``h``: units of layer ``l``; ``g_h = ∂S/∂h``; input path
``x(α) = x₀ + α (x − x₀)``):

* ``"ig"``: integrated gradients decomposed at the hidden layer,
  ``C_h = ∫₀¹ g_h(x(α)) dh(x(α))/dα dα``. ``quadrature="trapezoid"`` (the
  paper's rule, ``m + 1`` path points, ``α_k = k/m``):
  ``C_h ≈ Σ_k ½ [g_h(α_{k−1}) + g_h(α_k)] [h(α_k) − h(α_{k−1})]``.
  ``"gauss-legendre"`` / ``"simpson"``: ``C_h ≈ Σ_j w_j g_h(α_j) ḣ(α_j)`` with
  the tangent ``ḣ = dh/dα`` (forward-mode rules per module on the fast path,
  double backward on the plain path). On the published retina layout the ReLU
  kinks make every rule first order; see ``benchmarks/bench_contributions.py``.
* ``"actgrad"``: ``C_h = h(x) g_h(x)``.
* ``"inputgrad"``: ``C_h = Σ_p x_p ∂S/∂h ∂h/∂x_p = g_h(x) · (J_h(x) x)``, the
  directional derivative of ``h`` along ``x`` (for an affine first layer
  ``h = Wx + b`` this is ``(h − b) g_h``).
* ``"smoothgrad"``: the mean of ``h g_h`` over ``n_samples`` noisy copies
  ``x + ε``, ``ε ~ N(0, sigma²)`` (seeded per window, so results do not depend
  on chunking or backend).

Speed: when the model's first module is the affine layer ``conv0`` (a
convolution, or a stack of them without nonlinearity, as in the published
models), its output along the straight path is ``h₀(α) = h₀(x₀) + α (h₀(x) −
h₀(x₀))``: ``conv0`` runs once per window, only the rest of the network runs on
the path points (all windows × points in one batch), and gradients go back to
the hidden tensors only, never into the input (``fast=True``). ``fast=False``
(or a model without that structure) uses the plain path: every path point
through the whole model, hidden outputs captured by forward hooks. The fast
path runs many small convolutions: on a machine shared with other jobs, set
``OMP_WAIT_POLICY=PASSIVE`` before starting Python so that idle threads sleep
instead of spinning (4x faster with 2 threads on a loaded 2-core machine).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from retcodec.errors import ConfigurationError
from retcodec.io.provenance import provenance_attrs, to_attr
from retcodec.io.locking import hold_lock
from retcodec.io.storage import check_output_file, write_netcdf_atomic
from retcodec.io.validation import as_float, as_int
from retcodec.engine.targets import Surprisal, Target, make_target
from retcodec.engine.quadrature import QUADRATURES, quadrature_rule
from retcodec.engine.quadrature import (AUTO_VARIABLES, DEFAULT_MAX_STEPS, DEFAULT_TOL, INITIAL_STEPS,
                                        auto_settings, is_auto)
from retcodec.engine.network import METHODS, SIGNS, Engine, Settings, layer_modules
from retcodec.engine.probe import MAX_STEPS, check_module, probe_model
from retcodec.engine.store import MemoryStore, PartialStore, StimulusSource, baseline_array, baseline_attr
from retcodec.compat import accept_seed_alias

__all__ = ["contributions", "METHODS", "QUADRATURES", "quadrature_rule"]

COMPLETENESS_STATS = ("median", "p95", "max", "total")
DEFAULT_CHUNK_SIZE = 256


# =========================================================================== public API
@accept_seed_alias
def contributions(model: nn.Module, stimulus: Any, layers: Sequence[str] | str = ("conv0", "conv1"),
                  method: str = "ig", steps: int | str = 20, target: Any = "surprisal",
                  baseline: float | np.ndarray = 0.0, *, quadrature: str = "trapezoid",
                  batch_size: int = 16, device: str | torch.device = "cpu",
                  dtype: str = "float32", maps: bool = False, out: str | Path | None = None,
                  chunk_size: int | None = None, resume: bool = True, progress: bool = False,
                  backend: str = "serial", scheduler: Any = None, n_workers: int = 2,
                  fast: bool = True, n_samples: int = 20, sigma: float = 0.1, random_state: int = 0,
                  shrinkage: float | str | None = "ledoit-wolf",
                  on_chunk: Callable[[int, int, int], None] | None = None,
                  tol: float = DEFAULT_TOL, max_steps: int = DEFAULT_MAX_STEPS) -> xr.DataTree:
    """Contributions of hidden units to a target, per window, split E/I and summed over space.

    Parameters
    ----------
    model : RetinaCNN
        A model with ``model.layers`` (name -> module whose output is the layer).
        It is copied, put in eval mode and not modified. An optional
        ``model.layer_layouts`` (name -> ``"channels"`` | ``"tokens"``) marks
        layers whose output is ``(B, tokens, dim)``: those are summed over
        tokens (``channel`` = ``dim``) instead of over dims >= 2.
    stimulus : array (n, T, H, W), torch.Tensor, recording Dataset or Windows
        z-scored windows (a recording Dataset/DataTree/DataArray is cut with
        ``retcodec.io.recordings.windows`` using ``model.meta['norm_stats']``).
    layers : names in ``model.layers``; all are computed in one pass.
    method : ``"ig"`` | ``"actgrad"`` | ``"inputgrad"`` | ``"smoothgrad"`` (see module doc).
    steps : ``m``, the number of integration intervals of ``"ig"``; or ``"auto"``: the
        trapezoid rule refined per window where the integrand changes, reusing the points
        already computed, until ``|Σ C − ΔS| <= tol |ΔS|`` at every layer or the window has
        ``max_steps`` intervals (:func:`retcodec.engine.quadrature.adaptive_trapezoid`). The
        steps used and the error reached per window are in the root variables
        ``quadrature_steps (time)`` and ``quadrature_error (time)``. Memory: a batch keeps
        ``batch_size × (steps + 1)`` hidden values and gradients of every layer.
    target : ``"surprisal"`` (fitted to the model outputs over the whole stimulus,
        shrinkage ``shrinkage``), another name of :data:`retcodec.engine.targets.TARGET_NAMES`,
        a :class:`~retcodec.targets.Target` or a callable ``(B, n) -> (B,)``.
    baseline : scalar or array broadcastable to one window: ``x₀``.
    quadrature : ``"trapezoid"`` (the paper's), ``"gauss-legendre"`` or ``"simpson"``.
    batch_size : windows per batch (a batch holds ``batch_size × path points`` samples;
        about 15 MB per window at 21 points for the published layout).
    device, dtype : where and in which float type (``"float32"``/``"float64"``) to compute.
    maps : also return the unsplit ``contribution_map (time, channel, y, x)``.
    out : netCDF file to write; chunks stream to ``<out>.partial/`` and the file
        appears (atomically) only once complete. A rerun resumes a partial run
        with the same parameters (``resume=False`` discards it); a partial run
        with different parameters raises :class:`~retcodec.errors.ConfigurationError`.
    chunk_size : windows per chunk (unit of streaming, resuming and dask tasks).
    backend : ``"serial"`` or ``"dask"`` (chunks on ``dask.distributed`` workers:
        ``scheduler`` is a Client, a cluster, an address, or None for a
        ``LocalCluster(n_workers, threads_per_worker=1)``).
    fast : use the linear first layer when the model has one (``False``: plain path).
    n_samples, sigma, random_state : ``"smoothgrad"`` noise (sigma in stimulus units) and its seed.
    on_chunk : called as ``on_chunk(index, start, stop)`` after each newly computed chunk is stored.
    tol, max_steps : the error control of ``steps="auto"`` (relative completeness error per
        window, most intervals per window); ignored for a fixed ``steps``.

    Returns
    -------
    xarray.DataTree
        Root: ``target (time)`` = S(F(x)), ``target_baseline (time)`` = S(F(x₀)),
        ``output (time, cell)`` = F(x), the target's parameters (surprisal:
        ``surprisal_mean (cell)``, ``surprisal_cov (cell, cell2)``) and
        ``completeness_error (layer, statistic)``: ``|Σ C − ΔS| / |ΔS|`` over
        windows (median, p95, max) and ``Σ|Σ C − ΔS| / Σ|ΔS|`` (total).
        One child per layer: ``contribution (time, channel, sign)``,
        ``activation (time, channel)`` (summed over space),
        ``completeness_residual (time)`` and, with ``maps``, ``contribution_map``.
    """
    check_module(model)
    if out is not None:                   # checked before any work; never replaces a file retcodec did not write
        out = check_output_file(out, "out", own_only=True)
    auto = is_auto(steps)                 # steps="auto": validated as the starting grid, then switched
    settings = _settings(model, layers, method, INITIAL_STEPS if auto else steps, quadrature, maps,
                         batch_size, n_samples, sigma, random_state, dtype)
    if auto:
        settings = auto_settings(settings, tol, max_steps)
    backend = _check_choice("backend", backend, ("serial", "dask"))
    source = StimulusSource(stimulus, model)
    chunk_size = _chunk_size(chunk_size, source.n, backend, n_workers, batch_size)
    chunks = [(s, min(s + chunk_size, source.n)) for s in range(0, source.n, chunk_size)]
    base = baseline_array(baseline, source.window_shape)
    _probe(model, source, settings.layers)
    engine = Engine(model, settings, base, device=device, fast=fast)
    cells = _cell_ids(model, source)

    store: MemoryStore
    with contextlib.ExitStack() as held:
        if out is not None:
            params = _run_params(model, source, chunks, settings, base, target, fast=engine.fast)
            params["shrinkage"] = str(shrinkage)
            held.enter_context(hold_lock(out.with_name(f".{out.name}.lock"), f"output {out}"))
            store = PartialStore(out, params, resume)
        else:
            store = MemoryStore()
        try:
            tgt = _resolve_target(target, engine, source, chunks, store, cells, shrinkage, progress)
            _warn_if_ill_conditioned(tgt, settings)
            engine.set_target(tgt)
            todo = [i for i in range(len(chunks)) if i not in store.done()]
            _run_chunks(engine, source, chunks, todo, store, backend, scheduler, n_workers, progress, on_chunk)
        except BaseException:
            if not store.done():
                store.discard()      # nothing to resume from: leave no empty partial folder behind
            raise
        tree = _assemble(store, chunks, source, cells, engine, tgt, settings, base, model, device)
        if out is not None:
            write_netcdf_atomic(tree, out)
            store.discard()
        return tree


# --------------------------------------------------------------------------- validation
def _check_choice(what: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ConfigurationError(f"unknown {what} {value!r}; use one of {list(allowed)}")
    return value.lower()


def _settings(model: nn.Module, layers: Sequence[str] | str, method: str, steps: int,
              quadrature: str, maps: bool, batch_size: int, n_samples: int, sigma: float,
              seed: int, dtype: str) -> Settings:
    method = _check_choice("method", method, METHODS)
    quadrature = _check_choice("quadrature", quadrature, QUADRATURES)
    dtype = _check_choice("dtype", str(dtype).replace("torch.", ""), ("float32", "float64"))
    if isinstance(layers, str):
        layers = (layers,)
    if isinstance(layers, Mapping) or not isinstance(layers, (list, tuple, np.ndarray)) \
            or not all(isinstance(name, str) for name in layers):
        raise ConfigurationError(f"layers must be a layer name or a list of names, e.g. ['conv0', 'conv1'], "
                                 f"got {type(layers).__name__} {layers!r:.60}")
    layers = tuple(layers)
    valid = list(layer_modules(model))
    unknown = [name for name in layers if name not in valid]
    if not layers or unknown or len(set(layers)) != len(layers):
        named = list(getattr(model, "layers", None) or {})
        paths = [n for n in valid if n not in named]
        shown = paths if len(paths) <= 30 else paths[:30] + ["..."]
        raise ConfigurationError(f"layers {list(layers)} are not valid: each must be one of "
                                 f"{named} (model.layers) or a dotted module path of the model "
                                 f"({shown}); at least one, no repeats")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise ConfigurationError(f"steps must be an integer in 1..{MAX_STEPS} or 'auto' (error-controlled), "
                                 f"got {steps!r}")
    if method == "ig":
        quadrature_rule(quadrature, int(steps))        # e.g. odd steps with simpson
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ConfigurationError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    sigma = as_float(sigma, "sigma", low=0.0)
    seed = as_int(seed, "random_state")
    # ordered as the model orders them
    layers = tuple(sorted(layers, key=valid.index))
    return Settings(layers=layers, method=method, steps=int(steps), quadrature=quadrature,
                    maps=bool(maps), batch_size=int(batch_size), n_samples=int(n_samples),
                    sigma=float(sigma), seed=int(seed), dtype=dtype)


def _probe(model: nn.Module, source: StimulusSource, layers: Sequence[str]) -> None:
    """One checked forward pass on the first window: input size, output and layer types."""
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    x = torch.as_tensor(source.read(0, 1), dtype=dtype, device=device)
    modules = layer_modules(model)
    probe_model(model, x, {name: modules[name] for name in layers})


def _chunk_size(chunk_size: int | None, n: int, backend: str, n_workers: int, batch_size: int) -> int:
    if chunk_size is None:
        if backend == "dask":
            return max(batch_size, min(DEFAULT_CHUNK_SIZE, math.ceil(n / (4 * max(1, n_workers)))))
        return DEFAULT_CHUNK_SIZE
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    return int(chunk_size)


def _cell_ids(model: nn.Module, source: StimulusSource) -> np.ndarray | None:
    meta = getattr(model, "meta", {}) or {}
    cells = meta.get("cells")
    if cells is not None and not isinstance(cells, str) and np.ndim(cells) == 1:
        return np.asarray(cells)
    return source.cells


def _warn_if_ill_conditioned(target: Target, settings: Settings) -> None:
    """float32 loses ~cond(Σ) × 6e-8 of the surprisal's relative accuracy."""
    if isinstance(target, Surprisal) and settings.dtype == "float32":
        cond = float(np.linalg.cond(target.covariance))
        if cond > 1e5:
            warnings.warn(f"the surprisal covariance has condition number {cond:.2g}: float32 "
                          f"contributions may be inaccurate; use dtype='float64' or more shrinkage",
                          RuntimeWarning, stacklevel=3)


def _model_hash(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__name__.encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _run_params(model: nn.Module, source: StimulusSource, chunks: Sequence[tuple[int, int]],
                settings: Settings, baseline: np.ndarray, target: Any, fast: bool) -> dict[str, Any]:
    """What identifies a run, for matching a partial file to a rerun."""
    if isinstance(target, Target):
        tgt = f"{target.name}:{target.fingerprint()}"
    elif isinstance(target, str):
        tgt = target.lower()
    else:
        tgt = f"callable:{getattr(target, '__name__', type(target).__name__)}"
    return {**asdict(settings), "layers": list(settings.layers), "fast": fast,
            "model": _model_hash(model), "stimulus": source.fingerprint(chunks),
            "chunks": [list(c) for c in chunks], "target": tgt,
            "baseline": hashlib.sha256(baseline.tobytes()).hexdigest()}


def _resolve_target(target: Any, engine: Engine, source: StimulusSource, chunks: Sequence[tuple[int, int]],
                    store: MemoryStore, cells: np.ndarray | None, shrinkage: Any,
                    progress: bool) -> Target:
    cell_list = None if cells is None else list(cells.tolist())
    is_surprisal = isinstance(target, str) and target.lower() == "surprisal"
    if is_surprisal and isinstance(store, PartialStore):
        saved = store.saved_surprisal()
        if saved is not None:
            return saved

    def outputs() -> np.ndarray:
        from tqdm.auto import tqdm
        parts = []
        with tqdm(total=source.n, disable=not progress, desc="model outputs", unit="win") as bar:
            for start, stop in chunks:
                parts.append(engine.outputs(source.read(start, stop)))
                bar.update(stop - start)
        return np.concatenate(parts)

    tgt = make_target(target, cells=cell_list, outputs=outputs, shrinkage=shrinkage)
    if is_surprisal and isinstance(store, PartialStore):
        store.save_surprisal(tgt)
    return tgt


# --------------------------------------------------------------------------- running
def _run_chunks(engine: Engine, source: StimulusSource, chunks: Sequence[tuple[int, int]], todo: list[int],
                store: MemoryStore, backend: str, scheduler: Any, n_workers: int, progress: bool,
                on_chunk: Callable[[int, int, int], None] | None) -> None:
    from tqdm.auto import tqdm
    n_todo = sum(chunks[i][1] - chunks[i][0] for i in todo)
    with tqdm(total=n_todo, disable=not progress, desc=f"contributions ({engine.settings.method})",
              unit="win") as bar:
        def finished(index: int, result: Mapping[str, np.ndarray]) -> None:
            store.save(index, result)
            if on_chunk is not None:
                on_chunk(index, *chunks[index])

        if backend == "dask":
            from retcodec.engine.dask_backend import run_chunks
            run_chunks(engine, source, chunks, todo, finished, scheduler=scheduler,
                       n_workers=n_workers, on_progress=bar.update)
            return
        for index in todo:
            start, stop = chunks[index]
            finished(index, engine.compute(source.read(start, stop), start, on_batch=bar.update))


# --------------------------------------------------------------------------- assembly
def _assemble(store: MemoryStore, chunks: Sequence[tuple[int, int]], source: StimulusSource,
              cells: np.ndarray | None, engine: Engine, target: Target, settings: Settings,
              baseline: np.ndarray, model: nn.Module, device: Any) -> xr.DataTree:
    parts = [store.load(i) for i in range(len(chunks))]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n_out = data["output"].shape[1]
    cell_coord = cells if cells is not None and len(cells) == n_out else np.arange(n_out)
    delta = data["target"].astype(np.float64) - data["target_baseline"]
    residuals = np.stack([data[f"{n}.completeness_residual"] for n in settings.layers])

    root = xr.Dataset(
        {"target": ("time", data["target"], {"long_name": f"S(F(x)), target {target.name}"}),
         "target_baseline": ("time", data["target_baseline"],
                             {"long_name": "S(F(x0)), the target at the baseline"}),
         "output": (("time", "cell"), data["output"], {"long_name": "model output F(x)"}),
         "completeness_error": (("layer", "statistic"), _completeness_summary(residuals, delta), {
             "long_name": "relative completeness error |sum C - (S(F(x)) - S(F(x0)))| / |S(F(x)) - "
                          "S(F(x0))| over windows (median, p95, max; windows with |dS| < 1e-9 max|dS| "
                          "left out) and sum|residual| / sum|dS| (total)"})},
        coords={"time": ("time", source.time, source.time_attrs), "cell": cell_coord,
                "layer": list(settings.layers), "statistic": list(COMPLETENESS_STATS)})
    for key, var in target.parameters().items():
        root[key] = var
    for key, attrs in AUTO_VARIABLES.items():          # steps="auto" only
        if key in data:
            root[key] = ("time", data[key], attrs)
    if "cell2" in root.dims:
        root = root.assign_coords(cell2=("cell2", cell_coord))
    root.attrs = _root_attrs(engine, target, settings, baseline, model, device)
    children = {name: _layer_dataset(name, data, settings) for name in settings.layers}
    return xr.DataTree.from_dict({"/": root, **children})


def _completeness_summary(residuals: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``(layers, 4)``: median, p95, max of ``|r| / |ΔS|`` and ``Σ|r| / Σ|ΔS|``."""
    absd = np.abs(delta)
    ok = absd > 1e-9 * (absd.max() if absd.size else 0.0)
    out = np.full((len(residuals), len(COMPLETENESS_STATS)), np.nan)
    for i, r in enumerate(np.abs(residuals.astype(np.float64))):
        if ok.any():
            rel = r[ok] / absd[ok]
            out[i, :3] = np.median(rel), np.percentile(rel, 95), rel.max()
        if absd.sum() > 0:
            out[i, 3] = r.sum() / absd.sum()
        elif not r.any():                      # every window at the baseline: nothing to miss
            out[i] = 0.0
    return out


def _layer_dataset(name: str, data: Mapping[str, np.ndarray], settings: Settings) -> xr.Dataset:
    contrib = data[f"{name}.contribution"]
    ds = xr.Dataset(
        {"contribution": (("time", "channel", "sign"), contrib, {
            "long_name": f"contribution to the target ({settings.method}), split into its negative "
                         f"and positive parts per unit, then summed over space per channel",
            "units": "units of the target"}),
         "activation": (("time", "channel"), data[f"{name}.activation"], {
             "long_name": "hidden activation (pre batch-norm) summed over space"}),
         "completeness_residual": ("time", data[f"{name}.completeness_residual"], {
             "long_name": "sum of contributions minus (S(F(x)) - S(F(x0)))"})},
        coords={"channel": np.arange(contrib.shape[1]), "sign": list(SIGNS)},
        attrs={"layer": name, "method": settings.method})
    key = f"{name}.contribution_map"
    if key in data:
        cmap = data[key]
        ds["contribution_map"] = (("time", "channel", "y", "x"), cmap, {
            "long_name": "contribution of each unit (not split)", "units_y_x": "map pixels of the layer"})
        ds = ds.assign_coords(y=("y", np.arange(cmap.shape[2]), {"units": "map pixels"}),
                              x=("x", np.arange(cmap.shape[3]), {"units": "map pixels"}))
    return ds


def _root_attrs(engine: Engine, target: Target, settings: Settings, baseline: np.ndarray,
                model: nn.Module, device: Any) -> dict[str, Any]:
    s = settings
    params = {**asdict(s), "layers": list(s.layers), "baseline": baseline_attr(baseline),
              "target": target.name, "device": str(device), "path": engine.net.kind}
    if s.method != "ig":
        quad = "none"
    elif s.steps == "auto":
        quad = (f"adaptive trapezoid on the hidden path: {INITIAL_STEPS} uniform intervals, then per "
                f"window the intervals with the largest completeness error bisected until |sum C - dS| "
                f"<= {s.tol:g} |dS| at every layer or {s.max_steps} intervals")
    elif s.quadrature == "trapezoid":
        quad = f"trapezoid on the hidden path, {s.steps} steps ({s.steps + 1} path points)"
    else:
        n_points = len(quadrature_rule(s.quadrature, s.steps)[0])
        quad = f"{s.quadrature}, {n_points} path points, with tangents dh/dalpha"
    attrs = provenance_attrs(params)
    attrs.update(method=s.method, steps=s.steps, quadrature=quad, baseline=baseline_attr(baseline),
                 device=str(device), dtype=s.dtype, layers=list(s.layers),
                 computation=("fast: affine first layer computed once per window, the rest of the "
                              "network on the path points" if engine.fast
                              else "plain: every path point through the whole model"))
    if s.method == "smoothgrad":
        attrs.update(n_samples=s.n_samples, sigma=s.sigma, seed=s.seed)
    attrs.update({k: to_attr(v) for k, v in target.to_attrs().items()})
    meta = getattr(model, "meta", {}) or {}
    for key in ("dataset", "stim_type", "provenance", "model_type"):
        if meta.get(key) is not None:
            attrs[f"model_{key}"] = to_attr(meta[key])
    attrs["model_class"] = type(model).__name__
    return {k: to_attr(v) for k, v in attrs.items()}
