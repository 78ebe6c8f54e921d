"""Ingest a range of days in a few tasks: the way to backfill a long history.

The daily `<pipeline>__ingest` DAG pays three task start-ups per day; this DAG, triggered
by hand (Params `start`, `end`, `chunk_days`), cuts the range into chunks of days (by
default at most 30, and one for each of its slots at least) and
runs one mapped task per chunk: first every chunk extracts and validates its days (in
parallel; the first chunk also ingests the earlier days its first day's history reads),
then, with every day validated, every chunk builds its days' features. Each day goes
through the same steps as a daily run and writes the same partitions, reports and Data
Docs; a day that fails validation is quarantined and keeps its last good partitions, the
other days go on, an alert names it, and the last task (`check`) fails naming every failed
day and how to rerun it alone (`make ingest-day PIPELINE=name DAY=D`, or this DAG with
start = end = D). What a scheduled daily run does is unchanged.

A range never starves the live daily runs: its chunk tasks have priority weight 0 (the
daily ingest's tasks weigh 1 to 3, so the scheduler starts those first) and at most
`MLPIPE_RANGE_SLOTS` (default: this host's cores) of them run at once.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, dag, get_current_context, task

from mlpipe_dagkit import asset_uri, dag_kwargs, range_chunk_args, range_params, range_slots, schedule_dates
from mlpipe_tasks import run_step


def build(path: str, spec) -> DAG:
    features = Asset(asset_uri(spec, "features"))
    slots, chunk_task = range_slots(), range_chunk_args()

    @dag(schedule=None, start_date=schedule_dates(spec)["start_date"], catchup=False, max_active_runs=1,
         params=range_params(spec, "ingest"), **dag_kwargs(spec, "ingest_range", "ingest"), doc_md=__doc__)
    def ingest_range():
        @task
        def plan(params=None, dag_run=None) -> list[dict]:
            """The range's chunks of days, checked against the spec's schedule."""
            end = params["end"] or str(dag_run.run_after.date() - dt.timedelta(days=1))
            return run_step("plan_range", path, start=dt.date.fromisoformat(params["start"]),
                            end=dt.date.fromisoformat(end), chunk_days=params["chunk_days"], slots=slots)

        @task(**chunk_task,
              doc_md="Extract and validate each day of a chunk (a day that fails is quarantined and listed).")
        def validate(chunk: dict) -> dict:
            get_current_context()["days"] = f"{chunk['start']} .. {chunk['end']}"  # the mapped instance's name
            return run_step("validate_range", path, **chunk)

        @task(outlets=[features], **chunk_task,
              doc_md="Build the features of each day of a chunk that passed validation (a mapped task's docs "
                     "are given here: Airflow does not take a mapped task's docstring).")
        def build_features(checked: dict) -> dict:
            get_current_context()["days"] = f"{checked['start']} .. {checked['end']}"
            return run_step("features_range", path, checked=checked)

        @task
        def check(results: list) -> dict:
            """Fail naming every day of the range that failed, and how to rerun it alone."""
            return run_step("check_range", path, results=list(results))

        checked = validate.expand(chunk=plan())
        build_features.expand(checked=checked) >> check(checked)

    return ingest_range()
