"""Monitor one scored day: Evidently data drift of the monitored features and prediction
drift of the scores against the reference of the version that scored it, and, once
labels arrive (`monitoring.label_delay_days` later), live quality against its holdout.
Reports go to `reports/drift/<day>.html|json` and an MLflow `monitor` run.

Dataset drift on `monitoring.retrain.drift_days` consecutive days, or degradation, emits
the Asset `mlpipe://retrain-request` (the train DAG runs on its cron or that asset), unless
a guardrail holds: cooldown after the last train, a train run in flight, the day failed
validation, too few new labelled rows. A backfill never emits: it records
`would-trigger`. A manual run monitors the `day` Param (default: its data interval's
start, which for a manual run is the day before it was triggered). Days may run in parallel: a day measures an earlier day of its drift
streak itself when that day's run has not finished.
"""

from __future__ import annotations

import os

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, PokeReturnValue, dag, task

from mlpipe_dagkit import RETRAIN_URI, is_backfill, schedule_dates, task_defaults
from mlpipe_tasks import run_step

POKE_SECONDS = int(os.environ.get("MLPIPE_MONITOR_POKE_SECONDS", "300"))
PARAMS = {"day": Param(None, type=["null", "string"], format="date",
                       description="Data day to monitor (default: the run's data interval start)")}


def _day(params, data_interval_start):
    import datetime as dt

    return dt.date.fromisoformat(params["day"]) if params.get("day") else data_interval_start.date()


@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(), catchup=False,
     max_active_runs=4, default_args=task_defaults("monitor"), params=PARAMS, tags=["mlpipe", "monitor"], doc_md=__doc__)
def monitor():
    @task.sensor(poke_interval=POKE_SECONDS, timeout=24 * 3600, mode="reschedule")
    def wait_for_scores(params=None, data_interval_start=None) -> PokeReturnValue:
        """The day's predictions partition exists (the score DAG has run for the day)."""
        from mlpipe.context import Context

        return PokeReturnValue(is_done=Context.load().store.exists("predictions", _day(params, data_interval_start)))

    @task
    def check(params=None, data_interval_start=None, dag_run=None, ti=None) -> dict:
        """Drift of the day against the champion's training sample (Evidently report), live quality once
        labels arrive, and the retrain decision with its guardrails."""
        in_flight = ti.get_dr_count(dag_id="train", states=["queued", "running"]) > 0
        return run_step("monitor_day", day=_day(params, data_interval_start), backfill=is_backfill(dag_run),
                        train_in_flight=in_flight)

    @task.short_circuit
    def retrain_due(summary: dict) -> bool:
        """Go on only when the decision is `trigger` (never from a backfill)."""
        return summary["decision"]["action"] == "trigger"

    @task(outlets=[Asset(RETRAIN_URI)])
    def request_retrain(summary: dict, outlet_events=None) -> dict:
        """Emit the `mlpipe://retrain-request` asset event (reason, window end) that starts a train run."""
        request = {"day": summary["day"], "reason": summary["decision"]["reason"],
                   "window_end": summary["decision"]["window_end"]}
        outlet_events[Asset(RETRAIN_URI)].extra = request
        return request

    summary = check()
    wait_for_scores() >> summary
    retrain_due(summary) >> request_retrain(summary)


monitor()
