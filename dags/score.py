"""Score one day's feature partition with the model behind the `champion` alias,
resolved at run time, and write a predictions partition. When a `challenger` alias
exists, it scores the same rows in shadow (`challenger_score`, `challenger_version`);
compare the two once labels arrive with `python -m mlpipe.shadow`."""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task

from mlpipe_tasks import run_step, schedule_dates, task_defaults


@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), **schedule_dates(), catchup=False,
     max_active_runs=4, default_args=task_defaults("score"), tags=["mlpipe", "score"], doc_md=__doc__)
def score():
    @task
    def score_partition(data_interval_start=None) -> dict:
        return run_step("score_day", day=data_interval_start.date())

    score_partition()


score()
