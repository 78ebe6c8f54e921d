"""Train the spec's variants in parallel, evaluate them with the champion on one holdout,
and move the MLflow alias `champion` only when the gate says a candidate wins.

Trigger manually with the Params form to choose the window, the variants, or a dry run
(trains and records a decision without registering or promoting anything).
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task

from mlpipe_tasks import DEFAULT_ARGS, run_step, schedule_dates

PARAMS = {
    "window_start": Param(None, type=["null", "string"], format="date",
                          description="First day of training data (default: logical date - spec lookback_days)"),
    "window_end": Param(None, type=["null", "string"], format="date",
                        description="Day after the last day used (default: the logical date)"),
    "holdout_days": Param(None, type=["null", "integer"], minimum=1,
                          description="Most recent days held out for evaluation (default: spec)"),
    "variants": Param([], type="array", items={"type": "string"},
                      description="Variant names to train (empty: all in the spec)"),
    "dry_run": Param(False, type="boolean", description="Train and evaluate, but register and promote nothing"),
}


@dag(schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), **schedule_dates(extra_days=8), catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, params=PARAMS, tags=["mlpipe", "train"], doc_md=__doc__)
def train():
    @task
    def plan(params=None, logical_date=None) -> list[dict]:
        """One job per variant: {variant, window, dry_run}."""
        return run_step("plan_training", logical_date=logical_date.date(), **params)

    @task(map_index_template="{{ variant }}")
    def train_variant(job: dict, dag_run=None) -> dict:
        get_current_context()["variant"] = job["variant"]
        return run_step("train_variant", name=job["variant"], window=job["window"], dry_run=job["dry_run"],
                        run_tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id})

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def evaluate(results, jobs: list[dict], dag_run=None) -> dict:
        return run_step("evaluate", candidates=[r for r in results if r], requested=[j["variant"] for j in jobs],
                        window=jobs[0]["window"], promote=not jobs[0]["dry_run"],
                        run_tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id})

    jobs = plan()
    evaluate(train_variant.expand(job=jobs), jobs)


train()
