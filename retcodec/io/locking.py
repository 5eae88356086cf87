"""Locks on results folders and output files: one writer at a time, stale locks taken over.

A lock is a small JSON file (``pid``, ``host``, ``started`` as an ISO time and epoch
seconds, ``command``) created with ``O_CREAT | O_EXCL``, so two processes can never both
hold it. A lock is *stale*, and is taken over with a warning, when

* it was made on this host and its process no longer exists, or
* it was made on another host (whose processes cannot be checked from here) and is
  older than :data:`STALE_AFTER_S` (24 h), or
* it cannot be read (a crash while writing it).

Otherwise the second process is refused at once with :class:`~retcodec.errors.BusyError`
naming the holder; nothing ever waits for a lock.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

from retcodec.errors import BusyError

__all__ = ["STALE_AFTER_S", "hold_lock", "lock_holder"]

#: age after which a lock from another host is considered abandoned, s
STALE_AFTER_S = 24 * 3600.0


def lock_holder(lock: Path) -> dict | None:
    """The JSON record of whoever holds ``lock`` (None when it is unreadable)."""
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _stale_reason(holder: dict | None, lock: Path) -> str | None:
    if holder is None:
        return "its record is unreadable"
    host, pid = holder.get("host"), holder.get("pid")
    if host == socket.gethostname():
        if not isinstance(pid, int) or not _process_alive(pid):
            return f"process {pid} on this host has ended"
        if pid == os.getpid():
            return None
        return None
    age = time.time() - float(holder.get("epoch", lock.stat().st_mtime))
    if age > STALE_AFTER_S:
        return f"it was taken on host {host} {age / 3600:.0f} h ago (limit {STALE_AFTER_S / 3600:.0f} h)"
    return None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "an unknown process"
    return (f"process {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
            + (f" ({holder.get('command')})" if holder.get("command") else ""))


def _create(lock: Path, record: dict) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return True


@contextlib.contextmanager
def hold_lock(lock: str | Path, what: str, command: str | None = None) -> Iterator[Path]:
    """Hold ``lock`` for the block; refuse at once if another live process holds it.

    ``what`` names the protected thing in messages (e.g. ``"results folder results/"``).
    """
    lock = Path(lock)
    now = _dt.datetime.now().astimezone()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": now.isoformat(timespec="seconds"),
              "epoch": time.time(), "command": command or " ".join(sys.argv[:3])}
    if not _create(lock, record):
        holder = lock_holder(lock)
        reason = _stale_reason(holder, lock)
        if reason is None:
            raise BusyError(f"{what} is in use by {_describe(holder)}. Wait for it to finish, or "
                            f"use another output location; if that process is gone for good, delete {lock}")
        warnings.warn(f"taking over a stale lock on {what} ({reason}; held by {_describe(holder)})",
                      stacklevel=3)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        if not _create(lock, record):
            raise BusyError(f"{what} was locked by another process just now ({_describe(lock_holder(lock))})")
    try:
        yield lock
    finally:
        holder = lock_holder(lock)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == record["host"]:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
