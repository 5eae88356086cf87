"""Checked torch devices: :func:`resolve_device` turns a user's ``device`` into a usable one.

``torch.device("cuda")`` succeeds on any machine; the failure comes later, deep
inside the first ``.to()``, as an ``AssertionError`` or a ``RuntimeError``.
:func:`resolve_device` checks up front that the device exists here and raises
:class:`~retcodec.errors.DeviceError` with what to do instead.

Accepted: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (any case, spaces
trimmed), a ``torch.device`` of those types, or ``None`` (the CPU).
"""
from __future__ import annotations

import torch

from retcodec.errors import DeviceError

__all__ = ["resolve_device", "available_devices", "DEVICE_TYPES"]

#: device types retcodec can compute on (when present on the machine)
DEVICE_TYPES = ("cpu", "cuda", "mps")
#: spellings users type for a device, mapped to the torch name
_ALIASES = {"gpu": "cuda", "cuda0": "cuda:0"}


def available_devices() -> list[str]:
    """Devices usable on this machine, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    names = ["cpu"]
    if _cuda_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """The ``torch.device`` that ``device`` names, checked to exist on this machine.

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device`` or None (CPU).

    Raises
    ------
    DeviceError
        Not a device name, a device type retcodec does not compute on, CUDA or
        MPS absent from this machine or this torch build, or a CUDA index
        beyond the GPUs present. The message lists the devices available here.
    """
    parsed = _parse(device)
    if parsed.type == "cpu":
        return torch.device("cpu")
    if parsed.type == "cuda":
        return _check_cuda(parsed, device)
    if parsed.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {device!r}: Apple's MPS backend is not available on this "
                              f"machine or in this torch build; {_advice()}")
        return torch.device("mps")
    raise DeviceError(f"device {device!r} (type {parsed.type!r}) is not one retcodec computes on; "
                      f"use one of {list(DEVICE_TYPES)}. {_advice()}")


def _parse(device: object) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'cuda:0' or a torch.device, "
                          f"got {type(device).__name__} {device!r}")
    name = device.strip().lower()
    name = _ALIASES.get(name, name)
    if not name:
        raise DeviceError(f"device is empty; {_advice()}")
    try:
        return torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"{device!r} is not a device name; {_advice()}") from None


def _check_cuda(parsed: torch.device, requested: object) -> torch.device:
    if not _cuda_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None \
            else "no CUDA GPU (or driver) is visible to this process"
        raise DeviceError(f"device {requested!r} needs a CUDA GPU, but {build}; {_advice()}")
    count = torch.cuda.device_count()
    index = 0 if parsed.index is None else parsed.index
    if index >= count:
        raise DeviceError(f"device {requested!r}: this machine has {count} CUDA GPU(s) "
                          f"(cuda:0..cuda:{count - 1}); {_advice()}")
    return torch.device("cuda", index)


def _cuda_available() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver must read as 'no CUDA', not crash
        return False


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    try:
        return bool(backend is not None and backend.is_available())
    except Exception:
        return False


def _advice() -> str:
    return f"devices available here: {available_devices()} (pass e.g. device='cpu' / --device cpu)"
