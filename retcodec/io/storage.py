"""Atomic file output: a reader never sees a half-written result.

``with atomic_path(final) as tmp:`` yields a temporary path next to ``final``;
write to it, and on a clean exit it is renamed onto ``final`` (``os.replace`` is
atomic on one file system). On an exception the temporary file is removed and
``final`` is untouched.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_netcdf_atomic(obj, path: str | Path, **kwargs) -> Path:
    """Write an ``xarray`` Dataset or DataTree to netCDF4/HDF5 (h5netcdf) atomically."""
    path = Path(path)
    kwargs.setdefault("engine", "h5netcdf")
    with atomic_path(path) as tmp:
        obj.to_netcdf(tmp, **kwargs)
    return path
