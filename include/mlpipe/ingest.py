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

import pandas as pd

from mlpipe import features as feat
from mlpipe import online, ranges, report_index
from mlpipe.context import Context
from mlpipe.errors import SourceError, ValidationFailed
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


def build_day_features(ctx: Context, day: dt.date, warm_up: bool = True) -> dict:
    """The day's features. History reads only earlier validated days; a day in the
    history window that the source has rows for but that is not validated yet (the
    start of a backfill, or a day a parallel run has not reached) is ingested first
    (extract + validate, no features), so any window backfills with no manual step.
    ``warm_up=False`` (a range ingest, which validated its days first) leaves such a day
    out of the history and lists it in ``history_gaps``."""
    spec, store = ctx.spec, ctx.store
    rows = store.read("validated", day)
    start, end = feat.history_days(spec, day)
    missing = unvalidated_history(ctx, day)
    warm = missing if warm_up else []
    gaps = [str(d) for d in missing if not (warm_up and _ingested(ctx, d))]
    if warm:
        log.info("features for %s: ingested %d earlier day(s) for history first: %s%s", day, len(warm),
                 [str(d) for d in warm], f"; failed validation (no history from them): {gaps}" if gaps else "")
    past, days = store.read_range("validated", start, end, columns=feat.history_columns(spec),
                                  date_column=feat.PARTITION_DATE)
    frame = feat.build_features(spec, day, rows, past)
    out = {**written(store.write("features", day, frame), len(frame)), "history_days": [str(d) for d in days],
           "warmed_up": [str(d) for d in warm], "history_gaps": gaps}
    today = rows[[c for c in feat.history_columns(spec) if c in rows.columns]].assign(**{feat.PARTITION_DATE: day})
    out["online"] = online.publish(store, spec, day, pd.concat([past, today], ignore_index=True))
    return out


def unvalidated_history(ctx: Context, day: dt.date) -> list[dt.date]:
    """The days of ``day``'s history window that the source has rows for but that are not validated."""
    start, end = feat.history_days(ctx.spec, day)
    expected = [start + dt.timedelta(days=i) for i in range((end - start).days)]
    return [d for d in expected
            if not ctx.store.exists("validated", d) and day_has_rows(ctx.spec, d, ctx.cache_dir, ctx.connections)]


def _ingested(ctx: Context, day: dt.date) -> bool:
    """Extract and validate ``day``; False if it fails validation (it then adds no history)."""
    extract_day(ctx, day)
    try:
        validate_day(ctx, day)
        return True
    except ValidationFailed as exc:
        log.warning("history day %s failed validation: %s", day, str(exc).splitlines()[0])
        return False


# A range of days in one task per chunk (the <pipeline>__ingest_range DAG): a backfill pays
# a task start-up per chunk, not three per day. The same per-day steps write the same
# partitions and reports as the daily DAG.
def plan_range(ctx: Context, start: dt.date, end: dt.date, chunk_days: int | None = None, slots: int = 1) -> list[dict]:
    """``[start, end]`` in chunks (:func:`mlpipe.ranges.plan`), each end inside the spec's
    schedule (else a ``SourceError`` naming it); the first also ingests the earlier days its
    first day's history reads (``warm_up``), so no two chunks ever ingest the same day."""
    chunks = ranges.plan(start, end, chunk_days, slots)
    for day in (start, end):
        logical_date_for(day, ctx)
    return [{**chunk, "warm_up": i == 0} for i, chunk in enumerate(chunks)]


def validate_range(ctx: Context, start: str, end: str, warm_up: bool = False) -> dict:
    """Extract and validate each day of ``[start, end]`` in order (with ``warm_up``, after
    the earlier days the first day's history reads that are not validated yet). A day that
    fails validation is quarantined as in a daily run, and one whose source is bad is
    skipped; either is listed in ``failed`` with its error, and the other days go on.
    Features come later (``features_range``), once every chunk's days are validated."""
    first = dt.date.fromisoformat(start)
    warm = unvalidated_history(ctx, first) if warm_up else []
    days = warm + ranges.days(start, end)
    passed, failed = [], []
    for day in days:
        try:
            extract_day(ctx, day)
            validate_day(ctx, day)
        except ValidationFailed as exc:
            failed.append(ranges.failure(day, exc, failures=exc.failures, report=exc.report, data_docs=exc.data_docs))
            continue
        except SourceError as exc:
            failed.append(ranges.failure(day, exc))
            continue
        if day >= first:  # warm-up days get no features, as in a daily run
            passed.append(str(day))
    log.info("range %s .. %s: %d day(s) validated, %d failed%s", start, end, len(passed), len(failed),
             f", {len(warm)} earlier day(s) ingested for history" if warm else "")
    return {"start": start, "end": end, "passed": passed, "failed": failed, "warmed_up": [str(d) for d in warm]}


def features_range(ctx: Context, checked: dict) -> dict:
    """The features of each day ``validate_range`` passed (``checked``), in order."""
    built = [build_day_features(ctx, dt.date.fromisoformat(day), warm_up=False) for day in checked["passed"]]
    return {"start": checked["start"], "end": checked["end"], "days": len(built),
            "rows": sum(b["rows"] for b in built)}


def check_range(ctx: Context, results: list[dict]) -> dict:
    """Fail (``DaysFailed``) naming every day of the range that failed and how to rerun it
    alone; else the range's totals."""
    from mlpipe.pipelines import dag_id

    name = ctx.spec.name
    return ranges.check(results, "validated", "a failed day keeps its last validated partitions (rows quarantined)",
                        f"make ingest-day PIPELINE={name} DAY=<day>, or trigger {dag_id(name, 'ingest_range')} "
                        "with start = end = <day>")


def logical_date_for(day: dt.date, ctx: Context) -> dt.date:
    """The logical date of the ingest run whose data interval is ``day`` (D+1), or a
    ``SourceError`` when ``day`` is outside the spec's schedule (no run would ingest it)."""

    schedule = ctx.spec.schedule
    if day < schedule.start or (schedule.end is not None and day > schedule.end):
        raise SourceError(f"{day} is outside the spec's schedule [{schedule.start}, {schedule.end or 'open'}]: "
                          "the ingest DAG has no run for it; change schedule in the spec to ingest it")
    return day + dt.timedelta(days=1)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

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
