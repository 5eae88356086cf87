"""Locks on results folders and output files: one writer at a time, abandoned locks taken over.

A lock is a small file holding a JSON record (``pid``, ``host``, ``started`` as an ISO
time and ``epoch`` seconds, ``command``). What makes it exclusive is an operating-system
lock on the open file (``flock`` on Linux and macOS, ``msvcrt.locking`` on Windows),
which the kernel releases when the holder exits, however it exits:

* a process that cannot take the OS lock is refused at once with
  :class:`~retcodec.errors.BusyError` naming the holder; a record that is empty or
  half-written (the holder is just starting) reads as *busy*, never as stale;
* the holder checks, after taking the OS lock, that the path still names the file it
  locked (a releasing holder unlinks it), so two processes can never both hold it;
* a record left behind by a holder that died is taken over with a warning; one written
  on another host less than :data:`STALE_AFTER_S` (24 h) ago is respected (its OS lock
  may not be visible over a network file system);
* a lock path holding something that is not a lock record (a user's file, JSON of another
  shape such as ``[1, 2]`` or ``"hello"``) or a symbolic link is neither overwritten nor
  deleted: :class:`~retcodec.errors.OutputPathError`; a record with fields of the wrong
  type (a non-numeric time) is read as far as it goes, never a traceback.

Nothing ever waits for a lock.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import stat
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from retcodec.errors import BusyError, OutputPathError
from retcodec.io.paths import user_path

try:                                   # POSIX
    import fcntl
except ImportError:                    # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_AFTER_S", "hold_lock", "lock_holder"]

#: age after which a lock record from another host is considered abandoned, s
STALE_AFTER_S = 24 * 3600.0
#: the largest file taken for a lock record
_MAX_RECORD_BYTES = 64 * 1024
#: attempts at taking a lock whose file is being replaced by a releasing holder
_ATTEMPTS = 20


def _parse_record(text: str) -> dict[str, Any] | None:
    """The record as a dict with checked field types, or None when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid, host, epoch = data.get("pid"), data.get("host"), data.get("epoch")
    record = {"pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
              "host": host if isinstance(host, str) else None,
              "started": str(data.get("started", "?"))[:64],
              "command": str(data.get("command", ""))[:200]}
    try:
        record["epoch"] = float(epoch) if epoch is not None and not isinstance(epoch, bool) else None
    except (TypeError, ValueError):
        record["epoch"] = None
    if record["epoch"] is not None and not (record["epoch"] == record["epoch"]):     # NaN
        record["epoch"] = None
    return record


def lock_holder(lock: Path) -> dict | None:
    """The JSON record of whoever holds ``lock`` (None when absent, empty or not a record)."""
    try:
        with open(lock, "rb") as f:
            raw = f.read(_MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    if len(raw) > _MAX_RECORD_BYTES:
        return None
    return _parse_record(raw.decode("utf-8", errors="replace"))


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "a process that is just starting (its lock record is not written yet)"
    return (f"process {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
            + (f" ({holder.get('command')})" if holder.get("command") else ""))


# --------------------------------------------------------------------------- OS locks
def _try_os_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as err:         # a file system without flock (some network mounts)
            import errno
            if err.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True
    import msvcrt                      # pragma: no cover - Windows
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _same_file(fd: int, lock: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(lock)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, size = [], 0
    while size <= _MAX_RECORD_BYTES:
        part = os.read(fd, 65536)
        if not part:
            break
        chunks.append(part)
        size += len(part)
    return b"".join(chunks)


def _acquire(lock: Path, what: str) -> int:
    """An open fd of ``lock`` holding its OS lock, or BusyError."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"cannot create the folder of the lock file {lock} of {what} "
                              f"({err.strerror or err}); choose a writable location") from None
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except IsADirectoryError:
            raise OutputPathError(f"the lock file {lock} of {what} is a folder; remove or rename it") from None
        except OSError as err:
            if lock.is_symlink():
                raise OutputPathError(f"the lock file {lock} of {what} is a symbolic link; retcodec does not "
                                      f"write through it. Remove the link") from None
            if lock.exists() and not lock.is_file():
                raise OutputPathError(f"the lock file {lock} of {what} is not a regular file (a pipe, socket or "
                                      f"device); retcodec leaves it as it is. Remove or rename it") from None
            raise OutputPathError(f"cannot create the lock file {lock} of {what} "
                                  f"({err.strerror or err}); choose a writable location") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputPathError(f"the lock file {lock} of {what} is not a regular file (a pipe, socket or "
                                  f"device); retcodec leaves it as it is. Remove or rename it")
        if not _try_os_lock(fd):
            os.close(fd)
            raise BusyError(f"{what} is in use by {_describe(lock_holder(lock))}. Wait for it to finish, "
                            f"or use another output location")
        if _same_file(fd, lock):
            return fd
        os.close(fd)                   # a releasing holder unlinked it meanwhile: take the new file
    raise BusyError(f"{what}: its lock {lock} keeps changing hands; try again")


def _check_leftover(raw: bytes, lock: Path, what: str) -> str | None:
    """Why a record left in a lock we now hold may be taken over (None: nothing left);
    BusyError for a fresh record of another host, OutputPathError for a file that is no record."""
    if not raw.strip():
        return None
    text = raw.decode("utf-8", errors="replace")
    half_written = text.lstrip().startswith("{") and not _is_json(text)
    holder = _parse_record(text)
    ours = holder is not None and bool({"pid", "host", "epoch", "started"} & set(json.loads(text)))
    if len(raw) > _MAX_RECORD_BYTES or not (half_written or ours):
        raise OutputPathError(f"{lock} (the lock file of {what}) holds something that is not a retcodec lock "
                              f"record ({len(raw)} bytes: {text[:40]!r}); retcodec neither overwrites nor "
                              f"deletes it. Move it away, or delete it if it is a damaged lock")
    if holder is None:
        return "its record was half written by a process that has ended"
    if holder["host"] not in (None, socket.gethostname()):
        epoch = holder["epoch"]
        age = time.time() - (epoch if epoch is not None else lock.stat().st_mtime)
        if age <= STALE_AFTER_S:
            raise BusyError(f"{what} is in use by {_describe(holder)} (its process cannot be checked from "
                            f"this host). Wait for it to finish, or use another output location; if that "
                            f"process is gone for good, delete {lock}")
        return f"it was taken on host {holder['host']} {age / 3600:.0f} h ago (limit {STALE_AFTER_S / 3600:.0f} h)"
    return f"process {holder['pid']} no longer holds it (it has ended)"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _write_record(fd: int, record: dict) -> None:
    data = json.dumps(record).encode("utf-8")
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    os.fsync(fd)


@contextlib.contextmanager
def hold_lock(lock: str | Path, what: str, command: str | None = None) -> Iterator[Path]:
    """Hold ``lock`` for the block; refuse at once if another live process holds it.

    ``what`` names the protected thing in messages (e.g. ``"results folder results/"``).
    """
    lock = user_path(lock, "lock file")
    now = _dt.datetime.now().astimezone()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": now.isoformat(timespec="seconds"),
              "epoch": time.time(), "command": command or " ".join(sys.argv[:3])}
    fd = _acquire(lock, what)
    try:
        reason = _check_leftover(_read_fd(fd), lock, what)
        if reason is not None:
            warnings.warn(f"taking over a stale lock on {what} ({reason})", stacklevel=3)
        _write_record(fd, record)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield lock
    finally:
        try:
            if _same_file(fd, lock):
                with contextlib.suppress(OSError):
                    lock.unlink()          # while still holding the OS lock: see _acquire
        finally:
            os.close(fd)
