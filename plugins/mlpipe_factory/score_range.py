"""Score (and monitor) a range of days in a few tasks: the way to backfill predictions.

The daily `<pipeline>__score` and `<pipeline>__monitor` DAGs pay a task start-up and a
model load per day (the monitor three task start-ups); this DAG, triggered by hand
(Params `start`, `end`, `chunk_days`, `allow_current_champion`, `monitor`), cuts the range into
chunks of days (by default at most 30, and one for each of its slots at least) and runs
one mapped task per chunk: first every chunk scores its days, each point in time as a
backfill run of the score DAG would (the chunk loads each model once), then, with every
day scored, every chunk monitors the days it scored, as a backfill run of the monitor DAG
would (drift reports, live quality, `would-trigger` recorded, never a retrain request).
Each day writes the same predictions partition and reports as a daily run; a day that
cannot be scored writes nothing, the other days go on, and the last task (`check`) fails
naming every failed day and how to rerun it alone (this DAG with start = end = the day).
A day that fell back to the previous champion alerts as a daily run does.

A range never starves the live daily runs: its chunk tasks have priority weight 0 and at
most `MLPIPE_RANGE_SLOTS` (default: this host's cores) of them run at once.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, dag, get_current_context, task

from mlpipe_dagkit import dag_kwargs, range_chunk_args, range_params, range_slots, schedule_dates
from mlpipe_tasks import run_step


def params(spec) -> dict:
    return {**range_params(spec, "score"),
            "allow_current_champion": Param(False, type="boolean",
                                            description="Score days before any eligible model with the current "
                                                        "champion (rows flagged) instead of failing them"),
            "monitor": Param(True, type="boolean", description="Monitor each scored day too (drift, live quality)")}


def build(path: str, spec) -> DAG:
    slots, chunk_task = range_slots(), range_chunk_args()

    @dag(schedule=None, start_date=schedule_dates(spec)["start_date"], catchup=False, max_active_runs=1,
         params=params(spec), **dag_kwargs(spec, "score_range", "score"), doc_md=__doc__)
    def score_range():
        @task
        def plan(params=None, dag_run=None) -> list[dict]:
            """The range's chunks of days."""
            end = params["end"] or str(dag_run.run_after.date() - dt.timedelta(days=1))
            return run_step("plan_score_range", path, start=dt.date.fromisoformat(params["start"]),
                            end=dt.date.fromisoformat(end), chunk_days=params["chunk_days"], slots=slots)

        @task(**chunk_task,
              doc_md="Score each day of a chunk point in time (a day that cannot be scored is listed).")
        def score(chunk: dict, params=None) -> dict:
            get_current_context()["days"] = f"{chunk['start']} .. {chunk['end']}"  # the mapped instance's name
            return run_step("score_range", path, **chunk, allow_current_champion=params["allow_current_champion"])

        @task(**chunk_task,
              doc_md="Monitor each day a chunk scored, in order (a day that cannot be monitored is listed; a mapped "
                     "task's docs are given here: Airflow does not take a mapped task's docstring).")
        def monitor(scored: dict, params=None) -> dict:
            get_current_context()["days"] = f"{scored['start']} .. {scored['end']}"
            return run_step("monitor_range", path, scored=scored, monitor=params["monitor"])

        @task
        def check(scored: list, monitored: list) -> dict:
            """Fail naming every day of the range that was not scored or monitored, and how to rerun it."""
            return run_step("check_score_range", path, scored=list(scored), monitored=list(monitored))

        scored = score.expand(chunk=plan())
        check(scored, monitor.expand(scored=scored))

    return score_range()
