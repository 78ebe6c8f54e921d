"""Mutual exclusion across every host that works on a pipeline, with no shared disk.

``MLPIPE_LOCK_URL`` says where locks live:

- ``postgresql://...``: PostgreSQL session advisory locks on a database the deployment
  already has (Airflow's metadata DB or MLflow's backend store). Held by one connection:
  released when the holder exits or dies, whichever host it ran on.
- ``file:///folder``: lock files in a local folder (one host, or a folder every host mounts).
- unset: lock files under a local data root (the embedded default). A data root on object
  storage has no such folder: set ``MLPIPE_LOCK_URL``.

A lock's name is its pipeline and purpose (``flights/promotion``), not a path, so two hosts
that reach the data root through different mounts (or none) take the same lock.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlpipe.errors import StorageError

POLL_S = 0.05  # as filelock polls: parallel ingest tasks take the report and Data Docs locks by turns


@contextmanager
def held(url: str | None, pipeline: str, name: str, timeout: float, folder: Path | None = None) -> Iterator[None]:
    """Hold lock ``<pipeline>/<name>`` for the block; TimeoutError after ``timeout`` seconds.
    Without ``url``, a lock file in ``folder`` (a local data root's), if there is one."""
    key = f"{pipeline}/{name}"
    if url and url.startswith(("postgresql", "postgres://")):
        with _advisory(url, key, timeout):
            yield
        return
    if url and url.startswith("file://"):
        folder = Path(url[len("file://"):])
    elif url:
        raise StorageError(f"MLPIPE_LOCK_URL={_redacted(url)}: expected postgresql://... or file:///folder")
    elif folder is None:
        raise StorageError(f"the data root is not a local folder, so lock {key!r} needs a lock every host "
                           "shares: set MLPIPE_LOCK_URL (postgresql://..., e.g. Airflow's metadata DB; or "
                           "file:///folder on one host)")
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / f"{key.replace('/', '.')}.lock", timeout=timeout):  # an OS lock: released if we die
        yield


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def _advisory(url: str, name: str, timeout: float) -> Iterator[None]:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    if url.startswith("postgres://"):  # the form Airflow connections use; SQLAlchemy wants postgresql
        url = "postgresql://" + url[len("postgres://"):]
    engine = sa.create_engine(url, poolclass=NullPool)
    key, deadline = lock_key(name), time.monotonic() + timeout
    try:
        conn = engine.connect()
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot reach the lock database {_redacted(url)} for lock {name!r}: "
                           f"{str(exc).splitlines()[0]}") from exc
    try:
        while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {name!r} ({_redacted(url)}) still held by another task after {timeout:.0f} s")
            conn.rollback()  # no transaction left open while waiting
            time.sleep(POLL_S)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    finally:
        conn.close()
        engine.dispose()


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
