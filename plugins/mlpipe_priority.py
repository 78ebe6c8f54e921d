"""Slowest variant first across backends: the priority of the train DAG's mapped
training task instances.

The scheduler starts ready task instances by priority weight, then map index. Each
backend's variants are one mapped task (``train_<family>``), so map indexes tie across
backends and the scheduler's tie-break decides which backend goes first. This strategy
weighs each mapped instance by the rank of its variant in ``plan``'s job list (slowest
first, by MLflow fit times), read from the plan task's XCom when the scheduler expands
the mapping.

Instance 0 is the exception: Airflow turns the run's unexpanded placeholder into it and
keeps the weight the placeholder got when the run was created, before this run's plan
existed. The placeholder therefore takes the weight of the family's first job in the
DAG's latest earlier plan (the same variant, unless the variants or their fit-time order
changed), or, with no earlier plan, a weight above every planned one (each backend's
slowest first, as map-index order would do).
"""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin
from airflow.task.priority_strategy import PriorityWeightStrategy

from mlpipe.records import Job

log = logging.getLogger(__name__)
UNPLANNED_FIRST = 1000  # a placeholder's weight when no earlier plan has its family


def planned_weight(jobs: list[Job], family: str, map_index: int) -> int:
    """``len(jobs) + 1 - rank`` of the family's ``map_index``-th job in ``jobs`` (so the
    first job weighs most, and every planned job more than an unplanned instance)."""
    ranks = [rank for rank, job in enumerate(jobs) if job.family == family]
    return len(jobs) + 1 - ranks[map_index]


class PlannedOrder(PriorityWeightStrategy):
    """Weight of a ``train_<family>[i]`` instance: its job's place in ``plan``'s list."""

    plan_task_id = "plan"
    path = f"{__name__}.PlannedOrder"  # how a mapped task's partial() names it: Airflow 3.3 serializes a
    # strategy object in partial kwargs as its repr, and the scheduler could not load it back

    def get_weight(self, ti) -> int:
        family = ti.task_id.removeprefix("train_")
        placeholder = ti.map_index is None or ti.map_index < 0
        try:
            jobs = self._jobs(ti.dag_id, None if placeholder else ti.run_id)
            if placeholder and not any(job.family == family for job in jobs or ()):
                return UNPLANNED_FIRST
            return planned_weight(jobs, family, 0 if placeholder else ti.map_index)
        except Exception as exc:  # noqa: BLE001 - ordering is an optimisation, never a failure
            log.warning("no planned priority for %s[%s] in %s (%s); using 1", ti.task_id, ti.map_index, ti.run_id, exc)
            return 1

    def _jobs(self, dag_id: str, run_id: str | None) -> list[Job] | None:
        """The plan task's job list in ``run_id``, or (None) in the DAG's latest run that has one."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        query = select(XComModel.value).where(XComModel.dag_id == dag_id, XComModel.task_id == self.plan_task_id,
                                              XComModel.map_index == -1, XComModel.key == "return_value")
        query = (query.where(XComModel.run_id == run_id) if run_id
                 else query.order_by(XComModel.timestamp.desc()).limit(1))
        with create_session(scoped=False) as session:  # a read beside the scheduler's own transaction
            row = session.execute(query).first()
        return None if row is None else [Job.from_dict(job) for job in XComModel.deserialize_value(row)]


class MlpipePriorityPlugin(AirflowPlugin):
    name = "mlpipe_priority"
    priority_weight_strategies = [PlannedOrder]
