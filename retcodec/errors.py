"""Exceptions raised by retcodec.

Every error a user can trigger with bad input derives from :class:`RetcodecError`
and carries a message that says what is wrong and what to do about it. Each also
derives from the matching builtin (``ValueError``, ``FileNotFoundError``, ...)
so that generic handlers keep working.
"""
from __future__ import annotations

__all__ = ["RetcodecError", "WindowIndexError", "CheckpointError", "UnsafeCheckpointError", "UnknownModelTypeError",
           "RecordingError", "MissingDataError", "ShapeError", "NonFiniteError", "CellMismatchError",
           "ConfigurationError", "DeviceError", "CorruptCheckpointError", "InvalidModelError",
           "RecordingValueError", "FileInUseError", "UnreadableFileError", "BusyError", "OutputPathError"]


class RetcodecError(Exception):
    """Base class of all retcodec errors."""


class CheckpointError(RetcodecError, ValueError):
    """A model checkpoint cannot be read or does not match a known layout."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks to import something outside the allow-list (nothing was executed)."""


class UnknownModelTypeError(CheckpointError):
    """``model_type`` of a checkpoint is not one retcodec can rebuild."""


class RecordingError(RetcodecError, ValueError):
    """A recording file does not follow the published layout, or holds bad values."""


class MissingDataError(RetcodecError, FileNotFoundError):
    """A file, group or bundled resource that is needed does not exist."""


class ShapeError(RetcodecError, ValueError):
    """An array has the wrong shape for the operation."""


class NonFiniteError(RetcodecError, ValueError):
    """An array that must be finite holds NaN or Inf."""


class CellMismatchError(RetcodecError, ValueError):
    """Cells requested or implied by a model do not match those of a recording."""


class ConfigurationError(RetcodecError, ValueError):
    """An argument combination or option value is not valid."""


class BusyError(RetcodecError, RuntimeError):
    """A results folder or output file is in use by another retcodec process."""


class OutputPathError(RetcodecError, ValueError):
    """An output path cannot be written (a folder where a file is expected, read-only, ...)."""


class DeviceError(ConfigurationError):
    """A requested torch device is unknown or not available on this machine."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's bytes are damaged: truncated, empty, or a zip checksum (CRC-32) fails."""


class InvalidModelError(CheckpointError):
    """A checkpoint reads but holds values no trained model can have (NaN weights, a negative
    batch-norm variance, receptive-field centres outside the image, an out-of-range pruned channel)."""


class RecordingValueError(RecordingError):
    """A recording or interneuron file holds values of the wrong kind or outside their plausible range."""


class FileInUseError(RetcodecError, OSError):
    """A file is locked by another process (e.g. an HDF5 file open for writing elsewhere)."""


class UnreadableFileError(RetcodecError, PermissionError):
    """A file exists but this process may not read it, or it is not a regular file."""


class WindowIndexError(RetcodecError, IndexError):
    """A window index out of range or of the wrong kind (an ``IndexError``, so iteration still ends)."""
