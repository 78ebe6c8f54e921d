"""What Data Docs add to one validation: the bundled flights suite on real 2013 days,
validated without Data Docs (the baseline) and with them, in the same run.

    .venv/bin/python bench/data_docs.py [--days 8] [--prefill 365]

Each of ``--days`` days (from 2013-01-01) is validated both ways, alternating which goes
first, into a fresh data root: the with-docs runs add their day to a site that grows as a
backfill's does. Then the site is filled to ``--prefill`` days (a year of a backfill) and
the same days are validated with docs again. Prints the medians and the added cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from mlpipe.errors import ValidationFailed  # noqa: E402
from mlpipe.settings import PROJECT_ROOT  # noqa: E402
from mlpipe.sources import read_day  # noqa: E402
from mlpipe.spec import load_spec  # noqa: E402
from mlpipe.storage import Store  # noqa: E402
from mlpipe.validation import validate  # noqa: E402
from mlpipe.validation.data_docs import DataDocs, publish  # noqa: E402


def timed(frame, spec, store, day, docs) -> float:
    t0 = time.perf_counter()
    try:
        validate(frame, spec, str(day), lambda p: store.write_report("validation", day, p),
                 DataDocs(store.report_dir("data_docs"), day) if docs else None)
    except ValidationFailed:
        pass  # a failing day costs the same to report
    return time.perf_counter() - t0


def prefill(site: Path, result, days: int) -> None:
    """Give the site pages for ``days`` days before 2013 (the result of the last day, renamed)."""
    for i in range(days):
        publish(result, DataDocs(site, dt.date(2012, 12, 31) - dt.timedelta(days=i)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--prefill", type=int, default=365)
    args = parser.parse_args()
    spec = load_spec(PROJECT_ROOT / "include" / "pipelines" / "flights.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "data", spec.name)
        days = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(args.days)]
        frames = {d: read_day(spec, d, Path(tmp) / "cache") for d in days}
        timed(frames[days[0]], spec, store, days[0], False)  # imports and GX's first-use costs
        before, after = [], []
        for i, day in enumerate(days):
            for docs in ((False, True) if i % 2 else (True, False)):
                (after if docs else before).append(timed(frames[day], spec, store, day, docs))
        from mlpipe.validation import _run_gx, build_rules

        rules = build_rules(spec)
        prefill(store.report_dir("data_docs"), _run_gx(frames[days[-1]], rules, f"{spec.name}.raw"), args.prefill)
        full = [timed(frames[day], spec, store, day, True) for day in days]
    b, a, f = statistics.median(before), statistics.median(after), statistics.median(full)
    print(f"flights suite ({len(rules)} rules), {len(days)} days of 2013, median seconds per validation")
    print(f"  without Data Docs:                 {b:.3f}")
    print(f"  with Data Docs, site of <= {len(days)} days: {a:.3f}  (+{a - b:.3f})")
    print(f"  with Data Docs, site of {args.prefill + len(days)} days: {f:.3f}  (+{f - b:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
