"""Contributions vs activations across layers (the paper's Fig. 3), with intervals over windows.

:func:`layer_trends` measures, per layer, for contributions and activations:

* ``sparsity``: the median over windows of the Hoyer sparsity across channels
  (contributions: ``|C-| + C+`` per channel; activations: ``|a|``, both summed
  over space), see :func:`~retcodec.analysis.statistics.layer_sparsity`;
* ``ei_correlation``: the mean over channels of the Pearson correlation across
  windows of ``C+`` and ``|C-|`` (contributions only: a spatially summed
  activation has no E/I split);
* ``dimensionality``: principal components reaching 95 % of the variance
  (contributions ``(time, channel x sign)``, activations ``(time, channel)``).

Intervals come from a block bootstrap over windows (contiguous blocks, since
neighbouring windows overlap). :func:`paper_trend_notes` says, in sentences,
where these results agree with the trends the paper reports for an ImageNet
classifier (contributions sparser than activations at every layer; sparsity
and dimensionality rising and E/I correlation falling with depth; contributions
of higher dimensionality than activations) and where they differ, judging
only differences whose intervals do not overlap.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import xarray as xr

from retcodec.analysis.metrics import pearson
from retcodec.analysis.statistics import dimensionality, hoyer
from retcodec.analysis.uncertainty import LEVEL, N_BOOT, N_BOOT_BLOCKS, block_bootstrap
from retcodec.errors import ShapeError
from retcodec.io.provenance import provenance_attrs

__all__ = ["layer_trends", "paper_trend_notes", "QUANTITIES", "SOURCES"]

#: the measured quantities, in plotting order
QUANTITIES = ("sparsity", "ei_correlation", "dimensionality")
#: what each quantity is measured on
SOURCES = ("contributions", "activations")
_LABELS = {"sparsity": "Hoyer sparsity across channels (median over windows)",
           "ei_correlation": "correlation of C+ and |C-| over windows (mean over channels)",
           "dimensionality": "principal components reaching 95 % of the variance"}


def _series(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The per-layer arrays the quantities are computed from (time first)."""
    if "contribution" not in ds:
        raise ShapeError(f"a layer node needs 'contribution (time, channel, sign)', it has {sorted(ds.data_vars)}")
    c = ds["contribution"].transpose("time", "channel", "sign")
    out = {"pos": c.sel(sign="pos").values.astype(float), "neg": np.abs(c.sel(sign="neg").values.astype(float)),
           "contribution": c.values.reshape(c.sizes["time"], -1).astype(float)}
    if "activation" in ds:
        out["activation"] = ds["activation"].transpose("time", "channel").values.astype(float)
    return out


def _statistics(s: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``(quantity, source)`` values on the windows ``rows``."""
    pos, neg = s["pos"][rows], s["neg"][rows]
    out = np.full((len(QUANTITIES), len(SOURCES)), np.nan)
    h = hoyer(pos + neg)
    out[0, 0] = np.nanmedian(h) if np.isfinite(h).any() else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        r = pearson(pos, neg, axis=0)
    out[1, 0] = float(np.nanmean(r)) if np.isfinite(r).any() else np.nan
    out[2, 0] = dimensionality(s["contribution"][rows])
    if "activation" in s:
        a = s["activation"][rows]
        h = hoyer(np.abs(a))
        out[0, 1] = np.nanmedian(h) if np.isfinite(h).any() else np.nan
        out[2, 1] = dimensionality(a)
    return out


def layer_trends(tree: xr.DataTree | dict[str, xr.Dataset], n_boot: int = N_BOOT,
                 n_blocks: int = N_BOOT_BLOCKS, level: float = LEVEL, random_state: int = 0) -> xr.Dataset:
    """Sparsity, E/I correlation and dimensionality per layer, contributions vs activations.

    Parameters
    ----------
    tree : the contributions DataTree (every child with ``contribution`` is a
        layer) or a mapping layer -> layer Dataset; all layers on the same windows.
    n_boot, n_blocks, level : block bootstrap over windows: resamples,
        contiguous blocks, interval coverage. Every layer is resampled with the
        same windows, so differences between layers are paired.

    Returns
    -------
    xarray.Dataset
        - ``trend (layer, quantity, source)``: the estimate on all windows, with
          ``trend_low`` / ``trend_high`` (percentile interval);
        - ``contrast (layer, quantity)``: contributions minus activations (paired),
          with ``contrast_low`` / ``contrast_high``;
        - ``depth_change (quantity, source)``: last layer minus first, with
          ``depth_change_low`` / ``depth_change_high``;
        - ``n_windows``.

        NaN where a quantity does not apply (E/I correlation of activations) or a
        layer has no activations.
    """
    if isinstance(tree, xr.DataTree):
        nodes = {name: child.to_dataset() for name, child in tree.children.items()
                 if "contribution" in child.dataset}
    else:
        nodes = dict(tree)
    if not nodes:
        raise ShapeError("layer_trends found no layer with a 'contribution' variable")
    series = {layer: _series(ds) for layer, ds in nodes.items()}
    sizes = {layer: s["pos"].shape[0] for layer, s in series.items()}
    n = min(sizes.values())
    if len(set(sizes.values())) != 1:
        raise ShapeError(f"layers hold different numbers of windows {sizes}; compute them on the same windows")
    if n < 4:
        raise ShapeError(f"the layers hold {n} windows; intervals need at least 4")
    index = block_bootstrap(n, n_boot, min(n_blocks, n // 2), random_state)
    est = np.stack([_statistics(s, np.arange(n)) for s in series.values()])        # (layer, q, source)
    draws = np.stack([np.stack([_statistics(s, rows) for s in series.values()]) for rows in index])
    contrast_est = est[..., 0] - est[..., 1]
    depth_est = est[-1] - est[0]
    tail = (1 - level) / 2

    def interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _nanquantile(values, tail), _nanquantile(values, 1 - tail)

    low, high = interval(draws)
    c_low, c_high = interval(draws[..., 0] - draws[..., 1])
    d_low, d_high = interval(draws[:, -1] - draws[:, 0])
    dims = ("layer", "quantity", "source")
    coords = {"layer": list(nodes), "quantity": list(QUANTITIES), "source": list(SOURCES),
              "quantity_label": ("quantity", [_LABELS[q] for q in QUANTITIES])}
    bound = f"{level:.0%} block-bootstrap interval"
    return xr.Dataset(
        {"trend": (dims, est, {"long_name": "estimate on all windows"}),
         "trend_low": (dims, low, {"long_name": f"{bound}, low"}),
         "trend_high": (dims, high, {"long_name": f"{bound}, high"}),
         "contrast": (("layer", "quantity"), contrast_est, {"long_name": "contributions - activations"}),
         "contrast_low": (("layer", "quantity"), c_low, {"long_name": f"{bound}, low"}),
         "contrast_high": (("layer", "quantity"), c_high, {"long_name": f"{bound}, high"}),
         "depth_change": (("quantity", "source"), depth_est, {"long_name": "last layer - first layer"}),
         "depth_change_low": (("quantity", "source"), d_low, {"long_name": f"{bound}, low"}),
         "depth_change_high": (("quantity", "source"), d_high, {"long_name": f"{bound}, high"}),
         "n_windows": ((), n)},
        coords=coords,
        attrs=provenance_attrs({"n_boot": n_boot, "n_blocks": n_blocks, "level": level,
                                "random_state": random_state}, method="layer_trends",
                               interval="percentile block bootstrap over windows (paired across layers)"))


def _nanquantile(draws: np.ndarray, q: float) -> np.ndarray:
    finite = np.isfinite(draws).any(axis=0)
    out = np.full(draws.shape[1:], np.nan)
    out[finite] = np.nanquantile(draws[:, finite], q, axis=0)
    return out


def _sign(value: float, low: float, high: float) -> int:
    """+1 / -1 where the interval lies above / below 0, 0 where it holds 0 (or is NaN)."""
    if not np.isfinite([value, low, high]).all():
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def _number(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"


def _value(trends: xr.Dataset, **where: Any) -> str:
    v = trends.sel(where)
    return f"{_number(float(v['trend']))} [{_number(float(v['trend_low']))}, {_number(float(v['trend_high']))}]"


def _verdict(sign: int, same: str, other: str, none: str) -> tuple[str, bool | None]:
    return (same, True) if sign > 0 else (other, False) if sign < 0 else (none, None)


def paper_trend_notes(trends: xr.Dataset) -> list[tuple[str, bool | None]]:
    """Sentences comparing ``trends`` (of :func:`layer_trends`) with the paper's ImageNet trends.

    Returns ``(sentence, agrees)`` pairs: ``agrees`` is True where the result
    follows the paper's trend, False where it goes the other way (the paired
    interval of the difference excludes 0), None where it holds 0 (no
    difference shown).
    """
    layers = [str(v) for v in trends["layer"].values]
    notes: list[tuple[str, bool | None]] = []
    for quantity, claim in (("sparsity", "contributions sparser than activations"),
                            ("dimensionality", "contributions of higher dimensionality than activations")):
        for layer in layers:
            c = trends.sel(layer=layer, quantity=quantity)
            if not np.isfinite(float(c["contrast"])):
                continue
            sign = _sign(float(c["contrast"]), float(c["contrast_low"]), float(c["contrast_high"]))
            text, agrees = _verdict(sign, "the same here", "here it is the other way round",
                                    "here the difference is not resolved (its interval holds 0)")
            mine = _value(trends, layer=layer, quantity=quantity, source="contributions")
            other = _value(trends, layer=layer, quantity=quantity, source="activations")
            notes.append((f"{layer}: {quantity} of contributions {mine} vs activations {other}; "
                          f"the paper (ImageNet) finds {claim} at every layer: {text} (difference "
                          f"{float(c['contrast']):+.2f} [{float(c['contrast_low']):+.2f}, "
                          f"{float(c['contrast_high']):+.2f}]).", agrees))
    if len(layers) >= 2:
        first, last = layers[0], layers[-1]
        for quantity, direction, word in (("sparsity", 1, "rises"), ("ei_correlation", -1, "falls"),
                                          ("dimensionality", 1, "rises")):
            d = trends.sel(quantity=quantity, source="contributions")
            sign = direction * _sign(float(d["depth_change"]), float(d["depth_change_low"]),
                                     float(d["depth_change_high"]))
            text, agrees = _verdict(sign, "the same here", "here it goes the other way",
                                    "here the change is not resolved (its interval holds 0)")
            label = "E/I correlation" if quantity == "ei_correlation" else quantity
            before = _value(trends, layer=first, quantity=quantity, source="contributions")
            after = _value(trends, layer=last, quantity=quantity, source="contributions")
            notes.append((f"{label} of contributions, {first} {before} to {last} {after}; "
                          f"the paper finds that it {word} with depth: {text}.", agrees))
    return notes
