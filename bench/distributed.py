"""The same train run on the embedded default and on the Celery topology.

    .venv/bin/python bench/distributed.py [--data ./data] [--runs 3]

Embedded: LocalExecutor (the preloading one ``make demo`` uses), SQLite, local MLflow
store, one scheduler started per run. Celery: ``scripts/cluster.py`` (Postgres, Redis,
a ``default`` and a ``gpu`` Celery worker, MLflow tracking server), scheduler always up.
Both get the same slots: 2 training slots, 2 in the gpu pool, 2 Celery processes on
each worker. Each run is a dry run (nothing registered or promoted) on existing feature
partitions (``make demo`` writes them). Modes alternate, so host noise hits both alike.

Prints, per mode, the medians over ``--runs`` runs of the training stage's wall time
(first training task start to last end) and of the per-task scheduling overhead (a task
instance's start minus its queued time: executor hand-off, broker hop, worker fork), and
the Celery / Local ratio of both. Target: the stage within 1.2x of Local on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from mlpipe.pipelines import dag_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME = "mlpipe_bench"
TRAIN = dag_id("flights", "train")  # the bundled pipeline's train DAG


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT / "data"), help="data root holding feature partitions")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode")
    parser.add_argument("--start", default="2013-07-01")
    parser.add_argument("--end", default="2013-10-01", help="exclusive")
    parser.add_argument("--holdout-days", type=int, default=14)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mlpipe-distributed-"))
    conf = {"window_start": args.start, "window_end": args.end, "holdout_days": args.holdout_days, "dry_run": True}
    os.environ.update({"MLPIPE_TRAINING_SLOTS": "2", "GX_ANALYTICS_ENABLED": "false"})
    local, celery = Local(home / "local", args.data), Celery(home / "celery", args.data)
    results: dict[str, list[dict]] = {"local": [], "celery": []}
    celery.start()
    try:
        for i in range(args.runs):
            for mode, target in (("local", local), ("celery", celery)):
                logical = f"{args.end}T00:{i:02d}:00+00:00"
                stats = target.train(f"bench__{mode}_{i}", conf, logical)
                results[mode].append(stats)
                print(f"{mode:<6} run {i}: stage {stats['stage']:.1f}s, run {stats['run']:.1f}s, "
                      f"overhead per task {stats['overhead']:.2f}s (median of {stats['tasks']} tasks)", flush=True)
    finally:
        celery.stop()
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("stage", "run", "overhead")} for m, rs in results.items()}
    for mode in ("local", "celery"):
        print(f"{mode:<6} medians of {args.runs}: training stage {med[mode]['stage']:.1f}s, whole run "
              f"{med[mode]['run']:.1f}s, scheduling overhead per task {med[mode]['overhead']:.2f}s")
    print(f"celery / local: training stage {med['celery']['stage'] / med['local']['stage']:.2f}x (target <= 1.2x), "
          f"whole run {med['celery']['run'] / med['local']['run']:.2f}x, overhead per task "
          f"{med['celery']['overhead'] - med['local']['overhead']:+.2f}s")
    return 0


def _stats(rows: list[tuple]) -> dict:
    """rows: (task_id, map_index, queued, start, end) of one run's task instances."""
    done = [r for r in rows if r[3] and r[4]]
    train = [r for r in done if r[0].startswith("train_") and r[1] >= 0]
    return {"stage": (max(r[4] for r in train) - min(r[3] for r in train)).total_seconds(),
            "run": (max(r[4] for r in done) - min(r[3] for r in done)).total_seconds(),
            "overhead": statistics.median((r[3] - r[2]).total_seconds() for r in done if r[2]),
            "tasks": len(done)}


class Local:
    """The embedded default: SQLite, LocalExecutor, a scheduler per run (demo.phase)."""

    def __init__(self, home: Path, data: str):
        self.env = {"AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__CORE__EXECUTOR": "mlpipe_executor.PreloadingLocalExecutor",
                    "AIRFLOW__CORE__PARALLELISM": "4", "MLPIPE_DATA_ROOT": data,
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://localhost:8092/execution/",
                    "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "MLPIPE_ARTIFACTS": str(home / "art")}
        self.ready = False

    def train(self, run_id: str, conf: dict, logical: str) -> dict:
        os.environ.update(self.env)
        sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]
        demo = harness.load_script("demo")
        Service, airflow, phase, wait_http = demo.Service, demo.airflow, demo.phase, demo.wait_http

        if not self.ready:
            airflow("db", "migrate")
            airflow("dags", "reserialize")
            airflow("dags", "unpause", TRAIN)
            airflow("pools", "set", "gpu", "2", "GPU training slots")
            self.ready = True
        api = Service("api-server", "api-server", "--port", "8092")
        try:
            wait_http("http://localhost:8092/api/v2/version")
            states = phase("local train", [(TRAIN, run_id)], lambda: airflow(
                "dags", "trigger", TRAIN, "--run-id", run_id, "--conf", json.dumps(conf), "--logical-date", logical))
        finally:
            api.stop()
        if set(states) != {"success"}:
            raise SystemExit(f"local run {run_id} ended {states}")
        from airflow.models import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            tis = session.execute(select(TaskInstance).where(TaskInstance.run_id == run_id)).scalars().all()
            return _stats([(t.task_id, t.map_index, t.queued_dttm, t.start_date, t.end_date) for t in tis])


class Celery:
    """scripts/cluster.py with its own databases, Redis db and ports; up for all runs."""

    def __init__(self, home: Path, data: str):
        self.env = {**os.environ, "MLPIPE_CLUSTER_DIR": str(home), "MLPIPE_CLUSTER_NAME": NAME,
                    "MLPIPE_REDIS_URL": "redis://127.0.0.1:6379/14", "MLPIPE_AIRFLOW_PORT": "8094",
                    "MLPIPE_MLFLOW_PORT": "5094", "MLPIPE_CLUSTER_DATA_ROOT": data, "MLPIPE_GPU_POOL_SLOTS": "2",
                    "MLPIPE_WORKER_CONCURRENCY": "2", "MLPIPE_GPU_WORKER_CONCURRENCY": "2"}
        self.script = [sys.executable, str(ROOT / "scripts" / "cluster.py")]

    def start(self) -> None:
        import psycopg2

        conn = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in (f"{NAME}_airflow", f"{NAME}_mlflow"):
                cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.close()
        subprocess.run([*self.script, "up"], env=self.env, check=True)
        exports = subprocess.run([*self.script, "env"], env=self.env, capture_output=True, text=True, check=True)
        for line in exports.stdout.splitlines():
            key, _, value = line[len("export "):].partition("=")
            self.env[key] = value.strip("'")
        self._airflow("dags", "unpause", TRAIN)

    def _airflow(self, *args: str) -> None:
        subprocess.run([str(BIN / "airflow"), *args], env=self.env, check=True, capture_output=True)

    def _query(self, sql: str, *params) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(f"postgresql://postgres@127.0.0.1:5432/{NAME}_airflow") as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def train(self, run_id: str, conf: dict, logical: str) -> dict:
        self._airflow("dags", "trigger", TRAIN, "--run-id", run_id, "--conf", json.dumps(conf),
                      "--logical-date", logical)
        while (state := self._query("SELECT state FROM dag_run WHERE run_id = %s", run_id)[0][0]) not in (
                "success", "failed"):
            time.sleep(2)
        if state != "success":
            raise SystemExit(f"celery run {run_id} ended {state} (logs: {self.env['MLPIPE_CLUSTER_DIR']}/logs)")
        return _stats(self._query("SELECT task_id, map_index, queued_dttm, start_date, end_date FROM task_instance "
                                  "WHERE run_id = %s", run_id))

    def stop(self) -> None:
        subprocess.run([*self.script, "down"], env=self.env, check=False)


if __name__ == "__main__":
    sys.exit(main())
