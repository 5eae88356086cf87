"""Plain-words descriptions of modes and filters (channels of a mode, IRF polarity) for scripts and tables."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

__all__ = ["ONSET_WINDOW", "image_onsets", "onset_ratio", "describe_filter", "mode_channels",
           "generate_hypotheses"]

ONSET_WINDOW = 0.15          # s after an image change counted as "at onsets"


def image_onsets(stimulus: xr.DataArray, fraction: float = 0.5) -> np.ndarray:
    """Times (s) of abrupt image changes (new image or saccade).

    A frame is an onset when its mean |Δ intensity| from the previous frame
    exceeds ``fraction`` of the stimulus's mean absolute deviation, i.e. the
    change is comparable to the image contrast itself; fixational drift moves
    far less.
    """
    s = np.asarray(stimulus.values, np.float32)
    d = np.abs(np.diff(s, axis=0)).mean(axis=(1, 2))
    threshold = fraction * np.abs(s - s.mean()).mean()
    idx = np.flatnonzero(d > threshold) + 1
    return stimulus["time"].values[idx]


def onset_ratio(loadings: xr.DataArray, onsets: np.ndarray, window: float = ONSET_WINDOW) -> np.ndarray:
    """Per mode: mean loading within ``window`` s after an onset / mean loading elsewhere."""
    t = loadings["time"].values
    near = np.zeros(t.size, bool)
    for o in onsets:
        near |= (t >= o) & (t < o + window)
    z = loadings.transpose("time", "mode").values
    if near.all() or not near.any():
        return np.full(z.shape[1], np.nan)
    inside, outside = z[near].mean(axis=0), z[~near].mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(outside > 0, inside / outside, np.inf)


def describe_filter(spatial: np.ndarray, temporal: np.ndarray, lags: np.ndarray) -> str:
    """'ON centre at (r, c) px, peak 50 ms' from a rank-1 pair (sign: see :func:`retcodec.rank1`)."""
    if not (np.isfinite(spatial).all() and np.isfinite(temporal).all()):
        return "no IRF (cell silent)"
    r, c = np.unravel_index(np.argmax(np.abs(spatial)), spatial.shape)
    k = int(np.argmax(np.abs(temporal)))
    polarity = np.sign(spatial[r, c]) * np.sign(temporal[k])
    kind = "ON" if polarity > 0 else "OFF"
    return f"{kind} centre at ({r}, {c}) px, peak {lags[k] * 1000:.0f} ms before the response"


def mode_channels(modes: xr.DataArray, mode: int, frac: float = 0.5) -> list[str]:
    """Channels whose dictionary weight is at least ``frac`` of the mode's largest, as 'c+'/'c-'."""
    m = modes.sel(mode=mode)
    out = []
    vals = np.abs(m.transpose("channel", "sign").values)
    top = vals.max()
    for ci, ch in enumerate(m["channel"].values):
        for si, sg in enumerate(m["sign"].values):
            if top > 0 and vals[ci, si] >= frac * top:
                out.append(f"{int(ch)}{'+' if sg == 'pos' else '-'}")
    return out


def generate_hypotheses(layer: str, modes: xr.Dataset, types: xr.Dataset, irfs: xr.Dataset | None,
                        onsets: np.ndarray | None, true_types: Sequence[str] | None,
                        n_modes: int = 3, min_corr: float = 0.3) -> list[str]:
    """Testable statements about the strongest modes of one layer."""
    corr = types["correlation"]                        # (cell, mode)
    clusters = types["cluster"].values
    ratio = onset_ratio(modes["loadings"], onsets) if onsets is not None and len(onsets) else None
    lines = []
    for mode in modes["mode"].values[:n_modes]:
        c = corr.sel(mode=mode).values
        cells = corr["cell"].values[c >= min_corr]
        if not len(cells):
            continue
        order = np.argsort(-c[c >= min_corr])
        cells = cells[order]
        chans = ", ".join(mode_channels(modes["modes"], int(mode)))
        idx = [int(np.flatnonzero(corr["cell"].values == k)[0]) for k in cells]
        cl = sorted({int(clusters[i]) for i in idx})
        s = (f"Mode {int(mode)} of {layer} (channels {chans}) drives cell"
             f"{'s' if len(cells) > 1 else ''} {', '.join(str(int(k)) for k in cells[:6])}"
             f" (r up to {c.max():.2f}; cluster{'s' if len(cl) > 1 else ''} {', '.join(map(str, cl))}")
        if true_types is not None:
            tt = sorted({str(true_types[i]) for i in idx})
            s += f"; true type{'s' if len(tt) > 1 else ''} {', '.join(tt)}"
        s += ")"
        if ratio is not None and np.isfinite(ratio[int(np.flatnonzero(modes['mode'].values == mode)[0])]):
            rr = ratio[int(np.flatnonzero(modes["mode"].values == mode)[0])]
            s += (f"; it is {rr:.1f}x more active in the {ONSET_WINDOW * 1000:.0f} ms after image changes"
                  if rr >= 1.5 else f"; its activity is not tied to image changes ({rr:.1f}x)")
        if irfs is not None and "spatial" in irfs and str(mode) in [str(x) for x in irfs["combination"].values]:
            best = int(cells[0])
            if best in irfs["cell"].values:
                sp = irfs["spatial"].sel(combination=str(mode), cell=best).values
                tp = irfs["temporal"].sel(combination=str(mode), cell=best).values
                s += f"; when it acts alone the IRF of cell {best} is an {describe_filter(sp, tp, irfs['lag'].values)}"
        s += (". Test: perturb the interneurons that match these channels and expect the listed cells' "
              "responses to change at those moments.")
        lines.append(s)
    return lines
