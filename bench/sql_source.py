"""Ingest from a PostgreSQL source against the CSV source, same days, in one invocation.

    .venv/bin/python bench/sql_source.py [--days 10] [--start 2013-01-01] [--runs 3]

Loads the bundled flights, weather and planes tables into a fresh database on the local
PostgreSQL server (127.0.0.1:5432, user postgres; dropped at the end), then ingests
``--days`` days (extract, validate, build features: the pipeline's own steps, in this
process) ``--runs`` times from each of:
- ``csv``: include/pipelines/flights.yaml as it is (its Parquet caches built beforehand);
- ``sql``: the same spec with the three sources as tables (the joined ones read whole);
- ``sql, weather by day``: weather as a query that reads only the day's rows.
Runs alternate between the sources; each starts from an empty data root. Prints the
median seconds of each, of its extract steps alone, and the ratio to csv (target <= 1.2x).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from mlpipe import ingest  # noqa: E402
from mlpipe.context import Context  # noqa: E402
from mlpipe.settings import PROJECT_ROOT, get_settings  # noqa: E402
from mlpipe.spec import load_spec  # noqa: E402
from mlpipe.storage import Store  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
FLIGHTS = PROJECT_ROOT / "include" / "pipelines" / "flights.yaml"
WEATHER_BY_DAY = ("SELECT origin, time_hour, temp, dewp, humid, wind_dir, wind_speed, wind_gust, precip, pressure, "
                  "visib FROM weather WHERE time_hour >= :start AND time_hour < :end")


def pg_type(column: str, values) -> str:
    """A sensible column type for a CSV column's text: the partition column ``time_hour``
    timestamptz, integral numbers integer, other numbers double precision, the rest text."""
    import pandas as pd

    if column == "time_hour":
        return "timestamptz"
    numbers = pd.to_numeric(values, errors="coerce")
    if (numbers.isna() & values.notna()).any():
        return "text"
    return "integer" if bool((numbers.dropna() % 1 == 0).all()) else "double precision"


def create_flights_db(prefix: str) -> str:
    """A new database on the local server holding flights.yaml's sources as tables of the
    same names (NA is NULL, ``time_hour`` indexed); its URI. ``drop_db`` removes it."""
    import pandas as pd
    import psycopg2
    import sqlalchemy as sa

    from mlpipe.sources.files import resolve

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    with psycopg2.connect(f"{SERVER}/{name}") as conn, conn.cursor() as cur:
        for table, source in yaml.safe_load(FLIGHTS.read_text())["sources"].items():
            frame = pd.read_csv(resolve(source["path"]), dtype=str)
            cur.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {pg_type(c, frame[c])}' for c in frame)})")
            text = io.StringIO()
            frame.to_csv(text, index=False, header=False)  # a missing cell is empty: NULL to COPY
            text.seek(0)
            cur.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT csv)", text)
            if "time_hour" in frame:  # a day is a range of it: as a warehouse would, index it
                cur.execute(f"CREATE INDEX ON {table} (time_hour)")
            cur.execute(f"ANALYZE {table}")
    return f"{SERVER}/{name}"


def drop_db(uri: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{uri.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def sql_spec(folder: Path, conn_id: str, weather_by_day: bool = False) -> Path:
    """flights.yaml with its sources read as tables through ``conn_id``."""
    data = yaml.safe_load(FLIGHTS.read_text())
    for name, source in data["sources"].items():
        source.pop("path")
        source.update({"conn_id": conn_id, "table": name})
    if weather_by_day:
        data["sources"]["weather"] = {"conn_id": conn_id, "query": WEATHER_BY_DAY,
                                      "join": data["sources"]["weather"]["join"]}
    path = folder / f"flights_sql{'_by_day' if weather_by_day else ''}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ingest_days(ctx: Context, days: list[dt.date]) -> tuple[float, float]:
    """Seconds to ingest ``days`` in order from an empty data root (its caches kept), and of
    that the extract steps'."""
    folder = Path(ctx.settings.data_root) / ctx.spec.name
    for child in folder.iterdir() if folder.exists() else []:
        if child.name != ".cache":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    extract = 0.0
    started = time.perf_counter()
    for day in days:
        t0 = time.perf_counter()
        ingest.extract_day(ctx, day)
        extract += time.perf_counter() - t0
        ingest.validate_day(ctx, day)
        ingest.build_day_features(ctx, day)
    return time.perf_counter() - started, extract


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2013, 1, 1))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    days = [args.start + dt.timedelta(days=i) for i in range(args.days)]
    uri = create_flights_db("mlpipe_bench_sql")
    os.environ["AIRFLOW_CONN_MLPIPE_BENCH_SQL"] = uri
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            specs = {"csv": FLIGHTS, "sql": sql_spec(folder, "mlpipe_bench_sql"),
                     "sql, weather by day": sql_spec(folder, "mlpipe_bench_sql", weather_by_day=True)}
            contexts = {}
            for kind, path in specs.items():
                spec, root = load_spec(path), folder / kind.replace(" ", "_").replace(",", "")
                contexts[kind] = Context(dataclasses.replace(get_settings(), data_root=root), spec,
                                         Store(root, spec.name))
                ingest_days(contexts[kind], days[:1])  # imports, GX's first use, the CSV caches: not timed
            times = {kind: [] for kind in specs}
            for run in range(args.runs):
                for kind in list(specs)[run % len(specs):] + list(specs)[:run % len(specs)]:
                    times[kind].append(ingest_days(contexts[kind], days))
    finally:
        drop_db(uri)
    csv = statistics.median(t for t, _ in times["csv"])
    print(f"flights ingest (extract, validate, features) of {args.days} days from {args.start}, "
          f"medians of {args.runs} runs:")
    for kind, runs in times.items():
        total, extract = statistics.median(t for t, _ in runs), statistics.median(e for _, e in runs)
        ratio = f"ratio {total / csv:4.2f}x (target <= 1.2x) {'met' if total / csv <= 1.2 else 'MISSED'}"
        print(f"  {kind:<20} {total:6.1f}s   extract {extract:5.1f}s   {'' if kind == 'csv' else ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
