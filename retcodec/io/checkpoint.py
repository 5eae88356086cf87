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
``numpy.<scalar type>``                     e.g. ``numpy.float32``, ``numpy.int64``,
                                            ``numpy.bool_`` / ``numpy.bool``
``builtins.frozenset``                      frozen sets
``builtins.bytes``                          empty bytes (``bytes()``; a size is refused)
==========================================  =========================================

The numpy names do not reach numpy directly: each maps to a guard
(:class:`PickledDtype`, :class:`GuardedArray` and the functions below) that
checks its arguments before numpy allocates anything:

* dtypes must be plain bool, integer, float, complex, bytes, str, datetime64
  or timedelta64 dtypes; object, void and structured dtypes are refused however
  they are spelled (``'O'``, ``'O8'``, a float dtype whose pickled state sets
  the object flags, ...);
* an array may not hold more bytes (or elements) than the file itself, and
  its pickled data must have exactly the size its shape and dtype imply.

Anything else (``os.system``, ``builtins.exec``, arbitrary classes) makes
:func:`load_checkpoint` raise :class:`~retcodec.errors.UnsafeCheckpointError`
naming the offending globals; nothing from the file has run at that point.

Before unpickling, the file itself is checked (:func:`verify_checkpoint_file`):
a regular, readable, non-empty file; for the zip format every member's CRC-32
(a damaged byte is refused, never loaded), uncompressed members, declared
sizes within the file; for both formats every tensor storage the pickle
declares must fit in the bytes the file holds, ``bytearray`` may not be asked
for a size, and no tensor may be rebuilt directly onto a GPU. The legacy
format has no checksums: a flipped byte in a tensor's data cannot be detected
there; :func:`retcodec.io.models.load_model` still refuses NaN/Inf weights and
negative batch-norm variances in either format.

The guards and the allow-list live in :mod:`retcodec.io.safe_pickle` and are
re-exported here.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import stat
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import torch

from retcodec.io.paths import user_path
from retcodec.errors import (CheckpointError, CorruptCheckpointError, MissingDataError,
                             RetcodecError, UnreadableFileError, UnsafeCheckpointError)
from retcodec.io.safe_pickle import (ARRAY_BYTE_LIMIT, SIZE_SLACK, GuardedArray, PickledDtype,
                                     allowed_globals, checked_dtype, plain_values, safe_globals_context,
                                     torch_default_globals)

__all__ = ["load_checkpoint", "resolve_checkpoint_path", "verify_checkpoint_file",
           "allowed_globals", "referenced_globals", "disallowed_globals",
           "GuardedArray", "PickledDtype", "CHECKPOINT_SUFFIXES", "checked_dtype"]

CHECKPOINT_SUFFIXES = (".p", ".pt", ".pth")
_EPOCH_FILE = re.compile(r"_epoch_(\d+)\.(?:p|pt|pth)$")
#: what torch's safe unpickler names when it refuses a global or a class to build
_TORCH_REFUSAL_IN_MESSAGE = re.compile(r"GLOBAL (\S+)|but got <class '([^']+)'>")
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# --------------------------------------------------------------------------- paths
def resolve_checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file ``path`` names; for a folder, its last ``*_epoch_N.{p,pt,pth}`` by N.

    Raises
    ------
    MissingDataError
        Nothing at ``path``, or a folder without an epoch file.
    UnreadableFileError
        ``path`` is a device, a FIFO or a socket (never opened: a FIFO would block),
        or this process may not read it.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise MissingDataError(f"a checkpoint path must be a string or a path, got "
                               f"{type(path).__name__} {path!r:.80}")
    path = user_path(path, "checkpoint path")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MissingDataError(f"checkpoint {str(path)!r} does not exist; check the path") from None
    except (PermissionError, NotADirectoryError, OSError) as err:
        raise UnreadableFileError(f"cannot look at checkpoint {str(path)!r} ({err.strerror or err}); "
                                  f"check the path and its folders' permissions") from None
    if stat.S_ISDIR(info.st_mode):
        return _last_epoch_file(path)
    _check_regular_readable(path, info)
    return path


def _last_epoch_file(folder: Path) -> Path:
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise UnreadableFileError(f"cannot list the folder {str(folder)!r} ({err.strerror or err}); "
                                  f"check its permissions or pass the checkpoint file") from None
    epochs = [(int(m.group(1)), p) for p in entries
              if (m := _EPOCH_FILE.search(p.name)) and p.is_file()]
    if not epochs:
        raise MissingDataError(
            f"folder {str(folder)!r} holds no '*_epoch_N.p/.pt/.pth' checkpoint; "
            f"pass the checkpoint file itself")
    file = max(epochs, key=lambda pair: pair[0])[1]
    _check_regular_readable(file, file.stat())
    return file


def _check_regular_readable(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                "a character device" if stat.S_ISCHR(info.st_mode) else
                "a block device" if stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise UnreadableFileError(f"checkpoint {str(path)!r} is {kind}, not a checkpoint file; "
                                  f"pass the .pt/.p/.pth file saved by torch.save")
    if not os.access(path, os.R_OK):
        raise UnreadableFileError(f"checkpoint {str(path)!r} is not readable by this user; "
                                  f"fix its permissions (e.g. chmod u+r) or copy it somewhere readable")


# --------------------------------------------------------------------------- file checks
def verify_checkpoint_file(path: str | Path) -> None:
    """Check a checkpoint's bytes before any unpickling (see the module docstring).

    Raises
    ------
    CorruptCheckpointError
        Empty, truncated zip, a failing CRC-32, compressed zip members (torch.save
        never compresses), a storage larger than the file.
    UnsafeCheckpointError
        ``bytearray`` asked for a size (an allocation, not data).
    CheckpointError
        A legacy-format tensor to be rebuilt directly on a GPU.
    """
    file = Path(path)
    size = file.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"checkpoint {str(file)!r} is empty (0 bytes), corrupt; "
                                     f"copy or download it again")
    with open(file, "rb") as handle:
        magic = handle.read(8)
    if magic == _HDF5_MAGIC:
        raise CheckpointError(f"{str(file)!r} is an HDF5/netCDF file (a recording or a results file?), "
                              f"not a model checkpoint; pass the .pt/.p/.pth file saved by torch.save")
    records: dict[str, int] | None = None
    if magic[:4] == _ZIP_MAGIC or zipfile.is_zipfile(file):
        records = _verify_zip(file, size)
        if not any(name.endswith("data.pkl") for name in records):
            raise CheckpointError(
                f"{str(file)!r} is a zip archive without the 'data.pkl' of a torch.save file "
                f"({sorted(records)[:3]}...); pass the model checkpoint itself")
    _check_declarations(file, size, records)


def _verify_zip(file: Path, size: int) -> dict[str, int]:
    """CRC-32 and sizes of every member; returns member name -> uncompressed size."""
    damaged = (f"checkpoint {str(file)!r} is a damaged zip file ({{reason}}): it was truncated "
               f"or corrupted in transfer or on disk; copy or download it again")
    try:
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
            if any("/code/" in i.filename or i.filename.endswith("/constants.pkl") for i in infos):
                raise CheckpointError(
                    f"{str(file)!r} is a TorchScript archive (torch.jit.save), not a torch.save "
                    f"checkpoint; retcodec never runs TorchScript code from a model file. Save the "
                    f"model's dict (model_type, model_state_dict, hyps, ...) with torch.save")
            compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise CorruptCheckpointError(
                    f"checkpoint {str(file)!r} has compressed members {compressed[:4]}; torch.save "
                    f"never compresses, so the file was damaged, repacked or crafted. Copy the "
                    f"original again or re-save it with torch.save (nothing was read from it)")
            declared = sum(i.file_size for i in infos)
            if declared > size:
                raise CorruptCheckpointError(damaged.format(
                    reason=f"its members declare {declared} bytes, the file has {size}"))
            bad = archive.testzip()
    except RetcodecError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as err:
        raise CorruptCheckpointError(damaged.format(reason=f"{type(err).__name__}: "
                                                           f"{_first_line(err)}")) from None
    if bad is not None:
        raise CorruptCheckpointError(damaged.format(
            reason=f"the CRC-32 checksum of member {bad!r} does not match its bytes"))
    return {i.filename: i.file_size for i in infos}


def _storage_item_sizes() -> dict[str, int]:
    """``'FloatStorage'`` -> 4, ... for every typed storage name torch pickles."""
    sizes = {}
    for dtype, name in torch.storage._dtype_to_storage_type_map().items():
        sizes[name] = int(dtype.itemsize)
    return sizes


def _check_declarations(file: Path, size: int, records: dict[str, int] | None) -> None:
    """Storages within the file, no sized ``bytearray``, no tensor rebuilt on a GPU."""
    item_sizes = _storage_item_sizes()
    storages: dict[str, int] = {}
    for kind, name, args in _pickle_events(file):
        if kind == "call" and name in ("builtins.bytearray", "builtins.bytes") \
                and any(isinstance(a, int) for a in args):
            raise UnsafeCheckpointError(
                f"checkpoint {str(file)!r} asks for {name[9:]}({args[0]!r}), an allocation and not "
                f"data; the file is crafted or corrupt (nothing was executed or allocated)")
        if kind == "call" and name.startswith("torch._utils._rebuild_device_tensor") \
                and records is None:   # the zip reader maps these to map_location, the legacy one cannot
            device = next((a for a in args if type(a) is str), "cpu")
            if not device.startswith("cpu"):
                raise CheckpointError(
                    f"checkpoint {str(file)!r} stores a tensor to be rebuilt directly on device "
                    f"{device!r}, which retcodec loads only onto the CPU; re-save the checkpoint "
                    f"from the CPU (model.cpu(), then torch.save)")
        if kind == "pid" and len(args) >= 5 and args[0] == "storage":
            type_name = str(args[1]).rsplit(".", 1)[-1]
            numel = args[4] if isinstance(args[4], int) else 0
            nbytes = numel * item_sizes.get(type_name, 1)
            key = str(args[2])
            if records is not None:
                _check_zip_storage(file, records, key, nbytes)
            else:                      # a storage shared by several tensors is stored once
                storages[key] = max(storages.get(key, 0), nbytes)
    total = sum(storages.values())
    if total > size:
        raise CorruptCheckpointError(
            f"checkpoint {str(file)!r} declares tensor storages of {total} bytes but the file has "
            f"only {size}: it is truncated or crafted; copy or download it again (nothing was "
            f"allocated)")


def _check_zip_storage(file: Path, records: dict[str, int], key: str, nbytes: int) -> None:
    names = [n for n in records if n.endswith(f"/data/{key}")]
    if not names:
        raise CorruptCheckpointError(f"checkpoint {str(file)!r} lacks the data record of storage "
                                     f"{key!r}; the file is damaged, copy it again")
    if records[names[0]] < nbytes:
        raise CorruptCheckpointError(
            f"checkpoint {str(file)!r}: storage {key!r} declares {nbytes} bytes but its record holds "
            f"{records[names[0]]}; the file is damaged or crafted, copy it again (nothing was "
            f"allocated)")


# --------------------------------------------------------------------------- loading
def load_checkpoint(path: str | Path, extra_globals: Mapping[str, Any] | None = None) -> dict:
    """Read a checkpoint dict safely (no code from the file runs).

    Parameters
    ----------
    path
        A ``torch.save`` file (zip or legacy format), or a training folder, in
        which case the ``*_epoch_N`` file with the largest ``N`` is read.
    extra_globals
        Dotted names a caller's format needs on top of the allow-list, each mapped
        to a stand-in that only records its pickled state (e.g. the omegaconf
        containers of Lightning checkpoints, :mod:`retcodec.io.openretina`).

    Returns
    -------
    dict
        The saved dictionary, tensors on the CPU, numpy arrays as plain ``ndarray``.

    Raises
    ------
    MissingDataError
        No such file (or no epoch file in the folder).
    UnreadableFileError
        Not a regular file (device, FIFO, socket) or not readable.
    UnsafeCheckpointError
        The pickle names a global outside the allow-list, or asks the allowed
        ones for something refused (object dtypes, allocations; see the module docstring).
    CorruptCheckpointError
        Empty, truncated, a failing zip CRC, arrays or storages larger than the file.
    CheckpointError
        Unreadable for another reason, or not a dict.
    """
    file = resolve_checkpoint_path(path)
    verify_checkpoint_file(file)
    token = ARRAY_BYTE_LIMIT.set(file.stat().st_size + SIZE_SLACK)
    try:
        with safe_globals_context(extra_globals), warnings.catch_warnings():
            # torch warns before refusing protocol >= 3 pickles; the refusal explains it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(file, map_location="cpu", weights_only=True)
        data = plain_values(data)
    except RetcodecError as err:
        raise type(err)(f"{err} [file: {str(file)!r}]") from None
    except pickle.UnpicklingError as err:
        raise _unpickling_error(file, err, extra_globals) from None
    except MemoryError:
        raise CorruptCheckpointError(
            f"checkpoint {str(file)!r} asks for more memory than this machine has; it is corrupt "
            f"or crafted (a real retina model is a few MB). Replace it with a clean copy.") from None
    except RecursionError:
        raise CorruptCheckpointError(f"checkpoint {str(file)!r} nests containers too deeply for "
                                     f"a model checkpoint; it is corrupt or crafted") from None
    except Exception as err:  # anything else torch's reader raises on damaged input
        raise _read_error(file, err) from None
    finally:
        ARRAY_BYTE_LIMIT.reset(token)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"checkpoint {str(file)!r} holds a {type(data).__name__}, not the dict of a "
            f"published checkpoint (model_type, model_state_dict, hyps, norm_stats, ...)")
    return data


def _read_error(file: Path, err: Exception) -> CheckpointError:
    text = _first_line(err)
    if "CUDA" in text or "cuda" in text:
        return CheckpointError(
            f"checkpoint {str(file)!r} needs CUDA to be read ({type(err).__name__}: {text}); "
            f"re-save it from the CPU (model.cpu(), then torch.save) or load it on a CUDA machine")
    return CorruptCheckpointError(
        f"cannot read checkpoint {str(file)!r}: the file is truncated, corrupt or not a "
        f"torch.save file ({type(err).__name__}: {text}); copy or download it again")


def _unpickling_error(file: Path, err: pickle.UnpicklingError,
                      extra_globals: Mapping[str, Any] | None = None) -> CheckpointError:
    offending = disallowed_globals(file, extra_globals)
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
    names: list[str] = []
    for kind, name, _ in _pickle_events(Path(path)):
        if kind == "global" and name not in names:
            names.append(name)
    return names


def disallowed_globals(path: str | Path, extra_globals: Mapping[str, Any] | None = None) -> list[str]:
    """Globals the checkpoint refers to that neither torch nor retcodec (nor ``extra_globals``) allows."""
    allowed = torch_default_globals() | set(allowed_globals()) | set(extra_globals or {})
    return [name for name in referenced_globals(path) if name not in allowed]


def _pickle_streams(file: Path) -> Iterator[IO[bytes]]:
    try:
        is_zip = zipfile.is_zipfile(file)
    except OSError:
        return
    if is_zip:
        try:
            with zipfile.ZipFile(file) as archive:
                for member in archive.namelist():
                    if member.endswith("data.pkl"):
                        yield io.BytesIO(archive.read(member))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
            pass
        return
    with open(file, "rb") as handle:
        # legacy layout: magic number, protocol, sys info, then the object itself
        for _ in range(4):
            yield handle


class _Global(str):
    """A global's dotted name on the simulated stack."""


_MARK = object()


def _pickle_events(file: Path) -> Iterator[tuple[str, str, tuple]]:
    """``('global', name, ())``, ``('call', name, args)`` and ``('pid', '', tuple)`` events.

    A symbolic run of the opcodes (no object is built): literals, tuples and
    globals are tracked, everything else is a placeholder. Ends quietly at the
    first malformed opcode (the real unpickler then refuses the file).
    """
    for stream in _pickle_streams(file):
        yield from _stream_events(stream)


def _stream_events(stream: IO[bytes]) -> Iterator[tuple[str, str, tuple]]:
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, attr = str(arg).split(" ", 1)
                value = _Global(_python3_name(module, attr))
                yield "global", value, ()
                if name == "INST":
                    _pop_to_mark(stack)
                stack.append(value)
                continue
            if name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                value = _Global(_python3_name(str(module), str(attr)))
                yield "global", value, ()
                stack.append(value)
                continue
            if name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                args = stack.pop() if name != "NEWOBJ_EX" else (stack.pop(), stack.pop())[1]
                func = stack.pop()
                if isinstance(func, _Global):
                    yield "call", str(func), args if isinstance(args, tuple) else ()
                stack.append(None)
                continue
            if name in ("BINPERSID", "PERSID"):
                pid = stack.pop() if name == "BINPERSID" else arg
                if isinstance(pid, tuple):
                    yield "pid", "", pid
                stack.append(None)
                continue
            _simulate(opcode, arg, stack, memo)
    except (ValueError, EOFError, IndexError, pickle.UnpicklingError, UnicodeDecodeError,
            TypeError, KeyError, OSError):
        return


def _simulate(opcode: pickletools.OpcodeInfo, arg: Any, stack: list, memo: dict) -> None:
    name = opcode.name
    if name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[int(arg)] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo.get(int(arg)))
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "TUPLE":
        stack.append(tuple(_pop_to_mark(stack)))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = tuple(stack[-n:])
        del stack[-n:]
        stack.append(items)
    elif name == "EMPTY_TUPLE":
        stack.append(())
    elif not opcode.stack_before and len(opcode.stack_after) == 1:
        literal = arg if isinstance(arg, (int, str, bytes)) and not isinstance(arg, bool) else None
        stack.append(literal)
    else:
        before = opcode.stack_before
        if pickletools.markobject in before:
            _pop_to_mark(stack)
            count = before.index(pickletools.markobject)
        else:
            count = len(before)
        if count:
            if len(stack) < count:
                raise IndexError("stack underflow")
            del stack[-count:]
        stack.extend([None] * len(opcode.stack_after))


def _pop_to_mark(stack: list) -> list:
    items: list[Any] = []
    while True:
        item = stack.pop()
        if item is _MARK:
            break
        items.append(item)
    items.reverse()
    return items


def _python3_name(module: str, attr: str) -> str:
    import _compat_pickle
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"
