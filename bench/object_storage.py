"""Ingest and train with the data root on object storage against a local disk, in one
invocation: the pipeline's own steps, in-process, on the same flights days.

    .venv/bin/python bench/object_storage.py [--days 10] [--runs 3] [--start 2013-03-01]

Each run, for each data root (a local folder; ``s3://`` on moto's S3 server, a process on
127.0.0.1), in alternating order: a fresh data root, MLflow store and host cache; ingest
(extract, validate, features) of ``--days`` days, then one train run over them (plan, the
``hgb_small`` and ``hgb`` variants, evaluate and promote: it reads every feature
partition, writes the ledger under the PostgreSQL lock and the evaluation page). The
flights source is the bundled file, read from the host cache on both sides (the source
is not what this measures). Prints the median seconds of each stage per root and the
ratio S3 / local (target: at most 1.3x on loopback).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

VARIANTS = ["hgb_small", "hgb"]


def _context(root, cache: Path, tracking: str, lock_url: str):
    from mlpipe.context import Context
    from mlpipe.settings import get_settings
    from mlpipe.storage import Store, location

    settings = dataclasses.replace(get_settings(), data_root=location(str(root)), cache_dir=cache,
                                   tracking_uri=tracking, artifact_root=cache / "artifacts", lock_url=lock_url)
    ctx = Context.of("flights", settings)
    return dataclasses.replace(ctx, store=Store(settings.data_root, ctx.spec.name, lock_url))


def one_run(root, start: dt.date, days: int, lock_url: str, source_cache: Path) -> dict[str, float]:
    from mlpipe import ingest, promotion, training

    with tempfile.TemporaryDirectory(prefix="bench-os-") as scratch:
        cache = Path(scratch) / "cache"
        (cache / "flights").mkdir(parents=True)
        os.symlink(source_cache, cache / "flights" / ".cache")  # the converted source, shared by both roots
        ctx = _context(root, cache, f"sqlite:///{scratch}/mlflow.db", lock_url)
        began = time.perf_counter()
        for i in range(days):
            day = start + dt.timedelta(days=i)
            ingest.extract_day(ctx, day)
            ingest.validate_day(ctx, day)
            ingest.build_day_features(ctx, day)
        ingested = time.perf_counter()
        end = start + dt.timedelta(days=days)
        jobs = training.plan_training(ctx, end, window_start=start, window_end=end, holdout_days=max(2, days // 4),
                                      variants=VARIANTS)
        tags = {"airflow.run_id": f"bench-{uuid.uuid4().hex[:8]}"}
        candidates = [training.train_variant(ctx, job, tags) for job in jobs]
        promotion.evaluate_and_promote(ctx, candidates, [c.variant for c in candidates], jobs[0].window, tags)
        return {"ingest": ingested - began, "train": time.perf_counter() - ingested}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2013, 3, 1))
    args = parser.parse_args()
    sys.path.insert(0, str(harness.ROOT / "include"))
    import sqlalchemy as sa

    server = harness.S3Server()
    os.environ.update(server.env)
    lock_db = f"mlpipe_bench_locks_{os.getpid()}"
    admin = sa.create_engine("postgresql://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{lock_db}"'))
    lock_url = f"postgresql://postgres@127.0.0.1:5432/{lock_db}"
    figures: dict[str, dict[str, list[float]]] = {"local": {}, "s3": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-os-source-") as source_cache:
            warm = _context(Path(source_cache) / "warm", Path(source_cache), "sqlite:///:memory:", lock_url)
            from mlpipe.sources import read_day

            read_day(warm.spec, args.start, warm.cache_dir)  # converts the source once, outside the timings
            for run in range(args.runs):
                order = ["local", "s3"] if run % 2 == 0 else ["s3", "local"]
                for kind in order:
                    with tempfile.TemporaryDirectory(prefix="bench-os-data-") as local:
                        root = Path(local) if kind == "local" else f"{server.bucket(f'bench-{run}-{uuid.uuid4().hex[:6]}')}/data"
                        got = one_run(root, args.start, args.days, lock_url, warm.cache_dir)
                    for stage, seconds in got.items():
                        figures[kind].setdefault(stage, []).append(seconds)
                    print(f"run {run + 1} {kind:<5} " + "  ".join(f"{k} {v:6.2f}s" for k, v in got.items()), flush=True)
    finally:
        server.stop()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{lock_db}" WITH (FORCE)'))
    print(f"\n{args.days} flights days, {args.runs} runs (medians; ratio s3 / local, target <= 1.3x)")
    print(f"{'stage':<8} {'local s':>8} {'s3 s':>8} {'ratio':>6}")
    for stage in ("ingest", "train"):
        local, remote = harness.median(figures["local"][stage]), harness.median(figures["s3"][stage])
        print(f"{stage:<8} {local:8.2f} {remote:8.2f} {remote / local:6.2f}x")


if __name__ == "__main__":
    main()
