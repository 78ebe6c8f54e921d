"""Readers that assemble one partition of raw rows from the spec's sources, with the
spec's column types applied to that day's rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from mlpipe.errors import SourceError
from mlpipe.sources.files import has_rows, read_source, resolve
from mlpipe.spec import PipelineSpec


def read_day(spec: PipelineSpec, day: dt.date, cache_dir: Path) -> pd.DataFrame:
    """The primary source's rows for ``day`` joined to every other source, in row-id order."""
    name = spec.primary
    frame = typed(read_source(name, spec.sources[name], cache_dir, day=day, partition=spec.partition), spec)
    for other, source in list(spec.sources.items())[1:]:
        right = typed(read_source(other, source, cache_dir), spec)
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


def source_files(spec: PipelineSpec, day: dt.date) -> list[str]:
    """The files a day's rows come from, primary source first (for messages and reports)."""
    return [str(resolve(source.path, day)) for source in spec.sources.values()]


def day_has_rows(spec: PipelineSpec, day: dt.date, cache_dir: Path) -> bool:
    """Whether the primary source has rows for ``day``, so its partition is expected."""
    return has_rows(spec.sources[spec.primary], cache_dir, day, spec.partition)
