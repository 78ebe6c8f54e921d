"""Monitor one scored day: Evidently data drift of the monitored features and prediction
drift of the scores against the reference of the version that scored it, and, once
labels arrive (`monitoring.label_delay_days` later), live quality against its holdout.
Reports go to `reports/drift/<day>.html|json` and an MLflow `monitor` run.

Dataset drift on `monitoring.retrain.drift_days` consecutive days, or degradation, emits
the pipeline's Asset `mlpipe://<pipeline>/retrain-request` (its train DAG runs on its cron
or that asset), unless a guardrail holds: cooldown after the last train, a train run in
flight, the day failed validation, too few new labelled rows. A backfill never emits: it
records `would-trigger`. One task does it all (one task start-up a day, as the score DAG):
it waits, in reschedule mode, until the day's predictions exist, monitors, and emits the
request through the AssetAlias `<pipeline>__retrain-request`, which carries an event only
when the decision is `trigger`. A manual run monitors the `day` Param (default: its data
interval's start, which for a manual run is the day before it was triggered). Days may
run in parallel: a day measures an earlier day of its drift streak itself when that
day's run has not finished.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Asset, AssetAlias, CronDataIntervalTimetable, Param, PokeReturnValue, dag, task

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
    requests = AssetAlias(f"{spec.name}__retrain-request")

    @dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(spec), catchup=False,
         max_active_runs=4, params=PARAMS, **dag_kwargs(spec, "monitor", "monitor"), doc_md=__doc__)
    def monitor():
        @task.sensor(poke_interval=POKE_SECONDS, timeout=24 * 3600, mode="reschedule", outlets=[requests])
        def check(params=None, data_interval_start=None, dag_run=None, ti=None, outlet_events=None) -> PokeReturnValue:
            """Once the day's predictions exist (the score DAG has run for it): drift of the day against the
            champion's reference and bands, live quality once labels arrive, and the retrain decision with its
            guardrails; a `trigger` emits the retrain-request event (reason, window end) that starts a train run."""
            from mlpipe.context import Context

            day = _day(params, data_interval_start)
            if not Context.load(path).store.exists("predictions", day):
                return PokeReturnValue(is_done=False)
            in_flight = ti.get_dr_count(dag_id=train_dag, states=["queued", "running"]) > 0
            backfill = is_backfill(dag_run)
            # the page: every live run; in a backfill only its last runs (none queued behind them),
            # the last of which to finish sees every day
            page = not backfill or ti.get_dr_count(dag_id=dag_run.dag_id, states=["queued"]) == 0
            summary = run_step("monitor_day", path, day=day, backfill=backfill, train_in_flight=in_flight, page=page)
            decision = summary["decision"]
            if decision["action"] == "trigger":
                outlet_events[requests].add(retrain, extra={"day": summary["day"], "reason": decision["reason"],
                                                            "window_end": decision["window_end"]})
            return PokeReturnValue(is_done=True, xcom_value=summary)

        check()

    return monitor()
