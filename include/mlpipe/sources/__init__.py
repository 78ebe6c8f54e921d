"""Readers that assemble one partition of raw rows from the spec's sources (files, or SQL
through a connection: ``sources.sql``), with the spec's column types applied to that
day's rows.

``connections`` (conn_id -> SQLAlchemy URI, what the Airflow layer resolved; see
``Context.connections``) serves the SQL sources; a conn_id missing from it is looked up
in the environment (``AIRFLOW_CONN_<CONN_ID>``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mlpipe.errors import SourceError
from mlpipe.sources.files import has_rows, read_source, resolve
from mlpipe.sources.sql import describe, has_day, read_sql
from mlpipe.spec import PipelineSpec, SourceSpec


def read_day(spec: PipelineSpec, day: dt.date, cache_dir: Path,
             connections: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The primary source's rows for ``day`` joined to every other source (read whole, or a SQL query
    taking the day's bounds), in row-id order."""
    name = spec.primary
    frame = _numbered(typed(_read(spec, name, spec.sources[name], day, cache_dir, connections, primary=True), spec),
                      spec.sources[name].row_number, spec.row_id)
    for other, source in list(spec.sources.items())[1:]:
        right = typed(_read(spec, other, source, day, cache_dir, connections, primary=False), spec)
        keys = source.join.keys
        missing = [k for k in keys if k not in frame.columns or k not in right.columns]
        if missing:
            raise SourceError(f"join {name} -> {other}: key columns {missing} missing on one side")
        clash = sorted((set(frame.columns) & set(right.columns)) - set(keys))
        if clash:
            raise SourceError(f"join {name} -> {other}: columns {clash} exist on both sides; rename them")
        try:
            frame = frame.merge(right, on=keys, how=source.join.how, validate="many_to_one")
        except pd.errors.MergeError as exc:
            raise SourceError(f"join {name} -> {other}: keys {keys} are not unique in {other}") from exc
    present = [c for c in spec.row_id if c in frame.columns]
    return frame.sort_values(present, kind="stable").reset_index(drop=True)


def _numbered(frame: pd.DataFrame, column: str | None, row_id: list[str]) -> pd.DataFrame:
    """``frame`` with ``column`` numbering the rows that share the other row-id columns."""
    if column is None:
        return frame
    others = [c for c in row_id if c != column and c in frame.columns]
    number = frame.groupby(others, sort=False, dropna=False).cumcount() if others else pd.RangeIndex(len(frame))
    return frame.assign(**{column: pd.array(number, dtype="Int64")})


def _read(spec: PipelineSpec, name: str, source: SourceSpec, day: dt.date, cache_dir: Path,
          connections: Mapping[str, str] | None, primary: bool) -> pd.DataFrame:
    if source.is_sql:
        return read_sql(name, source, connections, day, spec.partition, whole=not primary)
    if primary:
        return read_source(name, source, cache_dir, day=day, partition=spec.partition)
    return read_source(name, source, cache_dir)


def typed(frame: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """``frame`` with each text column converted as the spec's validation rule for it says.

    ``int`` columns become nullable ``Int64`` and ``float`` / ``number`` columns
    ``float64``, when every value parses (and, for ``int``, is integral); a column with a
    value that does not parse stays text, so the day fails its type rule and only that
    day. Undeclared text columns of numbers become ``Int64`` (integral) or ``float64``.
    Columns that already have a type (Parquet) and ``string`` columns are left as they are.
    """
    rules = spec.validation.columns
    return frame.assign(**{c: _converted(frame[c], rules[c].type if c in rules else None) for c in frame.columns
                           if _is_text(frame[c]) and (c not in rules or rules[c].type != "string")})


def _is_text(values: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(values) or values.dtype == object


def _converted(values: pd.Series, declared: str | None) -> pd.Series:
    numbers = pd.to_numeric(values.str.strip() if hasattr(values, "str") else values, errors="coerce")
    if (numbers.isna() & values.notna()).any():
        return values  # not all numbers: left as text for the type rule (or as an undeclared text column)
    integral = bool((numbers.dropna() % 1 == 0).all())
    if declared in ("float", "number") or not integral:
        return numbers.astype("float64")
    return numbers.astype("Int64")


def source_files(spec: PipelineSpec, day: dt.date, connections: Mapping[str, str] | None = None) -> list[str]:
    """Where a day's rows come from, primary source first (for messages and reports): files,
    or a SQL source's connection and table (never its password)."""
    return [describe(source, connections) if source.is_sql
            else str(resolve(source.path, day)) for source in spec.sources.values()]


def day_has_rows(spec: PipelineSpec, day: dt.date, cache_dir: Path,
                 connections: Mapping[str, str] | None = None) -> bool:
    """Whether the primary source has rows for ``day``, so its partition is expected."""
    source = spec.sources[spec.primary]
    if source.is_sql:
        return has_day(spec.primary, source, connections, day, spec.partition)
    return has_rows(source, cache_dir, day, spec.partition)
