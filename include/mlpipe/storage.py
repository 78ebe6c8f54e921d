"""Partitioned Parquet under a data root: ``<root>/<pipeline>/<layer>/date=YYYY-MM-DD.parquet``.

Each partition is one file, written to a temporary name in the same folder and renamed
into place, so a reader sees the old partition or the new one, never half of either,
and a rerun replaces instead of duplicating. :func:`atomic_write` and
:func:`atomic_write_dir` are the package's one way to write a file or a directory whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlpipe.errors import PartitionMissing

LAYERS = ("raw", "validated", "features", "predictions", "quarantine")  # quarantine: rows that failed validation


@dataclass(frozen=True)
class Store:
    root: Path
    pipeline: str

    def layer_dir(self, layer: str) -> Path:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")
        return Path(self.root) / self.pipeline / layer

    def path(self, layer: str, day: dt.date) -> Path:
        return self.layer_dir(layer) / f"date={day.isoformat()}.parquet"

    def report_dir(self, kind: str = "") -> Path:
        """``<root>/<pipeline>/reports/<kind>``; without ``kind``, the reports folder itself:
        the one place report paths are made."""
        return Path(self.root) / self.pipeline / "reports" / kind

    def report_path(self, kind: str, key: dt.date | str, suffix: str = ".json") -> Path:
        name = key.isoformat() if isinstance(key, dt.date) else key
        return self.report_dir(kind) / f"{name}{suffix}"

    def exists(self, layer: str, day: dt.date) -> bool:
        return self.path(layer, day).exists()

    def write(self, layer: str, day: dt.date, frame: pd.DataFrame) -> Path:
        """Atomically write one partition and return its path."""
        return atomic_write(self.path(layer, day),
                            lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd"))

    def remove(self, layer: str, day: dt.date) -> bool:
        """Delete a partition if it exists; whether it did."""
        try:
            self.path(layer, day).unlink()
            return True
        except FileNotFoundError:
            return False

    def read(self, layer: str, day: dt.date, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.path(layer, day)
        if not path.exists():
            raise PartitionMissing(f"{layer} partition for {day} not found at {path}")
        return pd.read_parquet(path, columns=columns)

    def days(self, layer: str, start: dt.date, end: dt.date) -> list[dt.date]:
        """Existing partition dates in ``[start, end)``, ascending."""
        folder = self.layer_dir(layer)
        if not folder.exists():
            return []
        found = []
        for p in folder.glob("date=*.parquet"):
            day = dt.date.fromisoformat(p.name[5:15])
            if start <= day < end:
                found.append(day)
        return sorted(found)

    def read_range(
        self, layer: str, start: dt.date, end: dt.date, columns: list[str] | None = None,
        date_column: str | None = None,
    ) -> tuple[pd.DataFrame, list[dt.date]]:
        """Concatenate the existing partitions in ``[start, end)``; also return their dates.

        With ``date_column``, each row gets its partition's date in that column.
        """
        days = self.days(layer, start, end)
        frames = [self.read(layer, d, columns) for d in days]
        if date_column:
            frames = [f.assign(**{date_column: d}) for f, d in zip(frames, days, strict=True)]
        if not frames:
            return pd.DataFrame(columns=[*(columns or []), *([date_column] if date_column else [])]), []
        return pd.concat(frames, ignore_index=True), days

    def count_values(self, layer: str, start: dt.date, end: dt.date, column: str) -> int:
        """Non-null values of ``column`` in the existing partitions in ``[start, end)``,
        from the Parquet footers' statistics (no data read; a file without them is read)."""
        import pyarrow.parquet as pq

        total = 0
        for day in self.days(layer, start, end):
            meta = pq.read_metadata(self.path(layer, day))
            index = meta.schema.to_arrow_schema().get_field_index(column)
            if index < 0:  # a partition without the column has no values of it
                continue
            stats = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
            if all(s is not None and s.has_null_count for s in stats):
                total += meta.num_rows - sum(s.null_count for s in stats)
            else:
                total += int(self.read(layer, day, [column])[column].notna().sum())
        return total

    def write_report(self, kind: str, key: dt.date | str, payload: dict) -> Path:
        """Write a JSON report (validation per day, decisions per train run) atomically."""
        return atomic_write(self.report_path(kind, key), json.dumps(payload, indent=2, default=str))


_UMASK = os.umask(0o022)  # read once (umask can only be read by setting it), then restored
os.umask(_UMASK)


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], object], exclusive: bool = False) -> Path:
    """Write ``path`` whole or not at all and return it: ``data`` (text, bytes, or a
    function writing the file it is given) goes to a temporary file in the same folder,
    flushed to disk, then renamed over ``path``. ``exclusive``: an existing ``path`` is
    never replaced (FileExistsError) -- the ledger's entries. Readers never see half a
    file; a failed write leaves the old one and no temporary file."""
    path = Path(path)
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


def atomic_write_dir(path: Path, build: Callable[[Path], Path | None]) -> bool:
    """Create the directory ``path`` whole or not at all: ``build(scratch)`` builds it
    under a scratch folder next to ``path`` and returns it (None: nothing to create),
    then it is renamed into place. A ``path`` that a concurrent writer created first is
    kept. Whether ``path`` is there afterwards (False when ``build`` built nothing)."""
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


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
