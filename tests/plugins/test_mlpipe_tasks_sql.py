"""The step runner and SQL sources, in-process against the local PostgreSQL server: run_step
asks Airflow for a source's connection (defined as an ``AIRFLOW_CONN_...`` environment
variable in Airflow's JSON form, which mlpipe's own fallback cannot read, so only Airflow
can have resolved it); an unknown connection fails the task at once; an unreachable
database is left to the task's retries."""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

import mlpipe_tasks  # noqa: E402
from mlpipe import steps  # noqa: E402
from mlpipe.sources.sql import SourceUnreachable  # noqa: E402

pytestmark = pytest.mark.integration
FLIGHTS = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "flights.yaml"
SERVER = "postgresql://postgres@127.0.0.1:5432"
DAY = dt.date(2013, 3, 10)


@pytest.fixture(scope="module")
def database():
    """A database of its own with a three-row ``flights`` table (two on DAY in New York); its name."""
    name = f"mlpipe_test_tasks_sql_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(f"{SERVER}/{name}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE flights (flight integer, carrier text, time_hour timestamptz)"))
        conn.execute(sa.text("INSERT INTO flights VALUES (1, 'UA', '2013-03-10 05:00Z'), "
                             "(2, 'AA', '2013-03-11 03:00Z'), (3, 'DL', '2013-03-11 04:00Z')"))
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _spec(tmp_path: Path, conn_id: str) -> str:
    """flights.yaml with one source: the flights table through ``conn_id``."""
    data = yaml.safe_load(FLIGHTS.read_text())
    data["sources"] = {"flights": {"conn_id": conn_id, "table": "flights"}}
    path = tmp_path / "flights_sql.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _airflow_json(database: str, port: int = 5432) -> str:
    return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "postgres",
                       "schema": database})


def test_run_step_reads_through_the_connection_airflow_resolves(database, tmp_path, monkeypatch):
    """In-process, the real extract step: the source reads the day's two rows through the URI
    Airflow resolves (the postgres provider hook's, with its driver), which the step's
    context holds."""
    from mlpipe.storage import Store

    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_TASKS_DB", _airflow_json(database))
    monkeypatch.setenv("MLPIPE_DATA_ROOT", str(tmp_path / "data"))
    resolved = {}
    real = steps.STEPS["extract_day"]

    def extract(ctx, day):
        out = real(ctx, day=day)
        resolved.update(ctx.connections)
        return out

    monkeypatch.setitem(steps.STEPS, "extract_day", extract)
    result = mlpipe_tasks.run_step("extract_day", _spec(tmp_path, "mlpipe_tasks_db"), day=DAY)
    raw = Store(tmp_path / "data", "flights").read("raw", DAY)
    assert result["rows"] == 2 and sorted(raw["flight"]) == [1, 2]  # 2013-03-11 03:00Z is still the 10th in New York
    assert resolved == {"mlpipe_tasks_db": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"}


def test_a_step_that_reads_no_source_never_looks_a_connection_up(tmp_path, monkeypatch):
    """In-process: connections are asked of Airflow lazily, so a broken one cannot fail training."""
    monkeypatch.setitem(steps.STEPS, "plan_training", lambda ctx, **kwargs: {"asked": len(ctx.connections)})
    assert mlpipe_tasks.run_step("plan_training", _spec(tmp_path, "nowhere_db")) == {"asked": 0}


def test_an_unknown_connection_fails_the_task_at_once(tmp_path):
    """In-process, the real extract step: no retry can define a connection."""
    with pytest.raises(AirflowFailException, match=r"source 'flights' for day 2013-03-10: connection 'nowhere_db' "
                                                   r"is not defined"):
        mlpipe_tasks.run_step("extract_day", _spec(tmp_path, "nowhere_db"), day=DAY)


def test_an_unreachable_database_is_left_to_the_tasks_retries(tmp_path, monkeypatch):
    """In-process, the real extract step: nothing listens on port 1; the error is raised as
    is (Airflow retries it, the DAG's finite retries), not as an immediate failure."""
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_TASKS_DOWN", "postgres://postgres:pw@127.0.0.1:1/flights")
    with pytest.raises(SourceUnreachable, match=r"connection 'mlpipe_tasks_down', postgresql\S*://postgres:\*\*\*@"
                                                r"127.0.0.1:1/flights.* cannot reach the database"):
        mlpipe_tasks.run_step("extract_day", _spec(tmp_path, "mlpipe_tasks_down"), day=DAY)
