"""Atomic file output: a reader never sees a half-written result.

``with atomic_path(final) as tmp:`` yields a temporary path next to ``final``;
write to it, and on a clean exit it is renamed onto ``final`` (``os.replace`` is
atomic on one file system). On an exception the temporary file is removed and
``final`` is untouched.
"""
from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Iterator

from retcodec.errors import OutputPathError, RetcodecError
from retcodec.io.paths import check_not_in_package, user_path

__all__ = ["atomic_path", "write_netcdf_atomic", "check_output_file", "check_output_folder",
           "is_retcodec_file", "write_error"]


def write_error(path: Path, err: OSError) -> OutputPathError:
    """A failed write (full disk, permissions, a file where a folder is needed) as what to fix."""
    reason = err.strerror or str(err) or type(err).__name__
    hint = ("free some space or write elsewhere" if getattr(err, "errno", None) == errno.ENOSPC
            or "space" in str(err).lower() else "choose a writable location")
    return OutputPathError(f"cannot write {path}: {reason}; {hint}. Nothing was replaced")


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``final``, renamed onto it on a clean exit.

    An existing folder at ``final``, a parent that is a file, the package folder and
    OS errors while writing (a full disk) raise :class:`OutputPathError`; ``final`` is
    then untouched and the temporary file removed.
    """
    final = user_path(final, "output file")
    check_not_in_package(final, "output file")
    if final.is_dir():
        raise OutputPathError(f"output file {final} is a folder; give a file name, e.g. {final / 'out.nc'}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"cannot create the folder of {final} ({err.strerror or err}): a file is in "
                              f"the way or it is not writable; choose another path") from None
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except RetcodecError:
        raise
    except OSError as err:
        raise write_error(final, err) from err
    finally:
        with contextlib.suppress(OSError):
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


def check_output_file(path: str | Path, what: str = "output file", own_only: bool = False) -> Path:
    """Check, before any computation, that ``path`` (``~`` expanded) can be written as a file.

    Refuses an existing folder, a parent that is a file, a location that is not
    writable, one inside the retcodec package, control characters in the path and, with
    ``own_only``, an existing file that retcodec did not write, with
    :class:`~retcodec.errors.OutputPathError`. Returns the expanded path.
    """
    path = user_path(path, what)
    check_not_in_package(path, what)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name, e.g. {path / 'out.nc'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} exists and is read-only; choose another path")
    if own_only and path.exists() and not is_retcodec_file(path):
        raise OutputPathError(f"{what} {path} exists and was not written by retcodec (no retcodec_version "
                              f"attribute); retcodec replaces only its own results. Move it or choose "
                              f"another name")
    _check_writable_dir(_existing_ancestor(path.parent, what), what)
    return path


def is_retcodec_file(path: Path) -> bool:
    """Whether ``path`` is an HDF5/netCDF4 file whose root carries retcodec's provenance."""
    try:
        import h5py
        with h5py.File(path, "r") as f:          # the root, or a group of a DataTree (one per layer)
            return "retcodec_version" in f.attrs or any(
                isinstance(g, h5py.Group) and "retcodec_version" in g.attrs for g in f.values())
    except Exception:          # not HDF5, unreadable, ...: not provably ours
        return False


def check_output_folder(path: str | Path, what: str = "results folder") -> Path:
    """Check, before any computation, that ``path`` (``~`` expanded) can be used as a folder."""
    path = user_path(path, what)
    check_not_in_package(path, what)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file; give a folder")
    _check_writable_dir(_existing_ancestor(path, what), what)
    return path
