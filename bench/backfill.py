"""Ingest and score backfills against trivial DAGs of the same shape, in one invocation.

    .venv/bin/python bench/backfill.py [--days 30] [--score-days N] [--runs 3]
    .venv/bin/python bench/backfill.py --start 2013-01-01 --days 365 --runs 1 --no-daily-ingest --no-daily-score
        # a year, through the range DAGs (bench/history.py runs both sizes)

One Airflow (the preloading LocalExecutor ``make demo`` uses, SQLite, an api-server, a
scheduler per backfill) runs, alternating, ``--runs`` times each:
- the real ``ingest`` backfill over ``--days`` days and ``trivial_ingest`` (3 no-op tasks,
  the same schedule and max_active_runs) over the same days;
- the real ``score`` backfill over the last ``--score-days`` of those days (default all),
  with a champion trained once beforehand on them (not timed; Param
  ``allow_current_champion``), and ``trivial_score`` (1 no-op task);
- one run of the pipeline's ``ingest_range`` DAG over the ``--days`` days (default chunks
  of 30 days) and ``trivial_range``, a no-op DAG of its shape over the same chunks;
- one run of the pipeline's ``score_range`` DAG (Param ``monitor`` off: what the score
  backfill does) over the scored days, the shape of ``trivial_range`` too.
Repeats reprocess the completed runs (``--reprocess-behavior completed``).

Prints the medians of each backfill's wall time and the real / trivial ratios (targets:
ingest <= 1.3x, score <= 1.5x; each range against the daily trivial backfill, its floor as
a daily backfill, and against trivial_range), and per task id the medians of: queued to start, and the
running time split into runner overhead (the task process around the step), imports and
run (``run_step``'s log line), model load (scoring's log line) and the rest of the work.
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
import harness  # noqa: E402

from mlpipe.pipelines import dag_id  # noqa: E402

PIPELINE = "flights"  # the bundled pipeline whose ingest and score DAGs are timed
IMPORTS, RUN = r"mlpipe step \w+: imports ([0-9.]+)s", r"mlpipe step \w+: imports [0-9.]+s, run ([0-9.]+)s"
TRIVIAL = '''
import datetime as dt
import os
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


SLOTS = len(os.sched_getaffinity(0))  # as mlpipe_dagkit.range_slots without MLPIPE_RANGE_SLOTS


@dag(schedule=None, start_date=START, catchup=False, max_active_runs=1, tags=["bench"],
     params={"start": "2013-01-01", "end": "2013-01-30"})
def trivial_range():
    @task
    def plan(params=None):  # as mlpipe.ingest.plan_range's default chunks
        first, last = (dt.date.fromisoformat(params[k]) for k in ("start", "end"))
        days = (last - first).days + 1
        size = -(-days // max(min(SLOTS, days), -(-days // 30)))
        return [{"start": str(first + dt.timedelta(days=d))} for d in range(0, days, size)]

    @task(priority_weight=0, weight_rule="absolute", max_active_tis_per_dag=SLOTS)
    def validate(chunk): return chunk

    @task(priority_weight=0, weight_rule="absolute", max_active_tis_per_dag=SLOTS)
    def build_features(checked): return 1

    @task
    def check(results): return len(list(results))

    checked = validate.expand(chunk=plan())
    build_features.expand(checked=checked) >> check(checked)


trivial_ingest()
trivial_score()
trivial_range()
'''


def _range(demo, name: str, start: dt.date, end: dt.date, run: int) -> float:
    """One run of the range DAG ``name`` over ``start`` .. ``end``."""
    run_id = f"bench__{start:%Y%m%d}_{end:%Y%m%d}_{run}"
    # score_range as the score backfill: the current champion (trained on these days), no monitoring
    conf = {"start": str(start), "end": str(end)} | (
        {"allow_current_champion": True, "monitor": False} if name == "score_range" else {})
    t0 = time.time()
    states = demo.phase(name, [(_dag(name), run_id)], lambda: demo.airflow(
        "dags", "trigger", _dag(name), "--run-id", run_id, "--conf", json.dumps(conf)))
    if set(states) != {"success"}:
        raise SystemExit(f"{_dag(name)} run did not succeed: {states}")
    return time.time() - t0


def _dag(name: str) -> str:
    """The DAG id of ``name``: the pipeline's DAG (``ingest`` -> flights__ingest); a trivial one as is."""
    return name if name.startswith("trivial_") else dag_id(PIPELINE, name)


def _backfill(demo, name: str, start: dt.date, end: dt.date) -> float:
    # the champion trained on these days: score them with it (point in time would refuse), flagged
    conf = {"allow_current_champion": True} if name == "score" else None
    t0 = time.time()
    states = demo.phase(name, [(_dag(name), (start, end))], lambda: demo.airflow(
        "backfill", "create", "--dag-id", _dag(name), "--from-date", str(start), "--to-date", str(end),
        "--reprocess-behavior", "completed", *(["--dag-run-conf", json.dumps(conf)] if conf else []), check=False))
    if set(states) != {"success"}:
        raise SystemExit(f"{_dag(name)} backfill did not succeed: {states}")
    return time.time() - t0


def _train(demo, start: dt.date, end: dt.date) -> None:
    conf = {"window_start": str(start), "window_end": str(end + dt.timedelta(days=1)),
            "holdout_days": max(2, (end - start).days // 5)}
    demo.phase("train (setup)", [(_dag("train"), "bench__setup")], lambda: demo.airflow(
        "dags", "trigger", _dag("train"), "--run-id", "bench__setup", "--conf", json.dumps(conf),
        "--logical-date", f"{end + dt.timedelta(days=1)}T00:00:00+00:00"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30, help="days ingested (and scored unless --score-days)")
    parser.add_argument("--score-days", type=int, help="the last N of those days are scored (default: all)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start", default="2013-03-01")
    parser.add_argument("--port", type=int, default=18793)
    parser.add_argument("--trivial-ingest-only", action="store_true",
                        help="only backfill trivial_ingest (the floor, e.g. against make demo's ingest stage)")
    parser.add_argument("--no-daily-ingest", action="store_true",
                        help="leave out the real daily ingest backfill (the range ingests the days scored): a year")
    parser.add_argument("--no-daily-score", action="store_true",
                        help="leave out the real daily score backfill (score_range scores): a year")
    args = parser.parse_args()
    start = dt.date.fromisoformat(args.start)
    end = start + dt.timedelta(days=args.days - 1)
    windows = {"ingest": (start, end), "score": (end - dt.timedelta(days=(args.score_days or args.days) - 1), end)}
    windows |= {f"trivial_{k}": v for k, v in windows.items()} | {"ingest_range": (start, end),
                                                                  "trivial_range": (start, end),
                                                                  "score_range": windows["score"]}
    harness.setup("mlpipe-bench-backfill-", extra_dags=TRIVIAL)
    demo = harness.load_script("demo")
    api = harness.start_airflow(demo, args.port, [_dag(n) for n in ("ingest", "train", "score", "ingest_range",
                                                                     "score_range", "trivial_ingest",
                                                                     "trivial_score", "trivial_range")])
    if args.trivial_ingest_only:
        try:
            seconds = [_backfill(demo, "trivial_ingest", *windows["ingest"]) for _ in range(args.runs)]
        finally:
            api.stop()
        print(f"trivial_ingest over {args.days} days: median {statistics.median(seconds):.1f}s of {seconds}")
        return 0
    setup = "ingest_range" if args.no_daily_ingest else "ingest"  # its run 0 also ingests what is scored
    pairs = [("trivial_ingest", "ingest"), ("trivial_score", "score", "score_range"),
             ("trivial_range", "ingest_range")]
    if args.no_daily_ingest:
        pairs[0] = ("trivial_ingest",)
        del windows["ingest"]
    if args.no_daily_score:
        pairs[1] = ("trivial_score", "score_range")
        del windows["score"]
    times: dict[str, list[float]] = {k: [] for k in windows}

    def timed(name: str, i: int) -> None:
        if name.endswith("_range"):
            times[name].append(_range(demo, name, *windows[name], i))
        else:
            times[name].append(_backfill(demo, name, *windows[name]))

    try:
        timed(setup, 0)
        _train(demo, start, end)
        for i in range(args.runs):
            for pair in pairs if i % 2 == 0 else [p[::-1] for p in pairs]:
                for name in pair:
                    if not (name == setup and i == 0):  # the setup is run 0
                        timed(name, i)
    finally:
        api.stop()
    _report(times, windows)
    return 0


def _report(times: dict[str, list[float]], windows: dict) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians of {len(times['trivial_score'])} runs each:")
    for real, trivial, target in (("ingest", "trivial_ingest", 1.3), ("score", "trivial_score", 1.5),
                                  ("ingest_range", "trivial_ingest", 1.3), ("ingest_range", "trivial_range", None),
                                  ("score_range", "trivial_score", 1.5), ("score_range", "trivial_range", None)):
        if real not in med:
            continue
        ratio = med[real] / med[trivial]
        days = (windows[real][1] - windows[real][0]).days + 1
        verdict = f"(target <= {target}x) {'met' if ratio <= target else 'MISSED'}" if target else "(its own shape)"
        print(f"  {real:<12} {days:3d} days {med[real]:7.1f}s   {trivial:<14} {med[trivial]:6.1f}s   "
              f"ratio {ratio:4.2f}x {verdict}")
    print("  per task (medians): queued->start | running = runner overhead + imports + model load + work")
    for name in windows:
        _split(name)


def _split(name: str) -> None:
    """One line per task id: scheduling, then the running time split by the task's own log
    lines (run_step's imports and run, scoring's model load)."""
    rows = harness.task_rows(_dag(name))
    imports_of, run_of = harness.log_figures(_dag(name), IMPORTS), harness.log_figures(_dag(name), RUN)
    loads = harness.log_figures(_dag(name), r"loaded in ([0-9.]+)s")
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        queued = harness.median((r["start"] - r["queued"]).total_seconds() for r in mine if r["queued"])
        running = harness.median(r["seconds"] for r in mine)
        imports, run = harness.median(imports_of.get(task, [])), harness.median(run_of.get(task, []))
        load = harness.median(loads.get(task, [])) if loads.get(task) else 0.0
        if run == run:  # a real task: run_step logged its split
            print(f"  {name + '.' + task:<30} {queued:5.2f}s | {running:5.2f}s = {running - imports - run:5.2f} + "
                  f"{imports:4.2f} + {load:4.2f} + {run - load:5.2f}")
        else:
            print(f"  {name + '.' + task:<30} {queued:5.2f}s | {running:5.2f}s (a no-op)")


if __name__ == "__main__":
    sys.exit(main())
