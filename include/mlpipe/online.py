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
import math
import operator
import zoneinfo
from collections.abc import Iterable, Mapping

import numpy as np
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
    from mlpipe.sources.files import partition_dates

    # only the columns the features read: typing is column by column, the rest is cost
    wanted = [c for c in spec.request_columns if c in rows.columns]
    rows = _typed((rows if len(wanted) == rows.shape[1] else rows[wanted]).reset_index(drop=True), spec)
    rows = rows.assign(**{c: None for c in spec.row_id if c not in rows.columns})  # ids are optional in a request
    days = partition_dates(rows[spec.partition.column], spec.partition)
    if days.isna().any():
        bad = rows.index[days.isna()].tolist()[:5]
        raise SourceError(f"{spec.partition.column}: rows {bad} have no readable timestamp")
    stats = _lookups(spec, snapshot, rows)
    if days.nunique() == 1:
        return feat.features_from(spec, days.iloc[0], rows, stats, label=False)
    parts = [feat.features_from(spec, day, rows.loc[index], stats, label=False)
             for day, index in rows.groupby(days).groups.items()]
    return pd.concat(parts).loc[rows.index]


def request_values(spec: PipelineSpec, records: list[dict]) -> tuple[dict[str, list], dict[str, str | None]]:
    """Each request column's values in ``records`` (None where a record lacks it) and
    their kind (:func:`value_kind`): read once for the checks and the features."""
    rules, columns = spec.validation.columns, spec.request_columns
    try:  # every record has every column (the usual request)
        values = {c: list(v) for c, v in transposed(records, columns).items()}
    except KeyError:
        values = {c: [record.get(c) for record in records] for c in columns}
    return values, {c: value_kind(v, rules[c].type if c in rules else None) for c, v in values.items()}


def transposed(rows: Iterable[Mapping], names: list[str]) -> dict[str, tuple]:
    """Each of ``names``' values across ``rows``, picked and transposed in C (KeyError when
    a row lacks one)."""
    pick = operator.itemgetter(*names, names[0])  # names[0] twice: a tuple even for one name
    return dict(zip(names, zip(*map(pick, rows), strict=True), strict=False))


def plain_features(spec: PipelineSpec, values: dict[str, list], kinds: dict[str, str | None],
                   snapshot: dict) -> dict[str, list | np.ndarray] | None:
    """What :func:`request_features` gives for a request's rows (``request_values`` of its
    checked records), as columns: numbers as float64 arrays, the rest as lists. Built value
    by value without pandas, so a one-row request pays microseconds where a frame costs
    milliseconds. None when a value is not plain (text where the ingest would read a
    number, a number past float precision, a timestamp not in ISO 8601 or not in one format
    for every row): then :func:`request_features`, the definition, decides.
    ``tests/mlpipe/test_online.py`` holds both to the batch features."""
    feats, stamps = spec.features, values[spec.partition.column]
    distinct = set(stamps)  # a day's rows share a few timestamps
    if not all(type(v) is str for v in distinct) or len({_shape(v) for v in distinct}) != 1:
        return None
    zone = zoneinfo.ZoneInfo(spec.partition.timezone)
    local = {v: _local_day(v, zone) for v in distinct}
    if None in local.values():
        return None
    days = list(map(local.__getitem__, stamps))
    kinds = {**kinds, spec.partition.column: "text"}  # ISO 8601 text: never a number
    if None in kinds.values():
        return None
    out: dict[str, list | np.ndarray] = {c: values[c] for c in dict.fromkeys(spec.row_id)}
    out[feat.PARTITION_DATE] = days
    for column in dict.fromkeys([*feats.numeric, *feats.categorical]):
        if column not in spec.row_id:
            out[column] = values[column]
    for column in feats.numeric:
        if column not in spec.row_id:  # ids keep their values, as in request_features
            if kinds[column] == "text":
                return None
            out[column] = np.array(out[column], dtype="float64")
    for column in feats.categorical:
        out[column] = out[column] if kinds[column] != "number" else [_category_text(v) for v in out[column]]
    calendars = {day: feat.calendar_values(day) for day in set(days)}
    for name in feats.calendar:
        out[name] = np.array([calendars[day][name] for day in days], dtype="float64")
    for hist in feats.history:
        stat = snapshot["stats"][hist.name]
        if not hist.group_by:
            out[hist.name] = np.full(len(days), stat, dtype="float64")
            continue
        lookup, key_kinds = _plain_lookup(snapshot, hist)
        if any(kinds[c] != "null" and kinds[c] != key_kinds[c] for c in hist.group_by):
            return None  # text codes against numbers (or the reverse): request_features casts
        found = lookup.find([values[c] for c in hist.group_by], nulls_are_none=True)
        out[hist.name] = np.nan_to_num(found, nan=0.0) if hist.stat == "count" else found
    return out


def features_frame(spec: PipelineSpec, columns: dict[str, list | np.ndarray]) -> pd.DataFrame:
    """:func:`plain_features`' columns as the frame :func:`request_features` gives (the
    request log's rows)."""
    feats = spec.features
    numbers = [c for c in [*feats.numeric, *feats.derived_numeric] if c not in spec.row_id]
    return pd.DataFrame(columns).astype({**{c: "float64" for c in numbers},
                                         **{c: "string" for c in feats.categorical}})


def take(features: pd.DataFrame | dict, index: np.ndarray) -> pd.DataFrame | dict:
    """The rows at positions ``index`` of a feature frame or of :func:`plain_features`' columns."""
    if isinstance(features, pd.DataFrame):
        return features.iloc[index]
    return {c: v[index] if isinstance(v, np.ndarray) else [v[i] for i in index] for c, v in features.items()}


def value_kind(values: list, declared: str | None) -> str | None:
    """"null" (every value), "number" (ints and finite floats below 2**53, and nulls), "text"
    (strings the ingest keeps as text, and nulls), or None: values whose typing
    :func:`request_features` decides."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return "null"
    if kinds <= {int, float}:
        magnitudes = [abs(v) for v in values if v is not None] if None in values else list(map(abs, values))
        return "number" if math.isfinite(sum(magnitudes)) and max(magnitudes) < 2**53 else None
    if kinds == {str} and (declared == "string" or _keeps_text(values)):
        return "text"
    return None


def _keeps_text(values: list) -> bool:
    """Whether a value is text no number reads as (then ingest keeps the column as text)."""
    return any(isinstance(v, str) and any(c.isalpha() and c.lower() not in _NUMBER_LETTERS for c in v) for v in values)


def _category_text(value) -> str | None:
    """:func:`mlpipe.features.as_category_text` of one number."""
    if value is None or value != value:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def _shape(value: str) -> str:
    """A timestamp's format: its text with every digit a 0."""
    return value.translate(_DIGITS)


_DIGITS = str.maketrans("123456789", "000000000")


def _local_day(value: str, zone) -> dt.date | None:
    """The local day of ISO 8601 text as :func:`mlpipe.sources.files.partition_dates` reads
    it (naive: UTC), or None where pandas might read it otherwise."""
    if len(value) < 10 or value[4] != "-" or value[7] != "-":
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if not 1678 <= stamp.year <= 2261:  # pandas' nanosecond timestamps end there
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).astimezone(zone).date()


def _plain_lookup(snapshot: dict, hist) -> tuple[feat.GroupLookup, dict[str, str]]:
    """A group statistic as a lookup on the snapshot's own key values, and each key
    column's kind ("number" or "text"); kept in the snapshot."""
    cache = snapshot.setdefault("lookups", {})
    key = (hist.name, "plain")
    if key not in cache:  # a race builds it twice, the same
        value = snapshot["stats"][hist.name]
        kinds = {c: "number" if pd.api.types.is_numeric_dtype(value[c]) else "text" for c in hist.group_by}
        cache[key] = feat.GroupLookup(value, hist.name, hist.group_by), kinds
    return cache[key]


_NUMBER_LETTERS = frozenset("aefinty")  # the only letters in text pd.to_numeric reads (1e5, inf, infinity, nan)


def _typed(rows: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """``sources.typed(rows, spec)``, without its cost for the columns whose outcome is
    plain: a text column with a value no number has a letter of (ingest leaves it as it
    is), one of nulls only (``Int64``, or ``float64`` when declared so)."""
    from mlpipe.sources import typed

    rules, plain, rest = spec.validation.columns, {}, []
    for column in rows.columns:
        values = rows[column]
        declared = rules[column].type if column in rules else None
        if declared == "string" or not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            continue
        items = values.tolist()
        if all(v is None or (isinstance(v, float) and v != v) for v in items):
            plain[column] = pd.Series(np.nan if declared in ("float", "number") else pd.NA, index=values.index,
                                      dtype="float64" if declared in ("float", "number") else "Int64")
        elif not _keeps_text(items):
            rest.append(column)
    if rest:
        plain.update(typed(rows[rest], spec))
    return rows.assign(**plain) if plain else rows


def _lookups(spec: PipelineSpec, snapshot: dict, rows: pd.DataFrame) -> dict:
    """The snapshot's statistics as :class:`mlpipe.features.GroupLookup` s, their group
    columns cast to the request's dtypes first, so a lookup matches as the batch merge does
    (JSON reads a text code of digits as a number). Built once per snapshot and dtypes,
    kept in the snapshot (a merge with a large statistic costs a request milliseconds)."""
    cache = snapshot.setdefault("lookups", {})
    out = {}
    for hist in spec.features.history:
        value = snapshot["stats"][hist.name]
        if not isinstance(value, pd.DataFrame):
            out[hist.name] = value
            continue
        keys = [c for c in value.columns if c != hist.name and c in rows.columns]
        dtypes = {c: rows[c].dtype for c in keys}
        key = (hist.name, tuple(str(d) for d in dtypes.values()))
        if key not in cache:  # a race builds it twice, the same
            cache[key] = feat.GroupLookup(value.astype(dtypes, errors="ignore"), hist.name, hist.group_by)
        out[hist.name] = cache[key]
    return out


if __name__ == "__main__":
    main()
