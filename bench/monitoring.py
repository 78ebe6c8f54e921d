"""What monitoring costs, through Airflow, in one invocation (issue 29's targets).

    .venv/bin/python bench/monitoring.py [--train-days 120] [--holdout-days 28] [--days 14] [--runs 3]

One Airflow (the preloading LocalExecutor ``make demo`` uses, SQLite, an api-server, a
scheduler per phase), the bundled flights pipeline:
- setup: one ``ingest_range`` run over the training days and the monitored days after them;
- one train run of every bundled variant on the training days (its last
  ``--holdout-days`` the holdout): its wall time, and the seconds its promotion spent
  learning the champion's bands (its log line), whose share of the run is the
  calibration's cost (target: at most 20%);
- ``--runs`` times, each over its own ``--days`` days after the training window: a
  ``score`` backfill, then a ``monitor`` backfill over the same days (the champion trained
  above: Param ``allow_current_champion`` for the score backfill).

Prints the medians per day of each backfill and the ratio monitor / score (target: a
monitor run costs at most the score run of its day, ratio <= 1.0), and per task id the
split of its running time (as bench/backfill.py prints it).
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-days", type=int, default=120, help="training window, holdout included")
    parser.add_argument("--holdout-days", type=int, default=28)
    parser.add_argument("--days", type=int, default=14, help="monitored days, after the training window")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--port", type=int, default=18794)
    args = parser.parse_args()
    start = dt.date.fromisoformat(args.start)
    trained_end = start + dt.timedelta(days=args.train_days - 1)
    # each run its own days (a repeat over the same days could find its runs done and wait for nothing)
    spans = [(trained_end + dt.timedelta(days=1 + i * args.days), trained_end + dt.timedelta(days=(i + 1) * args.days))
             for i in range(args.runs)]
    first, last = spans[0][0], spans[-1][1]
    harness.setup("mlpipe-bench-monitoring-")
    demo = harness.load_script("demo")
    api = harness.start_airflow(demo, args.port, [backfill._dag(n) for n in ("ingest_range", "train", "score",
                                                                              "monitor")])
    times: dict[str, list[float]] = {"score": [], "monitor": []}
    try:
        backfill._range(demo, "ingest_range", start, last, 0)
        train_seconds = _train(demo, start, trained_end, args.holdout_days)
        for span in spans:
            for name in ("score", "monitor"):  # in this order: a monitor run waits for its day's scores
                times[name].append(backfill._backfill(demo, name, *span))
    finally:
        api.stop()
    bands = harness.log_figures(backfill._dag("train"), BANDS).get("evaluate", [])
    per_day = {k: statistics.median(v) / args.days for k, v in times.items()}
    ratio = per_day["monitor"] / per_day["score"]
    print(f"\nmonitored {first} .. {last}: {args.runs} backfills of {args.days} days each, medians:")
    print(f"  score   {per_day['score']:6.2f}s a day   {times['score']}")
    print(f"  monitor {per_day['monitor']:6.2f}s a day   {times['monitor']}")
    print(f"  monitor / score {ratio:4.2f}x (target <= 1.0x) {'met' if ratio <= 1.0 else 'MISSED'}")
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
