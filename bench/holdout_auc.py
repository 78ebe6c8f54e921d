"""Holdout quality of the bundled spec: ingest 2013 in-process with the pipeline's own
steps, train every variant on January-September, evaluate on October-December.

    .venv/bin/python bench/holdout_auc.py [--keep DIR]

Prints per-variant holdout metrics and fit times, the gate decision, and the per-day
ingest cost (median of all days). Uses a temporary data root and MLflow store unless
--keep names a folder to keep them in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", help="folder for data and MLflow (default: a temporary one)")
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2014-01-01", help="exclusive")
    parser.add_argument("--holdout-days", type=int, default=92)
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="mlpipe-bench-"))
    os.environ.update({"MLPIPE_DATA_ROOT": str(work / "data"), "MLPIPE_ARTIFACTS": str(work / "artifacts"),
                       "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "GX_ANALYTICS_ENABLED": "false",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
    from mlpipe import ingest, promotion, training
    from mlpipe.context import Context

    ctx = Context.of("flights")
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    per_day = []
    day = start
    while day < end:
        if not ctx.store.exists("features", day):
            t0 = time.perf_counter()
            ingest.extract_day(ctx, day)
            ingest.validate_day(ctx, day)
            ingest.build_day_features(ctx, day)
            per_day.append(time.perf_counter() - t0)
        day += dt.timedelta(days=1)
    if per_day:
        print(f"ingest: {len(per_day)} days, median {statistics.median(per_day):.2f}s/day in-process, "
              f"total {sum(per_day):.0f}s")
    jobs = training.plan_training(ctx, end, window_start=start, holdout_days=args.holdout_days)
    tags = {"airflow.run_id": "bench"}
    results = [training.train_variant(ctx, job, tags) for job in jobs]
    t0 = time.perf_counter()
    ensemble = training.build_ensemble(ctx, candidates=results, window=jobs[0].window, run_tags=tags, register=True)
    results += [ensemble] if ensemble else []
    ensemble_s, t0 = time.perf_counter() - t0, time.perf_counter()
    decision = promotion.evaluate_and_promote(ctx, candidates=results, requested=[j.variant for j in jobs],
                                              window=jobs[0].window, run_tags=tags)
    print(f"ensemble built in {ensemble_s:.1f}s; evaluation (with bootstrap) in {time.perf_counter() - t0:.1f}s")
    print(f"window {jobs[0].window.to_dict()}")
    print(f"{'variant':<16}{'backend':<16}{'fit_s':>8}{'roc_auc':>9}{'pr_auc':>9}{'log_loss':>9}")
    for r in results:
        m = decision["candidates"][r.variant]["metrics"]
        fit = r.fit_seconds if r.fit_seconds is not None else float("nan")
        print(f"{r.variant:<16}{r.backend:<16}{fit:>8.1f}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['log_loss']:>9.4f}")
    print(f"decision: {decision['decision']}, champion v{decision['champion_after']}: {decision['reason']}")
    print(f"data and MLflow store: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
