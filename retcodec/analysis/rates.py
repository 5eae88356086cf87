"""The model's own rates, as stored with the contributions."""
from __future__ import annotations

import xarray as xr

from retcodec.errors import MissingDataError

__all__ = ["model_rates"]


def model_rates(contributions: xr.DataTree) -> xr.DataArray:
    """The model's rates ``(time, cell)`` (Hz) stored at the root of a contributions tree."""
    root = contributions.to_dataset()
    if "output" not in root:
        raise MissingDataError("the contributions lack the model output ('output'); recompute them")
    return root["output"].load().rename("model_rate")
