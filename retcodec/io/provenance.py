"""Provenance attributes: versions, checksums and run parameters for every output."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any, Mapping

from retcodec._version import __version__

__all__ = ["versions", "sha256", "provenance_attrs", "to_attr"]


def versions() -> dict[str, str]:
    """Versions of retcodec and of the libraries whose numbers it reports."""
    import h5py
    import numpy
    import scipy
    import sklearn
    import torch
    import xarray
    return {"retcodec": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "xarray": xarray.__version__, "h5py": h5py.__version__,
            "scikit_learn": sklearn.__version__, "python": platform.python_version()}


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance_attrs(params: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """netCDF-safe attrs: ``retcodec_version``, library versions, time, and params as JSON."""
    attrs: dict[str, Any] = {"retcodec_version": __version__,
                             "versions": json.dumps(versions()),
                             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if params:
        attrs["parameters"] = json.dumps(dict(params), default=str, sort_keys=True)
    for k, v in extra.items():
        attrs[k] = to_attr(v)
    return attrs


def to_attr(value: Any) -> Any:
    """A value netCDF attributes can hold (str, number, or 1-D numeric list); else JSON."""
    if value is None:
        return "None"
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    try:
        import numpy as np
        arr = np.asarray(value)
        if arr.ndim == 1 and arr.dtype.kind in "iuf" and arr.size:
            return arr
    except Exception:  # noqa: BLE001 - fall through to JSON
        pass
    return json.dumps(value, default=str, sort_keys=True)
