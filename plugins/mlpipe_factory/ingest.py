"""Ingest one day of source data: extract -> validate (Great Expectations) -> features.

One run = one data-interval day: the run with logical date D+1 ingests day D (to ingest
day D by hand: `make ingest-day PIPELINE=name DAY=D`). Each step writes its partition
atomically, so reruns and backfills replace partitions instead of duplicating them. A day
that fails validation is quarantined and keeps its last validated partitions. Features
read only earlier validated partitions (point in time); an earlier day in their window
that the source has rows for but that is not validated yet (the first days of a backfill
started mid-way) is extracted and validated first, so a backfill over any window needs no
manual pre-fill.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, dag, task

from mlpipe_dagkit import asset_uri, dag_kwargs, schedule_dates
from mlpipe_tasks import run_step


def build(path: str, spec) -> DAG:
    features = Asset(asset_uri(spec, "features"))

    @dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(spec), catchup=False,
         max_active_runs=8, **dag_kwargs(spec, "ingest", "ingest"), doc_md=__doc__)
    def ingest():
        @task
        def extract(data_interval_start=None) -> dict:
            """Read the day's rows from the spec's sources into the `raw` partition (typed, one file per day)."""
            return run_step("extract_day", path, day=data_interval_start.date())

        @task
        def validate(data_interval_start=None) -> dict:
            """Run the Great Expectations suite on the day's raw rows; on success publish them as `validated`,
            on failure quarantine them, keep the day's last good partitions and alert (the log names column and
            rule)."""
            return run_step("validate_day", path, day=data_interval_start.date())

        @task(outlets=[features])
        def build_features(data_interval_start=None) -> dict:
            """Build the day's feature partition from validated rows and earlier days' history; updates the
            pipeline's `mlpipe://<pipeline>/features` asset."""
            return run_step("build_day_features", path, day=data_interval_start.date())

        extract() >> validate() >> build_features()

    return ingest()
