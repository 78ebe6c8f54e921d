"""Ingest and score backfills against trivial DAGs of the same shape, in one invocation.

    .venv/bin/python bench/backfill.py [--days 30] [--runs 3]

One Airflow (the preloading LocalExecutor ``make demo`` uses, SQLite, an api-server, a
scheduler per backfill) runs, alternating, ``--runs`` times each:
- the real ``ingest`` backfill over ``--days`` days and ``trivial_ingest`` (3 no-op tasks,
  the same schedule and max_active_runs) over the same days;
- the real ``score`` backfill over the same days, with a champion trained once beforehand
  on them (not timed; Param ``allow_current_champion``), and ``trivial_score`` (1 no-op task).
Repeats reprocess the completed runs (``--reprocess-behavior completed``).

Prints the medians of each backfill's wall time and the real / trivial ratios (targets:
ingest <= 2x, score <= 3x), and per task kind the median task duration and scheduling
overhead (start minus queued), and for score the median model load (from the task logs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = '''
import datetime as dt
from airflow.sdk import CronDataIntervalTimetable, dag, task

START = dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
END = dt.datetime(2013, 12, 31, 23, 59, tzinfo=dt.timezone.utc)  # as the spec's schedule: no run for today


@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), start_date=START, end_date=END,
     catchup=False, max_active_runs=8, tags=["bench"])
def trivial_ingest():
    @task
    def extract(): return 1

    @task
    def validate(): return 1

    @task
    def build_features(): return 1

    extract() >> validate() >> build_features()


@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), start_date=START, end_date=END,
     catchup=False, max_active_runs=4, tags=["bench"])
def trivial_score():
    @task
    def score_partition(): return 1

    score_partition()


trivial_ingest()
trivial_score()
'''


def _demo():
    loaded = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def _setup(home: Path) -> None:
    dags = home / "dags"
    dags.mkdir(parents=True)
    for path in (ROOT / "dags").glob("*.py"):
        (dags / path.name).symlink_to(path)
    (dags / "trivial.py").write_text(TRIVIAL)
    os.environ.update({
        "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR", "mlpipe_executor.PreloadingLocalExecutor"),
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "4"),
        "MLPIPE_DATA_ROOT": str(home / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLPIPE_ARTIFACTS": str(home / "artifacts"), "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "plugins"), os.environ.get("PYTHONPATH")]))})
    sys.path.insert(0, str(ROOT / "plugins"))


def _backfill(demo, dag_id: str, start: dt.date, end: dt.date) -> float:
    # the champion trained on these days: score them with it (point in time would refuse), flagged
    conf = {"allow_current_champion": True} if dag_id == "score" else None
    t0 = time.time()
    states = demo.phase(dag_id, dag_id, (start, end), lambda: demo.airflow(
        "backfill", "create", "--dag-id", dag_id, "--from-date", str(start), "--to-date", str(end),
        "--reprocess-behavior", "completed", *(["--dag-run-conf", json.dumps(conf)] if conf else []), check=False))
    if set(states) != {"success"}:
        raise SystemExit(f"{dag_id} backfill did not succeed: {states}")
    return time.time() - t0


def _task_stats(dag_id: str) -> dict[str, float]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance.start_date, TaskInstance.end_date, TaskInstance.queued_dttm)
                               .where(TaskInstance.dag_id == dag_id, TaskInstance.state == "success")).all()
    return {"task_s": statistics.median((e - s).total_seconds() for s, e, _ in rows),
            "overhead_s": statistics.median((s - q).total_seconds() for s, _, q in rows if q)}


def _model_loads() -> list[float]:
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs" / "dag_id=score"
    return [float(m) for log in logs.rglob("*.log") for m in re.findall(r"loaded in ([0-9.]+)s", log.read_text())]


def _train(demo, start: dt.date, end: dt.date) -> None:
    conf = {"window_start": str(start), "window_end": str(end + dt.timedelta(days=1)),
            "holdout_days": max(2, (end - start).days // 5)}
    demo.phase("train (setup)", "train", "bench__setup", lambda: demo.airflow(
        "dags", "trigger", "train", "--run-id", "bench__setup", "--conf", json.dumps(conf),
        "--logical-date", f"{end + dt.timedelta(days=1)}T00:00:00+00:00"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start", default="2013-03-01")
    parser.add_argument("--port", type=int, default=18793)
    args = parser.parse_args()
    start = dt.date.fromisoformat(args.start)
    end = start + dt.timedelta(days=args.days - 1)
    _setup(Path(tempfile.mkdtemp(prefix="mlpipe-bench-backfill-")))
    demo = _demo()
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{args.port}/execution/"
    demo.airflow("db", "migrate")
    demo.airflow("dags", "reserialize")
    for dag_id in ("ingest", "train", "score", "trivial_ingest", "trivial_score"):
        demo.airflow("dags", "unpause", dag_id)
    demo.airflow("pools", "set", "gpu", "2", "GPU training slots")
    api = demo.Service("api-server", "api-server", "--port", str(args.port))
    times: dict[str, list[float]] = {k: [] for k in ("ingest", "trivial_ingest", "score", "trivial_score")}
    try:
        demo.wait_http(f"http://localhost:{args.port}/api/v2/version")
        times["ingest"].append(_backfill(demo, "ingest", start, end))  # also the data the champion trains on
        _train(demo, start, end)
        for i in range(args.runs):
            pairs = [("trivial_ingest", "ingest"), ("trivial_score", "score")]
            for first, second in pairs if i % 2 == 0 else [(b, a) for a, b in pairs]:
                for dag_id in (first, second):
                    if not (dag_id == "ingest" and i == 0):  # the setup ingest is run 0
                        times[dag_id].append(_backfill(demo, dag_id, start, end))
    finally:
        api.stop()
    _report(times, args.days)
    return 0


def _report(times: dict[str, list[float]], days: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{days} days, medians of {len(times['score'])} runs each:")
    for real, trivial, target in (("ingest", "trivial_ingest", 2.0), ("score", "trivial_score", 3.0)):
        ratio = med[real] / med[trivial]
        print(f"  {real:<7} {med[real]:7.1f}s   trivial {med[trivial]:6.1f}s   ratio {ratio:4.2f}x "
              f"(target <= {target}x) {'met' if ratio <= target else 'MISSED'}")
    for dag_id in ("ingest", "trivial_ingest", "score", "trivial_score"):
        stats = _task_stats(dag_id)
        print(f"  {dag_id:<15} per task: {stats['task_s']:5.2f}s running, {stats['overhead_s']:5.2f}s queued->start")
    loads = _model_loads()
    if loads:
        print(f"  score model load: median {statistics.median(loads):.2f}s over {len(loads)} loads")


if __name__ == "__main__":
    sys.exit(main())
