"""Ingest one day of source data: extract -> validate (Great Expectations) -> features.

One run = one data-interval day. Each step writes its partition atomically, so reruns
and backfills replace partitions instead of duplicating them. Features read only earlier
validated partitions (point in time). If an earlier day in their window is not validated
yet although the source has rows for it (a backfill running days in parallel), the task
fails with PartitionMissing and retries, so features never come from a partial history.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task

from mlpipe_tasks import DEFAULT_ARGS, FEATURES_URI, run_step, schedule_dates


@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(), catchup=False,
     max_active_runs=8, default_args=DEFAULT_ARGS, tags=["mlpipe", "ingest"], doc_md=__doc__)
def ingest():
    @task
    def extract(data_interval_start=None) -> dict:
        return run_step("extract_day", day=data_interval_start.date())

    @task
    def validate(data_interval_start=None) -> dict:
        return run_step("validate_day", day=data_interval_start.date())

    @task(retries=20, retry_delay=dt.timedelta(seconds=15), outlets=[Asset(FEATURES_URI)])
    def build_features(data_interval_start=None) -> dict:
        return run_step("build_day_features", day=data_interval_start.date())

    extract() >> validate() >> build_features()


ingest()
