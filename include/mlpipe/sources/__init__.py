"""Readers that assemble one partition of raw rows from the spec's sources."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from mlpipe.errors import SourceError
from mlpipe.sources.files import has_rows, read_source
from mlpipe.spec import PipelineSpec


def read_day(spec: PipelineSpec, day: dt.date, cache_dir: Path) -> pd.DataFrame:
    """The primary source's rows for ``day`` joined to every other source, in row-id order."""
    name = spec.primary
    frame = read_source(name, spec.sources[name], cache_dir, day=day, partition=spec.partition)
    for other, source in list(spec.sources.items())[1:]:
        right = read_source(other, source, cache_dir)
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


def day_has_rows(spec: PipelineSpec, day: dt.date, cache_dir: Path) -> bool:
    """Whether the primary source has rows for ``day``, so its partition is expected."""
    return has_rows(spec.sources[spec.primary], cache_dir, day, spec.partition)
