"""Monitor one scored day: Evidently data drift of the monitored features and prediction
drift of the scores against the reference of the version that scored it, and, once
labels arrive (`monitoring.label_delay_days` later), live quality against its holdout.
Reports go to `reports/drift/<day>.html|json` and an MLflow `monitor` run.

Dataset drift on `monitoring.retrain.drift_days` consecutive days, or degradation, emits
the pipeline's Asset `mlpipe://<pipeline>/retrain-request` (its train DAG runs on its cron
or that asset), unless a guardrail holds: cooldown after the last train, a train run in
flight, the day failed validation, too few new labelled rows. A backfill never emits: it
records `would-trigger`. A manual run monitors the `day` Param (default: its data
interval's start, which for a manual run is the day before it was triggered). Days may
run in parallel: a day measures an earlier day of its drift streak itself when that
day's run has not finished.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, PokeReturnValue, dag, task

from mlpipe.pipelines import dag_id
from mlpipe_dagkit import asset_uri, dag_kwargs, is_backfill, schedule_dates
from mlpipe_tasks import run_step

POKE_SECONDS = int(os.environ.get("MLPIPE_MONITOR_POKE_SECONDS", "300"))
PARAMS = {"day": Param(None, type=["null", "string"], format="date",
                       description="Data day to monitor (default: the run's data interval start)")}


def _day(params, data_interval_start):
    import datetime as dt

    return dt.date.fromisoformat(params["day"]) if params.get("day") else data_interval_start.date()


def build(path: str, spec) -> DAG:
    retrain, train_dag = Asset(asset_uri(spec, "retrain-request")), dag_id(spec.name, "train")

    @dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(spec), catchup=False,
         max_active_runs=4, params=PARAMS, **dag_kwargs(spec, "monitor", "monitor"), doc_md=__doc__)
    def monitor():
        @task.sensor(poke_interval=POKE_SECONDS, timeout=24 * 3600, mode="reschedule")
        def wait_for_scores(params=None, data_interval_start=None) -> PokeReturnValue:
            """The day's predictions partition exists (the score DAG has run for the day)."""
            from mlpipe.context import Context

            done = Context.load(path).store.exists("predictions", _day(params, data_interval_start))
            return PokeReturnValue(is_done=done)

        @task
        def check(params=None, data_interval_start=None, dag_run=None, ti=None) -> dict:
            """Drift of the day against the champion's training sample (Evidently report), live quality once
            labels arrive, and the retrain decision with its guardrails."""
            in_flight = ti.get_dr_count(dag_id=train_dag, states=["queued", "running"]) > 0
            return run_step("monitor_day", path, day=_day(params, data_interval_start),
                            backfill=is_backfill(dag_run), train_in_flight=in_flight)

        @task.short_circuit
        def retrain_due(summary: dict) -> bool:
            """Go on only when the decision is `trigger` (never from a backfill)."""
            return summary["decision"]["action"] == "trigger"

        @task(outlets=[retrain])
        def request_retrain(summary: dict, outlet_events=None) -> dict:
            """Emit the pipeline's retrain-request asset event (reason, window end) that starts its train run."""
            request = {"day": summary["day"], "reason": summary["decision"]["reason"],
                       "window_end": summary["decision"]["window_end"]}
            outlet_events[retrain].extra = request
            return request

        summary = check()
        wait_for_scores() >> summary
        retrain_due(summary) >> request_retrain(summary)

    return monitor()
