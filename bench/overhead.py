"""The train DAG through a real scheduler against a hand-written script doing the same
work, in one invocation.

    .venv/bin/python bench/overhead.py [--days 30] [--runs 3]

Setup (not timed): a fresh Airflow home and MLflow store, an ingest backfill of
``--days`` days from ``--start``, and one train run so that a champion exists.
Then, alternating, ``--runs`` times each, over the same window and feature partitions:
- the ``train`` DAG, triggered with the window's Params while one scheduler runs (the
  preloading LocalExecutor of ``make demo``): from the trigger to the run's end;
- the script (``--script``, a fresh interpreter, timed once its imports are done and its
  process server has started, as the scheduler has before a run): the entry points the tasks call
  (``plan_training``, ``train_variant`` per variant, ``build_ensemble``,
  ``evaluate_and_promote``) with the same parallelism: a process pool of the DAG's
  training slots, a fresh process per variant forked from a server that preloaded what
  the executor preloads, and the same thread limits (``MLPIPE_TASK_CPUS``).
Both register and promote as a live run does. Prints the medians, the ratio (target
<= 1.15x) and, per stage, the DAG's and the script's median times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import multiprocessing
import multiprocessing.forkserver
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

STAGES = ("plan", "train", "ensemble", "evaluate")


def _conf(start: dt.date, days: int) -> dict:
    end = start + dt.timedelta(days=days)
    return {"window_start": str(start), "window_end": str(end), "holdout_days": max(2, days // 4)}


def _dag_run(demo, conf: dict, run_id: str, logical: str) -> tuple[float, dict[str, float]]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    demo.airflow("dags", "trigger", "train", "--run-id", run_id, "--conf", json.dumps(conf), "--logical-date", logical)
    while (states := demo.run_states("train", run_id)) and any(s in ("queued", "running") for s in states):
        time.sleep(0.5)
    if set(states) != {"success"}:
        raise SystemExit(f"train run {run_id} ended {states}")
    with create_session() as session:  # from the trigger (the run's creation) to its end
        run = session.query(DagRun).filter_by(dag_id="train", run_id=run_id).one()
        wall = (run.end_date - run.queued_at).total_seconds()
    rows = harness.task_rows("train", run_id)
    spans = {stage: [r for r in rows if r["task"] == stage or (stage == "train" and r["task"].startswith("train_"))]
             for stage in STAGES}
    return wall, {stage: (max(r["end"] for r in found) - min(r["start"] for r in found)).total_seconds()
                  for stage, found in spans.items() if found}


def _script_run(conf: dict, run_id: str) -> tuple[float, dict[str, float]]:
    done = subprocess.run([sys.executable, __file__, "--script", json.dumps({**conf, "run_id": run_id})],
                          check=True, capture_output=True, text=True)
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    return marks.pop("wall"), marks


def _train_one(job: dict, tags: dict):
    from mlpipe.context import Context
    from mlpipe.records import Job
    from mlpipe.training import train_variant

    return train_variant(Context.of("flights"), Job.from_dict(job), run_tags=tags).to_dict()


def script(arg: str) -> int:
    """The hand-written script: the train DAG's work without Airflow; prints its stage times."""
    conf, marks = json.loads(arg), {}
    from mlpipe import promotion, training
    from mlpipe.context import Context
    from mlpipe.records import Candidate

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(conf["preload"])
    multiprocessing.forkserver.ensure_running()  # warm, as the scheduler's executor is before a run
    for name in conf["preload"]:  # what the ensemble and evaluate tasks find loaded
        importlib.import_module(name)
    t = t0 = time.time()
    ctx = Context.of("flights")
    tags = {"airflow.dag_id": "train_script", "airflow.run_id": conf["run_id"], "airflow.run_type": "manual"}
    jobs = training.plan_training(ctx, dt.date.fromisoformat(conf["window_end"]), conf["window_start"],
                                  conf["window_end"], conf["holdout_days"])
    marks["plan"], t = time.time() - t, time.time()
    with ProcessPoolExecutor(conf["slots"], mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_train_one, job.to_dict(), tags) for job in jobs]
        candidates = [Candidate.from_dict(f.result()) for f in futures]
    marks["train"], t = time.time() - t, time.time()
    combined = training.build_ensemble(ctx, candidates, jobs[0].window, tags, register=jobs[0].promote)
    marks["ensemble"], t = time.time() - t, time.time()
    promotion.evaluate_and_promote(ctx, candidates + [combined] * (combined is not None), [j.variant for j in jobs],
                                   jobs[0].window, tags, mode=jobs[0].mode, promote=jobs[0].promote)
    marks["evaluate"] = time.time() - t
    print(json.dumps({"wall": time.time() - t0, **marks}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30, help="days ingested and trained on (the last quarter held out)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start", default="2013-03-01")
    parser.add_argument("--port", type=int, default=18794)
    parser.add_argument("--script", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.script:
        return script(args.script)
    start = dt.date.fromisoformat(args.start)
    harness.setup("mlpipe-bench-overhead-")
    from mlpipe_preload import modules

    from mlpipe_dagkit import training_slots

    # the script gets the DAG's slots and the executor's preloads (it imports no Airflow)
    script_conf = {**_conf(start, args.days), "slots": training_slots(), "preload": modules()}
    conf = _conf(start, args.days)
    demo = harness.load_script("demo")
    api = harness.start_airflow(demo, args.port, ["ingest", "train"])
    walls: dict[str, list[float]] = {"dag": [], "script": []}
    stages: dict[str, dict[str, list[float]]] = {"dag": {}, "script": {}}
    try:
        end = start + dt.timedelta(days=args.days - 1)
        demo.phase("ingest (setup)", "ingest", (start, end), lambda: demo.airflow(
            "backfill", "create", "--dag-id", "ingest", "--from-date", str(start), "--to-date", str(end),
            "--max-active-runs", "8", check=False))
        scheduler = demo.Service("scheduler", "scheduler")
        try:
            _dag_run(demo, conf, "bench__setup", f"{conf['window_end']}T00:00:00+00:00")  # the champion
            for i in range(args.runs):
                for kind in ("dag", "script") if i % 2 == 0 else ("script", "dag"):
                    run_id = f"bench__{kind}_{i}"
                    wall, split = (_dag_run(demo, conf, run_id, f"{conf['window_end']}T00:{i + 1:02d}:00+00:00")
                                   if kind == "dag" else _script_run(script_conf, run_id))
                    walls[kind].append(wall)
                    for stage, seconds in split.items():
                        stages[kind].setdefault(stage, []).append(seconds)
                    print(f"  {kind:<6} run {i}: {wall:6.1f}s  " + "  ".join(f"{s} {v:.1f}s" for s, v in split.items()),
                          flush=True)
        finally:
            scheduler.stop()
    finally:
        api.stop()
    _report(walls, stages, args)
    return 0


def _report(walls, stages, args) -> None:
    dag, script_ = harness.median(walls["dag"]), harness.median(walls["script"])
    ratio = dag / script_
    print(f"\ntrain over {args.days} days from {args.start}, medians of {args.runs} runs each:")
    print(f"  train DAG {dag:6.1f}s   script {script_:6.1f}s   ratio {ratio:4.2f}x (target <= 1.15x) "
          f"{'met' if ratio <= 1.15 else 'MISSED'}")
    for stage in STAGES:
        print(f"  {stage:<9} DAG {harness.median(stages['dag'].get(stage, [])):6.1f}s   "
              f"script {harness.median(stages['script'].get(stage, [])):6.1f}s")


if __name__ == "__main__":
    sys.exit(main())
