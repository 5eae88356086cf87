"""Safe reading of Baccus-lab checkpoint files (``torch.save`` dicts).

:func:`load_checkpoint` never runs code from the file: it reads it with
``torch.load(path, map_location="cpu", weights_only=True)``, whose unpickler
only builds tensors, plain Python containers and the globals of an explicit
allow-list. Both serializations are read: the zip format (torch >= 1.6) and
the legacy pre-1.6 stream (``_use_new_zipfile_serialization=False``), which
the 2020 published models may use. Only pickle protocol 2 (what ``torch.save``
writes) is supported by torch's safe unpickler; a file written with protocol
4 or 5 raises :class:`~retcodec.errors.CheckpointError`.

Allow-list (on top of torch's own safe set: tensors, storages, ``torch.Size``,
``torch.device``, ``collections.OrderedDict``, ``collections.Counter``,
``builtins.set``, ``builtins.bytearray``, ``builtins.complex``,
``_codecs.encode``):

==========================================  =========================================
dotted name in the pickle                    what it rebuilds
==========================================  =========================================
``numpy.core.multiarray.scalar``            numpy scalars (``np.float32`` norm stats)
``numpy._core.multiarray.scalar``           same, numpy >= 2 name
``numpy.core.multiarray._reconstruct``      ``ndarray`` (e.g. ``centers``)
``numpy._core.multiarray._reconstruct``     same, numpy >= 2 name
``numpy.core.numeric._frombuffer``          ``ndarray`` from a buffer
``numpy._core.numeric._frombuffer``         same, numpy >= 2 name
``numpy.ndarray``, ``numpy.dtype``          array and dtype objects
``numpy.dtypes.<Kind>DType``                dtype classes of bool, integer, float,
                                            complex, str, bytes, datetime64 and
                                            timedelta64 dtypes (not object, void or
                                            variable-width string)
``numpy.<scalar type>``                     e.g. ``numpy.float32``, ``numpy.int64``,
                                            ``numpy.bool_`` / ``numpy.bool``
``builtins.frozenset``                      frozen sets
==========================================  =========================================

Anything else (``os.system``, ``builtins.exec``, arbitrary classes) makes
:func:`load_checkpoint` raise :class:`~retcodec.errors.UnsafeCheckpointError`
naming the offending globals; nothing from the file has run at that point.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import torch

from retcodec.errors import CheckpointError, MissingDataError, UnsafeCheckpointError

CHECKPOINT_SUFFIXES = (".p", ".pt", ".pth")
_EPOCH_FILE = re.compile(r"_epoch_(\d+)\.(?:p|pt|pth)$")
#: what torch's safe unpickler names when it refuses a global or a class to build
_TORCH_REFUSAL_IN_MESSAGE = re.compile(r"GLOBAL (\S+)|but got <class '([^']+)'>")
#: dtype classes left out of the allow-list: they can carry arbitrary Python objects
_EXCLUDED_DTYPES = ("ObjectDType", "VoidDType", "StringDType")
#: numpy scalar types the allow-list names (numpy-1 aliases added below)
_SCALAR_TYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                 np.uint32, np.uint64, np.float16, np.float32, np.float64, np.longdouble,
                 np.complex64, np.complex128, np.str_, np.bytes_, np.datetime64, np.timedelta64)


# --------------------------------------------------------------------------- allow-list
def allowed_globals() -> dict[str, Any]:
    """The allow-list: dotted name (as written in a pickle) -> the object it stands for.

    Names of numpy 1 (``numpy.core...``) and numpy 2 (``numpy._core...``) map to
    the same objects of the installed numpy, so files pickled under either load.
    """
    core = np._core  # numpy >= 2 (the package requires numpy 2 at run time)
    names: dict[str, Any] = {}
    for package in ("numpy.core", "numpy._core"):
        names[f"{package}.multiarray.scalar"] = core.multiarray.scalar
        names[f"{package}.multiarray._reconstruct"] = core.multiarray._reconstruct
        names[f"{package}.numeric._frombuffer"] = core.numeric._frombuffer
    names["numpy.ndarray"] = np.ndarray
    names["numpy.dtype"] = np.dtype
    for attr in dir(np.dtypes):
        if attr.endswith("DType") and attr not in _EXCLUDED_DTYPES:
            names[f"numpy.dtypes.{attr}"] = getattr(np.dtypes, attr)
    for scalar_type in _SCALAR_TYPES:
        names[f"numpy.{scalar_type.__name__}"] = scalar_type
    names["numpy.bool_"] = np.bool_
    names["numpy.str_"] = np.str_
    names["numpy.bytes_"] = np.bytes_
    names["builtins.frozenset"] = frozenset
    return names


def _torch_default_globals() -> set[str]:
    from torch import _weights_only_unpickler as wo
    return set(wo._get_allowed_globals())


def _safe_globals_context() -> torch.serialization.safe_globals:
    return torch.serialization.safe_globals([(obj, name) for name, obj in allowed_globals().items()])


# --------------------------------------------------------------------------- paths
def resolve_checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file ``path`` names; for a folder, its last ``*_epoch_N.{p,pt,pth}`` by N."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingDataError(f"checkpoint {str(path)!r} does not exist; check the path")
    if path.is_file():
        return path
    epochs = [(int(m.group(1)), p) for p in path.iterdir()
              if p.is_file() and (m := _EPOCH_FILE.search(p.name))]
    if not epochs:
        raise MissingDataError(
            f"folder {str(path)!r} holds no '*_epoch_N.p/.pt/.pth' checkpoint; "
            f"pass the checkpoint file itself")
    return max(epochs, key=lambda pair: pair[0])[1]


# --------------------------------------------------------------------------- loading
def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint dict safely (no code from the file runs).

    Parameters
    ----------
    path
        A ``torch.save`` file (zip or legacy format), or a training folder, in
        which case the ``*_epoch_N`` file with the largest ``N`` is read.

    Returns
    -------
    dict
        The saved dictionary, tensors on the CPU.

    Raises
    ------
    MissingDataError
        No such file (or no epoch file in the folder).
    UnsafeCheckpointError
        The pickle names a global outside the allow-list (see the module docstring).
    CheckpointError
        Truncated, corrupt or not a dict.
    """
    file = resolve_checkpoint_path(path)
    try:
        with _safe_globals_context(), warnings.catch_warnings():
            # torch warns before refusing protocol >= 3 pickles; the refusal explains it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _unpickling_error(file, err) from None
    except (PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError,
            IndexError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        # a damaged zip surfaces as RuntimeError or OSError(EINVAL) from torch's reader
        raise CheckpointError(
            f"cannot read checkpoint {str(file)!r}: the file is truncated, corrupt or not a "
            f"torch.save file ({type(err).__name__}: {_first_line(err)})") from err
    if not isinstance(data, dict):
        raise CheckpointError(
            f"checkpoint {str(file)!r} holds a {type(data).__name__}, not the dict of a "
            f"published checkpoint (model_type, model_state_dict, hyps, norm_stats, ...)")
    return data


def _unpickling_error(file: Path, err: pickle.UnpicklingError) -> CheckpointError:
    offending = disallowed_globals(file)
    if not offending:
        match = _TORCH_REFUSAL_IN_MESSAGE.search(str(err))
        offending = [match.group(1) or match.group(2)] if match else []
    if offending:
        return UnsafeCheckpointError(
            f"checkpoint {str(file)!r} asks for {', '.join(offending)}, outside retcodec's "
            f"allow-list of safe globals; nothing from the file was executed. Only open it "
            f"with plain pickle if you trust its source, and re-save the tensors and plain "
            f"values it holds.")
    return CheckpointError(
        f"cannot read checkpoint {str(file)!r} with torch's safe unpickler: "
        f"{_weights_unpickler_reason(err)}. The file is corrupt, or was not written by "
        f"torch.save with pickle protocol 2 (its default).")


def _weights_unpickler_reason(err: Exception) -> str:
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text, flags=re.S)
    reason = match.group(1).strip() if match and match.group(1).strip() else text.strip().splitlines()[-1]
    return reason


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


# --------------------------------------------------------------------------- scanning
def referenced_globals(path: str | Path) -> list[str]:
    """Dotted names of every global the checkpoint's pickle refers to, without unpickling.

    Reads the opcodes only (``pickletools``), for the zip format (``*/data.pkl``)
    and the legacy stream (its first four pickles). Unreadable tails are ignored:
    the list is for messages and checks, torch's unpickler is the gatekeeper.
    """
    file = Path(path)
    names: list[str] = []
    for stream in _pickle_streams(file):
        for name in _globals_in_stream(stream):
            if name not in names:
                names.append(name)
    return names


def disallowed_globals(path: str | Path) -> list[str]:
    """Globals the checkpoint refers to that neither torch nor retcodec allows."""
    allowed = _torch_default_globals() | set(allowed_globals())
    return [name for name in referenced_globals(path) if name not in allowed]


def _pickle_streams(file: Path) -> Iterator[IO[bytes]]:
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            for member in archive.namelist():
                if member.endswith("data.pkl"):
                    yield io.BytesIO(archive.read(member))
        return
    with open(file, "rb") as handle:
        # legacy layout: magic number, protocol, sys info, then the object itself
        for _ in range(4):
            yield handle


def _globals_in_stream(stream: IO[bytes]) -> Iterator[str]:
    strings: list[str] = []          # string pushes, the operands of STACK_GLOBAL
    memo: dict[int, Any] = {}
    last: Any = None                 # the value the previous opcode pushed, if a string
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, attr = str(arg).split(" ", 1)
                yield _python3_name(module, attr)
                last = None
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                yield _python3_name(strings[-2], strings[-1])
                last = None
            elif "UNICODE" in name and isinstance(arg, str):
                strings.append(arg)
                last = arg
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = last
            elif name == "MEMOIZE":
                memo[len(memo)] = last
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                last = memo.get(int(arg))
                if isinstance(last, str):
                    strings.append(last)
            else:
                last = None
    except (ValueError, EOFError, pickle.UnpicklingError, UnicodeDecodeError):
        return


def _python3_name(module: str, attr: str) -> str:
    import _compat_pickle
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"
