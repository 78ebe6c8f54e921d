"""A range of days in a few tasks, for backfills: the chunks a range DAG maps over and the
check, at its end, that names every day that failed and how to rerun it alone.

A range DAG's chunk task runs its days one after another in one process, so it pays one
task start-up (and loads its models, spec and GX suite once) per chunk rather than per
day; a day that fails is listed (:func:`failure`) and the other days go on."""

from __future__ import annotations

import datetime as dt

from mlpipe.errors import BadRange, DaysFailed

CHUNK_DAYS = 30  # the default chunk's most days


def plan(start: dt.date, end: dt.date, chunk_days: int | None = None, slots: int = 1) -> list[dict]:
    """``[start, end]`` (inclusive) as ``{"start", "end"}`` chunks of at most ``chunk_days``
    days, in order (None: at most :data:`CHUNK_DAYS`, and at least ``slots`` chunks when
    there are that many days, so every slot has one). A bad range is a ``BadRange``."""
    if end < start:
        raise BadRange(f"range {start} .. {end}: the end is before the start")
    if chunk_days is not None and chunk_days < 1:
        raise BadRange(f"range {start} .. {end}: chunk_days must be at least 1, not {chunk_days}")
    days = (end - start).days + 1
    if chunk_days is None:
        chunks = max(min(slots, days), -(-days // CHUNK_DAYS))
        chunk_days = -(-days // chunks)
    chunks, first = [], start
    while first <= end:
        last = min(end, first + dt.timedelta(days=chunk_days - 1))
        chunks.append({"start": str(first), "end": str(last)})
        first = last + dt.timedelta(days=1)
    return chunks


def days(start: str, end: str) -> list[dt.date]:
    """The days of a chunk, in order."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def failure(day: dt.date, exc: Exception, **extra) -> dict:
    """One failed day of a chunk's result (``failed``): the day and its error."""
    return {"day": str(day), "error": f"{type(exc).__name__}: {exc}", **extra}


def check(results: list[dict], done: str, kept: str, rerun: str) -> dict:
    """Fail (``DaysFailed``) naming every day in the chunks' ``failed`` lists (``done``: what
    the ``passed`` days were, ``kept``: what a failed day keeps, ``rerun``: how to rerun one
    day alone); else the range's totals."""
    failed = [f for r in results for f in r["failed"]]
    passed = sum(len(r["passed"]) for r in results)
    if failed:
        lines = "\n".join(f"  {f['day']}: {f['error'].splitlines()[0]}" for f in failed)
        raise DaysFailed(f"{len(failed)} day(s) of the range failed ({passed} {done}); {kept}:\n{lines}\n"
                         f"Rerun one day alone: {rerun}.")
    return {"days": passed, "chunks": len(results)}
