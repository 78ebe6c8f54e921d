"""The DAG factory: every spec in the pipelines folder gets its own DAGs, built from it.

``publish(namespace, "train", train.build)`` (what dags/train.py does) builds the
``<pipeline>__train`` DAG of every configured pipeline into the DAG file's namespace. A
spec that does not load gets, under each of its DAG ids (from the file's name), a
stand-in DAG whose description and docs carry the spec error (the file and every bad
field) and whose one task fails with it: it breaks only itself, and shows in the UI
where its DAGs would be. One module per DAG builds it (``build(path, spec)``); they
import nothing heavy.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable

from airflow.sdk import DAG, dag, task
from airflow.sdk.exceptions import AirflowFailException

from mlpipe.pipelines import dag_id
from mlpipe_dagkit import pipelines

log = logging.getLogger(__name__)


def publish(namespace: dict, name: str, build: Callable[[str, object], DAG]) -> list[DAG]:
    """Build DAG ``name`` of every configured pipeline into ``namespace`` (a DAG file's globals)."""
    built = []
    for pipeline in pipelines():
        if pipeline.error:
            log.error("spec %s does not load; its DAGs fail with: %s", pipeline.path, pipeline.error)
            built.append(stand_in(re.sub(r"[^A-Za-z0-9_.-]", "_", pipeline.path.stem), name, pipeline.error))
        else:
            built.append(build(str(pipeline.path), pipeline.spec))
    for one in built:
        namespace[one.dag_id] = one
    return built


def stand_in(pipeline: str, name: str, error: str) -> DAG:
    """A DAG under ``<pipeline>__<name>`` that says why the pipeline's spec does not load."""
    summary = " ".join(error.split())  # the UI shows the description on one line

    @dag(dag_id=dag_id(pipeline, name), schedule=None, start_date=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
         catchup=False, is_paused_upon_creation=True, tags=["mlpipe", pipeline, name, "spec-error"],
         description=f"spec error: {summary}", doc_md=f"**This pipeline's spec does not load.**\n\n```\n{error}\n```")
    def spec_error_dag():
        @task(task_id="spec_error", retries=0)
        def spec_error():
            """Fails with the spec error: fix the spec file and the real DAG replaces this one."""
            raise AirflowFailException(error)

        spec_error()

    return spec_error_dag()
