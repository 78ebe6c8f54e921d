"""The ingest stage, one function per task of the ingest DAG: extract a day's rows,
validate them, build the day's features. Each writes one partition atomically and
returns its URI, row count and content hash (small enough for XCom)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mlpipe import features as feat
from mlpipe.context import Context
from mlpipe.errors import PartitionMissing
from mlpipe.sources import day_has_rows, read_day
from mlpipe.storage import file_hash


def written(path: Path, rows: int) -> dict:
    return {"uri": str(path), "rows": rows, "sha256": file_hash(path)}


def extract_day(ctx: Context, day: dt.date) -> dict:
    frame = read_day(ctx.spec, day, ctx.cache_dir)
    return written(ctx.store.write("raw", day, frame), len(frame))


def validate_day(ctx: Context, day: dt.date) -> dict:
    from mlpipe.validation import validate as run_suite

    frame = ctx.store.read("raw", day)
    summary = run_suite(frame, ctx.spec, str(ctx.store.path("raw", day)),
                        lambda payload: ctx.store.write_report("validation", day, payload))
    return {**written(ctx.store.write("validated", day, frame), len(frame)), "report": summary["report"]}


def build_day_features(ctx: Context, day: dt.date) -> dict:
    spec, store = ctx.spec, ctx.store
    rows = store.read("validated", day)
    start, end = feat.history_days(spec, day)
    past, days = store.read_range("validated", start, end, columns=feat.history_columns(spec),
                                  date_column=feat.PARTITION_DATE)
    expected = [start + dt.timedelta(days=i) for i in range((end - start).days)]
    pending = [d for d in expected if d not in days and day_has_rows(spec, d, ctx.cache_dir)]
    if pending:  # point in time means *all* earlier days: wait rather than build from a partial history
        raise PartitionMissing(f"features for {day} need validated partitions for {[str(d) for d in pending]}, "
                               "which the source has rows for: ingest those days first")
    frame = feat.build_features(spec, day, rows, past)
    return {**written(store.write("features", day, frame), len(frame)), "history_days": [str(d) for d in days]}
