"""Run the whole pipeline on the bundled data through a real Airflow.

ingest (backfill over the window) -> train (one manual run with Params) -> score and
monitor (backfills over the holdout days), executed by a real scheduler with the LocalExecutor
and an api-server, against the embedded SQLite metadata DB and MLflow store. Prints the
variants with their metrics, the gate decision, the aliases, the promotion ledger and
where the evaluation report is.

Backfills are created while the scheduler is stopped: Airflow refuses to create one on
SQLite under concurrent access.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def airflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], check=check, capture_output=True, text=True)


class Service:
    def __init__(self, name: str, *args: str):
        log_dir = Path(os.environ["AIRFLOW_HOME"]) / "demo-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name, self.log = name, open(log_dir / f"{name}.log", "ab")
        self.proc = subprocess.Popen([str(BIN / "airflow"), *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def run_states(dag_id: str, runs) -> dict[str, int]:
    """States of the DAG's runs selected by ``runs`` (a run id, or a (first, last) date pair)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    query = select(DagRun.state, func.count()).where(DagRun.dag_id == dag_id)
    if isinstance(runs, str):
        query = query.where(DagRun.run_id == runs)
    else:
        first, last = (dt.datetime.combine(d, dt.time(), dt.timezone.utc) for d in runs)
        query = query.where(DagRun.logical_date >= first, DagRun.logical_date <= last)
    with create_session() as session:
        rows = session.execute(query.group_by(DagRun.state)).all()
    return {str(state): n for state, n in rows}


def running_tasks(dag_id: str) -> int:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.execute(select(func.count()).where(TaskInstance.dag_id == dag_id,
                                                          TaskInstance.state == "running")).scalar_one()


def progress(label: str, states: dict[str, int], running: int, elapsed: float) -> str:
    """One progress line: runs done of planned, failures, tasks running, elapsed, time left."""
    total = sum(states.values())
    done = sum(n for state, n in states.items() if state in ("success", "failed"))
    failed = f", {states['failed']} failed" if states.get("failed") else ""
    left = f", about {elapsed / done * (total - done):.0f}s left" if 0 < done < total else ""
    return f"  [{elapsed:6.0f}s] {label}: {done}/{total} runs done{failed}, {running} tasks running{left}"


STAGE_TIMES: dict[str, float] = {}  # label -> seconds, printed at the end


def phase(label: str, dag_id: str, runs, create) -> dict[str, int]:
    """Create runs with the scheduler stopped, then run a scheduler until all are done,
    showing progress: one updating line on a terminal, a line per change otherwise."""
    t0, last, tty = time.time(), None, sys.stdout.isatty()
    create()
    scheduler = Service("scheduler", "scheduler")
    try:
        while True:
            states = run_states(dag_id, runs)
            if tty:
                print("\r" + progress(label, states, running_tasks(dag_id), time.time() - t0).ljust(100), end="",
                      flush=True)
            elif states != last:
                print(progress(label, states, running_tasks(dag_id), time.time() - t0), flush=True)
            last = states
            if states and not any(s in ("queued", "running", "None") for s in states):
                break
            time.sleep(1 if tty else 3)
    finally:
        scheduler.stop()
    STAGE_TIMES[label] = time.time() - t0
    print(("\n" if tty else "") + f"  {label} finished in {STAGE_TIMES[label]:.0f}s: {states}", flush=True)
    return states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", default="2013-01-01")
    parser.add_argument("--to", dest="end", default="2013-12-31", help="last day ingested (inclusive)")
    parser.add_argument("--holdout-days", type=int, default=92)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLPIPE_AIRFLOW_PORT", "8080")))
    args = parser.parse_args()
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    train_end = end + dt.timedelta(days=1)
    holdout_start = train_end - dt.timedelta(days=args.holdout_days)
    os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{args.port}/execution/")
    t0 = time.time()

    print("== initialising Airflow metadata DB and MLflow store", flush=True)
    airflow("db", "migrate")
    sys.path.insert(0, str(ROOT / "include"))
    from mlpipe import registry
    from mlpipe.context import Context

    ctx = Context.load()
    registry.connect(ctx.settings, ctx.spec.name)
    airflow("dags", "reserialize")
    for dag_id in ("ingest", "train", "score", "monitor"):
        airflow("dags", "unpause", dag_id)
    # torch / TensorFlow training runs in this pool (a queue is ignored by the LocalExecutor)
    pool = os.environ.get("MLPIPE_GPU_POOL") or ctx.spec.execution.gpu_pool
    airflow("pools", "set", pool, os.environ.get("MLPIPE_GPU_POOL_SLOTS", "2"), "GPU training slots")

    if not port_free(args.port):
        raise SystemExit(f"port {args.port} is in use (another Airflow?); stop it or pass --port / MLPIPE_AIRFLOW_PORT")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops our services
    api = Service("api-server", "api-server", "--port", str(args.port))
    try:
        wait_http(f"http://localhost:{args.port}/api/v2/version")

        print(f"== ingest {start} .. {end} (backfill)", flush=True)
        phase("ingest", "ingest", (start, end),
              lambda: airflow("backfill", "create", "--dag-id", "ingest", "--from-date", str(start),
                              "--to-date", str(end), "--max-active-runs", "8", check=False))

        print(f"== train on {start} .. {holdout_start - dt.timedelta(days=1)}, holdout {holdout_start} .. {end}",
              flush=True)
        conf = {"window_start": str(start), "window_end": str(train_end), "holdout_days": args.holdout_days}
        now = dt.datetime.now(dt.timezone.utc)
        run_id = f"demo__{now:%Y%m%dT%H%M%S}"
        # A logical date on the window's last day, unique per demo run (Airflow allows one run per date).
        logical = f"{train_end}T{now:%H:%M:%S}+00:00"
        phase("train", "train", run_id,
              lambda: airflow("dags", "trigger", "train", "--run-id", run_id, "--conf", json.dumps(conf),
                              "--logical-date", logical))

        if registry.champion_version(ctx.spec.registered_model) is None:
            print("== no champion (the gate promoted nothing): skipping score", flush=True)
            return finish(ctx, t0)
        print(f"== score {holdout_start} .. {end} with the champion (backfill)", flush=True)
        phase("score", "score", (holdout_start, end),
              lambda: airflow("backfill", "create", "--dag-id", "score", "--from-date", str(holdout_start),
                              "--to-date", str(end), "--max-active-runs", "8", check=False))
        print(f"== monitor {holdout_start} .. {end} (backfill: records what it would trigger)", flush=True)
        phase("monitor", "monitor", (holdout_start, end),
              lambda: airflow("backfill", "create", "--dag-id", "monitor", "--from-date", str(holdout_start),
                              "--to-date", str(end), "--max-active-runs", "4", check=False))
    finally:
        api.stop()
    return finish(ctx, t0)


def finish(ctx, t0: float) -> int:
    from mlpipe import ledger
    from mlpipe.summary import latest_decision, summary

    print(summary(ctx))
    print("== promotion ledger (python -m mlpipe.ledger)")
    print(ledger.format_entries(ledger.entries(ctx.store)))
    decision = latest_decision(ctx)
    if decision:
        from mlpipe.promotion import evaluation_page

        print(f"evaluation report: {evaluation_page(ctx.store, decision.seq)} "
              "(also the evaluate run's report.html in MLflow)")
    _monitoring(ctx)
    print(f"every report, per day and per train run: {ctx.store.report_dir() / 'index.html'}")
    print("stage times: " + ", ".join(f"{label} {seconds:.0f}s" for label, seconds in STAGE_TIMES.items()))
    print(f"demo wall time: {time.time() - t0:.0f}s")
    return 0


def _monitoring(ctx) -> None:
    from mlpipe import monitoring

    sched = ctx.spec.schedule
    rows = monitoring.history(ctx, sched.start, sched.end or dt.date.today())
    print(monitoring.verdict(rows))
    if rows:
        print(f"latest drift report: {rows[-1]['report']} (python -m mlpipe.monitoring --from D1 --to D2 for the table)")


if __name__ == "__main__":
    sys.exit(main())
