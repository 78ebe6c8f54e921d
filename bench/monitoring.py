"""What monitoring costs, through Airflow, in one invocation (issue 29's targets).

    .venv/bin/python bench/monitoring.py [--train-days 120] [--holdout-days 28] [--days 28]

One Airflow (the preloading LocalExecutor ``make demo`` uses, SQLite, an api-server, a
scheduler per phase), the bundled flights pipeline:
- setup: one ``ingest_range`` run over the training days and the monitored days after them;
- one train run of every bundled variant on the training days (its last
  ``--holdout-days`` the holdout): its wall time, and the seconds its promotion spent
  learning the champion's bands (its log line), whose share of the run is the
  calibration's cost (target: at most 20%);
- a ``score`` backfill over the ``--days`` days after the training window (the champion
  trained above: Param ``allow_current_champion``), then a ``monitor`` backfill over the
  same days (one backfill each: a second backfill of a DAG in the same home is lost now
  and then, and one per day gives as many figures as days).

Prints the median and quartiles of a day's run (start to end) of each DAG, their ratio
(target: a monitor run costs at most the score run of its day, ratio <= 1.0), each
backfill's wall time, and per task id the split of its running time (as
bench/backfill.py prints it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backfill  # noqa: E402 - the same phases and per-task split
import harness  # noqa: E402

BANDS = r"mlpipe bands of v\w+ learnt in ([0-9.]+)s"


def _train(demo, start: dt.date, end: dt.date, holdout_days: int) -> float:
    conf = {"window_start": str(start), "window_end": str(end + dt.timedelta(days=1)), "holdout_days": holdout_days}
    t0 = time.time()
    states = demo.phase("train", [(backfill._dag("train"), "bench__train")], lambda: demo.airflow(
        "dags", "trigger", backfill._dag("train"), "--run-id", "bench__train", "--conf", json.dumps(conf),
        "--logical-date", f"{end + dt.timedelta(days=1)}T00:00:00+00:00"))
    if set(states) != {"success"}:
        raise SystemExit(f"train run did not succeed: {states}")
    return time.time() - t0


def _run_seconds(dag_id: str) -> list[float]:
    """Each successful run's seconds from start to end (one a day)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(DagRun.start_date, DagRun.end_date).where(
            DagRun.dag_id == dag_id, DagRun.state == "success")).all()
    return [(end - begin).total_seconds() for begin, end in rows]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-days", type=int, default=120, help="training window, holdout included")
    parser.add_argument("--holdout-days", type=int, default=28)
    parser.add_argument("--days", type=int, default=28, help="monitored days, after the training window")
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--port", type=int, default=18794)
    args = parser.parse_args()
    start = dt.date.fromisoformat(args.start)
    trained_end = start + dt.timedelta(days=args.train_days - 1)
    first, last = trained_end + dt.timedelta(days=1), trained_end + dt.timedelta(days=args.days)
    harness.setup("mlpipe-bench-monitoring-")
    demo = harness.load_script("demo")
    api = harness.start_airflow(demo, args.port, [backfill._dag(n) for n in ("ingest_range", "train", "score",
                                                                              "monitor")])
    wall: dict[str, float] = {}
    try:
        backfill._range(demo, "ingest_range", start, last, 0)
        train_seconds = _train(demo, start, trained_end, args.holdout_days)
        for name in ("score", "monitor"):  # in this order: a monitor run waits for its day's scores
            wall[name] = backfill._backfill(demo, name, first, last)
    finally:
        api.stop()
    bands = harness.log_figures(backfill._dag("train"), BANDS).get("evaluate", [])
    runs = {name: _run_seconds(backfill._dag(name)) for name in ("score", "monitor")}
    ratio = statistics.median(runs["monitor"]) / statistics.median(runs["score"])
    print(f"\n{args.days} days monitored ({first} .. {last}): one score backfill, then one monitor backfill")
    for name in ("score", "monitor"):
        print(f"  {name:<8} a day's run: median {statistics.median(runs[name]):5.2f}s (quartiles "
              f"{statistics.quantiles(runs[name], n=4)[0]:.2f} .. {statistics.quantiles(runs[name], n=4)[2]:.2f}); "
              f"the backfill {wall[name]:.1f}s = {wall[name] / args.days:.2f}s a day")
    print(f"  monitor / score, median run: {ratio:4.2f}x (target <= 1.0x) {'met' if ratio <= 1.0 else 'MISSED'}; "
          f"backfill: {wall['monitor'] / wall['score']:4.2f}x")
    if bands:
        share = bands[0] / train_seconds
        print(f"train run over {args.train_days} days ({args.holdout_days} holdout): {train_seconds:.1f}s, of which "
              f"learning the bands {bands[0]:.2f}s = {share:.1%} (target <= 20%) {'met' if share <= 0.2 else 'MISSED'}")
    else:
        print(f"train run: {train_seconds:.1f}s; no band-learning line in its logs (nothing promoted?)")
    print("  per task (medians): queued->start | running = runner overhead + imports + model load + work")
    for name in ("score", "monitor", "train"):
        backfill._split(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
