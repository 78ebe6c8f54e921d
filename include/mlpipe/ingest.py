"""The ingest stage, one function per task of the ingest DAG: extract a day's rows,
validate them, build the day's features. Each writes one partition atomically and
returns its URI, row count and content hash (small enough for XCom).

A day that fails validation never replaces good data: its rows go to ``quarantine/``,
and the day keeps the raw, validated and feature partitions of its last passing run
(or none, if it never passed); the day's report says which.
"""

from __future__ import annotations

import datetime as dt
import logging

from mlpipe import features as feat
from mlpipe import report_index
from mlpipe.context import Context
from mlpipe.errors import ValidationFailed
from mlpipe.sources import day_has_rows, read_day, source_files
from mlpipe.storage import Location, file_hash, read_json

log = logging.getLogger(__name__)


def written(path: Location, rows: int) -> dict:
    return {"uri": str(path), "rows": rows, "sha256": file_hash(path)}


def extract_day(ctx: Context, day: dt.date) -> dict:
    frame = read_day(ctx.spec, day, ctx.cache_dir, ctx.connections)
    return written(ctx.store.write("raw", day, frame), len(frame))


def validate_day(ctx: Context, day: dt.date) -> dict:
    """Validate the day's raw rows and publish them as ``validated``; on failure,
    quarantine them and keep the day's last good state (see the module doc)."""
    from mlpipe.validation import validate as run_suite
    from mlpipe.validation.data_docs import DataDocs

    store = ctx.store
    frame = store.read("raw", day)
    origin = f"{store.path('raw', day)} (from {', '.join(source_files(ctx.spec, day, ctx.connections))})"
    try:
        summary = run_suite(frame, ctx.spec, origin, lambda payload: store.write_report("validation", day, payload),
                            DataDocs.of(store, day))
    except ValidationFailed as exc:
        report_index.record(store, "day", str(day), {"validation": exc.report, "data_docs": exc.data_docs},
                            validation_status="failed", data_docs_status="Data Docs")
        raise _quarantine(ctx, day, frame, exc) from exc
    report_index.record(store, "day", str(day), {"validation": summary["report"], "data_docs": summary["data_docs"]},
                        validation_status="passed", data_docs_status="Data Docs")
    return {**written(store.write("validated", day, frame), len(frame)), "report": summary["report"],
            "data_docs": summary["data_docs"]}


def _quarantine(ctx: Context, day: dt.date, frame, exc: ValidationFailed) -> ValidationFailed:
    """Move the failed rows to ``quarantine/``, put back the day's last validated rows
    as ``raw`` (or remove ``raw`` if it never passed), and record both in the report."""
    store = ctx.store
    quarantined = store.write("quarantine", day, frame)
    if store.exists("validated", day):
        store.write("raw", day, store.read("validated", day))
        kept = {layer: file_hash(store.path(layer, day)) for layer in ("raw", "validated", "features")
                if store.exists(layer, day)}
        note = f"rows quarantined in {quarantined}; the day keeps its last validated partitions {sorted(kept)}"
    else:
        store.remove("raw", day)
        kept, note = {}, f"rows quarantined in {quarantined}; the day has no validated data"
    report = read_json(exc.report)
    store.write_report("validation", day, {**report, "quarantine": str(quarantined), "kept": kept})
    return ValidationFailed(f"{exc}\n{note}", exc.failures, exc.report, exc.data_docs)


def build_day_features(ctx: Context, day: dt.date) -> dict:
    """The day's features. History reads only earlier validated days; a day in the
    history window that the source has rows for but that is not validated yet (the
    start of a backfill, or a day a parallel run has not reached) is ingested first
    (extract + validate, no features), so any window backfills with no manual step."""
    spec, store = ctx.spec, ctx.store
    rows = store.read("validated", day)
    start, end = feat.history_days(spec, day)
    expected = [start + dt.timedelta(days=i) for i in range((end - start).days)]
    warm_up = [d for d in expected if not store.exists("validated", d) and day_has_rows(spec, d, ctx.cache_dir, ctx.connections)]
    gaps = [str(d) for d in warm_up if not _ingested(ctx, d)]
    if warm_up:
        log.info("features for %s: ingested %d earlier day(s) for history first: %s%s", day, len(warm_up),
                 [str(d) for d in warm_up], f"; failed validation (no history from them): {gaps}" if gaps else "")
    past, days = store.read_range("validated", start, end, columns=feat.history_columns(spec),
                                  date_column=feat.PARTITION_DATE)
    frame = feat.build_features(spec, day, rows, past)
    return {**written(store.write("features", day, frame), len(frame)), "history_days": [str(d) for d in days],
            "warmed_up": [str(d) for d in warm_up], "history_gaps": gaps}


def _ingested(ctx: Context, day: dt.date) -> bool:
    """Extract and validate ``day``; False if it fails validation (it then adds no history)."""
    extract_day(ctx, day)
    try:
        validate_day(ctx, day)
        return True
    except ValidationFailed as exc:
        log.warning("history day %s failed validation: %s", day, str(exc).splitlines()[0])
        return False


def logical_date_for(day: dt.date, ctx: Context) -> dt.date:
    """The logical date of the ingest run whose data interval is ``day`` (D+1), or a
    ``SourceError`` when ``day`` is outside the spec's schedule (no run would ingest it)."""
    from mlpipe.errors import SourceError

    schedule = ctx.spec.schedule
    if day < schedule.start or (schedule.end is not None and day > schedule.end):
        raise SourceError(f"{day} is outside the spec's schedule [{schedule.start}, {schedule.end or 'open'}]: "
                          "the ingest DAG has no run for it; change schedule in the spec to ingest it")
    return day + dt.timedelta(days=1)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from mlpipe.errors import SourceError

    parser = argparse.ArgumentParser(prog="python -m mlpipe.ingest")
    parser.add_argument("--logical-date", required=True, type=dt.date.fromisoformat, metavar="DAY",
                        help="print the logical date of the ingest run for data day DAY")
    parser.add_argument("--pipeline", help="the pipeline's name (default: the only one, when there is one)")
    args = parser.parse_args(argv)
    try:
        print(logical_date_for(args.logical_date, Context.for_cli(args.pipeline)))
    except SourceError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
