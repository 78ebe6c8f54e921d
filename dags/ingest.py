"""Ingest one day of source data: extract -> validate (Great Expectations) -> features.

One run = one data-interval day. Each step writes its partition atomically, so reruns
and backfills replace partitions instead of duplicating them. Features read only earlier
validated partitions (point in time) and wait for the previous day's features
(depends_on_past), so a backfill builds them in date order however many days run at once.
"""

from __future__ import annotations

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task
from mlpipe_tasks import DEFAULT_ARGS, FEATURES_URI, START, run_step


@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), start_date=START, catchup=False,
     max_active_runs=8, default_args=DEFAULT_ARGS, tags=["mlpipe", "ingest"], doc_md=__doc__)
def ingest():
    @task
    def extract(data_interval_start=None) -> dict:
        return run_step("extract", day=data_interval_start.date())

    @task
    def validate(data_interval_start=None) -> dict:
        return run_step("validate", day=data_interval_start.date())

    @task(depends_on_past=True, outlets=[Asset(FEATURES_URI)])
    def build_features(data_interval_start=None) -> dict:
        return run_step("build_features", day=data_interval_start.date())

    extract() >> validate() >> build_features()


ingest()
