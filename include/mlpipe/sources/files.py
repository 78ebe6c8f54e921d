"""File sources (CSV or Parquet): local paths, any fsspec URL (``s3://bucket/key``,
``gs://``, ``abfs://``; credentials from the store's environment, see mlpipe.storage), or
``pkg://package/path`` inside an installed package (read from its directory, without
importing the package).

A path may contain ``{date}`` (one file per day, e.g. ``drops/{date}.csv``). A single
whole-history file is converted once per host into a local Parquet cache sorted by
partition date (keyed by the file's size and modification time or ETag), so reading one
day touches only that day's row groups instead of parsing or downloading the whole file.

CSV cells are read as text: types come from the spec, applied to each day's rows
(``sources.typed``), so a bad value on one day cannot change the type pandas would infer
for the whole file and fail every other day.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from mlpipe.errors import SourceError, StorageError
from mlpipe.spec import PartitionSpec, SourceSpec
from mlpipe.storage import Location, atomic_write, guarded, is_remote, location

PARTITION_COL = "__partition_date"
CACHE_FORMAT = "text-cells-v2"  # part of each cache file's key: a change of format rebuilds the caches


def resolve(path: str, day: dt.date | None = None) -> Location:
    """Turn a spec path (possibly ``pkg://``, a URL, or with ``{date}``) into a location."""
    if "{date}" in path:
        if day is None:
            raise SourceError(f"{path}: a per-day path needs a date")
        path = path.replace("{date}", day.isoformat())
    if path.startswith("pkg://"):
        package, _, inner = path[len("pkg://") :].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise SourceError(f"{path}: package {package!r} is not installed")
        return Path(next(iter(found.submodule_search_locations))) / inner
    return location(path)


@contextmanager
def reading(path: Location) -> Iterator[None]:
    """Turn the store's errors into ours: a missing file or object is a ``SourceError``
    (final); refused credentials ``AccessDenied`` (final); anything else from a remote
    store (unreachable, throttled) a ``StorageError``, which the task's retries may outlive."""
    try:
        with guarded(path):
            yield
    except FileNotFoundError:
        raise SourceError(f"{path}: source file not found") from None


def read_file(path: Location, fmt: str, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        with reading(path), path.open("rb") as fh:
            if fmt == "parquet":
                return pd.read_parquet(fh, columns=columns)
            return pd.read_csv(fh, usecols=columns, dtype=str, compression=_compression(path.name))
    except ValueError as exc:  # missing usecols, unparsable file
        raise SourceError(f"{path}: cannot read {fmt}: {exc}") from exc


def _compression(name: str) -> str | None:
    from pandas.io.common import infer_compression

    return infer_compression(name, "infer")  # from the name, as pandas would for a path


def partition_dates(values: pd.Series, partition: PartitionSpec) -> pd.Series:
    """Local calendar date of each timestamp (naive timestamps are taken as UTC)."""
    stamps = pd.to_datetime(values, utc=True, errors="coerce")
    return stamps.dt.tz_convert(partition.timezone).dt.date


def _version(path: Location) -> str:
    """What changes when the file does: its size and modification time, or an object's ETag."""
    with reading(path):
        if is_remote(path):
            info = path.fs.info(path.path)
            return f"{path}|{info.get('size')}|{info.get('ETag') or info.get('LastModified') or info.get('mtime')}"
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _cached(source: SourceSpec, path: Location, partition: PartitionSpec | None, cache_dir: Path) -> Path:
    tag = f"{partition.column}@{partition.timezone}" if partition else "all"
    key_text = f"{CACHE_FORMAT}|{_version(path)}|{tag}"
    ident = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    key = f"{path.name}-{ident}.parquet"
    cached = cache_dir / key
    if cached.exists():
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{key}.lock", "w") as lock:  # parallel tasks build the cache once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.exists():
            _build_cache(source, path, partition, cached)
    return cached


def _build_cache(source: SourceSpec, path: Location, partition: PartitionSpec | None, cached: Path) -> None:
    frame = read_file(path, source.file_format)
    if partition is not None:
        if partition.column not in frame.columns:
            raise SourceError(f"{path}: partition column {partition.column!r} not found")
        frame[PARTITION_COL] = partition_dates(frame[partition.column], partition).astype("string")
        frame = frame.sort_values(PARTITION_COL, kind="stable")
    atomic_write(cached, lambda tmp: frame.to_parquet(tmp, index=False, row_group_size=20_000))


def read_source(
    name: str,
    source: SourceSpec,
    cache_dir: Path,
    day: dt.date | None = None,
    partition: PartitionSpec | None = None,
) -> pd.DataFrame:
    """Read a source; with ``day`` and ``partition``, only that day's rows."""
    path = resolve(source.path, day)
    try:
        if "{date}" in source.path:
            frame = read_file(path, source.file_format)
            if partition is not None and day is not None:
                if partition.column not in frame.columns:
                    raise SourceError(f"{path}: partition column {partition.column!r} not found")
                frame = frame[partition_dates(frame[partition.column], partition) == day]
        else:
            cached = _cached(source, path, partition if day else None, cache_dir)
            if day is not None and partition is not None:
                table = pq.read_table(cached, filters=[(PARTITION_COL, "==", day.isoformat())])
                frame = table.to_pandas().drop(columns=[PARTITION_COL])
            else:
                frame = pd.read_parquet(cached)
    except StorageError as exc:  # the same class, with the source and day named
        raise type(exc)(f"source {name!r}{f' for {day}' if day else ''}: {exc}") from exc
    except SourceError as exc:
        raise SourceError(f"source {name!r}{f' for {day}' if day else ''}: {exc}") from exc
    if source.columns is not None:
        missing = [c for c in source.columns if c not in frame.columns]
        if missing:
            raise SourceError(f"source {name!r} ({path}): columns {missing} not found")
        frame = frame[source.columns]
    return frame.rename(columns=source.rename).reset_index(drop=True)


def has_rows(source: SourceSpec, cache_dir: Path, day: dt.date, partition: PartitionSpec) -> bool:
    """Whether the source holds any row for ``day`` (cheap: a file check or a filtered count)."""
    path = resolve(source.path, day)
    with reading(path):
        present = path.exists()
    if "{date}" in source.path or not present:
        return present
    cached = _cached(source, path, partition, cache_dir)
    return pq.read_table(cached, columns=[PARTITION_COL], filters=[(PARTITION_COL, "==", day.isoformat())]).num_rows > 0
