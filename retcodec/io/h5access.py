"""Reading HDF5 recording files safely: opening, dataset look-up, reads, and a lazy array.

Every h5py failure becomes a specific :class:`~retcodec.errors.RetcodecError`
(:func:`h5_open_error`); datasets are looked up with :func:`require_dataset`,
which refuses links and storage outside the file. Used by
:mod:`retcodec.io.recordings` and :mod:`retcodec.io.interneurons`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from xarray.backends import BackendArray, CachingFileManager
from xarray.core import indexing

from retcodec.errors import FileInUseError, RecordingError, RecordingValueError, UnreadableFileError

__all__ = ["LAYOUT", "H5LazyArray", "open_h5", "h5_open_error", "require_dataset", "read_values",
           "read_rows"]

#: the layout of a recording file, quoted in errors about its structure
LAYOUT = ("expected layout: <split>/stimulus (T, 50, 50), <split>/time (T,), "
          "<split>/response/firing_rate_10ms (n_cells, T), "
          "<split>/response/binned (n_cells, T), optional test/repeats/cellNN "
          "(n_repeats, T) for split in train, test (docs/formats.md)")


# --------------------------------------------------------------------------- lazy h5 array
class H5LazyArray(BackendArray):
    """One HDF5 dataset, read on indexing through an xarray file manager.

    Reads go through ``CachingFileManager`` (read-only h5py file), so the array
    pickles and a closed file is reopened on the next read.
    """

    def __init__(self, manager: CachingFileManager, name: str,
                 shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.manager, self.name = manager, name
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self.read_values)

    def read_values(self, key: tuple) -> np.ndarray:
        try:
            with self.manager.acquire_context() as h5:
                return np.asarray(h5[self.name][key])
        except OSError as exc:
            raise h5_open_error(f"'{self.name}' of the recording file", exc) from exc


# --------------------------------------------------------------------------- files and datasets
def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only; a non-HDF5 or truncated file is a RecordingError."""
    if not path.is_file():
        raise UnreadableFileError(f"{path} is not a regular file (a FIFO, device or socket); "
                                  f"pass the .h5 file itself")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise h5_open_error(str(path), exc) from exc


def h5_open_error(what: str, exc: OSError) -> Exception:
    """The retcodec error for an ``OSError`` of h5py opening or reading ``what``.

    A file locked by another process (HDF5 file locking, errno 11) is a
    :class:`FileInUseError`; missing read permission an :class:`UnreadableFileError`;
    anything else a :class:`RecordingError` for a truncated or corrupt file.
    """
    text = str(exc)
    if "filter" in text.lower() and ("not registered" in text.lower() or "can't open" in text.lower()
                                     or "not available" in text.lower()):
        return RecordingError(
            f"{what} is compressed with an HDF5 filter this installation lacks ({text}); install the "
            f"filter plugins (pip install hdf5plugin, then import hdf5plugin) or re-export the file "
            f"with gzip compression")
    if "unable to lock" in text.lower() or "already open" in text.lower():
        return FileInUseError(
            f"{what} is in use by another process (the HDF5 file is locked: {text}); wait until "
            f"that process (a run still writing it, an open notebook) has closed the file, then "
            f"retry. Only if the file system cannot lock at all, set HDF5_USE_FILE_LOCKING=FALSE")
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == 13 \
            or "permission denied" in text.lower():
        return UnreadableFileError(f"{what} cannot be read: permission denied ({text}); fix its "
                                   f"permissions (e.g. chmod u+r) or copy it somewhere readable")
    return RecordingError(
        f"{what} cannot be opened as HDF5 ({text}); the file is truncated, corrupt "
        f"or not a recording. Copy it again.")


def require_dataset(h5: h5py.File, name: str, source: Path, layout: str = LAYOUT) -> h5py.Dataset:
    """The dataset ``name`` of ``h5``; a RecordingError naming it if missing.

    Links to other files, and datasets whose bytes live outside the file
    (external storage, virtual datasets), are refused: a recording is read
    from its own file only.
    """
    _check_internal_links(h5, name, source)
    obj = h5.get(name)
    if not isinstance(obj, h5py.Dataset):
        what = "is a group, not a dataset" if obj is not None else "is missing"
        raise RecordingError(f"{source}: '{name}' {what}; {layout}")
    if obj.external or obj.is_virtual:
        kind = (f"external storage in {obj.external[0][0]!s:.80}" if obj.external
                else "a virtual dataset over other files")
        raise RecordingValueError(
            f"{source}: '{name}' keeps its data outside the file ({kind}); retcodec reads a "
            f"recording from its own file only. Re-export it with the data inside the file "
            f"(e.g. h5repack)")
    return obj


def _check_internal_links(h5: h5py.File, name: str, source: Path) -> None:
    """Refuse external links on the way to ``name`` (they would open other files)."""
    group: Any = h5
    parts = [p for p in name.split("/") if p]
    for i, part in enumerate(parts):
        if not isinstance(group, h5py.Group) or part not in group:
            return
        link = group.get(part, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise RecordingValueError(
                f"{source}: '{'/'.join(parts[:i + 1])}' is a link to another file "
                f"({link.filename}:{link.path}); retcodec reads a recording from its own file only. "
                f"Copy the data into the file (e.g. h5repack) instead of linking it")
        group = group.get(part)


def read_values(dset: h5py.Dataset, key: Any = ()) -> np.ndarray:
    """``dset[key]`` with HDF5 read failures turned into RecordingError."""
    try:
        return np.asarray(dset[key])
    except OSError as exc:
        raise h5_open_error(f"'{dset.name}' of {dset.file.filename}", exc) from exc


def read_rows(dset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (any order) of a 2-D dataset, reading only those rows."""
    if rows.size == dset.shape[0] and np.array_equal(rows, np.arange(dset.shape[0])):
        return read_values(dset)
    order = np.argsort(rows)
    out = read_values(dset, (rows[order].tolist(), slice(None)))
    return out[np.argsort(order)]
