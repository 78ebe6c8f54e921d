"""Roll back: point the MLflow alias `champion` at an earlier version in one manual run.

`version` is a registered version number, or "previous": the champion that the current
one replaced when a train run promoted it (from the promotion ledger), so repeated
"previous" rollbacks walk back through the promotions. The move is recorded in the ledger, and the
next score run uses the restored version.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from mlpipe_dagkit import run_tags, schedule_dates, task_defaults
from mlpipe_tasks import run_step

PARAMS = {
    "version": Param("previous", type="string", pattern=r"^(previous|v?[0-9]+)$",
                     description='Version to make champion, or "previous"'),
    "reason": Param("", type="string", description="Why (recorded in the ledger and on the model version)"),
}


@dag(schedule=None, start_date=schedule_dates()["start_date"], catchup=False, max_active_runs=1,
     default_args=task_defaults("rollback"), params=PARAMS, tags=["mlpipe", "rollback"], doc_md=__doc__)
def rollback():
    @task
    def move_champion(params=None, dag_run=None) -> dict:
        """Point `champion` at the Param `version` under the promotion lock and record it in the ledger."""
        return run_step("rollback", version=params["version"], reason=params["reason"], run_tags=run_tags(dag_run))

    move_champion()


rollback()
