"""Score one day's feature partition and write a predictions partition.

A live (scheduled or manual) run scores with the model behind the `champion` alias at
run time. A backfill run scores day D point in time: with the version the ledger's most
recent promotion made champion among those trained on data that ended by D; if there is
none it fails, unless the Param `allow_current_champion` is set (then the current
champion scores and every row says `model_role: current_champion`). When the chosen
model cannot be loaded or cannot score, the previous champion from the ledger scores
instead (`model_role: fallback`, and an alert); with no usable fallback the run fails and
writes nothing. When a `challenger` alias exists, it scores the same rows in shadow
(`challenger_score`, `challenger_version`); compare the two once labels arrive with
`python -m mlpipe.shadow --pipeline name`."""

from __future__ import annotations

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, dag, task

from mlpipe_dagkit import dag_kwargs, is_backfill, schedule_dates
from mlpipe_tasks import run_step

PARAMS = {"allow_current_champion": Param(False, type="boolean",
                                          description="Backfill: score days before any eligible model with the "
                                                      "current champion (rows flagged) instead of failing")}


def build(path: str, spec) -> DAG:
    @dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(spec), catchup=False,
         max_active_runs=4, params=PARAMS, **dag_kwargs(spec, "score", "score"), doc_md=__doc__)
    def score():
        @task
        def score_partition(params=None, data_interval_start=None, dag_run=None) -> dict:
            """Score the day's features with the champion (point in time in a backfill; the fallback if it
            cannot) and the challenger in shadow into one predictions partition."""
            return run_step("score_day", path, day=data_interval_start.date(), backfill=is_backfill(dag_run),
                            allow_current_champion=params["allow_current_champion"])

        score_partition()

    return score()
