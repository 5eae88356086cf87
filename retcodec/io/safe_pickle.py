"""The guarded numpy reconstructors and the allow-list of globals for reading checkpoints.

:func:`allowed_globals` maps each dotted name a checkpoint pickle may use to
the object torch's safe unpickler builds for it; the numpy names map to the
guards here (:class:`PickledDtype`, :class:`GuardedArray` and the guarded
``_reconstruct``, ``_frombuffer`` and ``scalar``), which check dtypes, shapes
and sizes before numpy allocates anything. :data:`ARRAY_BYTE_LIMIT` holds the
size limit for the file being read; :func:`plain_values` turns what was built
back into plain numpy. See :mod:`retcodec.io.checkpoint` for the whole procedure.
"""
from __future__ import annotations

import contextvars
from typing import Any, Mapping

import numpy as np
import torch

from retcodec.errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError

__all__ = ["allowed_globals", "torch_default_globals", "safe_globals_context", "checked_dtype",
           "PickledDtype", "GuardedArray", "plain_values", "refuse", "ARRAY_BYTE_LIMIT", "SIZE_SLACK"]

#: numpy scalar types the allow-list names (numpy-1 aliases added below)
_SCALAR_TYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                 np.uint32, np.uint64, np.float16, np.float32, np.float64, np.longdouble,
                 np.complex64, np.complex128, np.str_, np.bytes_, np.datetime64, np.timedelta64)
#: dtype kinds a checkpoint may hold: bool, ints, floats, complex, bytes, str, datetimes
_ALLOWED_DTYPE_KINDS = "biufcSUmM"
#: bytes allowed on top of the file size for an array (pickle framing, small headers)
SIZE_SLACK = 4096
#: the size limit (bytes) of arrays built while unpickling the current file
ARRAY_BYTE_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("_ARRAY_BYTE_LIMIT",
                                                                       default=1 << 30)


# --------------------------------------------------------------------------- numpy guards
def refuse(what: str) -> UnsafeCheckpointError:
    """The error for a refused request of the pickle, naming ``what`` it asked for."""
    return UnsafeCheckpointError(
        f"checkpoint asks for {what}; retcodec refuses it (nothing from the file was executed "
        f"and nothing was allocated). Re-save the checkpoint with plain tensors, numbers and "
        f"numeric numpy arrays, or replace the file with a clean copy.")


def checked_dtype(dtype: Any) -> np.dtype:
    """A plain numeric/str/bytes/datetime ``np.dtype``; object, void and structured ones refused."""
    if isinstance(dtype, PickledDtype):
        if getattr(dtype, "dtype", None) is None:
            raise refuse("a numpy dtype built without its description")
        return dtype.dtype
    if isinstance(dtype, (str, bytes)):
        try:
            dtype = np.dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
        except (TypeError, ValueError) as err:
            raise refuse(f"the unknown numpy dtype {dtype!r} ({err})") from None
    if not isinstance(dtype, np.dtype):
        raise refuse(f"a numpy array whose dtype is a {type(dtype).__name__}")
    if dtype.hasobject or dtype.kind == "O":
        raise refuse(f"a numpy array of dtype 'object' (numpy.dtypes.ObjectDType, {dtype!r}): "
                      f"object arrays can hold arbitrary Python objects")
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
        raise refuse(f"a numpy array of dtype {dtype!r} (void, structured or sub-array "
                      f"dtypes are not part of a model checkpoint)")
    plain = np.dtype(dtype.str)
    if dtype.flags != plain.flags or dtype.itemsize != plain.itemsize:
        raise refuse(f"a numpy dtype {dtype.str!r} whose pickled state changes its flags or "
                      f"item size (flags {dtype.flags} vs {plain.flags})")
    return plain


class PickledDtype:
    """Stands for ``numpy.dtype`` while unpickling; checked before any array uses it.

    ``numpy.dtype(spec, align, copy)`` followed by ``__setstate__`` is how numpy
    pickles a dtype; the state is applied to a fresh dtype and the result must
    be a plain dtype (:func:`checked_dtype`).
    """

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False) -> None:
        if not isinstance(spec, (str, bytes)):
            raise refuse(f"a numpy dtype from a {type(spec).__name__} description "
                          f"(only dtype strings such as '<f4' are accepted)")
        self.dtype = checked_dtype(spec)

    def __setstate__(self, state: Any) -> None:
        base = checked_dtype(self)
        if not isinstance(state, tuple) or not 8 <= len(state) <= 9:
            raise refuse(f"a numpy dtype with an unknown pickled state {state!r:.80}")
        if any(part is not None for part in state[2:5]):
            raise refuse("a numpy dtype with sub-arrays or fields")
        fresh = np.dtype(base.str if base.kind not in "SUmM" else base.char, False, True)
        try:
            fresh.__setstate__(state)
        except (TypeError, ValueError) as err:
            raise refuse(f"a numpy dtype with an invalid pickled state ({err})") from None
        self.dtype = checked_dtype(fresh)


def _checked_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise refuse(f"a numpy array of shape {shape!r:.80} (need non-negative integers)")
    if len(shape) > 32:
        raise refuse(f"a numpy array with {len(shape)} dimensions (numpy allows 32)")
    return tuple(int(n) for n in shape)


def _check_array_size(shape: tuple[int, ...], dtype: np.dtype) -> None:
    elements = 1
    for n in shape:
        elements *= n
    limit = ARRAY_BYTE_LIMIT.get()
    nbytes = elements * dtype.itemsize
    if max(nbytes, elements) > limit:
        raise CorruptCheckpointError(
            f"the checkpoint asks for a numpy array of shape {shape} ({nbytes / 2**30:.3g} GiB of "
            f"{dtype}) but the whole file holds only {limit - SIZE_SLACK} bytes, so the data "
            f"cannot be in it; the file is corrupt or crafted. Nothing was allocated. Replace "
            f"it with a clean copy.")


class GuardedArray(np.ndarray):
    """Stands for ``numpy.ndarray`` while unpickling: sizes and dtypes are checked first.

    After loading, every :class:`GuardedArray` is returned as a plain ``ndarray``.
    """

    def __new__(cls, shape: Any = (0,), dtype: Any = float, *args: Any, **kwargs: Any) -> "GuardedArray":
        if args or kwargs:
            raise refuse("a numpy array built from a buffer or with strides")
        shape, real = _checked_shape(shape), checked_dtype(np.dtype(dtype) if dtype is float else dtype)
        _check_array_size(shape, real)
        return np.ndarray.__new__(cls, shape, real)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise refuse(f"a numpy array with an unknown pickled state of type {type(state).__name__}")
        version, (shape, dtype, fortran, data) = (state[0] if len(state) == 5 else 0), state[-4:]
        shape, real = _checked_shape(shape), checked_dtype(dtype)
        _check_array_size(shape, real)
        if not isinstance(data, (bytes, bytearray)):
            raise refuse(f"a numpy array whose data is a {type(data).__name__}, not bytes")
        expected = real.itemsize
        for n in shape:
            expected *= n
        if len(data) != expected:
            raise CorruptCheckpointError(
                f"a numpy array of shape {shape} and dtype {real} in the checkpoint carries "
                f"{len(data)} bytes instead of {expected}; the file is corrupt. Replace it "
                f"with a clean copy.")
        full = (version, shape, real, bool(fortran), bytes(data)) if len(state) == 5 \
            else (shape, real, bool(fortran), bytes(data))
        np.ndarray.__setstate__(self, full)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> GuardedArray:
    """numpy's ``_reconstruct(ndarray, shape, dtype)``, guarded."""
    if subtype is not GuardedArray:
        raise refuse(f"a numpy array of subclass {subtype!r:.80}")
    return GuardedArray(shape, dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    """numpy's ``_frombuffer(buffer, dtype, shape, order)``, guarded."""
    real, shape = checked_dtype(dtype), _checked_shape(shape)
    if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
        raise refuse(f"a numpy array from a {type(buffer).__name__} buffer in order {order!r:.20}")
    _check_array_size(shape, real)
    count = real.itemsize
    for n in shape:
        count *= n
    if len(buffer) != count:
        raise CorruptCheckpointError(
            f"a numpy array of shape {shape} ({real}) in the checkpoint carries {len(buffer)} bytes "
            f"instead of {count}; the file is corrupt. Replace it with a clean copy.")
    return np.frombuffer(bytes(buffer), dtype=real).reshape(shape, order=order).copy(order="K")


def _scalar(dtype: Any, data: Any = None) -> np.generic:
    """numpy's ``scalar(dtype, bytes)``, guarded."""
    real = checked_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != real.itemsize:
        raise CorruptCheckpointError(
            f"a numpy {real} scalar in the checkpoint carries {type(data).__name__} data of the "
            f"wrong size; the file is corrupt. Replace it with a clean copy.")
    return np.frombuffer(bytes(data), dtype=real)[0].copy()


# --------------------------------------------------------------------------- allow-list
def allowed_globals() -> dict[str, Any]:
    """The allow-list: dotted name (as written in a pickle) -> the object it stands for.

    Names of numpy 1 (``numpy.core...``) and numpy 2 (``numpy._core...``) map to
    the same guards, so files pickled under either load.
    """
    names: dict[str, Any] = {}
    for package in ("numpy.core", "numpy._core"):
        names[f"{package}.multiarray.scalar"] = _scalar
        names[f"{package}.multiarray._reconstruct"] = _reconstruct
        names[f"{package}.numeric._frombuffer"] = _frombuffer
    names["numpy.ndarray"] = GuardedArray
    names["numpy.dtype"] = PickledDtype
    for scalar_type in _SCALAR_TYPES:
        names[f"numpy.{scalar_type.__name__}"] = scalar_type
    names["numpy.bool_"] = np.bool_
    names["numpy.str_"] = np.str_
    names["numpy.bytes_"] = np.bytes_
    names["builtins.frozenset"] = frozenset
    names["builtins.bytes"] = bytes       # protocol 2 writes b"" as bytes()
    return names


def torch_default_globals() -> set[str]:
    from torch import _weights_only_unpickler as wo
    return set(wo._get_allowed_globals())


def safe_globals_context(extra: Mapping[str, Any] | None = None) -> torch.serialization.safe_globals:
    """torch's ``safe_globals`` context with the allow-list, plus ``extra`` (dotted name -> stand-in)."""
    names = {**allowed_globals(), **dict(extra or {})}
    return torch.serialization.safe_globals([(obj, name) for name, obj in names.items()])


# --------------------------------------------------------------------------- after loading
def plain_values(value: Any, seen: dict[int, Any] | None = None) -> Any:
    """``value`` with guarded arrays and dtypes made plain numpy; tensors must be on the CPU."""
    seen = {} if seen is None else seen
    key = id(value)
    if key in seen:
        return seen[key]
    if isinstance(value, GuardedArray):
        out: Any = np.array(value.view(np.ndarray), copy=True)
    elif isinstance(value, PickledDtype):
        out = checked_dtype(value)
    elif isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise CheckpointError(f"the checkpoint holds a tensor on device {value.device} (no "
                                  f"data on the CPU); re-save it with real CPU tensors")
        if value.numel() > ARRAY_BYTE_LIMIT.get():
            raise CorruptCheckpointError(
                f"the checkpoint holds a tensor of shape {tuple(value.shape)} ({value.numel()} "
                f"elements) viewing far fewer stored values (zero strides); the file is crafted or "
                f"corrupt. Re-save it with .contiguous() tensors, or replace it with a clean copy")
        out = value
    elif isinstance(value, dict):
        seen[key] = value
        for k in list(value):
            value[k] = plain_values(value[k], seen)
        return value
    elif isinstance(value, list):
        seen[key] = value
        value[:] = [plain_values(v, seen) for v in value]
        return value
    elif isinstance(value, (tuple, set, frozenset)) and type(value) in (tuple, set, frozenset):
        out = type(value)(plain_values(v, seen) for v in value)
    else:
        out = value
    seen[key] = out
    return out
