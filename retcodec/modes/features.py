"""The feature matrix of one layer's (time, channel, sign) contribution."""
from __future__ import annotations

import numpy as np
import xarray as xr

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.modes.estimators import check_matrix, check_sign

__all__ = ["layer_matrix"]


def layer_matrix(contribution: xr.DataArray, sign: str = "pos"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature matrix of a ``(time, channel, sign)`` contribution.

    ``sign="pos"``: the ``C+`` columns, one per channel; ``sign="both"``: the
    magnitudes ``[|C-|, C+]`` (all ``neg`` channels, then all ``pos``). Returns
    ``X`` (time, features), and per feature its ``channel`` and ``sign`` labels.
    """
    check_sign(sign)
    if not isinstance(contribution, xr.DataArray):
        raise ShapeError(f"contribution must be an xarray.DataArray (time, channel, sign), "
                         f"got {type(contribution).__name__}")
    if set(contribution.dims) != {"time", "channel", "sign"}:
        raise ShapeError(f"contribution must have dims (time, channel, sign), "
                         f"got {contribution.dims}")
    C = contribution.transpose("time", "channel", "sign")
    labels = [str(s) for s in C["sign"].values] if "sign" in C.coords else []
    needed = ("neg", "pos") if sign == "both" else ("pos",)
    missing = [s for s in needed if s not in labels]
    if missing:
        raise ShapeError(f"sign={sign!r} needs sign coordinates {list(needed)}; "
                         f"the contribution has {labels}")
    pos = check_matrix(C.sel(sign="pos").values, nonneg=False, what="contribution 'pos'")
    if (pos < 0).any():
        raise ConfigurationError("the 'pos' part of the contribution has negative values: "
                                 "it must be C+ = max(C, 0)")
    channels = C["channel"].values
    if sign == "pos":
        return pos, channels.copy(), np.array(["pos"] * len(channels))
    neg = check_matrix(C.sel(sign="neg").values, nonneg=False, what="contribution 'neg'")
    if (neg > 0).any():
        raise ConfigurationError("the 'neg' part of the contribution has positive values: "
                                 "it must be C- = min(C, 0)")
    X = np.concatenate([-neg, pos], axis=1)
    return (X, np.concatenate([channels, channels]),
            np.array(["neg"] * len(channels) + ["pos"] * len(channels)))
