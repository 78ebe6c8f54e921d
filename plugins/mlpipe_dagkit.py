"""What the DAG factory asks for while it builds a pipeline's DAGs, and what their tasks
ask about the run: the pipelines and their specs (each cached by path and modification
time), DAG ids, tags and defaults, schedule dates, asset URIs, training slots, and
run-context helpers (backfill or not, MLflow run tags, the retrain request that started
a run). Every function takes the spec it is about: nothing here knows "the" pipeline.

Only Airflow, PyYAML, pydantic (through ``mlpipe.spec``) and the standard library load
here: a DAG file that imports this module parses without pandas or any model library.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from airflow.sdk.exceptions import AirflowSkipException

from mlpipe.pipelines import dag_id, spec_files
from mlpipe.records import Job
from mlpipe_alerts import FailureNotifier

DEFAULT_ARGS = {"owner": "mlpipe", "retries": 2, "retry_delay": dt.timedelta(seconds=30)}


class Pipeline(NamedTuple):
    """A spec file of the pipelines folder: its spec, or why it does not load."""
    path: Path
    spec: object | None  # mlpipe.spec.PipelineSpec
    error: str | None


def load(path: str | Path):
    """The spec in ``path``, loaded again only when the file changes."""
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:  # load_spec names the unreadable file
        mtime_ns = 0
    return _load_spec(str(path), mtime_ns)


@lru_cache
def _load_spec(path: str, mtime_ns: int):
    from mlpipe.spec import load_spec

    return load_spec(path)


def pipelines() -> list[Pipeline]:
    """Every configured spec file with its spec or its error: one bad spec (or two specs
    of one name) fails alone."""
    from mlpipe.errors import SpecError

    found, names = [], {}
    for path in spec_files():
        try:
            spec = load(path)
        except SpecError as exc:
            found.append(Pipeline(path, None, str(exc)))
            continue
        if spec.name in names:
            found.append(Pipeline(path, None, f"{path}: name: pipeline {spec.name!r} is also the name of "
                                              f"{names[spec.name]}; every pipeline needs its own name"))
            continue
        names[spec.name] = path
        found.append(Pipeline(path, spec, None))
    return found


def dag_kwargs(spec, dag: str, kind: str) -> dict:
    """What every DAG of a pipeline shares: its id ``<pipeline>__<dag>``, tags, the roles
    that may see and run it (the spec's ``access_control``) and ``default_args`` (the
    ``kind``'s timeout)."""
    from mlpipe.spec import ACCESS

    access: dict = {}
    for role, grants in spec.access_control.items():
        for grant in grants:
            resource, action = ACCESS[grant]
            access.setdefault(role, {}).setdefault(resource, set()).add(action)
    return {"dag_id": dag_id(spec.name, dag), "tags": ["mlpipe", spec.name, dag], "access_control": access or None,
            "default_args": task_defaults(spec, kind)}


def asset_uri(spec, what: str) -> str:
    """A pipeline's asset: ``mlpipe://<pipeline>/features`` (ingest built a day's features),
    ``mlpipe://<pipeline>/retrain-request`` (its monitor asks its train DAG for a run)."""
    return f"mlpipe://{spec.name}/{what}"


def training_families(spec) -> dict[str, str]:
    """``{family: operator class name}`` for the spec's variants, in backend-table order:
    one mapped training task per family. The spec check has refused backends without one."""
    from mlpipe.backends import BACKENDS

    used = {v.backend for v in spec.variants}
    return {e.family: e.operator for name, e in BACKENDS.items() if name in used}


def timeout(spec, kind: str) -> dt.timedelta:
    """The spec's ``execution.timeouts.<kind>`` (minutes) as an ``execution_timeout``."""
    return dt.timedelta(minutes=getattr(spec.execution.timeouts, kind))


def task_defaults(spec, kind: str) -> dict:
    """A DAG's ``default_args``: retries, the ``kind``'s timeout, the failure alert naming the
    pipeline, and the spec's ``execution.queue`` if it names one."""
    queue = {"queue": spec.execution.queue} if spec.execution.queue else {}  # a worker may serve some pipelines
    return {**DEFAULT_ARGS, "execution_timeout": timeout(spec, kind),
            "on_failure_callback": [FailureNotifier(pipeline=spec.name)], **queue}


def variant_names(spec) -> list[str]:
    """The spec's variant names (the train DAG's `variants` Param offers them)."""
    return [v.name for v in spec.variants]


def gpu_placement(spec) -> dict:
    """Queue and pool of the GPU-capable training tasks: MLPIPE_GPU_QUEUE / MLPIPE_GPU_POOL,
    else the spec's ``execution.gpu_queue`` / ``gpu_pool``."""
    execution = spec.execution
    return {"queue": os.environ.get("MLPIPE_GPU_QUEUE") or execution.gpu_queue,
            "pool": os.environ.get("MLPIPE_GPU_POOL") or execution.gpu_pool}


def training_slots(spec) -> int:
    """How many training tasks of one train run may run at once: MLPIPE_TRAINING_SLOTS,
    else the spec's ``execution.training_slots``, else this host's cores divided by
    MLPIPE_TASK_CPUS. More tasks than cores would time-slice them, and a task time-sliced
    with others burns 10-30% more CPU for the same fit (measured in bench/)."""
    from mlpipe.settings import get_settings

    configured = os.environ.get("MLPIPE_TRAINING_SLOTS") or spec.execution.training_slots
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) // get_settings().task_cpus)


def range_params(spec, verb: str) -> dict:
    """A range DAG's Params: ``start``, ``end`` and ``chunk_days`` (``verb``: what it does to a day)."""
    from airflow.sdk import Param

    end = spec.schedule.end
    return {
        "start": Param(str(spec.schedule.start), type="string", format="date",
                       description=f"First data day to {verb} (YYYY-MM-DD)"),
        "end": Param(end and str(end), type=["null", "string"], format="date",
                     description=f"Last data day to {verb}, inclusive (empty: the day before the run)"),
        "chunk_days": Param(None, type=["null", "integer"], minimum=1,
                            description="Days per task (empty: at most 30, and a chunk for each of the range's "
                                        "slots): fewer start-ups with more, more parallelism with fewer"),
    }


def range_chunk_args() -> dict:
    """A range DAG's chunk tasks: below every daily run's task (priority weight 0, absolute),
    never every slot of the executor (:func:`range_slots` at once), each mapped instance
    named by its days (``{{ days }}``, which the task sets in its context)."""
    return {"priority_weight": 0, "weight_rule": "absolute", "max_active_tis_per_dag": range_slots(),
            "map_index_template": "{{ days }}"}


def range_slots() -> int:
    """How many chunk tasks of one ingest_range DAG may run at once: MLPIPE_RANGE_SLOTS, else
    this host's cores (the executor's other slots stay free for live daily runs)."""
    return max(1, int(os.environ.get("MLPIPE_RANGE_SLOTS") or len(os.sched_getaffinity(0))))


def schedule_dates(spec, extra_days: int = 0) -> dict:
    """``start_date`` / ``end_date`` DAG kwargs from the spec's ``schedule`` section."""
    sched = spec.schedule
    utc = dt.timezone.utc
    end = sched.end and dt.datetime.combine(sched.end + dt.timedelta(days=extra_days), dt.time(23, 59), utc)
    return {"start_date": dt.datetime.combine(sched.start, dt.time(), utc), "end_date": end}


def skip_past_schedule_end(spec, dag_run, when: dt.datetime, extra_days: int = 0) -> None:
    """A scheduled run after the spec's ``schedule.end`` (+ ``extra_days``; a dataset that
    ends) has nothing new to work on: skip it. Manual and asset-triggered runs always run,
    whatever their logical date."""
    end = spec.schedule.end
    if end and _run_type(dag_run) == "scheduled" and when.date() > end + dt.timedelta(days=extra_days):
        raise AirflowSkipException(f"scheduled run for {when.date()} is past the spec's schedule end {end}")


def _run_type(dag_run) -> str:
    return str(getattr(dag_run.run_type, "value", dag_run.run_type))


def is_backfill(dag_run) -> bool:
    return _run_type(dag_run) == "backfill"


def run_tags(dag_run, job: Job | None = None) -> dict[str, str]:
    """MLflow / ledger tags naming the Airflow run (and the retrain request that started it)."""
    tags = {"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id, "airflow.run_type": _run_type(dag_run)}
    return {**tags, "mlpipe.trigger": job.trigger} if job and job.trigger else tags


def retrain_request(triggering_asset_events, uri: str) -> dict | None:
    """The latest retrain request (the asset event extra of the monitor DAG's ``uri``) that started this run."""
    names = {uri, uri + "/"}  # Airflow normalises the URI with a trailing slash
    events = [e for asset, found in (triggering_asset_events or {}).items()
              if {getattr(asset, "name", None), getattr(asset, "uri", None)} & names for e in found]
    return dict(events[-1].extra) if events else None


def with_retrain_request(params, triggering_asset_events, uri: str) -> dict:
    """``plan``'s arguments: the run's Params, and when a retrain request started the run,
    its reason as ``trigger`` and (unless a Param sets one) its window end: the day after
    the monitored day, not today."""
    request = retrain_request(triggering_asset_events, uri)
    if not request:
        return {**params}
    return {**params, "window_end": params.get("window_end") or request["window_end"], "trigger": request["reason"]}
