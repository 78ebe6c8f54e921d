"""Per-day ingest cost after 30, 365 and 1,460 stored days, in one invocation.

    .venv/bin/python bench/history.py [--points 30,365,1460] [--measure 5] [--sources one_row,flights]
                                      [--airflow-days 30,365] [--airflow-runs 1]

For each source and each point N, a data root holding N stored days, then ``--measure``
more days ingested in this process with the pipeline's own steps (extract, validate,
features), each step timed. Sources:
- ``one_row``: a synthetic daily table of one row a day (a number, a label, a 7-day
  history feature), validated by a small suite;
- ``flights``: the bundled flights pipeline (its sources, suite and features as they are).

The stored history is the bundled data repeated with shifted dates: the ``--template``
days just before the measured ones are ingested for real, and every older day is a copy
of one of them (the template day of the same weekday): each stored object whose path
names the template day (partitions, validation reports, GX results and Data Docs pages),
written again under the older day's date, and the day's row recorded in the report index.
That is the store a backfill over years leaves, without years of backfill here.

Prints per source the median seconds a day of each step at each point, the growth from the
first point to the last (target <= 1.2x), and the whole day against its target (one_row
<= 0.3 s, flights <= 1.0 s).

Then, through Airflow, for each of ``--airflow-days`` (flights from 2013-01-01): bench/backfill.py's
ingest, score and ingest_range runs against trivial DAGs of the same shapes (its figures
and targets: ingest <= 1.3x, score <= 1.5x); past 92 days without the daily ingest and
score backfills (the range DAGs ingest and score). ``--airflow-days ""`` leaves them out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from mlpipe import ingest, report_index  # noqa: E402
from mlpipe.context import Context  # noqa: E402
from mlpipe.settings import PROJECT_ROOT, get_settings  # noqa: E402

STEPS = {"extract": ingest.extract_day, "validate": ingest.validate_day, "features": ingest.build_day_features}
TARGETS = {"one_row": 0.3, "flights": 1.0}  # seconds a day, all three steps
FIRST_MEASURED = dt.date(2013, 12, 20)  # flights' source ends on 2013-12-31
ONE_ROW = {
    "name": "daily", "description": "One row a day (bench/history.py).",
    "row_id": ["day"], "partition": {"column": "day", "timezone": "UTC"},
    "target": {"name": "high", "expression": "y > 0", "task": "binary"},
    "features": {"numeric": ["x"], "calendar": ["day_of_week"],
                 "history": [{"name": "high_7d", "group_by": [], "window_days": 7}]},
    "validation": {"min_rows": 1, "max_rows": 1,
                   "columns": {"day": {"type": "string"}, "x": {"type": "number", "min": -10, "max": 10},
                               "y": {"type": "int", "min": 0, "max": 1}}},
    "training": {"lookback_days": 60, "holdout_days": 10, "min_rows": 10},
    "variants": [{"name": "logreg", "backend": "sklearn_linear"}],
}


def one_row_spec(folder: Path, first: dt.date, last: dt.date) -> Path:
    """A CSV of one row a day from ``first`` to ``last`` and a spec reading it."""
    import numpy as np

    rng = np.random.default_rng(0)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    lines = ["day,x,y"] + [f"{d},{rng.normal():.4f},{int(rng.random() < 0.3)}" for d in days]
    (folder / "daily.csv").write_text("\n".join(lines) + "\n")
    spec = {**ONE_ROW, "sources": {"days": {"path": str(folder / "daily.csv")}},
            "schedule": {"start": str(first), "end": str(last)}}
    (folder / "daily.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "daily.yaml"


def context(spec: Path, root: Path, cache: Path) -> Context:
    settings = get_settings()
    changes = {"data_root": root}
    if "cache_dir" in {f.name for f in dataclasses.fields(settings)}:
        changes["cache_dir"] = cache  # the sources' Parquet caches, shared by every root
    return Context.load(spec, dataclasses.replace(settings, **changes))


def ingest_day(ctx: Context, day: dt.date) -> dict[str, float]:
    """Seconds of each step for ``day``."""
    times = {}
    for name, step in STEPS.items():
        t0 = time.perf_counter()
        step(ctx, day)
        times[name] = time.perf_counter() - t0
    return times


def stored_by_day(root: Path, days: list[dt.date]) -> dict[dt.date, list[Path]]:
    """The files under ``root`` whose path names one of ``days`` (ISO or compact, as GX's
    run times are), caches and locks left out."""
    names = {d: (d.isoformat(), d.strftime("%Y%m%d")) for d in days}
    found: dict[dt.date, list[Path]] = {d: [] for d in days}
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if not path.is_file() or ".cache" in rel.split(os.sep) or rel.endswith(".lock"):
            continue
        for day, (iso, compact) in names.items():
            if iso in rel or compact in rel:
                found[day].append(path)
    return found


def prefill(ctx: Context, template: list[dt.date], older: list[dt.date]) -> None:
    """Store each of ``older`` as a copy of the template day of its weekday (see above)."""
    root = Path(ctx.settings.data_root)
    files = stored_by_day(root, template)
    rows = _index_rows(ctx)
    folder = Path(ctx.store.report_dir())
    for day in older:
        source = template[(day - template[0]).days % len(template)]
        swap = {source.isoformat(): day.isoformat(), source.strftime("%Y%m%d"): day.strftime("%Y%m%d")}
        for path in files[source]:
            rel = str(path.relative_to(root))
            for old, new in swap.items():
                rel = rel.replace(old, new)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / rel)
        row = rows[str(source)]
        links = {k: str(folder / v.replace(source.isoformat(), day.isoformat()))
                 for k, v in row.items() if k in report_index.DAY_COLUMNS}
        report_index.record(ctx.store, "day", str(day), links,
                            **{k: v for k, v in row.items() if k not in report_index.DAY_COLUMNS})


def _index_rows(ctx: Context) -> dict[str, dict]:
    if hasattr(report_index, "load"):
        return report_index.load(ctx.store)["day"]
    import json  # the single index.json of earlier versions (for figures before the shards)

    return json.loads((Path(ctx.store.report_dir()) / "index.json").read_text())["day"]


def run_source(name: str, spec: Path, points: list[int], measure: int, template_days: int,
               work: Path) -> dict[int, dict[str, list[float]]]:
    measured = [FIRST_MEASURED + dt.timedelta(days=i) for i in range(measure)]
    template = [FIRST_MEASURED - dt.timedelta(days=template_days - i) for i in range(template_days)]
    cache = work / "cache"
    base = work / f"{name}-template"
    ctx = context(spec, base, cache)
    for day in template:  # imports, GX's first use and the source caches come with these
        ingest_day(ctx, day)
    figures = {}
    for n in points:
        root = work / f"{name}-{n}"
        shutil.copytree(base, root, ignore=shutil.ignore_patterns(".cache"))
        ctx = context(spec, root, cache)
        older = [template[0] - dt.timedelta(days=i + 1) for i in range(n - template_days)]
        t0 = time.perf_counter()
        prefill(ctx, template, older)
        print(f"  {name}: {n} stored days ({len(older)} copied in {time.perf_counter() - t0:.0f}s)", flush=True)
        figures[n] = {step: [] for step in STEPS}
        for day in measured:
            for step, seconds in ingest_day(ctx, day).items():
                figures[n][step].append(seconds)
        shutil.rmtree(root)
    return figures


def report(name: str, figures: dict[int, dict[str, list[float]]], measure: int) -> None:
    points = list(figures)
    print(f"\n{name}: median seconds a day over {measure} days, after N stored days")
    print(f"  {'step':<10}" + "".join(f"{f'N={n}':>10}" for n in points) + f"{'growth':>10}")
    totals = {n: [sum(v) for v in zip(*figures[n].values(), strict=True)] for n in points}
    for step in [*STEPS, "day"]:
        med = {n: statistics.median(totals[n] if step == "day" else figures[n][step]) for n in points}
        growth = med[points[-1]] / med[points[0]]
        print(f"  {step:<10}" + "".join(f"{med[n]:10.3f}" for n in points) + f"{growth:9.2f}x")
    day = {n: statistics.median(totals[n]) for n in points}
    growth = day[points[-1]] / day[points[0]]
    print(f"  growth {points[0]} -> {points[-1]} days: {growth:.2f}x (target <= 1.2x) "
          f"{'met' if growth <= 1.2 else 'MISSED'}; a day at N={points[-1]}: {day[points[-1]]:.3f}s "
          f"(target <= {TARGETS[name]}s) {'met' if day[points[-1]] <= TARGETS[name] else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="30,365,1460", help="stored days before the measured ones")
    parser.add_argument("--measure", type=int, default=5, help="days ingested and timed at each point")
    parser.add_argument("--template", type=int, default=7, help="days ingested for real before the copies")
    parser.add_argument("--sources", default="one_row,flights")
    parser.add_argument("--airflow-days", default="30,365", help="backfills through Airflow over these many days")
    parser.add_argument("--airflow-runs", type=int, default=1, help="bench/backfill.py --runs")
    args = parser.parse_args()
    points = sorted(int(p) for p in args.points.split(","))
    if points[0] < args.template:
        parser.error(f"every point must be at least --template ({args.template}) days")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.sources.split(","):
            if name == "one_row":
                spec = one_row_spec(work, FIRST_MEASURED - dt.timedelta(days=args.template),
                                    FIRST_MEASURED + dt.timedelta(days=args.measure))
            elif name == "flights":
                spec = PROJECT_ROOT / "include" / "pipelines" / "flights.yaml"
            else:
                parser.error(f"unknown source {name!r}: one_row or flights")
            results[name] = run_source(name, spec, points, args.measure, args.template, work)
    for name, figures in results.items():
        report(name, figures, args.measure)
    for days in filter(None, args.airflow_days.split(",")):
        print(f"\nthrough Airflow, {days} days (bench/backfill.py --start 2013-01-01 --days {days} "
              f"--runs {args.airflow_runs}):", flush=True)
        # a year: the range DAGs ingest and score it (daily backfills of it and of their trivial twins
        # would take an hour more)
        year = ["--no-daily-ingest", "--no-daily-score"] if int(days) > 92 else []
        done = subprocess.run([sys.executable, str(Path(__file__).parent / "backfill.py"), "--start", "2013-01-01",
                               "--days", days, "--runs", str(args.airflow_runs), *year], capture_output=True, text=True)
        out = done.stdout
        print(out[out.find("medians of"):] if done.returncode == 0 else out[-2000:] + done.stderr[-3000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
