"""What a silencing or prediction call accepts as input: windows, their times and the model's cell ids."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from retcodec.errors import ConfigurationError
from retcodec.io.validation import check_input_dtype

__all__ = ["model_input"]


def model_input(model: nn.Module, data: Any) -> tuple[Any, np.ndarray, str, np.ndarray]:
    """``(windows, time, time units, cell ids)`` of the inputs :func:`retcodec.predict` accepts."""
    import xarray as xr

    from retcodec.io.recordings import windows as make_windows

    cells = _model_cells(model)
    if isinstance(data, xr.Dataset):
        meta = getattr(model, "meta", {}) or {}
        history = int(getattr(model, "img_shape", (40,))[0])
        if "cell" in data.coords and data.sizes["cell"] == len(cells):
            cells = data["cell"].values
        data = make_windows(data, norm_stats=meta.get("norm_stats"), history=history)
    if isinstance(data, xr.DataArray):
        if "time" in data.coords:
            return data.values, data["time"].values, "s", cells
        return data.values, np.arange(data.shape[0]), "window index", cells
    if isinstance(data, (np.ndarray, torch.Tensor)):
        check_input_dtype(data, "windows")
        return data, np.arange(data.shape[0]), "window index", cells
    if all(hasattr(data, a) for a in ("__len__", "__getitem__", "time")):
        got = getattr(data, "cells", None)
        if got is not None and len(got) == len(cells):
            cells = np.asarray(got)
        return data, np.asarray(data.time), "s", cells
    raise ConfigurationError(f"silence needs windows as an array (n, history, y, x), a "
                             f"retcodec Windows or a recording Dataset, got {type(data).__name__}")


def _model_cells(model: nn.Module) -> np.ndarray:
    cells = (getattr(model, "meta", {}) or {}).get("cells")
    if cells is None or isinstance(cells, str):
        n = getattr(model, "n_cells", None)
        return np.arange(int(n)) if n is not None else np.zeros(0, dtype=np.int64)
    return np.asarray(cells, dtype=np.int64)
