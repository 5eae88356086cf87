"""Each recorded interneuron as a direction in the model's hidden activity, fitted and held out.

:func:`match_interneurons` pairs a recorded interneuron with one model unit. A
cell type of the retina need not be one channel of the model, so
:func:`map_interneurons` maps each recorded interneuron to a **non-negative
combination of channels of the hidden layers** (their output after batch norm
and ReLU, the activity the next layer reads), near the recorded cell:

1. *Local activity.* For every channel of every layer, its activity averaged
   over a ``(2 r + 1)``-pixel square of the layer's map centred on the cell's
   location (the centre of its best unit in :func:`match_interneurons`, in
   stimulus pixels; map pixel = stimulus pixel minus the map's offset).
2. *Fit.* ``Vm ≈ a + sum_k w_k f_k`` with ``w >= 0`` (non-negative least
   squares with a small ridge ``alpha`` on z-scored features), on the
   *selection* half of the time points (the alternate blocks of
   :func:`retcodec.analysis.unit_correlation.selection_mask`, as for the
   matching). Each stimulus type is centred on its own.
3. *Choice.* Candidates -- every layer subset of ``layer_sets`` times every
   radius of ``radii`` -- are scored by the Pearson r of their prediction on the
   *held-out* half; the best is kept (``heldout_correlation``).
4. *Chance.* The whole fit-and-choose procedure is repeated with ``Vm``
   circularly shifted (``n_shifts`` offsets, at least one window length from
   0), giving ``chance_p95`` and ``p_value``; :func:`blind_spots` uses them.

The weights are returned in the units of the activity (``direction (interneuron,
unit)``), ready for :func:`retcodec.engine.directions.direction_rates`, which
silences the interneuron by projecting its direction out of each layer.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.analysis.unit_correlation import (check_window_shape, circular_offsets, evaluating,
                                               selection_mask, window_batches)
from retcodec.defaults import FORWARD_BATCH, LAYERS, RANDOM_STATE
from retcodec.engine.perturb import silence_points
from retcodec.errors import ConfigurationError, RecordingError, ShapeError
from retcodec.io.interneurons import interneuron_windows, load_interneurons
from retcodec.io.provenance import provenance_attrs

__all__ = ["map_interneurons", "local_activity", "fit_nonnegative", "blind_spots", "RADII", "RIDGE",
           "MIN_MATCH_R", "N_SHIFTS"]

#: half-widths (map pixels) of the squares whose mean activity is a channel's local activity
RADII = (0, 1, 2)
#: ridge on the z-scored features of the non-negative fit (per time point)
RIDGE = 0.01
#: below this held-out r an interneuron has no model counterpart, whatever its p-value
MIN_MATCH_R = 0.2
#: circular shifts of Vm for the chance level
N_SHIFTS = 50


# --------------------------------------------------------------------------- activity near each cell
def _map_index(center: float, offset: float, size: int, radius: int) -> int:
    return int(np.clip(round(center - offset), radius, size - 1 - radius)) if size > 2 * radius else size // 2


def local_activity(model: torch.nn.Module, windows: Any, layers: Sequence[str], centers: np.ndarray,
                   radii: Sequence[int] = RADII, batch_size: int = FORWARD_BATCH,
                   device: str | torch.device = "cpu") -> dict[tuple[str, int], np.ndarray]:
    """Mean post-ReLU activity of every channel in a square around each centre.

    ``centers``: ``(cell, 2)`` stimulus pixels (y, x). Returns
    ``{(layer, radius): (time, cell, channel)}`` float64 arrays; a layer's map
    pixel ``i`` is centred on stimulus pixel ``i + (H - n) / 2`` (valid
    convolutions of stride 1).
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    out: dict[tuple[str, int], list[np.ndarray]] = {(l, r): [] for l in layers for r in radii}
    captured: dict[str, torch.Tensor] = {}
    with evaluating(model, device) as dev:
        probe = next(window_batches(windows, 1, dev))[1]
        points = silence_points(model, list(layers), probe)
        handles = [points[l].module.register_forward_hook(_capture(l, captured)) for l in layers]
        try:
            with torch.inference_mode():
                for _, batch in window_batches(windows, batch_size, dev):
                    model(batch)
                    for l in layers:
                        h = captured[l]
                        if h.ndim != 4:
                            raise ShapeError(f"layer {l!r} outputs {tuple(h.shape)}; local activity needs "
                                             f"(batch, channel, y, x)")
                        for r in radii:
                            out[(l, r)].append(_patches(h, centers, r, windows.shape[-2:]))
        finally:
            for handle in handles:
                handle.remove()
    return {k: np.concatenate(v) for k, v in out.items()}


def _capture(name: str, store: dict[str, torch.Tensor]):
    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        store[name] = output
    return hook


def _patches(h: torch.Tensor, centers: np.ndarray, radius: int, frame: Sequence[int]) -> np.ndarray:
    """``(batch, cell, channel)``: mean of ``h`` over the square around each centre."""
    n_y, n_x = h.shape[-2:]
    oy, ox = (frame[0] - n_y) / 2, (frame[1] - n_x) / 2
    cols = []
    for cy, cx in centers:
        iy, ix = _map_index(cy, oy, n_y, radius), _map_index(cx, ox, n_x, radius)
        patch = h[:, :, max(iy - radius, 0):iy + radius + 1, max(ix - radius, 0):ix + radius + 1]
        cols.append(patch.mean(dim=(-2, -1)).double().cpu().numpy())
    return np.stack(cols, axis=1)


# --------------------------------------------------------------------------- the fit
def fit_nonnegative(X: np.ndarray, Y: np.ndarray, alpha: float = RIDGE) -> np.ndarray:
    """Non-negative ridge weights ``(feature, target)`` of centred ``Y (time, target)`` on ``X (time, feature)``.

    Features are z-scored for the ridge (``alpha`` per time point) and the
    weights returned in the units of ``X``; constant features get weight 0.
    """
    from scipy.optimize import nnls

    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64).reshape(len(X), -1)
    scale = X.std(axis=0)
    alive = scale > 1e-12 * max(float(scale.max(initial=0.0)), 1e-300)
    Z = (X[:, alive] - X[:, alive].mean(axis=0)) / scale[alive]
    n = len(Z)
    gram = Z.T @ Z / n + alpha * np.eye(Z.shape[1])
    chol = np.linalg.cholesky(gram)                       # |chol^T w - chol^-1 c|^2 = w'Gw - 2w'c + const
    rhs = np.linalg.solve(chol, Z.T @ (Y - Y.mean(axis=0)) / n)
    W = np.zeros((X.shape[1], Y.shape[1]))
    for j in range(Y.shape[1]):
        W[alive, j] = nnls(chol.T, rhs[:, j])[0] / scale[alive]
    return W


def _pearson_columns(pred: np.ndarray, Y: np.ndarray) -> np.ndarray:
    p, y = pred - pred.mean(axis=0), Y - Y.mean(axis=0)
    den = np.sqrt((p * p).sum(axis=0) * (y * y).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * y).sum(axis=0) / np.where(den > 0, den, 1.0), np.nan)


def _candidates(layers: Sequence[str], radii: Sequence[int]) -> list[tuple[tuple[str, ...], int]]:
    subsets = [tuple(layers)] + ([(l,) for l in layers] if len(layers) > 1 else [])
    return list(itertools.product(subsets, radii))


def _fit_cell(feats: dict[tuple[str, int], np.ndarray], vm: np.ndarray, selection: np.ndarray,
              candidates: list, layers: Sequence[str], n_channels: dict[str, int], alpha: float
              ) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """Fit every candidate on the selection rows for every column of ``vm (time, shift)``.

    Returns ``(heldout r (shift,), insample r (shift,), chosen candidate per shift,
    weights of the unshifted fit (unit,))``.
    """
    sel, held = selection, ~selection
    r_held = np.full((len(candidates), vm.shape[1]), -np.inf)
    r_in = np.full_like(r_held, np.nan)
    weights = []
    for k, (subset, radius) in enumerate(candidates):
        X = np.concatenate([feats[(l, radius)] for l in subset], axis=1)
        W = fit_nonnegative(X[sel], vm[sel], alpha)
        r_held[k] = np.nan_to_num(_pearson_columns(X[held] @ W, vm[held]), nan=-np.inf)
        r_in[k] = _pearson_columns(X[sel] @ W, vm[sel])
        full = np.zeros(sum(n_channels.values()))
        starts = dict(zip(layers, np.cumsum([0, *[n_channels[l] for l in layers]])))
        pos = 0
        for l in subset:
            full[starts[l]:starts[l] + n_channels[l]] = W[pos:pos + n_channels[l], 0]
            pos += n_channels[l]
        weights.append(full)
    best = np.argmax(r_held, axis=0)
    cols = np.arange(vm.shape[1])
    held_best = r_held[best, cols]
    return (np.where(np.isfinite(held_best), held_best, np.nan), r_in[best, cols], best.tolist(),
            weights[best[0]])


# --------------------------------------------------------------------------- public API
def _file_centers(match: xr.Dataset, label: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(match["file"].values.astype(str) == label)
    if rows.size == 0:
        raise ConfigurationError(f"the interneuron match has no cells of file {label!r}; run "
                                 f"match_interneurons on the same files")
    centers = np.stack([match["best_center_y"].values[rows], match["best_center_x"].values[rows]], axis=1)
    return rows, centers.astype(np.float64)


def map_interneurons(model: torch.nn.Module, interneurons: Sequence[str | os.PathLike] | str | os.PathLike,
                     match: xr.Dataset, layers: Sequence[str] = LAYERS, radii: Sequence[int] = RADII,
                     alpha: float = RIDGE, split: str = "alternate", n_blocks: int = 10,
                     n_shifts: int = N_SHIFTS, random_state: int = RANDOM_STATE,
                     max_windows: int | None = None, batch_size: int = FORWARD_BATCH,
                     device: str | torch.device = "cpu", progress: bool = False) -> xr.Dataset:
    """Map every recorded interneuron to a non-negative direction of the hidden layers' activity.

    Parameters
    ----------
    model : a retina CNN (hidden layers silenced after their ReLU) or any module with dotted layer names.
    interneurons : interneuron file path(s), as given to :func:`retcodec.match_interneurons`.
    match : the Dataset of :func:`retcodec.match_interneurons` on the same files (for
        each cell's location: the centre of its best unit).
    layers, radii, alpha : candidate layers (every single layer and all together),
        square half-widths in map pixels, ridge of the fit.
    split, n_blocks : the selection / held-out split (as in the matching).
    n_shifts, random_state : circular shifts of Vm for the chance level.
    max_windows : use only the first windows of each stimulus type (None: all).
    batch_size, device, progress : as elsewhere.

    Returns
    -------
    Dataset over ``interneuron`` (ids of ``match``) and ``unit`` (``"<layer>/<channel>"``):
    ``direction (interneuron, unit)`` (weights in activity units, >= 0),
    ``heldout_correlation``, ``insample_correlation``, ``chance_mean``, ``chance_p95``,
    ``p_value``, ``null_heldout_correlation (interneuron, shift)``, ``chosen_layers``
    and ``chosen_radius`` of the fit kept.
    """
    paths = [interneurons] if isinstance(interneurons, (str, os.PathLike)) else list(interneurons)
    if not paths:
        raise ConfigurationError("no interneuron files given")
    layers = [str(l) for l in layers]
    radii = sorted({int(r) for r in radii})
    if not radii or radii[0] < 0:
        raise ConfigurationError(f"radii must be non-negative map pixels, got {radii}")
    history = int(getattr(model, "img_shape", (40,))[0])
    n = match.sizes["interneuron"]
    result: dict[str, Any] = {}
    rng = np.random.default_rng(random_state)
    candidates = _candidates(layers, radii)
    n_channels: dict[str, int] = {}
    for path in paths:
        tree = load_interneurons(path, history=history, compact=True)
        label = Path(tree.attrs.get("source_file") or path).stem
        rows, centers = _file_centers(match, label)
        feats, vm, selection, offsets = _file_data(model, tree, label, layers, centers, radii, split, n_blocks,
                                                   n_shifts, history, rng, max_windows, batch_size, device)
        n_channels = {l: feats[(l, radii[0])].shape[-1] for l in layers}
        for j, row in enumerate(rows):
            shifted = np.stack([_shift_segments(vm[:, j], offsets, s) for s in range(n_shifts + 1)], axis=1)
            cell_feats = {k: v[:, j] for k, v in feats.items()}
            held, ins, chosen, w = _fit_cell(cell_feats, shifted, selection, candidates, layers, n_channels,
                                             alpha)
            result[int(row)] = (held, ins, candidates[chosen[0]], w)
        if progress:
            print(f"  directions: {label} ({len(rows)} cells)")
    missing = [str(match["interneuron"].values[i]) for i in range(n) if i not in result]
    if missing:
        raise ConfigurationError(f"no interneuron file holds {missing}; pass the files that were matched")
    return _dataset(match, result, layers, n_channels, dict(
        layers=layers, radii=radii, alpha=alpha, split=split, n_blocks=n_blocks, n_shifts=n_shifts,
        seed=random_state, max_windows=max_windows))


def _file_data(model: torch.nn.Module, tree: xr.DataTree, label: str, layers: list[str], centers: np.ndarray,
               radii: list[int], split: str, n_blocks: int, n_shifts: int, history: int,
               rng: np.random.Generator, max_windows: int | None, batch_size: int, device: Any) -> tuple:
    """Features, Vm, selection rows and circular offsets of every stimulus type of one file, concatenated.

    Each stimulus type is centred on its own; ``offsets``: ``[(start, stop, (1 + n_shifts,) offsets)]``.
    """
    feats: dict[tuple[str, int], list[np.ndarray]] = {}
    vms, sels, offsets, start = [], [], [], 0
    for stim, node in tree.children.items():
        ds = node.to_dataset()
        if "membrane_potential" not in ds:
            continue
        if max_windows is not None:
            ds = ds.isel(time=slice(0, int(max_windows) + history))
        w, vm = interneuron_windows(ds, history=history)
        check_window_shape(model, w.shape[1:], f"{label}/{stim}")
        values = np.asarray(vm.values, np.float64)
        if values.shape[1] != len(centers) or not np.isfinite(values).all():
            raise RecordingError(f"{label}/{stim}: the membrane potential must hold {len(centers)} finite "
                                 f"cells like the match, got shape {values.shape}")
        for key, f in local_activity(model, w, layers, centers, radii, batch_size, device).items():
            feats.setdefault(key, []).append(f - f.mean(axis=0))
        vms.append(values - values.mean(axis=0))
        sels.append(selection_mask(len(values), split, n_blocks))
        shifts = np.r_[0, circular_offsets(len(values), n_shifts, history, rng)]
        offsets.append((start, start + len(values), shifts))
        start += len(values)
    if not vms:
        raise RecordingError(f"{label} holds no stimulus with a membrane_potential")
    return ({k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(vms), np.concatenate(sels),
            offsets)


def _shift_segments(vm: np.ndarray, offsets: list, s: int) -> np.ndarray:
    """``vm`` with each segment circularly shifted by its ``s``-th offset (0: unshifted)."""
    out = np.empty_like(vm)
    for a, b, shifts in offsets:
        out[a:b] = np.roll(vm[a:b], int(shifts[s]))
    return out


def _dataset(match: xr.Dataset, result: dict, layers: list[str], n_channels: dict[str, int],
             params: dict[str, Any]) -> xr.Dataset:
    n = match.sizes["interneuron"]
    order = range(n)
    held = np.stack([result[i][0] for i in order])
    insample = np.array([result[i][1][0] for i in order])
    null = held[:, 1:]
    observed = held[:, 0]
    p_value = (1 + (np.nan_to_num(null, nan=-np.inf) >= observed[:, None]).sum(axis=1)) / (1 + null.shape[1])
    units = [f"{l}/{c}" for l in layers for c in range(n_channels[l])]
    coords = {"interneuron": match["interneuron"].values, "unit": units,
              "unit_layer": ("unit", [l for l in layers for _ in range(n_channels[l])]),
              "unit_channel": ("unit", [c for l in layers for c in range(n_channels[l])]),
              "shift": np.arange(1, null.shape[1] + 1)}
    for name in ("file", "cell_index", "cell_class", "cell_type"):
        if name in match.coords:
            coords[name] = ("interneuron", match[name].values)
    return xr.Dataset(
        {"direction": (("interneuron", "unit"), np.stack([result[i][3] for i in order]), {
            "long_name": "non-negative weight of each channel's local activity in the fitted Vm",
            "units": "Vm per unit of activity"}),
         "heldout_correlation": ("interneuron", observed,
                                 {"long_name": "Pearson r of the fitted direction with Vm on held-out time"}),
         "insample_correlation": ("interneuron", insample, {"long_name": "Pearson r where it was fitted"}),
         "chance_mean": ("interneuron", np.nanmean(null, axis=1)),
         "chance_p95": ("interneuron", np.nanpercentile(null, 95, axis=1),
                        {"long_name": "95th percentile of the held-out r with Vm circularly shifted"}),
         "p_value": ("interneuron", p_value, {"long_name": "(1 + #{null >= observed}) / (1 + n_shifts)"}),
         "null_heldout_correlation": (("interneuron", "shift"), null),
         "chosen_layers": ("interneuron", np.array([",".join(result[i][2][0]) for i in order], dtype=str)),
         "chosen_radius": ("interneuron", np.array([result[i][2][1] for i in order]), {"units": "map pixel"})},
        coords=coords,
        attrs=provenance_attrs(params, method="map_interneurons",
                               mapping="non-negative ridge fit of Vm on the post-ReLU local activity of "
                                       "channels, fitted on alternate blocks, chosen and scored on the others"))


def blind_spots(heldout: np.ndarray, chance_p95: np.ndarray, min_r: float = MIN_MATCH_R) -> np.ndarray:
    """Interneurons without a model counterpart: held-out r not above its chance p95, or below ``min_r``."""
    h, c = np.asarray(heldout, np.float64), np.asarray(chance_p95, np.float64)
    return ~(np.isfinite(h) & (h > np.nan_to_num(c, nan=np.inf)) & (h >= min_r))
