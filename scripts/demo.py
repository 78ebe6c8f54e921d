"""Run the bundled pipelines on their bundled data through a real Airflow.

For every pipeline (or those named with --pipeline): ingest (its ingest_range DAG over
its demo window: a task per chunk of days) -> train (one manual run with Params) -> score
and monitor (its score_range DAG over the holdout days: a task per chunk of days); each
stage runs every pipeline's runs side by side, executed by a real scheduler with the
LocalExecutor and an api-server, against the embedded SQLite metadata DB and MLflow store.
Prints, per pipeline, the variants with their metrics, the gate decision, the aliases,
the promotion ledger and where the reports are.

Runs are created while the scheduler is stopped: SQLite serves one writer at a time.
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
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

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


def run_states(selection: list[tuple[str, object]]) -> dict[str, int]:
    """States of the runs ``selection`` names: per DAG id, a run id or a (first, last) date pair."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import and_, func, or_, select

    wanted = []
    for dag_id, runs in selection:
        if isinstance(runs, str):
            wanted.append(and_(DagRun.dag_id == dag_id, DagRun.run_id == runs))
        else:
            first, last = (dt.datetime.combine(d, dt.time(), dt.timezone.utc) for d in runs)
            wanted.append(and_(DagRun.dag_id == dag_id, DagRun.logical_date >= first, DagRun.logical_date <= last))
    with create_session() as session:
        rows = session.execute(select(DagRun.state, func.count()).where(or_(*wanted)).group_by(DagRun.state)).all()
    return {str(state): n for state, n in rows}


def running_tasks(dag_ids: list[str]) -> int:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.execute(select(func.count()).where(TaskInstance.dag_id.in_(dag_ids),
                                                          TaskInstance.state == "running")).scalar_one()


def progress(label: str, states: dict[str, int], running: int, elapsed: float) -> str:
    """One progress line: runs done of planned, failures, tasks running, elapsed, time left."""
    total = sum(states.values())
    done = sum(n for state, n in states.items() if state in ("success", "failed"))
    failed = f", {states['failed']} failed" if states.get("failed") else ""
    left = f", about {elapsed / done * (total - done):.0f}s left" if 0 < done < total else ""
    return f"  [{elapsed:6.0f}s] {label}: {done}/{total} runs done{failed}, {running} tasks running{left}"


STAGE_TIMES: dict[str, float] = {}  # label -> seconds, printed at the end


def _done(states: dict[str, int]) -> bool:
    return bool(states) and not any(s in ("queued", "running", "None") for s in states)


def phase(label: str, selection: list[tuple[str, object]], create) -> dict[str, int]:
    """Create runs with the scheduler stopped, then run a scheduler until every run of
    ``selection`` (see run_states; several pipelines' DAGs run side by side) is done,
    showing progress: one updating line on a terminal, a line per change otherwise."""
    t0, last, tty = time.time(), None, sys.stdout.isatty()
    create()
    dag_ids = [dag_id for dag_id, _ in selection]
    states = run_states(selection)
    if _done(states):  # a demo run again on the same window: nothing to schedule
        STAGE_TIMES[label] = time.time() - t0
        print(f"  {label}: nothing to run: {states}", flush=True)
        return states
    scheduler = Service("scheduler", "scheduler")
    try:
        while True:
            if tty:
                print("\r" + progress(label, states, running_tasks(dag_ids), time.time() - t0).ljust(100), end="",
                      flush=True)
            elif states != last:
                print(progress(label, states, running_tasks(dag_ids), time.time() - t0), flush=True)
            last = states
            if _done(states):
                break
            if scheduler.proc.poll() is not None:  # no scheduler: nothing would ever run
                raise SystemExit(f"the scheduler exited (code {scheduler.proc.returncode}) during {label}; its log: "
                                 f"{scheduler.log.name}")
            time.sleep(1 if tty else 3)
            states = run_states(selection)
    finally:
        scheduler.stop()
    STAGE_TIMES[label] = time.time() - t0
    print(("\n" if tty else "") + f"  {label} finished in {STAGE_TIMES[label]:.0f}s: {states}", flush=True)
    return states


@dataclass
class Demo:
    """One pipeline's demo: ingest start..end, train on all but the last holdout_days,
    score and monitor those."""
    ctx: object  # mlpipe.context.Context
    start: dt.date
    end: dt.date
    holdout_days: int

    @classmethod
    def of(cls, ctx, args) -> Demo:
        """The window of the command line, else the spec's ``demo``, else its schedule."""
        spec = ctx.spec
        default = spec.demo or SimpleNamespace(start=spec.schedule.start, end=spec.schedule.end or dt.date.today(),
                                               holdout_days=spec.training.holdout_days)
        return cls(ctx, dt.date.fromisoformat(args.start) if args.start else default.start,
                   dt.date.fromisoformat(args.end) if args.end else default.end,
                   args.holdout_days or default.holdout_days)

    @property
    def name(self) -> str:
        return self.ctx.spec.name

    def dag(self, name: str) -> str:
        from mlpipe.pipelines import dag_id

        return dag_id(self.name, name)

    @property
    def train_end(self) -> dt.date:
        return self.end + dt.timedelta(days=1)

    @property
    def holdout_start(self) -> dt.date:
        return self.train_end - dt.timedelta(days=self.holdout_days)


def window_run(demo: Demo) -> str:
    """The ingest_range and score_range runs of the demo's window: one per window, so a second
    demo on the same window finds them done and runs nothing again."""
    return f"demo__{demo.start:%Y%m%d}_{demo.end:%Y%m%d}"


def trigger_range(demo: Demo, name: str, start: dt.date, end: dt.date) -> None:
    conf = {"start": str(start), "end": str(end)}
    airflow("dags", "trigger", demo.dag(name), "--run-id", window_run(demo), "--conf", json.dumps(conf),
            check=False)  # the run exists already: a demo again on the same window


def trigger_train(demo: Demo, now: dt.datetime) -> None:
    """The manual train run ``demo__<now>`` over the demo's window."""
    conf = {"window_start": str(demo.start), "window_end": str(demo.train_end), "holdout_days": demo.holdout_days}
    # A logical date on the window's last day, unique per demo run (Airflow allows one run per date).
    airflow("dags", "trigger", demo.dag("train"), "--run-id", f"demo__{now:%Y%m%dT%H%M%S}", "--conf",
            json.dumps(conf), "--logical-date", f"{demo.train_end}T{now:%H:%M:%S}+00:00")


def pipelines(names: list[str] | None) -> list:
    """The contexts of the named pipelines (default: every configured one)."""
    from mlpipe.context import Context
    from mlpipe.errors import SpecError
    from mlpipe.pipelines import spec_file, spec_files

    try:
        return [Context.load(path) for path in ([spec_file(n) for n in names] if names else spec_files())]
    except SpecError as exc:
        raise SystemExit(f"error: {exc}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", action="append", help="run this pipeline (repeatable; default: all)")
    parser.add_argument("--from", dest="start", help="first day ingested (default: the spec's demo window)")
    parser.add_argument("--to", dest="end", help="last day ingested, inclusive (default: the spec's demo window)")
    parser.add_argument("--holdout-days", type=int, help="last days held out, scored and monitored (default: spec)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLPIPE_AIRFLOW_PORT", "8080")))
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{args.port}/execution/")
    t0 = time.time()

    print("== initialising Airflow metadata DB and MLflow store", flush=True)
    airflow("db", "migrate")
    sys.path.insert(0, str(ROOT / "include"))
    demos = [Demo.of(ctx, args) for ctx in pipelines(args.pipeline)]
    for demo in demos:
        demo.ctx.tracking.experiment(demo.ctx.spec.name)  # the store and experiment, before tasks race for them
    airflow("dags", "reserialize")
    for demo in demos:
        for name in ("ingest_range", "train", "score_range"):
            airflow("dags", "unpause", demo.dag(name))
    # torch / TensorFlow training runs in this pool (a queue is ignored by the LocalExecutor)
    for pool in {os.environ.get("MLPIPE_GPU_POOL") or d.ctx.spec.execution.gpu_pool for d in demos}:
        airflow("pools", "set", pool, os.environ.get("MLPIPE_GPU_POOL_SLOTS", "2"), "GPU training slots")

    if not port_free(args.port):
        raise SystemExit(f"port {args.port} is in use (another Airflow?); stop it or pass --port / MLPIPE_AIRFLOW_PORT")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops our services
    api = Service("api-server", "api-server", "--port", str(args.port))
    try:
        wait_http(f"http://localhost:{args.port}/api/v2/version")
        stages(demos)
    finally:
        api.stop()
    return finish(demos, t0)


def stages(demos: list[Demo]) -> None:
    """Each stage runs every pipeline's runs side by side under one scheduler."""
    for d in demos:
        print(f"== {d.name}: ingest {d.start} .. {d.end} (ingest_range), train on {d.start} .. "
              f"{d.holdout_start - dt.timedelta(days=1)}, holdout {d.holdout_start} .. {d.end}", flush=True)
    phase("ingest", [(d.dag("ingest_range"), window_run(d)) for d in demos],
          lambda: [trigger_range(d, "ingest_range", d.start, d.end) for d in demos])
    now = dt.datetime.now(dt.timezone.utc)
    phase("train", [(d.dag("train"), f"demo__{now:%Y%m%dT%H%M%S}") for d in demos],
          lambda: [trigger_train(d, now) for d in demos])
    promoted = [d for d in demos if d.ctx.tracking.champion_version(d.ctx.spec.registered_model) is not None]
    for d in [d for d in demos if d not in promoted]:
        print(f"== {d.name}: no champion (the gate promoted nothing): not scoring it", flush=True)
    if not promoted:
        return
    print("== score the holdout days point in time and monitor them (score_range: records what it would trigger)",
          flush=True)
    phase("score and monitor", [(d.dag("score_range"), window_run(d)) for d in promoted],
          lambda: [trigger_range(d, "score_range", d.holdout_start, d.end) for d in promoted])


def finish(demos: list[Demo], t0: float) -> int:
    from mlpipe import ledger
    from mlpipe.summary import latest_decision, summary

    for demo in demos:
        ctx = demo.ctx
        print(f"\n======== pipeline {demo.name}: {ctx.spec.description}")
        print(summary(ctx))
        print(f"== promotion ledger (python -m mlpipe.ledger --pipeline {demo.name})")
        print(ledger.format_entries(ledger.entries(ctx.store)))
        decision = latest_decision(ctx)
        if decision:
            from mlpipe.promotion import evaluation_page

            print(f"evaluation report: {evaluation_page(ctx.store, decision.seq)} "
                  "(also the evaluate run's report.html in MLflow)")
        _monitoring(ctx)
        print(f"every report, per day and per train run: {ctx.store.report_dir() / 'index.html'}")
    print("\nstage times: " + ", ".join(f"{label} {seconds:.0f}s" for label, seconds in STAGE_TIMES.items()))
    print(f"demo wall time: {time.time() - t0:.0f}s")
    return 0


def _monitoring(ctx) -> None:
    from mlpipe import monitoring

    sched = ctx.spec.schedule
    rows = monitoring.history(ctx, sched.start, sched.end or dt.date.today())
    print(monitoring.verdict(rows))
    if rows:
        print(f"latest drift report: {rows[-1]['report']} (python -m mlpipe.monitoring --pipeline {ctx.spec.name} "
              "--from D1 --to D2 for the table)")


if __name__ == "__main__":
    sys.exit(main())
