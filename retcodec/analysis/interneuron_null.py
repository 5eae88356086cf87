"""Exact circular-shift null of the interneuron matches: every shift, for each interneuron's chosen unit.

:func:`~retcodec.analysis.interneuron_match.match_interneurons` chooses each
recorded interneuron's best model unit on the selection blocks and scores it on
the held-out blocks; its chance level repeats the whole choice for a few dozen
random circular shifts of ``Vm`` (so its smallest p-value is ``1/(1+n_shifts)``).
:func:`exact_shift_null` adds, for the unit chosen on the real data, its
held-out correlation with ``Vm`` shifted by **every** circular offset at least
``min_shift`` bins from 0 (thousands of shifts; the test's statistic is
computed on the held-out blocks only, so the choice made on the other blocks
does not enter it). All shifts at once come from three FFTs:
for shift ``s``, ``Σ_held u_t v_{t-s}``, ``Σ_held v_{t-s}`` and
``Σ_held v²_{t-s}`` are circular cross-correlations.

A unit's activation is computed on the stimulus patch it sees (its
receptive-field footprint), which is checked: the unshifted held-out r must
reproduce the match's ``heldout_correlation``; otherwise the interneuron's
exact null is left NaN (and said so in ``exact_null_note``).

:func:`holm_significance` applies one correction (Holm, family = all
interneurons) for the table and the figure alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.analysis.unit_correlation import evaluating, layer_activations, selection_mask
from retcodec.analysis.uncertainty import holm
from retcodec.defaults import FORWARD_BATCH
from retcodec.errors import ShapeError
from retcodec.io.interneurons import interneuron_windows, load_interneurons
from retcodec.io.recordings import window_batch

__all__ = ["shift_correlations", "exact_shift_null", "holm_significance", "ALPHA", "CHECK_TOLERANCE"]

#: family-wise level of the significance marks
ALPHA = 0.05
#: the recomputed unshifted held-out r must match the stored one to this
CHECK_TOLERANCE = 2e-3


def shift_correlations(unit: np.ndarray, vm: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Held-out Pearson r of ``unit`` with ``vm`` circularly shifted by every ``s`` (``r[s]``, s = 0..n-1).

    ``vm`` shifted by ``s`` is ``vm[(t - s) mod n]``; the correlation runs over
    the times where ``held`` is True. Each series is centred first.
    """
    u = np.asarray(unit, float) - np.mean(unit)
    v = np.asarray(vm, float) - np.mean(vm)
    h = np.asarray(held, float)
    if not (u.shape == v.shape == h.shape) or u.ndim != 1:
        raise ShapeError(f"unit, vm and held must be equal-length 1-D series, got {u.shape}, {v.shape}, {h.shape}")
    n = u.size
    fv, fv2 = np.fft.rfft(v), np.fft.rfft(v * v)

    def xcorr(a: np.ndarray, fb: np.ndarray) -> np.ndarray:
        return np.fft.irfft(np.fft.rfft(a) * np.conj(fb), n)

    s_uv, s_v, s_vv = xcorr(u * h, fv), xcorr(h, fv), xcorr(h, fv2)
    m = h.sum()
    s_u, s_uu = float(np.sum(u * h)), float(np.sum(u * u * h))
    cov = m * s_uv - s_u * s_v
    var = (m * s_uu - s_u ** 2) * np.clip(m * s_vv - s_v ** 2, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)


def _footprint(model: Any, layer: str, size: int, window: np.ndarray) -> tuple[int, int]:
    """``(extent, stride)`` in stimulus px of one unit of ``layer`` (valid convolutions)."""
    acts = layer_activations(model, torch.as_tensor(np.asarray(window)[None], dtype=torch.float32), [layer])
    out = int(acts[layer].shape[-1])
    stride = int(dict(getattr(model, "layer_strides", None) or {}).get(layer, 1))
    return size - (out - 1) * stride, stride


def _linear_filter(model: Any, layer: str, channel: int, shape: tuple[int, ...],
                   device: torch.device) -> tuple[np.ndarray, float] | None:
    """``(filter, bias)`` when the unit is an affine function of its patch (e.g. a first convolution), else None.

    Found by autograd at a zero patch and confirmed on two random patches.
    """
    def unit(x: torch.Tensor) -> torch.Tensor:
        return _forward(model, x, layer)[:, channel, 0, 0]

    zero = torch.zeros((1, *shape), dtype=torch.float32, device=device, requires_grad=True)
    with torch.enable_grad():
        bias = unit(zero)
        if not bias.requires_grad:
            return None
        (grad,) = torch.autograd.grad(bias.sum(), zero)
    w = grad[0].double().cpu().numpy()
    probe = np.random.default_rng(0).standard_normal((4, *shape))
    with torch.no_grad():
        got = unit(torch.as_tensor(probe, dtype=torch.float32, device=device)).double().cpu().numpy()
    bias_value = float(bias.detach())
    want = probe.reshape(len(probe), -1) @ w.ravel() + bias_value
    scale = max(float(np.abs(got).max()), float(np.abs(want).max()))
    if scale == 0 or np.abs(got - want).max() > 1e-4 * scale:      # float32 sums agree to ~1e-6
        return None
    return w, bias_value


def _forward(model: Any, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``model.layers[layer]`` output (pre batch-norm) for ``x``, with gradients when ``x`` needs them."""
    captured: dict[str, torch.Tensor] = {}

    class _Stop(Exception):
        pass

    def store(module: Any, args: Any, output: torch.Tensor) -> None:
        captured["out"] = output
        raise _Stop

    handle = model.layers[layer].register_forward_hook(store)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured["out"]


def _unit_traces(model: Any, windows: Any, units: list[tuple[str, int, int, int, int, int]], batch_size: int,
                 device: torch.device) -> np.ndarray:
    """``(unit, window)`` pre-batch-norm activations, each computed on the unit's footprint patch.

    ``units``: ``(layer, channel, y, x, extent, stride)``. An affine unit (a
    first-layer convolution) is its filter applied to the patch; others run
    the model on the patch. The windows are built once per batch for all units.
    """
    out = np.empty((len(units), len(windows)))
    n_frames = int(np.asarray(windows[0]).shape[0])
    filters = [_linear_filter(model, layer, channel, (n_frames, extent, extent), device)
               for layer, channel, _, _, extent, _ in units]
    weights = [None if f is None else torch.as_tensor(f[0], dtype=torch.float32) for f in filters]
    for start in range(0, len(windows), batch_size):
        sl = slice(start, min(start + batch_size, len(windows)))
        batch = window_batch(windows, sl)
        for k, (layer, channel, y, x, extent, stride) in enumerate(units):
            patch = batch[..., y * stride:y * stride + extent, x * stride:x * stride + extent]
            if filters[k] is not None:
                out[k, sl] = torch.tensordot(patch, weights[k], dims=3).double().numpy() + filters[k][1]
                continue
            with torch.inference_mode():
                out[k, sl] = layer_activations(model, patch.to(device), [layer])[layer][:, channel, 0, 0] \
                    .double().cpu().numpy()
    return out


def exact_shift_null(model: torch.nn.Module, interneurons: Sequence[str | Path], match: xr.Dataset,
                     device: str = "cpu", batch_size: int = FORWARD_BATCH) -> xr.Dataset:
    """Held-out r of each interneuron's chosen unit under every circular shift of ``Vm``.

    Parameters
    ----------
    interneurons : the interneuron files given to the match, in the same order.
    match : the Dataset of :func:`~retcodec.analysis.interneuron_match.match_interneurons`.

    Returns
    -------
    Dataset over ``interneuron``: ``exact_p_value`` ``(1 + #{r_s >= r_0}) /
    (1 + n_shifts)`` over the shifts ``min_shift <= s <= n - min_shift``,
    ``exact_n_shifts``, ``exact_chance_p95``, ``exact_check`` (recomputed
    unshifted r), ``holm_p_value`` and ``significant`` (Holm, :data:`ALPHA`;
    from the exact p where available, else the match's ``p_value``), with
    attrs saying which stimulus and test were used.
    """
    n = match.sizes["interneuron"]
    p = np.full(n, np.nan)
    n_shifts = np.zeros(n, dtype=np.int64)
    p95, check = np.full(n, np.nan), np.full(n, np.nan)
    split, n_blocks = str(match.attrs.get("split", "alternate")), int(match.attrs.get("n_blocks", 10))
    min_shift = int(match.attrs.get("min_shift", 40))
    history = int(getattr(model, "img_shape", (40,))[0])
    files = match["file"].values.astype(str)
    stim_types: set[str] = set()
    with evaluating(model, device) as dev:
        for path in interneurons:
            label = Path(path).stem
            rows = np.flatnonzero(files == label)
            if not rows.size:
                continue
            tree = load_interneurons(path, history=history, compact=True)
            nodes = [c for c in tree.children.values() if "membrane_potential" in c.dataset]
            if len(nodes) != 1:
                continue                       # several stimulus segments: the match's null stands alone
            stim_types.add(str(nodes[0].name))
            windows, vm = interneuron_windows(nodes[0], history=history)
            held = ~selection_mask(len(windows), split, n_blocks)
            size = int(np.asarray(windows[0]).shape[-1])
            footprints = {layer: _footprint(model, layer, size, windows[0])
                          for layer in set(match["best_layer"].values[rows].astype(str))}
            units = [(str(match["best_layer"].values[i]), int(match["best_channel"].values[i]),
                      int(match["best_y"].values[i]), int(match["best_x"].values[i]),
                      *footprints[str(match["best_layer"].values[i])]) for i in rows]
            traces = _unit_traces(model, windows, units, batch_size, dev)
            for u, i in zip(traces, rows):
                r = shift_correlations(u, vm.isel(cell=int(match["cell_index"].values[i])).values, held)
                check[i] = r[0]
                if abs(r[0] - float(match["heldout_correlation"].values[i])) > CHECK_TOLERANCE:
                    continue
                null = r[min_shift:len(r) - min_shift + 1]
                null = null[np.isfinite(null)]
                n_shifts[i] = null.size
                p[i] = (1 + np.sum(null >= r[0])) / (1 + null.size)
                p95[i] = np.quantile(null, 0.95)
    return _null_dataset(match, p, n_shifts, p95, check, sorted(stim_types), split, min_shift)


def _null_dataset(match: xr.Dataset, p: np.ndarray, n_shifts: np.ndarray, p95: np.ndarray, check: np.ndarray,
                  stim_types: list[str], split: str, min_shift: int) -> xr.Dataset:
    fallback = match["p_value"].values.astype(float) if "p_value" in match else np.full(p.shape, np.nan)
    used = np.where(np.isfinite(p), p, fallback)
    adjusted, significant = holm_significance(used)
    dim = "interneuron"
    return xr.Dataset(
        {"exact_p_value": (dim, p, {"long_name": "(1 + #{shifted r >= r}) / (1 + shifts), every shift"}),
         "exact_n_shifts": (dim, n_shifts, {"long_name": "circular shifts in the exact null"}),
         "exact_chance_p95": (dim, p95, {"long_name": "95th percentile of held-out r over every shift"}),
         "exact_check": (dim, check, {"long_name": "recomputed unshifted held-out r (must equal heldout_correlation)"}),
         "p_value_used": (dim, used, {"long_name": "exact p where available, else the re-selection p_value"}),
         "holm_p_value": (dim, adjusted, {"long_name": "Holm-adjusted p over all interneurons"}),
         "significant": (dim, significant, {"long_name": f"holm_p_value <= {ALPHA}"})},
        coords={dim: match[dim].values},
        attrs={"exact_null": "held-out r of the unit chosen on the real data, Vm circularly shifted by every "
                             f"offset of at least {min_shift} bins (split {split!r})",
               "exact_null_stimulus": ",".join(stim_types) or "none",
               "correction": f"Holm over {p.size} interneurons, alpha {ALPHA}",
               "exact_null_note": "NaN exact p: several stimulus segments in the file, or the recomputed "
                                  "unshifted r did not reproduce heldout_correlation"})


def holm_significance(p_values: Any, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and whether each is at most ``alpha`` (NaN: not significant)."""
    adjusted = holm(p_values)
    return adjusted, np.nan_to_num(adjusted, nan=np.inf) <= alpha
