"""Glue between Airflow tasks and ``mlpipe.steps``: shared defaults, the spec's schedule
dates, and error mapping.

Only Airflow, PyYAML and pydantic (through ``mlpipe.spec``) load while a DAG file is
parsed; ``mlpipe.steps`` (pandas and friends) is imported inside ``run_step`` at run time.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import lru_cache

from airflow.sdk.exceptions import AirflowFailException

DEFAULT_ARGS = {"owner": "mlpipe", "retries": 2, "retry_delay": dt.timedelta(seconds=30)}
FEATURES_URI = "mlpipe://features"


@lru_cache
def _spec():
    from mlpipe.settings import get_settings
    from mlpipe.spec import load_spec

    return load_spec(get_settings().spec_path)


def spec_execution() -> dict:
    """The spec's ``execution`` section (GPU queue and pool names)."""
    return _spec().execution.model_dump()


def training_slots() -> int:
    """How many training tasks of one train run may run at once: MLPIPE_TRAINING_SLOTS,
    else the spec's ``execution.training_slots``, else this host's cores divided by
    MLPIPE_TASK_CPUS. More tasks than cores would time-slice them, and a task time-sliced
    with others burns 10-30% more CPU for the same fit (measured in bench/)."""
    from mlpipe.settings import get_settings

    configured = os.environ.get("MLPIPE_TRAINING_SLOTS") or _spec().execution.training_slots
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) // get_settings().task_cpus)


@lru_cache
def schedule_dates(extra_days: int = 0) -> dict:
    """``start_date`` / ``end_date`` DAG kwargs from the spec's ``schedule`` section."""
    sched = _spec().schedule
    utc = dt.timezone.utc
    end = sched.end and dt.datetime.combine(sched.end + dt.timedelta(days=extra_days), dt.time(23, 59), utc)
    return {"start_date": dt.datetime.combine(sched.start, dt.time(), utc), "end_date": end}


def _run_type(dag_run) -> str:
    return str(getattr(dag_run.run_type, "value", dag_run.run_type))


def is_backfill(dag_run) -> bool:
    return _run_type(dag_run) == "backfill"


def run_tags(dag_run) -> dict[str, str]:
    """MLflow / ledger tags naming the Airflow run."""
    return {"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id, "airflow.run_type": _run_type(dag_run)}


def run_step(step: str, **kwargs):
    """Run ``mlpipe.steps.<step>`` with a freshly loaded context.

    Bad input (spec, source, data-quality, training-setup or registry requests) fails the task at
    once: retrying cannot fix the data. Anything else may be transient and retries.
    """
    from mlpipe import steps
    from mlpipe.errors import RegistryError, SourceError, SpecError, TrainingError, ValidationFailed

    try:
        return getattr(steps, step)(steps.Context.load(), **kwargs)
    except (SpecError, SourceError, ValidationFailed, TrainingError, RegistryError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
