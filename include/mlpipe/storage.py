"""Partitioned Parquet and reports under a data root that is a local folder or any fsspec
URL (``s3://bucket/prefix``, ``gs://``, ``abfs://``, ``file://``):
``<root>/<pipeline>/<layer>/date=YYYY-MM-DD.parquet``.

:func:`location` is the one way a path or URL becomes something to read and write: a
``pathlib.Path`` on a local disk, a ``UPath`` (fsspec behind ``pathlib``'s interface)
elsewhere. Credentials are never in a URL or the spec: each store's own environment
variables and config files (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...) apply, plus ``MLPIPE_STORAGE_OPTIONS`` (JSON
fsspec options, which the Airflow layer fills from the connection ``MLPIPE_STORAGE_CONN_ID``).

Each partition, report and ledger entry is one file written whole: on a local disk to a
temporary name and renamed into place, on an object store as one object write (a reader
sees the old object or the new one). A rerun replaces instead of duplicating.
:func:`atomic_write` is the package's one way to write a file; listing a layer lists
names (a prefix listing) and never reads a partition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from mlpipe.errors import AccessDenied, MlpipeError, PartitionMissing, StorageError

if TYPE_CHECKING:
    import pandas as pd

LAYERS = ("raw", "validated", "features", "predictions", "quarantine")  # quarantine: rows that failed validation
Location = Union[Path, Any]  # a pathlib.Path, or a upath.UPath on an fsspec filesystem


def is_remote(url: str | os.PathLike) -> bool:
    """Whether ``url`` names something other than a local file (``s3://``, ``gs://``, ...)."""
    if isinstance(url, Path):
        return False
    text = str(url)
    return "://" in text and not text.startswith(("file://", "pkg://"))


def storage_options() -> dict:
    """fsspec options for every remote location (``MLPIPE_STORAGE_OPTIONS``, JSON). Listings
    are never cached: other hosts write between two listings of this process."""
    raw = os.environ.get("MLPIPE_STORAGE_OPTIONS") or "{}"
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"MLPIPE_STORAGE_OPTIONS is not JSON: {exc}") from exc
    return {"use_listings_cache": False, **options}


def location(url: str | os.PathLike) -> Location:
    """``url`` as a ``Path`` (a local path or ``file://`` URL) or a ``UPath`` (any other
    fsspec URL), ready for ``/``, ``exists()``, ``read_bytes()``, ``glob()``..."""
    if isinstance(url, Path) or not isinstance(url, str) and hasattr(url, "fs"):
        return url
    text = os.fspath(url)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if not is_remote(text):
        return Path(text)
    from upath import UPath

    return UPath(text, **storage_options())


@contextmanager
def guarded(path: Location) -> Iterator[None]:
    """Name ``path`` in a remote store's errors: refused credentials are ``AccessDenied``
    (final), anything else but a missing object a ``StorageError`` (may be transient)."""
    if not is_remote(path):
        yield
        return
    try:
        yield
    except (FileNotFoundError, FileExistsError, MlpipeError):
        raise
    except PermissionError as exc:
        raise AccessDenied(f"{path}: access denied ({exc}): check the store's credentials") from exc
    except Exception as exc:
        raise StorageError(f"{path}: {type(exc).__name__}: {exc}") from exc


def relative(target: str | os.PathLike, folder: Location) -> str:
    """``target``'s path relative to ``folder`` (both on the same store), for links."""
    target = location(target)
    if is_remote(folder):
        return posixpath.relpath(target.path, folder.path)
    return os.path.relpath(Path(target).resolve(), Path(folder).resolve())


@dataclass(frozen=True)
class Store:
    """One pipeline's data under ``root`` (a :func:`location`). ``lock_url``: where its
    cross-host locks live (see :mod:`mlpipe.locks`)."""

    root: Location
    pipeline: str
    lock_url: str | None = None

    @property
    def base(self) -> Location:
        return location(self.root) / self.pipeline

    def layer_dir(self, layer: str) -> Location:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")
        return self.base / layer

    def path(self, layer: str, day: dt.date) -> Location:
        return self.layer_dir(layer) / f"date={day.isoformat()}.parquet"

    def report_dir(self, kind: str = "") -> Location:
        """``<root>/<pipeline>/reports/<kind>``; without ``kind``, the reports folder itself:
        the one place report paths are made."""
        folder = self.base / "reports"
        return folder / kind if kind else folder

    def report_path(self, kind: str, key: dt.date | str, suffix: str = ".json") -> Location:
        name = key.isoformat() if isinstance(key, dt.date) else key
        return self.report_dir(kind) / f"{name}{suffix}"

    def exists(self, layer: str, day: dt.date) -> bool:
        return self.path(layer, day).exists()

    def write(self, layer: str, day: dt.date, frame: pd.DataFrame) -> Location:
        """Atomically write one partition and return its path."""
        return atomic_write(self.path(layer, day),
                            lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd"))

    def remove(self, layer: str, day: dt.date) -> bool:
        """Delete a partition if it exists; whether it did."""
        path = self.path(layer, day)
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def read(self, layer: str, day: dt.date, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.path(layer, day)
        try:
            return read_parquet(path, columns)
        except FileNotFoundError:
            raise PartitionMissing(f"{layer} partition for {day} not found at {path}") from None

    def days(self, layer: str, start: dt.date, end: dt.date) -> list[dt.date]:
        """Existing partition dates in ``[start, end)``, ascending: from the names in the
        layer's folder, never from the partitions' contents. A range within a few months
        lists only those months' names (``date=YYYY-MM`` prefixes): a day's look-back costs
        the same after years of partitions; a longer range lists the layer once."""
        months = sorted({(start + dt.timedelta(days=i)).strftime("%Y-%m") for i in range(min((end - start).days, 93))})
        prefixes = [f"date={m}" for m in months] if (end - start).days <= 62 else ["date="]
        found = []
        for prefix in prefixes:
            for name in listing(self.layer_dir(layer), prefix):
                if name.startswith(prefix) and name.endswith(".parquet"):
                    day = dt.date.fromisoformat(name[5:15])
                    if start <= day < end:
                        found.append(day)
        return sorted(found)

    def _days_newest_first(self, layer: str, start: dt.date, end: dt.date) -> Iterator[dt.date]:
        """:meth:`days` from the latest back, a month's names listed at a time: a caller that
        stops early (``count_values`` with ``enough``) asks only for the months it reached,
        whatever the span."""
        month, first = (end - dt.timedelta(days=1)).replace(day=1), start.replace(day=1)
        while month >= first:
            prefix = f"date={month:%Y-%m}"
            names = [n for n in listing(self.layer_dir(layer), prefix) if n.startswith(prefix) and n.endswith(".parquet")]
            days = (dt.date.fromisoformat(n[5:15]) for n in names)
            yield from sorted((d for d in days if start <= d < end), reverse=True)
            month = (month - dt.timedelta(days=1)).replace(day=1)

    def read_range(
        self, layer: str, start: dt.date, end: dt.date, columns: list[str] | None = None,
        date_column: str | None = None,
    ) -> tuple[pd.DataFrame, list[dt.date]]:
        """Concatenate the existing partitions in ``[start, end)``; also return their dates.

        With ``date_column``, each row gets its partition's date in that column.
        """
        import pandas as pd

        days = self.days(layer, start, end)
        frames = self._read_many(layer, days, columns)
        if date_column:
            frames = [f.assign(**{date_column: d}) for f, d in zip(frames, days, strict=True)]
        if not frames:
            return pd.DataFrame(columns=[*(columns or []), *([date_column] if date_column else [])]), []
        return pd.concat(frames, ignore_index=True), days

    def _read_many(self, layer: str, days: list[dt.date], columns: list[str] | None) -> list[pd.DataFrame]:
        """The partitions of ``days``; from an object store, fetched concurrently."""
        if not is_remote(self.root) or len(days) < 2:
            return [self.read(layer, d, columns) for d in days]
        import pandas as pd

        paths = [self.path(layer, d) for d in days]
        fs = paths[0].fs
        with guarded(paths[0]):
            blobs = fs.cat([p.path for p in paths], on_error="raise")
        return [pd.read_parquet(io.BytesIO(blobs[p.path]), columns=columns) for p in paths]

    def count_values(self, layer: str, start: dt.date, end: dt.date, column: str, enough: int | None = None) -> int:
        """Non-null values of ``column`` in the existing partitions in ``[start, end)``,
        from the Parquet footers' statistics (no data read; a file without them is read),
        latest day first; with ``enough``, it stops once that many are counted (a bound
        that holds whatever the span)."""
        import pyarrow.parquet as pq

        total = 0
        for day in self._days_newest_first(layer, start, end):
            with self.path(layer, day).open("rb") as fh:
                meta = pq.read_metadata(fh)
            index = meta.schema.to_arrow_schema().get_field_index(column)
            if index < 0:  # a partition without the column has no values of it
                continue
            stats = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
            if all(s is not None and s.has_null_count for s in stats):
                total += meta.num_rows - sum(s.null_count for s in stats)
            else:
                total += int(self.read(layer, day, [column])[column].notna().sum())
            if enough is not None and total >= enough:  # before the next day: it may list another month
                break
        return total

    def write_report(self, kind: str, key: dt.date | str, payload: dict) -> Location:
        """Write a JSON report (validation per day, decisions per train run) atomically."""
        return atomic_write(self.report_path(kind, key), json.dumps(payload, indent=2, default=str))

    def lock(self, name: str, timeout: float) -> Any:
        """A context manager holding this pipeline's lock ``name`` across every host that
        shares the data root (see :mod:`mlpipe.locks`)."""
        from mlpipe import locks

        return locks.held(self.lock_url, self.pipeline, name, timeout,
                          None if is_remote(self.root) else Path(self.root) / ".locks")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file or object: one GET on an object store (no HEAD, no ranged reads)."""
    path = location(path)
    if not is_remote(path):
        return path.read_bytes()
    with guarded(path):
        if "s3" in path.fs.protocol:  # else s3fs HEADs the object first, to choose ranged reads for big ones
            return path.fs.cat_file(path.path, max_concurrency=1)
        return path.fs.cat_file(path.path)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    path = location(path)
    if is_remote(path):  # partitions are small: one GET beats pyarrow's footer-then-columns range reads
        return pd.read_parquet(io.BytesIO(read_bytes(path)), columns=columns)
    return pd.read_parquet(path, columns=columns)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_bytes(path))


def listing(folder: str | os.PathLike, prefix: str = "") -> list[str]:
    """The names in ``folder`` (none if it does not exist): one listing, no file opened.
    With ``prefix``, an object store is asked only for names that start with it (a
    server-side filter); callers filter the names themselves (another store may ignore it)."""
    folder = location(folder)
    if not is_remote(folder):
        try:
            return os.listdir(folder)
        except FileNotFoundError:
            return []
    try:
        with guarded(folder):
            if prefix:
                found = folder.fs.find(folder.path, maxdepth=1, prefix=prefix)
            else:
                found = folder.fs.ls(folder.path, detail=False, refresh=True)
            return [posixpath.basename(p.rstrip("/")) for p in found]
    except FileNotFoundError:
        return []


_UMASK = os.umask(0o022)  # read once (umask can only be read by setting it), then restored
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object],
                 exclusive: bool = False) -> Location:
    """Write ``path`` whole or not at all and return it. ``data``: text, bytes, or a function
    writing the local file it is given. ``exclusive``: an existing ``path`` is never
    replaced (FileExistsError) -- the ledger's entries. Readers never see half a file; a
    failed write leaves the old one and nothing else.

    On a local disk the data goes to a temporary file in the same folder, flushed, then
    renamed (or, exclusive, hard-linked) over ``path``. On an object store it is one object
    write, conditional (``If-None-Match``) when exclusive."""
    path = location(path)
    if is_remote(path):
        payload = _as_bytes(data)
        with guarded(path):
            _put_object(path, payload, exclusive)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # the mode a plain open() gives, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(Path(tmp))  # through its own handle; the fsync below covers the file, whoever wrote it
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # unlike a rename, fails if the name exists
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _as_bytes(data: str | bytes | Callable[[Path], object]) -> bytes:
    if not callable(data):
        return data.encode() if isinstance(data, str) else data
    with tempfile.TemporaryDirectory(prefix="mlpipe-") as scratch:
        tmp = Path(scratch) / "object"
        data(tmp)
        return tmp.read_bytes()


def _put_object(path: Location, payload: bytes, exclusive: bool) -> None:
    fs = path.fs
    if not exclusive:
        fs.pipe_file(path.path, payload)
        return
    try:  # a conditional create, where the store has one (S3: If-None-Match)
        with fs.open(path.path, "xb") as fh:
            fh.write(payload)
    except (ValueError, NotImplementedError):  # no exclusive mode: callers hold the pipeline's lock
        if fs.exists(path.path):
            raise FileExistsError(str(path)) from None
        fs.pipe_file(path.path, payload)


def atomic_write_dir(path: Path, build: Callable[[Path], Path | None]) -> bool:
    """Create the local directory ``path`` (a cache) whole or not at all: ``build(scratch)``
    builds it under a scratch folder next to ``path`` and returns it (None: nothing to
    create), then it is renamed into place. A ``path`` that a concurrent writer created
    first is kept. Whether ``path`` is there afterwards (False when ``build`` built nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        built = build(Path(scratch))
        if built is None:
            return False
        try:
            os.rename(built, path)
        except OSError:
            if not path.exists():
                raise
    return True


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with location(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
