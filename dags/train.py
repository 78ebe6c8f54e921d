"""Train the spec's variants in parallel, evaluate them with the champion on one holdout,
and move the MLflow alias `champion` only when the gate says a candidate wins.

Trigger manually with the Params form to choose the window, the variants, or a dry run
(trains and records a decision without registering or promoting anything).
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, task
from mlpipe_tasks import DEFAULT_ARGS, START, run_step

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


@dag(schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), start_date=START, catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, params=PARAMS, tags=["mlpipe", "train"], doc_md=__doc__)
def train():
    @task(multiple_outputs=True, retries=0)
    def plan(params=None, logical_date=None) -> dict:
        return run_step("plan_training", logical_date=logical_date.date(), **params)

    @task
    def train_variant(variant: str, window: dict, dry_run: bool, dag_run=None) -> dict:
        return run_step("train_variant", name=variant, window=window, dry_run=dry_run,
                        run_tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id})

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def evaluate(results, variants: list[str], window: dict, dry_run: bool, dag_run=None) -> dict:
        return run_step("evaluate", candidates=[r for r in results if r], requested=variants, window=window,
                        promote=not dry_run,
                        run_tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id})

    p = plan()
    trained = train_variant.partial(window=p["window"], dry_run=p["dry_run"]).expand(variant=p["variants"])
    evaluate(trained, variants=p["variants"], window=p["window"], dry_run=p["dry_run"])


train()
