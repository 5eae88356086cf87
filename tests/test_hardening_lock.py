"""The results-folder lock under concurrency and with malformed records (issue 26)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time

import pytest

from retcodec.errors import BusyError, OutputPathError
from retcodec.io.locking import hold_lock, lock_holder

N_PROCESSES = 16


def _contender(lock: str, flag: str, barrier, results, rounds: int) -> None:
    """Try the lock ``rounds`` times; inside it, claim ``flag`` exclusively (O_EXCL) for a moment."""
    got = overlap = busy = 0
    for _ in range(rounds):
        barrier.wait()
        try:
            with hold_lock(lock, "thing"):
                got += 1
                try:
                    fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    overlap += 1           # another process holds the lock at the same time
                else:
                    os.close(fd)
                    time.sleep(0.01)
                    os.unlink(flag)
        except BusyError:
            busy += 1
    results.put((got, overlap, busy))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_sixteen_processes_racing_never_hold_the_lock_together(tmp_path):
    ctx = mp.get_context("fork")
    rounds = 5
    barrier, results = ctx.Barrier(N_PROCESSES), ctx.Queue()
    lock, flag = str(tmp_path / ".retcodec.lock"), str(tmp_path / "holder")
    procs = [ctx.Process(target=_contender, args=(lock, flag, barrier, results, rounds))
             for _ in range(N_PROCESSES)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    got = sum(o[0] for o in outcomes)
    assert sum(o[1] for o in outcomes) == 0                     # never two holders at once
    assert got >= rounds                                        # every round someone got it ...
    assert got + sum(o[2] for o in outcomes) == N_PROCESSES * rounds   # ... and the rest were refused
    assert not os.path.exists(lock)                             # released by the last holder


def test_empty_or_half_written_record_of_a_live_holder_is_busy_not_stale(tmp_path):
    lock = tmp_path / "x.lock"
    with hold_lock(lock, "thing"):
        for text in ("", '{"pid": 12'):
            lock.write_text(text)                  # what another process sees while the holder writes
            with pytest.raises(BusyError, match="in use"):
                with hold_lock(lock, "thing"):
                    pass


@pytest.mark.parametrize("text", ['{"pid": "x", "host": 3, "epoch": "soon"}', '{"pid": 1, "host": null, "epoch": [1]}',
                                  '{"pid": 12', '{"started": {"a": 1}}', '{"epoch": NaN, "pid": true}'])
def test_damaged_records_left_behind_are_taken_over_with_a_warning(tmp_path, text):
    lock = tmp_path / "x.lock"
    lock.write_text(text)
    with pytest.warns(UserWarning, match="stale lock"):
        with hold_lock(lock, "thing"):
            assert lock_holder(lock)["pid"] == os.getpid()
    assert not lock.exists()


@pytest.mark.parametrize("text", ["[1, 2]", '"hello"', "{}", "null", "42", "hello", '{"my": "settings"}'])
def test_json_of_another_shape_at_the_lock_path_is_refused_and_kept(tmp_path, text):
    lock = tmp_path / "x.lock"
    lock.write_text(text)
    with pytest.raises(OutputPathError, match="not a retcodec lock record"):
        with hold_lock(lock, "thing"):
            pass
    assert lock.read_text() == text


def test_lock_path_that_is_a_symlink_is_refused(tmp_path):
    target = tmp_path / "config.json"
    target.write_text('{"pid": 1}')
    (tmp_path / "x.lock").symlink_to(target)
    with pytest.raises(OutputPathError, match="symbolic link"):
        with hold_lock(tmp_path / "x.lock", "thing"):
            pass
    assert target.read_text() == '{"pid": 1}'


def test_record_of_another_host_with_non_numeric_time_is_respected(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "now", "epoch": "noon"}))
    with pytest.raises(BusyError, match="host elsewhere"):
        with hold_lock(lock, "thing"):
            pass


def test_a_user_file_at_the_lock_path_is_neither_overwritten_nor_deleted(tmp_path):
    lock = tmp_path / ".retcodec.lock"
    lock.write_text("my notes, not a lock\n")
    with pytest.raises(OutputPathError, match="not a retcodec lock record"):
        with hold_lock(lock, "thing"):
            pass
    assert lock.read_text() == "my notes, not a lock\n"
    (tmp_path / "d.lock").mkdir()
    with pytest.raises(OutputPathError, match="is a folder"):
        with hold_lock(tmp_path / "d.lock", "thing"):
            pass


def test_dead_holder_on_this_host_is_taken_over(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(json.dumps({"pid": 2 ** 22 + 17, "host": socket.gethostname(), "started": "x",
                                "epoch": 0}))
    with pytest.warns(UserWarning, match="no longer holds it"):
        with hold_lock(lock, "thing"):
            pass


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_pipe_or_socket_at_the_lock_path_is_refused_and_left(tmp_path, kind):
    lock = tmp_path / ".retcodec.lock"
    sock = None
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(lock))
    try:
        with pytest.raises(OutputPathError, match="not a regular file"):
            with hold_lock(lock, "thing"):
                pass
        assert lock.exists() and not lock.is_file()
    finally:
        if sock is not None:
            sock.close()
