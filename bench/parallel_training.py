"""Parallel efficiency of the training stage through a real Airflow scheduler.

    .venv/bin/python bench/parallel_training.py [--data ./data] [--runs 2]

Runs the train DAG (dry run: nothing registered or promoted) on existing feature
partitions with a fresh Airflow home and MLflow store, alternating two modes in one
invocation: sequential (executor parallelism 1: each variant runs alone, so its task
time is its own time) and parallel (AIRFLOW__CORE__PARALLELISM, default 4, with at most
the train DAG's training slots at once: MLPIPE_TRAINING_SLOTS, default one per core; the
gpu pool gets ``--gpu-slots``). Reports the sum of the
variants' own times, the parallel training stage's wall time (first training task start
to last end) and the ratio of their medians. On 2 cores the target is >= 1.7x.

It also prints what bounds that ratio on the host: each parallel run's task timeline and
its CPU split by role (training tasks, supervisors, scheduler, api-server, idle), and,
first, a co-run check (one single-threaded fit alone versus two at once), whose slowdown
no scheduling can recover.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT / "data"), help="data root holding feature partitions")
    parser.add_argument("--runs", type=int, default=2, help="runs per mode")
    parser.add_argument("--start", default="2013-07-01")
    parser.add_argument("--end", default="2013-10-01", help="exclusive")
    parser.add_argument("--holdout-days", type=int, default=14)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--gpu-slots", type=int, default=2, help="slots of the gpu pool (torch / TF tasks)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mlpipe-parallel-"))
    os.environ.update({
        "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR",
                                                  "mlpipe_executor.PreloadingLocalExecutor"),
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "4"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{args.port}/execution/",
        "MLPIPE_DATA_ROOT": args.data, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLPIPE_ARTIFACTS": str(home / "artifacts"), "GX_ANALYTICS_ENABLED": "false",
    })
    sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "include"), str(ROOT / "plugins")]
    from demo import Service, airflow, phase, port_free, wait_http

    from mlpipe.context import Context
    from mlpipe_dagkit import training_slots

    ctx = Context.of("flights")
    ctx.tracking.experiment(ctx.spec.name)  # created once here, not raced by the parallel train tasks
    airflow("db", "migrate")
    airflow("dags", "reserialize")
    airflow("dags", "unpause", "train")
    airflow("pools", "set", ctx.spec.execution.gpu_pool, str(args.gpu_slots), "GPU training slots")
    if not port_free(args.port):
        raise SystemExit(f"port {args.port} is in use")
    alone, paired = co_run_times()  # before any Airflow service runs beside it
    print(f"co-run check: a single-threaded HistGradientBoosting fit takes {alone:.2f}s alone and {paired:.2f}s "
          f"while another runs on the other core ({paired / alone - 1:+.1%}); this host's 2-core ceiling is "
          f"about {2 * alone / paired:.2f}x", flush=True)
    api = Service("api-server", "api-server", "--port", str(args.port))
    sums, walls, busy, per_variant = [], [], [], {}
    cpu = CpuSampler()
    parallel = os.environ["AIRFLOW__CORE__PARALLELISM"]
    try:
        wait_http(f"http://localhost:{args.port}/api/v2/version")
        end = dt.date.fromisoformat(args.end)
        conf = {"window_start": args.start, "window_end": args.end, "holdout_days": args.holdout_days,
                "dry_run": True}
        for i in range(2 * args.runs):
            mode = "sequential" if i % 2 == 0 else "parallel"
            os.environ["AIRFLOW__CORE__PARALLELISM"] = "1" if mode == "sequential" else parallel
            run_id = f"bench__{mode}_{i}_{dt.datetime.now(dt.timezone.utc):%H%M%S}"
            logical = f"{end}T00:{i:02d}:00+00:00"
            states = phase(f"{mode} train run", "train", run_id,
                           lambda r=run_id, ld=logical: airflow("dags", "trigger", "train", "--run-id", r,
                                                               "--conf", json.dumps(conf), "--logical-date", ld))
            if set(states) != {"success"}:
                raise SystemExit(f"train run {run_id} ended {states}: see {home / 'airflow' / 'logs'}")
            tasks = training_tasks(run_id)
            own = sum(t["seconds"] for t in tasks)
            first, last = min(t["start"] for t in tasks), max(t["end"] for t in tasks)
            wall = (last - first).total_seconds()
            used = cpu.split(first, last)
            print("    core-seconds in the stage: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items())),
                  flush=True)
            if mode == "sequential":
                sums.append(own)
                for t in tasks:
                    per_variant.setdefault(t["variant"], []).append(t["seconds"])
            else:
                walls.append(wall)
                busy.append(used["busy"] / wall)
                for t in sorted(tasks, key=lambda t: t["start"]):
                    print(f"    {t['variant']:<16} {(t['start'] - first).total_seconds():6.1f}s "
                          f"-> {(t['end'] - first).total_seconds():6.1f}s", flush=True)
            print(f"{mode} run: {len(tasks)} variants, sum of task times {own:.1f}s, stage wall {wall:.1f}s"
                  + (f", busy cores {busy[-1]:.2f} of {os.cpu_count()}" if mode == "parallel" else ""), flush=True)
    finally:
        cpu.stop()
        api.stop()
    print("variants' own times (sequential, median): " + ", ".join(
        f"{v} {statistics.median(s):.1f}s" for v, s in sorted(per_variant.items())))
    own, wall = statistics.median(sums), statistics.median(walls)
    print(f"parallel efficiency: sum of own times {own:.1f}s / parallel stage wall {wall:.1f}s = {own / wall:.2f}x "
          f"(medians of {args.runs} runs each, parallelism {parallel}, training slots {training_slots()}, "
          f"gpu pool {args.gpu_slots} slots, {os.cpu_count()} cores)")
    pairs = [s / w for s, w in zip(sums, walls, strict=True)]  # each parallel run against the run before it
    print("per pair (sequential sum / the next parallel wall): " + ", ".join(f"{r:.2f}x" for r in pairs)
          + f"; median {statistics.median(pairs):.2f}x")
    print(f"busy cores during the parallel stage (median): {statistics.median(busy):.2f} of {os.cpu_count()}")
    return 0


class CpuSampler:
    """Samples, every 2 s, the machine's CPU counters (/proc/stat) and the CPU time of
    every process by role, so a stage's CPU splits into training tasks, orchestration
    overhead and idle (at 0.5 s the sampler itself cost about 1.4% of a core). Roles come
    from Airflow's process titles: a LocalExecutor worker ("airflow worker --
    LocalExecutor: ...") supervises the task process it forks ("airflow worker -- <id>")."""

    ROLES = (("LocalExecutor", "supervisor"), ("airflow worker", "task"), ("scheduler", "scheduler"),
             ("api_server", "api-server"), ("api-server", "api-server"))

    def __init__(self, every: float = 2.0):
        self.samples: list[tuple[float, list[int], dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        import psutil

        roles: dict[int, str] = {}
        while not self._stop.is_set():
            with open("/proc/stat") as f:
                counters = [int(x) for x in f.readline().split()[1:]]
            procs = {}
            for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
                try:  # the title is read each time: a forked task starts with its worker's title
                    line = " ".join(proc.info["cmdline"] or ())
                    role = next((role for key, role in self.ROLES if key in line), None)
                    roles[proc.pid] = role or roles.get(proc.pid, "other")  # an exiting process has no title
                    times = proc.info["cpu_times"]
                    procs[proc.pid] = (roles[proc.pid], times.user + times.system)
                except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
                    continue
            self.samples.append((time.time(), counters, procs))
            self._stop.wait(every)

    def split(self, start: dt.datetime, end: dt.datetime) -> dict[str, float]:
        """Core-seconds per role between ``start`` and ``end``, plus idle and steal."""
        inside = [s for s in self.samples if start.timestamp() <= s[0] <= end.timestamp()]
        if len(inside) < 2:
            return {}
        (_, c0, p0), (_, c1, _) = inside[0], inside[-1]
        delta = [(b - a) / os.sysconf("SC_CLK_TCK") for a, b in zip(c0, c1, strict=True)]
        out = {"idle": delta[3] + delta[4], "steal": delta[7] if len(delta) > 7 else 0.0}
        last = {pid: value for _, _, procs in inside for pid, value in procs.items()}  # ended processes too
        for pid, (role, cpu) in last.items():  # a process counts under its latest known role
            out[role] = out.get(role, 0.0) + cpu - p0.get(pid, (role, 0.0))[1]
        out["busy"] = sum(delta) - out["idle"] - out["steal"]
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _timed_fit(_: int) -> float:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200_000, 30))
    y = X[:, 0] + rng.normal(size=len(X)) > 0
    with threadpool_limits(1):
        started = time.perf_counter()
        HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0).fit(X, y)
        return time.perf_counter() - started


def co_run_times(repeats: int = 3) -> tuple[float, float]:
    """Median wall time of one single-threaded fit alone, and of each of two run at once
    (one per core): the slowdown is what the host's shared caches, memory bandwidth and
    hypervisor take from any 2-way parallel stage, whatever the scheduler does."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    alone, paired = [], []
    for _ in range(repeats):
        with context.Pool(1) as pool:
            alone += pool.map(_timed_fit, [0])
        with context.Pool(2) as pool:
            paired += pool.map(_timed_fit, [0, 1], chunksize=1)
    return statistics.median(alone), statistics.median(paired)


def training_tasks(run_id: str) -> list[dict]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance).where(TaskInstance.dag_id == "train",
                                                          TaskInstance.run_id == run_id,
                                                          TaskInstance.task_id.like("train_%"),
                                                          TaskInstance.map_index >= 0)).scalars().all()
        return [{"variant": ti.rendered_map_index or f"{ti.task_id}[{ti.map_index}]", "start": ti.start_date,
                 "end": ti.end_date, "seconds": (ti.end_date - ti.start_date).total_seconds()} for ti in rows]


if __name__ == "__main__":
    sys.exit(main())
