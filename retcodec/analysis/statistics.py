"""Statistics the CODEC paper reports (``docs/method.md`` §9), on labelled data.

* :func:`hoyer` — Hoyer sparsity ``(√n − ‖v‖₁/‖v‖₂) / (√n − 1)`` of a vector:
  1 for a one-hot vector, 0 for a constant one.
* :func:`layer_sparsity` — per window, the Hoyer sparsity across channels of a
  layer's contributions and of its activations.
* :func:`pos_neg_correlation` — per channel, the Pearson correlation across
  windows of the positive contribution ``C⁺`` and the negative magnitude
  ``|C⁻|`` (E/I decorrelation with depth).
* :func:`dimensionality` — the number of principal components reaching a
  share of the variance (95% by default).
* :func:`layer_statistics` — all of the above for every layer node of a
  :func:`retcodec.engine.contributions.contributions` DataTree.

Also :func:`pearson` (correlation along an axis) and :func:`align_time`
(matching the ``time`` coordinate of DataArrays), shared by the cell-type and
mode-combination analyses.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from retcodec.analysis.metrics import pearson

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.io.provenance import provenance_attrs

__all__ = ["hoyer", "layer_sparsity", "pos_neg_correlation", "dimensionality",
           "layer_statistics", "pearson", "align_time", "match_times"]

#: tolerance when matching numeric ``time`` coordinates of different origin:
#: ``|a - b| <= TIME_TOLERANCE * max(1, |b|)`` (1 µs for times in seconds below 1 s)
TIME_TOLERANCE = 1e-6


# =========================================================================== building blocks
def hoyer(x: Any, axis: int = -1, *, dim: str | None = None) -> Any:
    """Hoyer sparsity ``(√n − ‖v‖₁/‖v‖₂) / (√n − 1)`` of vectors along ``axis``.

    ``v`` is taken as is (the norms use ``|v|``): 1 for a vector with one
    non-zero entry, 0 for a vector of equal magnitudes. All-zero vectors and
    vectors of length 1 give NaN (the ratio is undefined); NaN entries
    propagate.

    Parameters
    ----------
    x : array, or a DataArray (then give ``dim``; the result keeps the other dims).
    axis : axis of the vectors for arrays.
    dim : dimension of the vectors for DataArrays.
    """
    if isinstance(x, xr.DataArray):
        if dim is None:
            raise ConfigurationError(f"give dim= (one of {x.dims}) for a DataArray")
        result = xr.apply_ufunc(_hoyer_last_axis, x, input_core_dims=[[dim]])
        return result.rename("hoyer").assign_attrs(long_name=f"Hoyer sparsity across {dim}")
    return _hoyer_last_axis(np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1))


def _hoyer_last_axis(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = v.shape[-1]
    l1 = np.sum(np.abs(v), axis=-1)
    l2 = np.sqrt(np.sum(v * v, axis=-1))
    if n < 2:
        return np.full(l1.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(l2 > 0, l1 / np.where(l2 > 0, l2, 1.0), np.nan)
    ratio = np.where(np.isnan(l2), np.nan, ratio)
    return (np.sqrt(n) - ratio) / (np.sqrt(n) - 1.0)


def dimensionality(x: Any, variance: float = 0.95, *, dim: str = "time") -> int:
    """Number of principal components whose cumulative explained variance reaches ``variance``.

    Returns 0 when the data have no variance. Columns are centred, not scaled.

    Parameters
    ----------
    x : ``(samples, features)`` array, or a DataArray whose ``dim`` is the sample
        dimension (all other dims are flattened into features).
    variance : share of the total variance to reach, in (0, 1].
    """
    if not 0 < variance <= 1:
        raise ConfigurationError(f"variance must be in (0, 1], got {variance}")
    if isinstance(x, xr.DataArray):
        if dim not in x.dims:
            raise ShapeError(f"dim {dim!r} is not a dimension of {x.dims}")
        other = [d for d in x.dims if d != dim]
        x = x.transpose(dim, *other).values.reshape(x.sizes[dim], -1)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"dimensionality needs (samples, features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigurationError("dimensionality needs finite data (it holds NaN or Inf)")
    centred = x - x.mean(axis=0)
    eig = np.linalg.svd(centred, compute_uv=False) ** 2
    total = eig.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(eig) / total
    return int(np.searchsorted(cumulative, variance - 1e-12) + 1)


def align_time(*arrays: xr.DataArray, names: tuple[str, ...] | None = None) -> list[xr.DataArray]:
    """The arrays restricted to the first one's ``time`` values (numbers matched within
    :data:`TIME_TOLERANCE`), in its order and with its ``time`` coordinate.

    Every later array must hold all times of the first (they may hold more); a
    missing time is a :class:`~retcodec.errors.ShapeError` naming how many and
    which are missing.
    """
    names = names or tuple(f"array {i}" for i in range(len(arrays)))
    for array, name in zip(arrays, names):
        if not isinstance(array, xr.DataArray) or "time" not in array.dims:
            raise ShapeError(f"{name} must be a DataArray with a 'time' dimension, got "
                             f"{getattr(array, 'dims', type(array).__name__)}")
    reference = arrays[0]
    wanted = _time_values(reference)
    out = [reference]
    for array, name in zip(arrays[1:], names[1:]):
        have = _time_values(array)
        index = match_times(have, wanted, what=f"{name} (time)", reference=f"{names[0]}")
        out.append(array.isel(time=index).assign_coords(time=reference["time"]))
    return out


def _time_values(array: xr.DataArray) -> np.ndarray:
    if "time" in array.coords:
        return np.asarray(array["time"].values)
    return np.arange(array.sizes["time"])


def match_times(have: np.ndarray, wanted: np.ndarray, *, what: str = "the data",
                reference: str = "the reference") -> np.ndarray:
    """Positions in ``have`` of each of ``wanted`` (numbers within :data:`TIME_TOLERANCE`,
    other labels equal); a :class:`~retcodec.errors.ShapeError` lists missing ones."""
    have, wanted = np.asarray(have), np.asarray(wanted)
    if have.dtype.kind in "iuf" and wanted.dtype.kind in "iuf":
        order = np.argsort(have, kind="stable")
        sorted_have = have[order].astype(np.float64)
        pos = np.clip(np.searchsorted(sorted_have, wanted), 0, max(have.size - 1, 0))
        best = pos.copy()
        if have.size:
            left = np.clip(pos - 1, 0, have.size - 1)
            closer = np.abs(sorted_have[left] - wanted) < np.abs(sorted_have[pos] - wanted)
            best = np.where(closer, left, pos)
            found = np.abs(sorted_have[best] - wanted) <= TIME_TOLERANCE * np.maximum(1, np.abs(wanted))
        else:
            found = np.zeros(wanted.shape, dtype=bool)
        index = order[best] if have.size else best
    else:
        lookup = {v: i for i, v in enumerate(have.tolist())}
        found = np.array([v in lookup for v in wanted.tolist()], dtype=bool)
        index = np.array([lookup.get(v, 0) for v in wanted.tolist()], dtype=np.int64)
    if not found.all():
        missing = wanted[~found]
        raise ShapeError(f"{what} lacks {missing.size} of the {wanted.size} times of {reference} "
                         f"(first missing: {missing[:5].tolist()}); compute both on the same windows "
                         f"or select common times first")
    return index.astype(np.int64)


# =========================================================================== per layer
def _contribution(node: xr.Dataset) -> xr.DataArray:
    if "contribution" not in node:
        raise ShapeError(f"a layer node needs 'contribution (time, channel, sign)', it has "
                         f"{sorted(node.data_vars)}")
    contribution = node["contribution"]
    if set(contribution.dims) != {"time", "channel", "sign"}:
        raise ShapeError(f"contribution must have dims (time, channel, sign), got {contribution.dims}")
    signs = [str(s) for s in contribution["sign"].values] if "sign" in contribution.coords else []
    if sorted(signs) != ["neg", "pos"]:
        raise ShapeError(f"contribution needs a sign coordinate ['neg', 'pos'], got {signs}")
    return contribution.transpose("time", "channel", "sign")


def _as_dataset(node: Any) -> xr.Dataset:
    if isinstance(node, xr.DataTree):
        return node.to_dataset()
    if isinstance(node, xr.Dataset):
        return node
    raise ConfigurationError(f"expected a layer node (Dataset or DataTree node), got {type(node).__name__}")


def layer_sparsity(node: xr.Dataset | xr.DataTree) -> xr.Dataset:
    """Hoyer sparsity across channels of a layer's contributions and activations, per window.

    Per window (``time``), across the layer's channels, of:

    * ``contribution_sparsity``: the contribution magnitude ``|C⁻| + C⁺`` (the
      sum over the channel's units of ``|C_unit|``);
    * ``positive_sparsity`` / ``negative_sparsity``: ``C⁺`` / ``|C⁻|`` alone;
    * ``activation_sparsity``: ``|a|``, the absolute spatially summed
      activation (pre batch-norm, as stored), when the node has ``activation``.

    Parameters
    ----------
    node : a layer node with ``contribution (time, channel, sign)`` (sign
        ``["neg", "pos"]``) and optionally ``activation (time, channel)``.

    Returns
    -------
    xarray.Dataset with those ``(time)`` variables and their means over windows
    (``*_mean``; NaN windows, e.g. all-zero ones, left out).
    """
    ds = _as_dataset(node)
    contribution = _contribution(ds)
    pos = contribution.sel(sign="pos")
    neg = np.abs(contribution.sel(sign="neg"))
    series = {"contribution_sparsity": (pos + neg, "|C-| + C+"),
              "positive_sparsity": (pos, "C+"), "negative_sparsity": (neg, "|C-|")}
    if "activation" in ds:
        series["activation_sparsity"] = (np.abs(ds["activation"].transpose("time", "channel")),
                                         "|activation| (spatially summed, pre batch-norm)")
    out = xr.Dataset(coords={"time": contribution["time"]} if "time" in contribution.coords else None)
    for name, (values, what) in series.items():
        h = hoyer(values.drop_vars("sign", errors="ignore"), dim="channel")
        out[name] = h.assign_attrs(long_name=f"Hoyer sparsity across channels of {what}")
        out[f"{name}_mean"] = xr.DataArray(float(np.nanmean(h.values)) if np.isfinite(h.values).any()
                                           else np.nan,
                                           attrs={"long_name": f"mean over windows of {name}"})
    return out


def pos_neg_correlation(contribution: xr.DataArray) -> xr.DataArray:
    """Per channel, Pearson correlation across windows of ``C⁺`` and ``|C⁻|``.

    Parameters
    ----------
    contribution : ``(time, channel, sign)`` with sign ``["neg", "pos"]``.

    Returns
    -------
    ``DataArray (channel)``; NaN for a channel whose ``C⁺`` or ``C⁻`` is constant.
    """
    contribution = _contribution(xr.Dataset({"contribution": contribution}))
    pos = contribution.sel(sign="pos").values
    neg = np.abs(contribution.sel(sign="neg").values)
    coords = {"channel": contribution["channel"]} if "channel" in contribution.coords else None
    return xr.DataArray(pearson(pos, neg, axis=0), dims=("channel",), coords=coords,
                        name="pos_neg_correlation",
                        attrs={"long_name": "Pearson correlation across windows of C+ and |C-|"})


def layer_statistics(tree_or_node: xr.DataTree | xr.Dataset, variance: float = 0.95) -> xr.Dataset:
    """Sparsity, E/I correlation and dimensionality of every layer of a contributions tree.

    Parameters
    ----------
    tree_or_node : the DataTree of :func:`retcodec.engine.contributions.contributions`
        (every child with ``contribution`` is a layer, named by its node name),
        or one layer node (named by its ``layer`` attr).
    variance : variance share for the dimensionality.

    Returns
    -------
    xarray.Dataset
        Over ``layer`` (and ``time``, ``channel``):

        * ``contribution_sparsity``, ``positive_sparsity``, ``negative_sparsity``,
          ``activation_sparsity`` ``(layer, time)`` and their ``*_mean (layer)``
          (see :func:`layer_sparsity`);
        * ``pos_neg_correlation (layer, channel)`` (NaN-padded when layers have
          different channel counts) and ``pos_neg_correlation_mean (layer)``;
        * ``contribution_dimensionality (layer)``: PCs reaching ``variance`` of the
          contributions ``(time, channel × sign)``, and
          ``activation_dimensionality (layer)`` of the activations ``(time, channel)``;
        * ``n_channels (layer)``.
    """
    layers = _layer_nodes(tree_or_node)
    per_layer = [_one_layer(ds, variance).expand_dims(layer=[name]) for name, ds in layers.items()]
    out = xr.concat(per_layer, dim="layer", join="outer", data_vars="all", coords="different",
                    compat="equals")
    out.attrs = provenance_attrs({"variance": variance}, method="layer_statistics")
    return out


def _layer_nodes(tree_or_node: Any) -> dict[str, xr.Dataset]:
    if isinstance(tree_or_node, xr.DataTree):
        layers = {child.name: child.to_dataset() for child in tree_or_node.children.values()
                  if "contribution" in child.dataset}
        if not layers and "contribution" in tree_or_node.dataset:
            layers = {tree_or_node.name or tree_or_node.attrs.get("layer", "layer"):
                      tree_or_node.to_dataset()}
    elif isinstance(tree_or_node, xr.Dataset):
        layers = {str(tree_or_node.attrs.get("layer", "layer")): tree_or_node}
    else:
        raise ConfigurationError(f"expected a contributions DataTree or a layer Dataset, got "
                                 f"{type(tree_or_node).__name__}")
    if not layers:
        raise ShapeError("no layer node with a 'contribution' variable was found")
    return layers


def _one_layer(ds: xr.Dataset, variance: float) -> xr.Dataset:
    contribution = _contribution(ds)
    out = layer_sparsity(ds)
    correlation = pos_neg_correlation(contribution)
    out["pos_neg_correlation"] = correlation
    out["pos_neg_correlation_mean"] = xr.DataArray(
        float(np.nanmean(correlation.values)) if np.isfinite(correlation.values).any() else np.nan,
        attrs={"long_name": "mean over channels of pos_neg_correlation"})
    out["contribution_dimensionality"] = xr.DataArray(
        dimensionality(contribution.values.reshape(contribution.sizes["time"], -1), variance),
        attrs={"long_name": f"principal components reaching {variance:g} of the variance of the "
                            f"contributions (time, channel x sign)"})
    if "activation" in ds:
        activation = ds["activation"].transpose("time", "channel").values
        out["activation_dimensionality"] = xr.DataArray(
            dimensionality(activation, variance),
            attrs={"long_name": f"principal components reaching {variance:g} of the variance of the "
                                f"activations (time, channel)"})
    out["n_channels"] = xr.DataArray(contribution.sizes["channel"])
    return out
