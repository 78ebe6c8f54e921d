"""Cross-host locks, in-process and across processes: PostgreSQL advisory locks on the
local server, lock files on a local disk, and a clear error where neither applies."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from mlpipe import locks
from mlpipe.errors import StorageError


def _hold(url, folder, name, seconds, started, results):
    """Take the lock, record (start, end) of holding it."""
    with locks.held(url, "p", name, 60, folder):
        begin = time.monotonic()
        started.set()
        time.sleep(seconds)
        results.put((begin, time.monotonic()))


def _exclusive(url, folder):
    """Three processes take the same lock: their holding intervals never overlap."""
    mp = multiprocessing.get_context("spawn")
    started, results = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_hold, args=(url, folder, "promotion", 0.5, started, results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    spans = sorted(results.get(timeout=5) for _ in procs)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


@pytest.mark.integration
def test_advisory_locks_exclude_other_processes(lock_database):
    _exclusive(lock_database, None)


def test_file_locks_exclude_other_processes(tmp_path):
    _exclusive(None, tmp_path)


@pytest.mark.integration
def test_an_advisory_lock_times_out_and_is_released_when_its_holder_dies(lock_database):
    mp = multiprocessing.get_context("spawn")
    started, results = mp.Event(), mp.Queue()
    holder = mp.Process(target=_hold, args=(lock_database, None, "promotion", 600, started, results))
    holder.start()
    assert started.wait(60)
    with pytest.raises(TimeoutError, match="p/promotion"):
        with locks.held(lock_database, "p", "promotion", 0.5):
            pass
    with locks.held(lock_database, "p", "report-index", 5):  # another name: another lock
        pass
    holder.kill()  # no unlock: the server drops the session's locks with its connection
    holder.join()
    with locks.held(lock_database, "p", "promotion", 30):
        pass


def test_a_remote_data_root_needs_a_lock_url(tmp_path):
    with pytest.raises(StorageError, match="MLPIPE_LOCK_URL"):
        with locks.held(None, "p", "promotion", 1):
            pass
    with pytest.raises(StorageError, match="expected postgresql"):
        with locks.held("redis://x", "p", "promotion", 1, tmp_path):
            pass


def test_an_unreachable_lock_database_is_a_clear_error():
    with pytest.raises(StorageError, match=r"cannot reach the lock database postgresql://u:\*\*\*@127.0.0.1:1/"):
        with locks.held("postgresql://u:secret@127.0.0.1:1/db", "p", "promotion", 1):
            pass


def test_lock_keys_are_stable_and_signed_64_bit():
    assert locks.lock_key("flights/promotion") == locks.lock_key("flights/promotion")
    assert locks.lock_key("flights/promotion") != locks.lock_key("bikes/promotion")
    assert -(2 ** 63) <= locks.lock_key("x") < 2 ** 63
