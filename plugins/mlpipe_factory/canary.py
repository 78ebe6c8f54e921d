"""A canary release decided by data, under the spec's `serving.policy: canary` (otherwise
each run does nothing and says so).

A train run that would promote moves only the `challenger` alias; this DAG's daily look
starts a canary for a new challenger at the first of `serving.canary.steps` (its share of
the online traffic, read by the serving processes), and afterwards compares the arms on
the served rows whose labels have arrived with an always-valid sequential test: fewer
than `serving.canary.min_rows` labelled rows per arm holds the step, a significantly
worse canary is rolled back (the challenger alias cleared) and alerts, otherwise the
share moves to the next step, and passing the last step moves `champion` through the
same alias transaction as promotion and rollback. Every look is a ledger entry with its
figures (`make ledger`); every step but a hold alerts.
"""

from __future__ import annotations

from airflow.sdk import DAG, CronDataIntervalTimetable, dag, task

from mlpipe_dagkit import dag_kwargs, run_tags, schedule_dates
from mlpipe_tasks import run_step


def build(path: str, spec) -> DAG:
    @dag(schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"), start_date=schedule_dates(spec)["start_date"],
         catchup=False, max_active_runs=1, **dag_kwargs(spec, "canary", "canary"), doc_md=__doc__)
    def canary():
        @task
        def look(dag_run=None) -> dict:
            """One look of the canary: start, hold, advance, promote or roll back (see the DAG's docs)."""
            return run_step("canary_step", path, run_tags=run_tags(dag_run))

        look()

    return canary()
