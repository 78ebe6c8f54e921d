"""The online snapshot: what a serving process needs to build a request's features exactly
as the batch features of the next day are built (``mlpipe.features``), and the features
of source-shaped request rows.

The ingest of day D publishes the history statistics *as of D* (D's validated rows
included: what day D+1's features read) as one object, ``online/as_of=<D>.json``, and then
moves the pointer ``online/current.json`` to it, under the pipeline's lock and only
forward: a backfill of an older day publishes nothing. Readers follow the pointer; the
object it named before stays readable (the last ``KEEP_DAYS`` are kept), so a swap never
leaves a gap. Features of rows of day D built with the snapshot as of D-1 are those of day
D's batch partition (``tests/mlpipe/test_online.py``).
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from mlpipe import features as feat
from mlpipe.errors import SourceError
from mlpipe.spec import PipelineSpec
from mlpipe.storage import Store, atomic_write, read_json

KEEP_DAYS = 7  # snapshots kept behind the current one (readers of the previous one finish)
LOCK_SECONDS = 60.0


def _folder(store: Store):
    return store.base / "online"


def snapshot_path(store: Store, as_of: dt.date):
    return _folder(store) / f"as_of={as_of.isoformat()}.json"


def current(store: Store) -> dict | None:
    """The pointer: ``{"as_of", "path", "published_at"}``, or None before the first."""
    try:
        return read_json(_folder(store) / "current.json")
    except FileNotFoundError:
        return None


def stats_as_of(spec: PipelineSpec, as_of: dt.date, past: pd.DataFrame) -> dict:
    """The history statistics of ``as_of``'s snapshot, from validated rows with their
    ``partition_date`` up to and including ``as_of``: as JSON."""
    stats = feat.history_stats(spec, past, as_of + dt.timedelta(days=1)) if spec.features.history else {}
    return {name: value if isinstance(value, float) else json.loads(value.to_json(orient="split", index=False))
            for name, value in stats.items()}


def publish(store: Store, spec: PipelineSpec, as_of: dt.date, past: pd.DataFrame) -> dict:
    """Write ``as_of``'s snapshot and point to it, unless a newer one is current (a backfill
    never replaces it); ``{"as_of", "published": bool}``."""
    pointer = current(store)
    if pointer and dt.date.fromisoformat(pointer["as_of"]) > as_of:
        return {"as_of": str(as_of), "published": False, "current": pointer["as_of"]}
    path = snapshot_path(store, as_of)
    payload = {"pipeline": spec.name, "as_of": str(as_of), "stats": stats_as_of(spec, as_of, past)}
    atomic_write(path, json.dumps(payload, default=str))
    with store.lock("online", LOCK_SECONDS):
        pointer = current(store)
        if pointer and dt.date.fromisoformat(pointer["as_of"]) > as_of:  # a newer day got there meanwhile
            return {"as_of": str(as_of), "published": False, "current": pointer["as_of"]}
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write(_folder(store) / "current.json",
                     json.dumps({"as_of": str(as_of), "path": str(path), "published_at": now}))
    _forget(store, as_of - dt.timedelta(days=KEEP_DAYS))
    return {"as_of": str(as_of), "published": True}


def publish_day(ctx, as_of: dt.date) -> dict:
    """Publish ``as_of``'s snapshot from the validated partitions (what the ingest of that
    day publishes; for data ingested before snapshots existed, or a lost pointer)."""
    spec, stop = ctx.spec, as_of + dt.timedelta(days=1)
    start, _ = feat.history_days(spec, stop)
    past, _ = ctx.store.read_range("validated", start, stop, columns=feat.history_columns(spec),
                                   date_column=feat.PARTITION_DATE)
    return publish(ctx.store, spec, as_of, past)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from mlpipe.context import Context

    parser = argparse.ArgumentParser(prog="python -m mlpipe.online", description=publish_day.__doc__.split("\n")[0])
    parser.add_argument("--pipeline", help="the pipeline's name (default: the only one, when there is one)")
    parser.add_argument("--as-of", required=True, type=dt.date.fromisoformat, help="the last ingested day to publish")
    args = parser.parse_args(argv)
    print(json.dumps(publish_day(Context.for_cli(args.pipeline), args.as_of)))


def _forget(store: Store, as_of: dt.date) -> None:
    """Delete one old snapshot (by name: the folder is never listed)."""
    try:
        snapshot_path(store, as_of).unlink()
    except FileNotFoundError:
        pass


def load(store: Store, as_of: dt.date | None = None) -> dict:
    """A snapshot (default: the current one) with its statistics as the batch features
    take them (:func:`mlpipe.features.history_stats`)."""
    if as_of is None:
        pointer = current(store)
        if pointer is None:
            raise SourceError(f"no online snapshot under {_folder(store)}: ingest a day first")
        raw = read_json(pointer["path"])
    else:
        raw = read_json(snapshot_path(store, as_of))
    stats = {name: value if not isinstance(value, dict) else pd.DataFrame(value["data"], columns=value["columns"])
             for name, value in raw["stats"].items()}
    return {"as_of": dt.date.fromisoformat(raw["as_of"]), "stats": stats}


def request_features(spec: PipelineSpec, rows: pd.DataFrame, snapshot: dict) -> pd.DataFrame:
    """The features of source-shaped request ``rows`` (the columns a validated row has),
    typed as ingest types a day's rows, each on its own partition day (from the partition
    column) with the snapshot's history statistics; in the rows' order, without a label."""
    from mlpipe.sources import typed
    from mlpipe.sources.files import partition_dates

    rows = typed(rows.reset_index(drop=True), spec)
    rows = rows.assign(**{c: None for c in spec.row_id if c not in rows.columns})  # ids are optional in a request
    days = partition_dates(rows[spec.partition.column], spec.partition)
    if days.isna().any():
        bad = rows.index[days.isna()].tolist()[:5]
        raise SourceError(f"{spec.partition.column}: rows {bad} have no readable timestamp")
    parts = [feat.features_from(spec, day, rows.loc[index], _aligned(snapshot["stats"], rows.loc[index]), label=False)
             for day, index in rows.groupby(days).groups.items()]
    return pd.concat(parts).loc[rows.index] if len(parts) > 1 else parts[0]


def _aligned(stats: dict, rows: pd.DataFrame) -> dict:
    """Each statistic's group columns with the request's dtypes, so a lookup matches as
    the batch merge does (JSON reads a text code of digits as a number)."""
    out = {}
    for name, value in stats.items():
        if isinstance(value, pd.DataFrame):
            keys = [c for c in value.columns if c != name and c in rows.columns]
            value = value.astype({c: rows[c].dtype for c in keys}, errors="ignore")
        out[name] = value
    return out


if __name__ == "__main__":
    main()
