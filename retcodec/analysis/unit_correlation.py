"""Streaming correlation of model units with recorded signals, and select-then-test.

The machinery of :func:`retcodec.analysis.interneuron_match.match_interneurons`:
selection / held-out splits of the time points (:func:`selection_mask`),
circular shifts for a chance level (:func:`circular_offsets`), pre-batch-norm
layer activations (:func:`layer_activations`) and the layout of their units
(:class:`LayerGeometry`), the Pearson-correlation sums accumulated batch by
batch (:class:`CorrelationSums`, one :class:`Segment` at a time) and the choice of
the best unit on one half, reported on the other (:func:`select_best_units`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from retcodec.devices import resolve_device
from retcodec.errors import ConfigurationError, ShapeError
from retcodec.io.recordings import Windows, window_batch
from retcodec.memory import RELEASE_ABOVE, release_memory

__all__ = ["SPLITS", "selection_mask", "circular_offsets", "check_layers", "evaluating",
           "layer_activations", "check_window_shape", "window_batches", "LayerGeometry",
           "layer_geometry", "Segment", "CorrelationSums", "Selection", "select_best_units"]

#: ways to cut a segment into a selection half and a held-out half
SPLITS = ("alternate", "half")


# --------------------------------------------------------------------------- splits and shifts
def selection_mask(n_time: int, split: str = "alternate", n_blocks: int = 10) -> np.ndarray:
    """Which time points select the best unit: bool ``(n_time,)``; the rest are held out.

    ``"alternate"``: ``n_blocks`` contiguous blocks of near-equal length, even
    blocks (0, 2, ...) select. ``"half"``: the first half selects (the larger
    half when ``n_time`` is odd).
    """
    if split not in SPLITS:
        raise ConfigurationError(f"split must be one of {SPLITS}, got {split!r}")
    n_blocks = 2 if split == "half" else int(n_blocks)
    if n_blocks < 2:
        raise ConfigurationError(f"n_blocks must be >= 2, got {n_blocks}")
    if n_time < 2 * n_blocks:
        raise ConfigurationError(f"{n_time} time points are too few for {n_blocks} blocks of at "
                                 f"least 2 points; use fewer blocks or a longer recording")
    block = np.zeros(n_time, dtype=np.int64)
    for i, part in enumerate(np.array_split(np.arange(n_time), n_blocks)):
        block[part] = i
    return block % 2 == 0


def circular_offsets(n_time: int, n_shifts: int, min_shift: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``n_shifts`` random circular shifts in ``[min_shift, n_time - min_shift]`` (distinct when possible)."""
    if n_shifts < 1:
        raise ConfigurationError(f"n_shifts must be >= 1 (the chance level needs shifts), got {n_shifts}")
    if min_shift < 1:
        raise ConfigurationError(f"min_shift must be >= 1 sample, got {min_shift}")
    n_allowed = n_time - 2 * min_shift + 1
    if n_allowed < 1:
        raise ConfigurationError(f"{n_time} time points are too few for circular shifts at least "
                                 f"{min_shift} samples from 0; lower min_shift or use a longer recording")
    picks = rng.choice(n_allowed, size=n_shifts, replace=n_allowed < n_shifts)
    return (min_shift + picks).astype(np.int64)


# --------------------------------------------------------------------------- model activations
def check_layers(model: Any, layers: Sequence[str] | str) -> tuple[str, ...]:
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    available = list(getattr(model, "layers", {}) or {})
    if not names:
        raise ConfigurationError(f"layers is empty; choose among {available}")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigurationError(f"unknown layer(s) {unknown}; this model has {available}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"layers {list(names)} name a layer twice")
    return names


class _StopForward(Exception):
    """Raised by a hook to skip the layers after the last one needed."""


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, device: str | torch.device) -> Iterator[torch.device]:
    """The model in eval mode on ``device``; its device and train state are restored afterwards."""
    home = next(model.parameters()).device
    was_training = model.training
    target = resolve_device(device)
    model.to(target).eval()
    try:
        yield target
    finally:
        model.to(home).train(was_training)


def layer_activations(model: torch.nn.Module, batch: torch.Tensor,
                      layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of ``model.layers[name]`` (pre batch-norm) for a batch: ``{name: (B, C, H, W)}``.

    A space-time layer ``(B, C, T, H, W)`` (openretina cores) gives its last time
    step, the units' response at the time the window predicts. Runs the model under ``torch.inference_mode()`` with forward hooks and stops
    it once the last of ``layers`` (in model order) has run; call it with the
    model in eval mode.
    """
    captured: dict[str, torch.Tensor] = {}
    order = list(model.layers)
    last = max(layers, key=order.index)

    def hook(name: str):
        def store(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            captured[name] = output
            if name == last and len(captured) == len(layers):
                raise _StopForward
        return store

    handles = [model.layers[name].register_forward_hook(hook(name)) for name in layers]
    try:
        with torch.inference_mode():
            model(batch)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    for name, out in list(captured.items()):
        if out.ndim == 5:
            captured[name] = out = out[:, :, -1]
        if out.ndim != 4:
            raise ShapeError(f"layer {name!r} outputs shape {tuple(out.shape)}, not "
                             f"(batch, channel, y, x); compare only convolutional layers")
    return captured


def check_window_shape(model: Any, window_shape: Sequence[int], what: str) -> None:
    expected = tuple(getattr(model, "img_shape", ()) or ())
    if expected and tuple(window_shape) != expected:
        raise ShapeError(f"{what} are windows of (history, y, x) = {tuple(window_shape)} but the "
                         f"model takes {expected}; the interneuron stimuli are prepared to 50x50 "
                         f"pixels, so use a model trained on 50x50 stimuli")


def window_batches(windows: Windows | np.ndarray, batch_size: int,
                   device: torch.device) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(slice, float32 batch (B, T, H, W))`` (see :func:`~retcodec.io.recordings.window_batch`)."""
    for start in range(0, len(windows), batch_size):
        sl = slice(start, min(start + batch_size, len(windows)))
        yield sl, window_batch(windows, sl).to(device)


@dataclass(frozen=True)
class LayerGeometry:
    """Output maps of the compared layers, in the order their units are flattened."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, int, int], ...]      # (channel, y, x) per layer
    offsets: tuple[float, ...]                    # stimulus pixel of map pixel 0
    strides: tuple[int, ...] = ()                 # stimulus pixels per map pixel (default 1)

    def stride(self, name: str) -> int:
        """Stimulus pixels between neighbouring map pixels of layer ``name``."""
        return dict(zip(self.names, self.strides)).get(name, 1)

    @property
    def sizes(self) -> list[int]:
        return [c * h * w for c, h, w in self.shapes]

    @property
    def n_units(self) -> int:
        return sum(self.sizes)

    def locate(self, unit: int) -> tuple[str, int, int, int]:
        """Flat unit index -> ``(layer, channel, y, x)``."""
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            if unit < size:
                c, y, x = np.unravel_index(unit, shape)
                return name, int(c), int(y), int(x)
            unit -= size
        raise IndexError(f"unit {unit} beyond the {self.n_units} units")

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """``(..., n_units)`` -> ``{layer: (..., channel, y, x)}``."""
        bounds = np.cumsum([0, *self.sizes])
        return {name: flat[..., a:b].reshape(*flat.shape[:-1], *shape)
                for name, shape, a, b in zip(self.names, self.shapes, bounds[:-1], bounds[1:])}


def layer_geometry(model: torch.nn.Module, layers: tuple[str, ...], window: np.ndarray,
              device: torch.device) -> LayerGeometry:
    probe = torch.as_tensor(np.asarray(window)[None], dtype=torch.float32, device=device)
    acts = layer_activations(model, probe, layers)
    shapes = tuple(tuple(int(s) for s in acts[n].shape[1:]) for n in layers)
    in_y = window.shape[-2]
    given = dict(getattr(model, "layer_strides", None) or {})
    strides = tuple(int(given.get(n, 1)) for n in layers)
    return LayerGeometry(layers, shapes, tuple((in_y - k * (s[1] - 1) - 1) / 2 for s, k in zip(shapes, strides)),
                         strides)


def _flat_activations(model: torch.nn.Module, batch: torch.Tensor,
                      layers: tuple[str, ...]) -> torch.Tensor:
    acts = layer_activations(model, batch, layers)
    return torch.cat([acts[n].reshape(batch.shape[0], -1) for n in layers], dim=1)


# --------------------------------------------------------------------------- streaming correlation
@dataclass
class Segment:
    """One stimulus type of a file: windows, aligned ``Vm (time, cell)``, its split and shifts."""

    stim_type: str
    windows: Windows
    vm: np.ndarray                 # (T, n_cells) float64
    selection: np.ndarray          # (T,) bool
    offsets: np.ndarray            # (1 + n_shifts,) int, offsets[0] == 0 (the real alignment)

    def shifted(self, rows: np.ndarray) -> np.ndarray:
        """``Vm`` at ``rows`` under every shift: ``(rows, cell, shift)``; ``Vm[t - offset]`` circularly."""
        idx = (rows[:, None] - self.offsets[None, :]) % self.vm.shape[0]
        return self.vm[idx].transpose(0, 2, 1)

    def target_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and centred sum of squares per half (0 selects, 1 is held out): ``(2, cell, shift)``."""
        n_cells, n_shifts = self.vm.shape[1], self.offsets.size
        mean, ss = np.empty((2, n_cells, n_shifts)), np.empty((2, n_cells, n_shifts))
        for j, offset in enumerate(self.offsets):
            rolled = np.roll(self.vm, offset, axis=0)                  # rolled[t] = Vm[t - offset]
            for half, rows in enumerate(self.halves()):
                y = rolled[rows]
                mean[half, :, j] = y.mean(axis=0)
                ss[half, :, j] = ((y - mean[half, :, j]) ** 2).sum(axis=0)
        return mean, ss

    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero(self.selection), np.flatnonzero(~self.selection)


class CorrelationSums:
    """Sums for the Pearson correlation of every unit with every (cell, shift), per half.

    ``Vm`` is centred exactly within each (segment, half) before it is
    multiplied, so the cross sums need no activation means. The activation
    variance comes from sums of ``x - ref`` and ``(x - ref)**2`` in float64,
    with ``ref`` the segment's first-batch mean (against cancellation).
    """

    def __init__(self, n_units: int, n_cells: int, n_shifts: int, device: torch.device) -> None:
        self.n_cells, self.n_shifts = n_cells, n_shifts
        q = n_cells * n_shifts
        self.cross = torch.zeros(2, n_units, q, dtype=torch.float32, device=device)
        self.cross_all = torch.zeros(n_units, n_cells, dtype=torch.float64, device=device)
        self.var_x = torch.zeros(2, n_units, dtype=torch.float64, device=device)
        self.var_x_all = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.var_y = np.zeros((2, q))
        self.var_y_all = np.zeros(n_cells)
        self.device = device

    def add_segment(self, model: torch.nn.Module, segment: Segment, layers: tuple[str, ...],
                    batch_size: int, bar: Any) -> None:
        dev, n_units = self.device, self.cross.shape[1]
        mean, ss = segment.target_moments()
        self.var_y += ss.reshape(2, -1)
        vm_mean = segment.vm.mean(axis=0)
        self.var_y_all += ((segment.vm - vm_mean) ** 2).sum(axis=0)
        sx = torch.zeros(2, n_units, dtype=torch.float64, device=dev)
        sxx = torch.zeros_like(sx)
        ref = None
        for sl, batch in window_batches(segment.windows, batch_size, dev):
            x = _flat_activations(model, batch, layers).double()
            ref = x.mean(dim=0) if ref is None else ref
            x = x - ref
            rows = np.arange(sl.start, sl.stop)
            half = (~segment.selection[rows]).astype(np.int64)            # 0 select, 1 held out
            y = segment.shifted(rows) - mean[half]                        # (B, cell, shift)
            y_t = torch.as_tensor(y.reshape(len(rows), -1), dtype=torch.float32, device=dev)
            x32 = x.float()
            for h in (0, 1):
                mask = torch.as_tensor(half == h, device=dev)
                if mask.any():
                    self.cross[h] += x32[mask].T @ y_t[mask]
                    sx[h] += x[mask].sum(dim=0)
                    sxx[h] += (x[mask] ** 2).sum(dim=0)
            y_all = torch.as_tensor(segment.vm[rows] - vm_mean, dtype=torch.float64, device=dev)
            self.cross_all += x.T @ y_all
            release_memory(RELEASE_ABOVE)             # batch temporaries fragment the heap
            bar.update(1)
        counts = [int(segment.selection.sum()), int((~segment.selection).sum())]
        for h in (0, 1):
            self.var_x[h] += (sxx[h] - sx[h] ** 2 / counts[h]).clamp_min(0)
        self.var_x_all += (sxx.sum(0) - sx.sum(0) ** 2 / sum(counts)).clamp_min(0)

    def correlations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(selection, held_out)`` each ``(unit, cell, shift)`` float32 and ``all (unit, cell)``.

        Scales the cross sums in place (call once). Units without variance
        (dead or pruned channels) get correlation 0, as in the published maps.
        """
        halves = []
        for h in (0, 1):
            inv_x = (1 / _safe_sqrt(self.var_x[h])).float()
            inv_y = torch.as_tensor(1 / np.sqrt(self.var_y[h]), dtype=torch.float32, device=self.device)
            r = self.cross[h].mul_(inv_x[:, None]).mul_(inv_y[None, :])
            halves.append(r.cpu().numpy().reshape(-1, self.n_cells, self.n_shifts))
        r_all = self.cross_all / _safe_sqrt(self.var_x_all)[:, None]
        r_all = r_all / torch.as_tensor(np.sqrt(self.var_y_all), device=self.device)[None, :]
        return halves[0], halves[1], r_all.cpu().numpy()


def _safe_sqrt(var: torch.Tensor) -> torch.Tensor:
    """``sqrt(var)``, infinite where the variance is numerically zero (so 1/sqrt -> 0)."""
    dead = var <= 1e-20 * var.max().clamp_min(1e-300)
    return torch.where(dead, torch.full_like(var, float("inf")), var.sqrt())


@dataclass
class Selection:
    """Select-then-test results of one file, per cell (index 0 of ``shift`` = observed)."""

    best_unit: np.ndarray          # (cell,)
    insample: np.ndarray           # (cell,)
    heldout: np.ndarray            # (cell,)
    null_heldout: np.ndarray       # (cell, n_shifts)
    published: np.ndarray          # (cell,) max over units of the all-data correlation
    maps: np.ndarray               # (cell, unit) all-data correlation


def select_best_units(r_sel: np.ndarray, r_held: np.ndarray, r_all: np.ndarray,
            absolute: bool) -> Selection:
    score = np.abs(r_sel) if absolute else r_sel
    best = score.argmax(axis=0)                                   # (cell, shift)
    cells, shifts = np.indices(best.shape)
    insample = score[best, cells, shifts]
    heldout = r_held[best, cells, shifts]
    heldout = np.abs(heldout) if absolute else heldout
    published = (np.abs(r_all) if absolute else r_all).max(axis=0)
    return Selection(best[:, 0], insample[:, 0], heldout[:, 0], heldout[:, 1:], published, r_all.T)
