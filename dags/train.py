"""Train the spec's variants in parallel, evaluate them with the champion on one holdout,
and move the MLflow alias `champion` only when the gate says a candidate wins.

Trigger manually with the Params form to choose the window, the variants, or a dry run
(trains and records a decision without registering or promoting anything).
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, task
from mlpipe_operators import OPERATORS

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
        """One job per variant: {variant, family, window, dry_run}."""
        return run_step("plan_training", logical_date=logical_date.date(), **params)

    @task
    def select(jobs: list[dict], family: str) -> list[dict]:
        return [job for job in jobs if job["family"] == family]

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def evaluate(results: list, jobs: list[dict], dag_run=None) -> dict:
        trained = [r for group in results for r in (group or []) if r]
        return run_step("evaluate", candidates=trained, requested=[j["variant"] for j in jobs],
                        window=jobs[0]["window"], promote=not jobs[0]["dry_run"],
                        run_tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id})

    jobs = plan()
    trained = [op.partial(task_id=f"train_{op.family}", map_index_template="{{ variant }}", **op.placement())
               .expand(job=select.override(task_id=f"select_{op.family}")(jobs, op.family)).output
               for op in OPERATORS]
    evaluate(trained, jobs)


train()
