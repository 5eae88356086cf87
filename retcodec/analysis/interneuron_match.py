"""Compare model hidden units with intracellular interneuron recordings, fairly.

The published comparison (``docs/method.md`` §8) correlates each recorded
cell's membrane potential ``Vm`` with every model unit (layer, channel, row,
column) and reports the best correlation: a maximum over about 10⁴ units,
biased upward, with no chance level. :func:`match_interneurons` keeps the
published ingredients — pre-batch-norm conv outputs, boxes as ±1 without
z-scoring, Pearson correlation, the signed maximum — and adds:

* **A held-out test.** The best unit is chosen on the *selection* half of the
  time points and its correlation is reported on the other, *held-out* half
  (``heldout_correlation``). With ``split="alternate"`` (the default) each
  stimulus segment is cut into ``n_blocks`` contiguous blocks; even blocks
  select and odd blocks test, so slow drifts of the recording
  (non-stationarity) affect both halves alike. ``split="half"`` selects on the
  first half and tests on the second. Blocks are long (12 s for 2 min of
  boxes and 10 blocks), so the overlap of neighbouring 40-frame windows across a
  block border leaks little.
* **A chance level.** ``Vm`` is shifted circularly in time by ``n_shifts``
  random offsets at least ``min_shift`` samples (default: the window length)
  away from 0. This breaks its relation with the stimulus but keeps its
  autocorrelation. The whole select-then-test procedure is repeated for each
  shift. The null distribution gives ``chance_mean``, ``chance_p95`` and
  ``p_value = (1 + #{null >= observed}) / (1 + n_shifts)``, so the smallest
  possible p-value is ``1 / (1 + n_shifts)``.

Pearson r is unchanged by the per-channel affine batch norm of eval mode
(positive scale), so the pre-batch-norm units used here and the post-batch-norm
maps of the published Fig. 3B give the same correlations.

All stimulus types of a file (``boxes``, ``lines``, ...) are used together.
Each is its own *segment*: it is centred on its own (so correlations are
those of the fluctuations within a stimulus), cut into blocks on its own, and
shifted on its own.

Correlations are computed in one streaming pass over the windows. For each
batch, the activations ``X (batch, units)`` are multiplied with the centred
``Vm`` of every cell under every shift, and the sums are accumulated. No
``(time, units)`` matrix is kept. Memory is about
``4 * 2 * n_units * n_cells * (1 + n_shifts)`` bytes per file, e.g. 140 MB for
22 cells, 50 shifts and the 15 776 units of conv0 + conv1.

:func:`label_units_by_truth` names each model channel after the ground-truth
interneuron type that it resembles most (for in-silico retinas).
``match_interneurons(..., unit_types=...)`` then reports whether the best unit of
each recorded cell has the cell's own type.

The splits, shifts, activations and correlation sums live in
:mod:`retcodec.analysis.unit_correlation`; the public names are re-exported here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.defaults import FORWARD_BATCH
from retcodec.errors import ConfigurationError, NonFiniteError, RecordingError, ShapeError
from retcodec.io.interneurons import cell_class_from_name, interneuron_windows, load_interneurons
from retcodec.io.provenance import provenance_attrs, sha256
from retcodec.analysis.unit_correlation import (SPLITS, CorrelationSums, LayerGeometry, Segment, Selection,
                                               check_layers, check_window_shape, circular_offsets,
                                               evaluating, layer_activations, layer_geometry,
                                               select_best_units, selection_mask, window_batches)
from retcodec.io.recordings import Windows, smallest_exact
from retcodec.compat import accept_seed_alias

__all__ = ["match_interneurons", "label_units_by_truth", "selection_mask", "circular_offsets",
           "layer_activations", "SPLITS"]

#: truth cell-type coordinates copied from the interneuron files when present
_TRUTH_COORDS = ("cell_type", "center_y", "center_x")
#: label of a channel that has no variance (e.g. pruned) in label_units_by_truth
NO_TYPE = "none"
#: label of a recorded cell without a known type
UNKNOWN_TYPE = "unknown"

UnitTypes = Mapping[tuple[str, int], str] | xr.Dataset


# --------------------------------------------------------------------------- inputs
InterneuronInput = str | os.PathLike | xr.DataTree


def _iter_trees(interneurons: InterneuronInput | Sequence[InterneuronInput],
                history: int) -> Iterator[tuple[str, xr.DataTree]]:
    """``(label, tree)`` per input, files loaded one at a time (only one is held at once)."""
    single = isinstance(interneurons, (str, os.PathLike, xr.DataTree))
    items = [interneurons] if single else list(interneurons)
    if not items:
        raise ConfigurationError("no interneuron files given")
    for item in items:
        if not isinstance(item, (str, os.PathLike, xr.DataTree)):
            raise ConfigurationError(f"interneurons must be paths or DataTrees from "
                                     f"load_interneurons, got {type(item).__name__}")
    seen: list[str] = []
    for i, item in enumerate(items):
        tree = (load_interneurons(item, history=history, compact=True)
                if isinstance(item, (str, os.PathLike)) else item)
        source = tree.attrs.get("source_file")
        label = Path(source).stem if source else f"interneurons{i}"
        if label in seen:
            raise ConfigurationError(f"two inputs share a file name {seen + [label]}; cell ids would clash")
        seen.append(label)
        yield label, tree
        del tree                          # a loaded file is not held while the next one loads


def _stim_nodes(label: str, tree: xr.DataTree,
                stim_types: Sequence[str] | None) -> list[tuple[str, xr.Dataset]]:
    present = [k for k, v in tree.children.items() if "membrane_potential" in v.dataset]
    chosen = present if stim_types is None else list(stim_types)
    missing = [s for s in chosen if s not in present]
    if missing:
        raise RecordingError(f"{label} has no stimulus type(s) {missing} (it has {present})")
    if not chosen:
        raise RecordingError(f"{label} holds no stimulus node with a membrane_potential; load it "
                             f"with load_interneurons")
    nodes = [(s, tree[s].to_dataset()) for s in chosen]
    counts = {s: ds.sizes.get("cell") for s, ds in nodes}
    if len(set(counts.values())) != 1:
        raise ShapeError(f"{label}: stimulus types hold different cell counts {counts}")
    return nodes


@dataclass
class _File:
    """One interneuron file: its label (file stem), tree, first stimulus node and segments."""

    label: str
    attrs: dict[str, Any]            # the file's root attrs
    node: xr.Dataset                 # cells and truth coordinates (no stimulus)
    segments: list[Segment]


def _prepare_file(label: str, tree: xr.DataTree, model: Any, history: int,
                  stim_types: Sequence[str] | None, split: str, n_blocks: int, n_shifts: int,
                  min_shift: int, rng: np.random.Generator, max_windows: int | None = None) -> _File:
    """Windows, aligned ``Vm``, split and shifts of every stimulus type of one file, checked."""
    nodes = _stim_nodes(label, tree, stim_types)
    segments = []
    for stim_type, ds in nodes:
        if max_windows is not None and "time" in ds.dims:
            ds = ds.isel(time=slice(0, max_windows + history))
        if "stimulus" in ds:               # prepared boxes are -1/0/1: held as int8, read back exactly
            ds = ds.assign(stimulus=ds["stimulus"].copy(data=smallest_exact(ds["stimulus"].values)))
        w, vm = interneuron_windows(ds, history=history)
        check_window_shape(model, w.shape[1:], f"{label}/{stim_type}")
        values = np.asarray(vm.values, dtype=float)
        if not np.isfinite(values).all():
            raise NonFiniteError(f"{label}/{stim_type}: the membrane potential holds NaN or Inf")
        selection = selection_mask(len(w), split, n_blocks)
        offsets = np.r_[0, circular_offsets(len(w), n_shifts, min_shift, rng)]
        segment = Segment(stim_type, w, values, selection, offsets)
        _check_variance(label, segment, vm["cell"].values)
        segments.append(segment)
    return _File(label, dict(tree.attrs), nodes[0][1].drop_vars("stimulus", errors="ignore"), segments)


def _check_variance(label: str, segment: Segment, cells: np.ndarray) -> None:
    for half, rows in zip(("selection", "held-out"), segment.halves()):
        flat = np.flatnonzero(segment.vm[rows].std(axis=0) == 0)
        if flat.size:
            raise RecordingError(f"{label}/{segment.stim_type}: the membrane potential of cell(s) "
                                 f"{cells[flat].tolist()} is constant on the {half} half; a "
                                 f"correlation is undefined")


def _unit_type_table(unit_types: UnitTypes, geometry: LayerGeometry) -> dict[tuple[str, int], str]:
    if isinstance(unit_types, xr.Dataset):
        if not {"unit_type", "layer", "channel"} <= set(unit_types.variables):
            raise ConfigurationError("a unit_types Dataset needs 'unit_type', 'layer' and 'channel' "
                                     "(as returned by label_units_by_truth)")
        table = {(str(l), int(c)): str(t) for l, c, t in zip(
            unit_types["layer"].values, unit_types["channel"].values, unit_types["unit_type"].values)}
    else:
        table = {(str(k[0]), int(k[1])): str(v) for k, v in dict(unit_types).items()}
    missing = [(name, c) for name, (n_chan, _, _) in zip(geometry.names, geometry.shapes)
               for c in range(n_chan) if (name, c) not in table]
    if missing:
        raise ConfigurationError(f"unit_types has no label for {missing}; label every channel of "
                                 f"the compared layers")
    return table


# --------------------------------------------------------------------------- public API
@accept_seed_alias
def match_interneurons(model: torch.nn.Module,
                       interneurons: InterneuronInput | Sequence[InterneuronInput],
                       layers: Sequence[str] | str = ("conv0", "conv1"),
                       split: str = "alternate", n_blocks: int = 10, n_shifts: int = 50,
                       min_shift: int | None = None, random_state: int = 0, batch_size: int = FORWARD_BATCH,
                       device: str | torch.device = "cpu", unit_types: UnitTypes | None = None,
                       stim_types: Sequence[str] | None = None, absolute: bool = False,
                       max_windows: int | None = None, progress: bool = False) -> xr.Dataset:
    """Best-matching model unit of every recorded interneuron, cross-validated, with chance level.

    Parameters
    ----------
    model
        A retina CNN with ``model.layers`` and ``img_shape`` (history, 50, 50).
    interneurons
        A DataTree from :func:`~retcodec.interneurons.load_interneurons`, a
        path to an interneuron file, or a list of them (e.g. the bipolar and
        the amacrine file). Paths are loaded with ``history=img_shape[0]``.
    layers
        Layers whose units (every channel and position, pre batch-norm) are
        candidates.
    split, n_blocks
        How the time points are split into selection and held-out halves:
        ``"alternate"`` (``n_blocks`` interleaved blocks per stimulus type,
        default) or ``"half"`` (first half / second half).
    n_shifts, min_shift, random_state
        Circular shifts of ``Vm`` for the chance level: ``n_shifts`` offsets
        drawn with ``numpy.random.default_rng([random_state, file_position])``, each at
        least ``min_shift`` samples (default the window length) from 0.
    batch_size, device, progress
        Windows per forward pass, where to compute, a tqdm bar over batches.
    unit_types
        Optional type label of every model channel: a mapping
        ``(layer, channel) -> label`` or the Dataset of
        :func:`label_units_by_truth`. This adds ``best_unit_type`` and
        ``type_match``, and needs the files' true ``cell_type``.
    stim_types
        Stimulus types to use (default: every one in each file).
    absolute
        Rank units by ``|r|`` instead of ``r``, like some published scripts
        (``abs_val=True``). All reported correlations are then absolute values.
    max_windows
        Use only the first ``max_windows`` windows of each stimulus type (a
        quicker, rougher comparison; default: all).

    Returns
    -------
    xarray.Dataset
        Over ``interneuron`` (ids ``"<file stem>/<cell index>"``), with
        coords ``file``, ``cell_index``, ``cell_class`` (from the file name) and
        the files' truth (``cell_type``, ``center_y``, ``center_x``) when present.
        Variables:

        * ``best_layer``, ``best_channel``, ``best_y``, ``best_x``: the unit chosen
          on the selection half (``y``/``x`` in map pixels of its layer).
          ``best_center_y``/``best_center_x``: its centre in stimulus pixels.
        * ``heldout_correlation``: its Pearson r on the held-out half.
          ``insample_correlation``: its r on the selection half (the maximum).
        * ``published_correlation``: the published statistic, the maximum r over
          all units on all time points (no split).
        * ``chance_mean``, ``chance_p95``, ``p_value`` and
          ``null_heldout_correlation (interneuron, shift)``: the held-out r of the
          same procedure applied to circularly shifted ``Vm``.
        * ``correlation_map_<layer> (interneuron, channel_<layer>, y_<layer>,
          x_<layer>)``: the all-data r of every unit of that layer, for maps like
          the published Fig. 3B. There is one variable per layer because the maps
          differ in size. Coordinates are map pixels; the attr
          ``stimulus_pixel_offset`` converts them to stimulus pixels.
        * with ``unit_types``: ``best_unit_type`` and ``type_match``; the attrs
          ``type_match_rate``, ``type_match_count`` (interneurons whose best unit has their type) and
          ``type_known_count`` (interneurons with a known type: the rate's denominator).

        The attrs record the procedure (``split``, ``n_blocks``, ``n_shifts``,
        ``min_shift``, ``seed``, ``layers``, stimulus types and time points per
        file), the inputs with their checksums, and provenance.
    """
    layers = check_layers(model, layers)
    history = int(getattr(model, "img_shape", (40,))[0])
    min_shift = history if min_shift is None else int(min_shift)
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, int)
                                    or max_windows < 2 * n_blocks):
        raise ConfigurationError(f"max_windows must be an integer >= 2 * n_blocks ({2 * n_blocks}), "
                                 f"got {max_windows!r}")
    files = []
    for position, (label, tree) in enumerate(_iter_trees(interneurons, history)):
        files.append(_prepare_file(label, tree, model, history, stim_types, split, n_blocks, n_shifts,
                                   min_shift, np.random.default_rng([random_state, position]), max_windows))
        del tree                          # only the compact windows are kept
    if unit_types is not None:
        _require_truth_types(files)
    from tqdm.auto import tqdm

    n_batches = sum(-(-len(s.windows) // batch_size) for infile in files for s in infile.segments)
    with evaluating(model, device) as dev, tqdm(total=n_batches, disable=not progress,
                                                 desc="match interneurons", unit="batch") as bar:
        geometry = layer_geometry(model, layers, files[0].segments[0].windows[0], dev)
        table = None if unit_types is None else _unit_type_table(unit_types, geometry)
        truth_names = [n for n in _TRUTH_COORDS if any(n in infile.node.coords for infile in files)]
        parts = []
        for infile in files:
            sums = CorrelationSums(geometry.n_units, infile.node.sizes["cell"], n_shifts + 1, dev)
            for segment in infile.segments:
                sums.add_segment(model, segment, layers, batch_size, bar)
            selection = select_best_units(*sums.correlations(), absolute=absolute)
            parts.append(_file_dataset(infile, selection, geometry, truth_names))
    result = xr.concat(parts, dim="interneuron", data_vars="all", coords="minimal",
                       compat="equals", join="exact")
    if table is not None:
        result = _add_type_match(result, table)
    result.attrs = _attrs(model, files, geometry, split=split, n_blocks=n_blocks, n_shifts=n_shifts,
                          min_shift=min_shift, seed=random_state, absolute=absolute, attrs=result.attrs)
    result.attrs["max_windows"] = "all" if max_windows is None else int(max_windows)
    return result


_FILL = {"cell_type": UNKNOWN_TYPE, "center_y": np.nan, "center_x": np.nan}


def _file_dataset(infile: _File, sel: Selection, geometry: LayerGeometry,
                  truth_names: Sequence[str]) -> xr.Dataset:
    """The output rows of one file: ids, truth, best units, statistics and maps."""
    cells = infile.node["cell"].values
    cell_class = str(infile.attrs.get("cell_class") or cell_class_from_name(infile.label))
    coords: dict[str, Any] = {
        "interneuron": ("interneuron", [f"{infile.label}/{c}" for c in cells]),
        "file": ("interneuron", [infile.label] * len(cells)),
        "cell_index": ("interneuron", cells.astype(np.int64)),
        "cell_class": ("interneuron", [cell_class] * len(cells)),
        "shift": ("shift", np.arange(1, sel.null_heldout.shape[1] + 1)),
    }
    for name in truth_names:                   # filled where this file has no such truth
        values = (infile.node[name].values if name in infile.node.coords
                  else np.full(len(cells), _FILL[name]))
        coords[name] = ("interneuron", values.astype(str) if name == "cell_type" else values)
    data = {**_best_unit_variables(sel, geometry), **_statistic_variables(sel)}
    offsets = dict(zip(geometry.names, geometry.offsets))
    for name, maps in geometry.split(sel.maps).items():
        data[f"correlation_map_{name}"] = _map_variable(name, maps, offsets[name], geometry.stride(name))
    ds = xr.Dataset(data, coords=coords)
    for name, (n_chan, n_y, n_x) in zip(geometry.names, geometry.shapes):
        ds = ds.assign_coords({f"channel_{name}": np.arange(n_chan),
                               f"y_{name}": (f"y_{name}", np.arange(n_y), {"units": "map pixel"}),
                               f"x_{name}": (f"x_{name}", np.arange(n_x), {"units": "map pixel"})})
    return ds


def _best_unit_variables(sel: Selection, geometry: LayerGeometry) -> dict[str, tuple]:
    layer, channel, y, x = zip(*(geometry.locate(int(u)) for u in sel.best_unit))
    offset = np.array([dict(zip(geometry.names, geometry.offsets))[name] for name in layer])
    stride = np.array([geometry.stride(name) for name in layer])
    map_px = {"units": "map pixel of best_layer"}
    return {"best_layer": ("interneuron", np.array(layer, dtype=str)),
            "best_channel": ("interneuron", np.array(channel)),
            "best_y": ("interneuron", np.array(y), map_px),
            "best_x": ("interneuron", np.array(x), map_px),
            "best_center_y": ("interneuron", stride * np.array(y) + offset, {"units": "stimulus pixel"}),
            "best_center_x": ("interneuron", stride * np.array(x) + offset, {"units": "stimulus pixel"})}


def _statistic_variables(sel: Selection) -> dict[str, tuple]:
    null = sel.null_heldout
    p_value = (1 + (null >= sel.heldout[:, None]).sum(axis=1)) / (1 + null.shape[1])
    return {
        "heldout_correlation": ("interneuron", sel.heldout,
                                {"long_name": "Pearson r of the selected unit on held-out time points"}),
        "insample_correlation": ("interneuron", sel.insample,
                                 {"long_name": "Pearson r of the selected unit where it was selected"}),
        "published_correlation": ("interneuron", sel.published,
                                  {"long_name": "max Pearson r over units on all time points "
                                                "(published statistic, biased)"}),
        "chance_mean": ("interneuron", null.mean(axis=1),
                        {"long_name": "mean held-out r under circular shifts of Vm"}),
        "chance_p95": ("interneuron", np.percentile(null, 95, axis=1),
                       {"long_name": "95th percentile of the held-out r under shifts"}),
        "p_value": ("interneuron", p_value, {"long_name": "(1 + #{null >= observed}) / (1 + n_shifts)"}),
        "null_heldout_correlation": (("interneuron", "shift"), null,
                                     {"long_name": "held-out r of the procedure on shifted Vm"}),
    }


def _map_variable(layer: str, maps: np.ndarray, offset: float, stride: int = 1) -> xr.Variable:
    dims = ("interneuron", f"channel_{layer}", f"y_{layer}", f"x_{layer}")
    at = "" if stride == 1 else f"{stride} * "
    attrs = {"long_name": f"Pearson r of Vm with each {layer} unit on all time points",
             "stimulus_pixel_offset": offset, "stimulus_pixel_stride": stride,
             "description": f"map pixel (i, j) is centred on stimulus pixel ({at}i + {offset:g}, {at}j + {offset:g})"}
    return xr.Variable(dims, maps.astype(np.float32), attrs)


def _require_truth_types(files: list[_File]) -> None:
    if not any("cell_type" in infile.node.coords for infile in files):
        raise ConfigurationError("unit_types needs the interneurons' true cell_type (the truth group "
                                 "of in-silico files); these files have none")


def _add_type_match(ds: xr.Dataset, table: Mapping[tuple[str, int], str]) -> xr.Dataset:
    best_type = np.array([table[(str(l), int(c))] for l, c in
                          zip(ds["best_layer"].values, ds["best_channel"].values)], dtype=str)
    known = ds["cell_type"].values != UNKNOWN_TYPE
    match = (best_type == ds["cell_type"].values) & known
    ds = ds.assign(best_unit_type=("interneuron", best_type),
                   type_match=("interneuron", match,
                               {"long_name": "the best unit's type label equals the cell's true type"}))
    ds.attrs["type_match_rate"] = float(match[known].mean()) if known.any() else float("nan")
    ds.attrs["type_match_count"] = int(match.sum())
    ds.attrs["type_known_count"] = int(known.sum())
    return ds


def _attrs(model: Any, files: list[_File], geometry: LayerGeometry, attrs: Mapping[str, Any],
           **params: Any) -> dict[str, Any]:
    inputs = {}
    for infile in files:
        source = infile.attrs.get("source_file")
        inputs[infile.label] = {"source_file": source,
                                "sha256": sha256(source) if source and Path(source).is_file() else None,
                                "stim_types": [s.stim_type for s in infile.segments],
                                "n_time": [len(s.windows) for s in infile.segments]}
    meta = getattr(model, "meta", {}) or {}
    out = dict(attrs)
    out.update(provenance_attrs(
        {**params, "layers": list(geometry.names)}, method="match_interneurons",
        selection=("best unit = argmax of Pearson r on the selection half; reported on the "
                   "held-out half; chance from circular shifts of Vm"),
        split=params["split"], n_blocks=params["n_blocks"], n_shifts=params["n_shifts"],
        min_shift=params["min_shift"], seed=params["seed"], layers=",".join(geometry.names),
        inputs=inputs, model=meta.get("provenance") or {}, model_type=type(model).__name__))
    return out


# --------------------------------------------------------------------------- unit labels
def _truth_stack(truth_maps: Mapping[str, Any], n_windows: int, history: int,
                 frame: tuple[int, int], crop: slice = slice(None)) -> tuple[list[str], np.ndarray]:
    """``(types, (type, time, y, x))`` aligned with the windows, pixels ``crop`` in y and x only."""
    if not truth_maps:
        raise ConfigurationError("truth_maps is empty; give one (time, y, x) map per type")
    types, arrays = [], []
    for name, value in truth_maps.items():
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[1:] != frame:
            raise ShapeError(f"truth map {name!r} must be (time, {frame[0]}, {frame[1]}) like the "
                             f"stimulus, got {arr.shape}")
        if arr.shape[0] == n_windows + history:
            arr = arr[history:]                     # a full movie: drop the frames before window 0
        elif arr.shape[0] != n_windows:
            raise ShapeError(f"truth map {name!r} has {arr.shape[0]} time points; give "
                             f"{n_windows} (aligned with the windows) or {n_windows + history} "
                             f"(the whole stimulus movie)")
        if not np.isfinite(arr).all():
            raise NonFiniteError(f"truth map {name!r} holds NaN or Inf")
        types.append(str(name))
        arrays.append(arr[:, crop, crop])
    return types, np.stack(arrays)


def _pixelwise_correlation(model: torch.nn.Module, windows: Windows | np.ndarray,
                           truth: np.ndarray, geometry: LayerGeometry, batch_size: int,
                           device: torch.device, bar: Any, first_pixel: int = 0) -> dict[str, np.ndarray]:
    """Mean over map pixels of r(activation, truth at the unit's stimulus pixel): ``{layer: (C, K)}``.

    ``truth (type, time, y, x)`` starts at stimulus pixel ``first_pixel`` in y and x.
    """
    sums: dict[str, dict[str, torch.Tensor]] = {}
    for sl, batch in window_batches(windows, batch_size, device):
        acts = layer_activations(model, batch, geometry.names)
        for name, (_, n_y, n_x), offset in zip(geometry.names, geometry.shapes, geometry.offsets):
            o, k = int(round(offset)) - first_pixel, geometry.stride(name)
            t = torch.as_tensor(truth[:, sl, o:o + k * (n_y - 1) + 1:k, o:o + k * (n_x - 1) + 1:k], device=device,
                                dtype=torch.float64).transpose(0, 1)          # (B, K, y, x)
            a = acts[name].double()
            s = sums.setdefault(name, {"ref_a": a.mean(0), "ref_t": t.mean(0)})
            a, t = a - s["ref_a"], t - s["ref_t"]
            for key, value in (("a", a.sum(0)), ("aa", (a * a).sum(0)), ("t", t.sum(0)),
                               ("tt", (t * t).sum(0)), ("at", _cross_per_pixel(a, t))):
                s[key] = s[key] + value if key in s else value
        bar.update(1)
    n = len(windows)
    out = {}
    for name, s in sums.items():
        var_a = (s["aa"] - s["a"] ** 2 / n)[:, None]
        var_t = (s["tt"] - s["t"] ** 2 / n)[None]
        cov = s["at"] - s["a"][:, None] * s["t"][None] / n
        valid = _has_variance(var_a) & _has_variance(var_t)
        r = torch.where(valid, cov / (var_a * var_t).clamp_min(1e-300).sqrt(), torch.nan)
        out[name] = torch.nanmean(r.flatten(2), dim=2).cpu().numpy()
    return out


def _has_variance(var: torch.Tensor) -> torch.Tensor:
    return var > 1e-12 * var.max().clamp_min(1e-300)


def _cross_per_pixel(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sum_b a[b, c, y, x] * t[b, k, y, x]`` -> ``(C, K, y, x)`` (one type at a time: little memory)."""
    return torch.stack([(a * t[:, k, None]).sum(0) for k in range(t.shape[1])], dim=1)


def label_units_by_truth(model: torch.nn.Module, stimulus_windows: Windows | np.ndarray,
                         truth_maps: Mapping[str, Any],
                         layers: Sequence[str] | str = ("conv0", "conv1"),
                         batch_size: int = FORWARD_BATCH, device: str | torch.device = "cpu",
                         progress: bool = False) -> xr.Dataset:
    """Label each model channel with the ground-truth interneuron type it resembles most.

    Parameters
    ----------
    model
        A retina CNN with ``model.layers``.
    stimulus_windows
        :class:`~retcodec.recordings.Windows` (or an array ``(n, history, H,
        W)``) of the stimulus given to the truth circuit, prepared as for the
        model.
    truth_maps
        ``{type: (time, H, W)}``: the true response of an interneuron of that
        type centred at every stimulus pixel, e.g.
        ``InSilicoRetina.bipolar_potentials(contrast)`` and
        ``amacrine_potentials(...)``. Time either aligned with the windows
        (``n`` points, row ``k`` at the bin window ``k`` predicts) or the whole
        movie (``n + history`` frames, of which the first ``history`` are
        dropped, the alignment of :func:`~retcodec.interneurons.interneuron_windows`).
    layers, batch_size, device, progress
        As in :func:`match_interneurons`.

    Returns
    -------
    xarray.Dataset
        Over ``unit`` (ids ``"<layer>/<channel>"``, coords ``layer``,
        ``channel``) and ``type``:

        * ``correlation (unit, type)``: the mean over the channel's map pixels of
          the Pearson r (over time) between its activation at map pixel ``(i, j)``
          and the truth map at the stimulus pixel that unit is centred on,
          ``(i + o, j + o)`` with ``o = (H - map size) / 2`` (7 for a 15x15 conv0,
          12 for conv1 after a further 11x11). Pixels where either has no variance
          are left out.
        * ``unit_type (unit)``: the type with the largest (signed) mean r, or
          ``"none"`` for a channel without variance.
        * ``unit_type_correlation (unit)``: that largest r.

        Pass the Dataset as ``unit_types`` to :func:`match_interneurons`.
    """
    layers = check_layers(model, layers)
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    window_shape = tuple(stimulus_windows.shape[1:])
    if len(window_shape) != 3:
        raise ShapeError(f"stimulus_windows must be (n, history, y, x), got {stimulus_windows.shape}")
    check_window_shape(model, window_shape, "stimulus_windows")
    from tqdm.auto import tqdm

    with evaluating(model, device) as dev, tqdm(total=-(-len(stimulus_windows) // batch_size),
                                                 disable=not progress, desc="label units") as bar:
        geometry = layer_geometry(model, layers, stimulus_windows[0], dev)
        first = min(int(round(o)) for o in geometry.offsets)       # the pixels any unit is centred on
        last = max(int(round(o)) + geometry.stride(n) * (shape[1] - 1) + 1
                   for n, o, shape in zip(geometry.names, geometry.offsets, geometry.shapes))
        types, truth = _truth_stack(truth_maps, len(stimulus_windows), window_shape[0], window_shape[1:],
                                    crop=slice(first, last))
        per_layer = _pixelwise_correlation(model, stimulus_windows, truth, geometry, batch_size,
                                           dev, bar, first)
    corr = np.concatenate([per_layer[name] for name in geometry.names])
    layer_of_unit = np.concatenate([[name] * shape[0] for name, shape in
                                    zip(geometry.names, geometry.shapes)])
    channel = np.concatenate([np.arange(shape[0]) for shape in geometry.shapes])
    alive = ~np.isnan(corr).all(axis=1)
    best = np.where(alive, np.nanargmax(np.where(np.isnan(corr), -np.inf, corr), axis=1), 0)
    unit_type = np.where(alive, np.asarray(types, dtype=str)[best], NO_TYPE)
    unit_ids = [f"{name}/{c}" for name, c in zip(layer_of_unit, channel)]
    return xr.Dataset(
        {"correlation": (("unit", "type"), corr,
                         {"long_name": "mean over map pixels of Pearson r with the truth map"}),
         "unit_type": ("unit", unit_type.astype(str)),
         "unit_type_correlation": ("unit", np.where(alive, corr[np.arange(len(best)), best], np.nan))},
        coords={"unit": unit_ids, "layer": ("unit", layer_of_unit.astype(str)),
                "channel": ("unit", channel), "type": types},
        attrs=provenance_attrs({"layers": list(geometry.names), "types": types},
                               method="label_units_by_truth",
                               stimulus_pixel_offsets=json.dumps(dict(zip(geometry.names,
                                                                          geometry.offsets)))))
