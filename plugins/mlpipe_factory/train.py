"""Train the spec's variants in parallel, add a soft-voting ensemble of the best ones,
evaluate them all with the champion on one holdout, and move the MLflow alias `champion`
only when the gate says a candidate wins beyond the noise (`challenger`: the best that
did not win). Every decision goes to the promotion ledger.

Trigger manually with the Params form to choose the window, the variants, or a dry run
(trains and records a decision without registering or promoting anything). Backfill runs
record what they would have promoted and move nothing, unless `promote_in_backfill`.
Scheduled weekly, and when the pipeline's monitor DAG asks for a retrain (its asset
event carries the reason and the window end: the day after the last monitored day).
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, dag, task
from mlpipe_priority import PlannedOrder

from mlpipe.records import Job
from mlpipe_dagkit import (
    asset_uri,
    dag_kwargs,
    is_backfill,
    run_tags,
    schedule_dates,
    skip_past_schedule_end,
    timeout,
    training_families,
    training_slots,
    variant_names,
    with_retrain_request,
)
from mlpipe_operators import operator_named
from mlpipe_tasks import first_job, run_step, trained


def params(spec) -> dict:
    names = variant_names(spec)
    return {
        "window_start": Param(None, type=["null", "string"], format="date",
                              description="First day of training data (default: logical date - spec lookback_days)"),
        "window_end": Param(None, type=["null", "string"], format="date",
                            description="Day after the last day used (default: the logical date)"),
        "holdout_days": Param(None, type=["null", "integer"], minimum=1,
                              description="Most recent days held out for evaluation (default: spec)"),
        "variants": Param([], type="array", items={"type": "string", "enum": names}, examples=names,
                          uniqueItems=True, description="Variants to train, picked from the spec's (none picked: all)"),
        "dry_run": Param(False, type="boolean", description="Train and evaluate, but register and promote nothing"),
        "promote_in_backfill": Param(False, type="boolean",
                                     description="Let a backfill run register and promote (default: record only)"),
    }


def _training_tasks(path: str, spec, selected: list) -> list:
    """One mapped training task per backend family, over that family's selected jobs.

    Each also waits for every select, so all variants become ready in the same scheduler
    pass; the scheduler then starts them by PlannedOrder's weights: plan's order, slowest
    first across all backends, so the stage ends with short tasks."""
    mapped = []
    for (family, name), picked in zip(training_families(spec).items(), selected, strict=True):
        op = operator_named(name, family)
        mapped.append(op.partial(task_id=f"train_{family}", map_index_template="{{ variant }}", doc_md=(
                                 f"Fit one {family} variant per mapped task (named by the variant), log it to "
                                 "MLflow with its holdout metrics and register a version."),
                                 spec=path, weight_rule=PlannedOrder.path, execution_timeout=timeout(spec, "train"),
                                 **op.placement(spec)).expand(job=picked))
    for training in mapped:
        training.set_upstream([s.operator for s in selected])
    return mapped


# max_active_tasks: only the training tasks run side by side, one per free core (see
# mlpipe_dagkit.training_slots); the rest of the DAG is a chain.
# No end_date: a DAG's end_date also stops manual runs (Airflow creates no task instance
# after it), so a run triggered from the UI today would "succeed" doing nothing. Scheduled
# runs past the spec's schedule end are skipped by plan instead. ensemble and evaluate need
# plan's jobs and collect's candidates: if plan failed they do not run (upstream_failed) and
# the run fails once, with plan's message.
def build(path: str, spec) -> DAG:
    request_uri = asset_uri(spec, "retrain-request")
    schedule = AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
                                   assets=[Asset(request_uri)])

    @dag(schedule=schedule, start_date=schedule_dates(spec)["start_date"], catchup=False,
         max_active_runs=spec.execution.max_active_train_runs, max_active_tasks=training_slots(spec),
         params=params(spec), **dag_kwargs(spec, "train", "evaluate"), doc_md=__doc__)
    def train():
        @task
        def plan(params=None, logical_date=None, dag_run=None, triggering_asset_events=None) -> list[dict]:
            """One job per variant (mlpipe.records.Job), slowest first."""
            when = logical_date or dag_run.run_after  # a manual or asset-triggered run may have no logical date
            skip_past_schedule_end(spec, dag_run, when, extra_days=8)  # the weekly run after the last day runs
            return run_step("plan_training", path, logical_date=when.date(), backfill=is_backfill(dag_run),
                            **with_retrain_request(params, triggering_asset_events, request_uri))

        @task
        def select(jobs: list[dict], family: str) -> list[dict]:
            """The jobs of one backend family (the input of that family's mapped training task)."""
            return [job for job in jobs if Job.from_dict(job).family == family]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def collect(results: list) -> list[dict]:
            """The candidates of the variants that trained; failed ones are left out (the ledger lists them)."""
            return [candidate.to_dict() for candidate in trained(results)]

        @task
        def ensemble(candidates: list[dict], jobs: list[dict], dag_run=None) -> dict | None:
            """Soft-vote the best trained variants into one more candidate (none if disabled or < 2 trained)."""
            job = first_job(jobs)
            return run_step("build_ensemble", path, candidates=trained([candidates]), window=job.window,
                            run_tags=run_tags(dag_run, job), register=job.promote)

        @task
        def evaluate(candidates: list[dict], combined: dict | None, jobs: list[dict], dag_run=None) -> dict:
            """Score every candidate and the champion on one holdout, gate on bootstrap intervals, move the
            aliases, write the ledger entry, the report and the MLflow descriptions."""
            job = first_job(jobs)
            return run_step("evaluate_and_promote", path, candidates=trained([candidates, [combined]]),
                            requested=[Job.from_dict(j).variant for j in jobs], window=job.window, mode=job.mode,
                            promote=job.promote, run_tags=run_tags(dag_run, job))

        jobs = plan()
        selected = [select.override(task_id=f"select_{family}")(jobs, family) for family in training_families(spec)]
        candidates = collect([training.output for training in _training_tasks(path, spec, selected)])
        evaluate(candidates, ensemble(candidates, jobs), jobs)

    return train()
