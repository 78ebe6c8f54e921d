"""Roll back: point the MLflow alias `champion` at an earlier version in one manual run.

`version` is a registered version number, or "previous": the champion that the current
one replaced when a train run promoted it (from the promotion ledger), so repeated
"previous" rollbacks walk back through the promotions. The move is recorded in the ledger, and the
next score run uses the restored version.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, task

from mlpipe_dagkit import dag_kwargs, run_tags, schedule_dates
from mlpipe_tasks import run_step

PARAMS = {
    "version": Param("previous", type="string", pattern=r"^(previous|v?[0-9]+)$",
                     description='Version to make champion, or "previous"'),
    "reason": Param("", type="string", description="Why (recorded in the ledger and on the model version)"),
}


def build(path: str, spec) -> DAG:
    @dag(schedule=None, start_date=schedule_dates(spec)["start_date"], catchup=False, max_active_runs=1,
         params=PARAMS, **dag_kwargs(spec, "rollback", "rollback"), doc_md=__doc__)
    def rollback():
        @task
        def move_champion(params=None, dag_run=None) -> dict:
            """Point `champion` at the Param `version` under the promotion lock and record it in the ledger."""
            return run_step("rollback", path, version=params["version"], reason=params["reason"],
                            run_tags=run_tags(dag_run))

        move_champion()

    return rollback()
