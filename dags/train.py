"""Train the spec's variants in parallel, add a soft-voting ensemble of the best ones,
evaluate them all with the champion on one holdout, and move the MLflow alias `champion`
only when the gate says a candidate wins beyond the noise (`challenger`: the best that
did not win). Every decision goes to the promotion ledger.

Trigger manually with the Params form to choose the window, the variants, or a dry run
(trains and records a decision without registering or promoting anything). Backfill runs
record what they would have promoted and move nothing, unless `promote_in_backfill`.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, dag, task
from mlpipe_priority import PlannedOrder

from mlpipe.records import Job
from mlpipe_dagkit import (
    RETRAIN_URI,
    is_backfill,
    max_active_train_runs,
    run_tags,
    schedule_dates,
    skip_past_schedule_end,
    task_defaults,
    timeout,
    training_families,
    training_slots,
    variant_names,
    with_retrain_request,
)
from mlpipe_operators import operator_named
from mlpipe_tasks import first_job, run_step, trained

PARAMS = {
    "window_start": Param(None, type=["null", "string"], format="date",
                          description="First day of training data (default: logical date - spec lookback_days)"),
    "window_end": Param(None, type=["null", "string"], format="date",
                        description="Day after the last day used (default: the logical date)"),
    "holdout_days": Param(None, type=["null", "integer"], minimum=1,
                          description="Most recent days held out for evaluation (default: spec)"),
    "variants": Param([], type="array", items={"type": "string", "enum": variant_names()}, examples=variant_names(),
                      uniqueItems=True, description="Variants to train, picked from the spec's (none picked: all)"),
    "dry_run": Param(False, type="boolean", description="Train and evaluate, but register and promote nothing"),
    "promote_in_backfill": Param(False, type="boolean",
                                 description="Let a backfill run register and promote (default: record only)"),
}


# max_active_tasks: only the training tasks run side by side, one per free core (see
# mlpipe_dagkit.training_slots); the rest of the DAG is a chain.
# Weekly, or when the monitor DAG asks for a retrain (its asset event carries the reason
# and the window end: the day after the last monitored day).
SCHEDULE = AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
                               assets=[Asset(RETRAIN_URI)])


def _training_tasks(families: dict, selected: list) -> list:
    """One mapped training task per backend family, over that family's selected jobs.

    Each also waits for every select, so all variants become ready in the same scheduler
    pass; the scheduler then starts them by PlannedOrder's weights: plan's order, slowest
    first across all backends, so the stage ends with short tasks."""
    mapped = []
    for (family, name), picked in zip(families.items(), selected, strict=True):
        op = operator_named(name, family)
        mapped.append(op.partial(task_id=f"train_{family}", map_index_template="{{ variant }}", doc_md=(
                                 f"Fit one {family} variant per mapped task (named by the variant), log it to "
                                 "MLflow with its holdout metrics and register a version."),
                                 weight_rule=PlannedOrder.path, execution_timeout=timeout("train"),
                                 **op.placement()).expand(job=picked))
    for training in mapped:
        training.set_upstream([s.operator for s in selected])
    return mapped


# No end_date: a DAG's end_date also stops manual runs (Airflow creates no task instance
# after it), so a run triggered from the UI today would "succeed" doing nothing. Scheduled
# runs past the spec's schedule end are skipped by plan instead.
@dag(schedule=SCHEDULE, start_date=schedule_dates()["start_date"], catchup=False,
     max_active_runs=max_active_train_runs(), max_active_tasks=training_slots(),
     default_args=task_defaults("evaluate"), params=PARAMS,
     tags=["mlpipe", "train"], doc_md=__doc__)
def train():
    @task
    def plan(params=None, logical_date=None, dag_run=None, triggering_asset_events=None) -> list[dict]:
        """One job per variant (mlpipe.records.Job), slowest first."""
        when = logical_date or dag_run.run_after  # a manual or asset-triggered run may have no logical date
        skip_past_schedule_end(dag_run, when, extra_days=8)  # the weekly run after the last data day still runs
        return run_step("plan_training", logical_date=when.date(), backfill=is_backfill(dag_run),
                        **with_retrain_request(params, triggering_asset_events))

    @task
    def select(jobs: list[dict], family: str) -> list[dict]:
        """The jobs of one backend family (the input of that family's mapped training task)."""
        return [job for job in jobs if Job.from_dict(job).family == family]

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def collect(results: list) -> list[dict]:
        """The candidates of the variants that trained; failed ones are left out (the ledger lists them)."""
        return [candidate.to_dict() for candidate in trained(results)]

    # ensemble and evaluate need plan's jobs and collect's candidates: if plan failed they do
    # not run (upstream_failed) and the run fails once, with plan's message.
    @task
    def ensemble(candidates: list[dict], jobs: list[dict], dag_run=None) -> dict | None:
        """Soft-vote the best trained variants into one more candidate (none if disabled or < 2 trained)."""
        job = first_job(jobs)
        return run_step("build_ensemble", candidates=trained([candidates]), window=job.window,
                        run_tags=run_tags(dag_run, job), register=job.promote)

    @task
    def evaluate(candidates: list[dict], combined: dict | None, jobs: list[dict], dag_run=None) -> dict:
        """Score every candidate and the champion on one holdout, gate on bootstrap intervals, move the
        aliases, write the ledger entry, the report and the MLflow descriptions."""
        job = first_job(jobs)
        return run_step("evaluate_and_promote", candidates=trained([candidates, [combined]]),
                        requested=[Job.from_dict(j).variant for j in jobs], window=job.window, mode=job.mode,
                        promote=job.promote, run_tags=run_tags(dag_run, job))

    jobs = plan()
    families = training_families()  # {family: operator}, from the backend table
    selected = [select.override(task_id=f"select_{family}")(jobs, family) for family in families]
    mapped = _training_tasks(families, selected)
    candidates = collect([training.output for training in mapped])
    evaluate(candidates, ensemble(candidates, jobs), jobs)


train()
