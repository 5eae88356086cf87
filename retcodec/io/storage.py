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

from retcodec.errors import OutputPathError

__all__ = ["atomic_path", "write_netcdf_atomic", "check_output_file", "check_output_folder"]


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


def _check_writable_dir(folder: Path, what: str) -> None:
    probe = folder / f".retcodec-write-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputPathError(f"{what}: cannot write into {folder} ({err.strerror or err}); "
                              f"choose a writable location") from None


def _existing_ancestor(path: Path, what: str) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{what}: {parent} is a file, so {path} cannot be created under it; "
                                      f"choose another path")
            return parent
    return Path.cwd()


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any computation, that ``path`` (``~`` expanded) can be written as a file.

    Refuses an existing folder, a parent that is a file, and a location that is not
    writable, with :class:`~retcodec.errors.OutputPathError`. Returns the expanded path.
    """
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name, e.g. {path / 'out.nc'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} exists and is read-only; choose another path")
    _check_writable_dir(_existing_ancestor(path.parent, what), what)
    return path


def check_output_folder(path: str | Path, what: str = "results folder") -> Path:
    """Check, before any computation, that ``path`` (``~`` expanded) can be used as a folder."""
    path = Path(os.path.expanduser(str(path)))
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file; give a folder")
    _check_writable_dir(_existing_ancestor(path, what), what)
    return path
