"""The step runner: ``run_step`` calls an entry point of ``mlpipe.steps.STEPS`` with a
freshly loaded context, turns records into XCom dicts (``first_job`` and ``trained`` read
them back), maps errors that retrying cannot fix to an immediate failure, and sends the
alert a step's result calls for.

User DAGs may import ``run_step`` from here. ``mlpipe.steps`` (pandas and friends) is
imported inside ``run_step``, at run time, never while a DAG file is parsed.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Mapping

from airflow.sdk.exceptions import AirflowFailException

from mlpipe.records import Candidate, Job, to_xcom
from mlpipe_alerts import alert_for, validation_alert

log = logging.getLogger(__name__)


def first_job(jobs: list[dict]) -> Job:
    """The first of ``plan``'s jobs: every job of a run shares its window, mode and promote flag."""
    return Job.from_dict(jobs[0])


def trained(results: list) -> list[Candidate]:
    """The candidates of the variants that trained (results per family; failed ones are None)."""
    return [Candidate.from_dict(r) for group in results for r in (group or []) if r]


class AirflowConnections(Mapping):
    """conn_id -> SQLAlchemy URI, asked of Airflow the first time a SQL source needs it (so a
    step that reads no source never looks a connection up); an unknown conn_id is missing,
    and mlpipe's error names the source, the connection and the day."""

    def __init__(self):
        self._uris: dict[str, str] = {}

    def __getitem__(self, conn_id: str) -> str:
        if conn_id not in self._uris:
            from airflow.sdk import BaseHook
            from airflow.sdk.exceptions import AirflowNotFoundException

            try:
                connection = BaseHook.get_connection(conn_id)
            except AirflowNotFoundException:
                raise KeyError(conn_id) from None
            self._uris[conn_id] = _sqlalchemy_uri(connection)
        return self._uris[conn_id]

    def __iter__(self):
        return iter(self._uris)

    def __len__(self) -> int:
        return len(self._uris)


def _sqlalchemy_uri(connection) -> str:
    """The provider hook's SQLAlchemy URL (e.g. the postgres provider's driver and extras),
    else the connection's own URI."""
    from airflow.sdk.exceptions import AirflowException

    from mlpipe.sources.sql import sqlalchemy_uri

    try:
        return connection.get_hook().sqlalchemy_url.render_as_string(hide_password=False)
    except (AirflowException, AttributeError, NotImplementedError, ImportError):  # no hook, or no SQLAlchemy URL
        return sqlalchemy_uri(connection.get_uri())


def storage_options() -> None:
    """``MLPIPE_STORAGE_CONN_ID``: an Airflow connection whose credentials become the fsspec
    options of every remote location this task reaches (``MLPIPE_STORAGE_OPTIONS``, which
    wins if set too). For S3 (an ``aws`` connection): login = access key id, password =
    secret key, extra ``endpoint_url`` / ``region_name``; any store: extra ``storage_options``
    (fsspec options as they are). A task process's environment is its own."""
    import json
    import os

    conn_id = os.environ.get("MLPIPE_STORAGE_CONN_ID")
    if not conn_id or os.environ.get("MLPIPE_STORAGE_OPTIONS"):
        return
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise AirflowFailException(f"MLPIPE_STORAGE_CONN_ID={conn_id}: no such Airflow connection") from None
    extra = connection.extra_dejson
    options = {"key": connection.login, "secret": connection.password} if connection.login else {}
    client = {k: extra[k] for k in ("endpoint_url", "region_name") if extra.get(k)}
    os.environ["MLPIPE_STORAGE_OPTIONS"] = json.dumps(
        {**options, **({"client_kwargs": client} if client else {}), **extra.get("storage_options", {})})


def run_step(step: str, spec: str | None = None, **kwargs):
    """Run the entry point ``step`` of ``mlpipe.steps.STEPS`` with a freshly loaded context of
    the pipeline whose spec file is ``spec`` (the DAG's; None: the only configured one);
    records in its result become dicts for XCom.

    SQL sources' connections are asked of Airflow when a source needs them (``AirflowConnections``).
    Bad input (spec, source, data-quality, training-setup or registry requests, credentials an
    object store refuses) fails the task at
    once: retrying cannot fix the data. Anything else may be transient and retries, as does a
    database that cannot be reached (``SourceUnreachable``).
    """
    started = time.perf_counter()
    from mlpipe.context import Context
    from mlpipe.errors import (
        AccessDenied,
        BadRange,
        DaysFailed,
        RegistryError,
        SourceError,
        SpecError,
        TrainingError,
        ValidationFailed,
    )
    from mlpipe.sources.sql import SourceUnreachable
    from mlpipe.steps import STEPS

    imported = time.perf_counter()
    try:
        storage_options()
        ctx = Context.load(spec, connections=AirflowConnections())
        result = to_xcom(STEPS[step](ctx, **kwargs))
    except ValidationFailed as exc:
        validation_alert(exc, kwargs.get("day"), ctx.spec.name)
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
    except SourceUnreachable:
        raise  # the database may be back by the next try: the task's retries (finite) apply
    except (SpecError, SourceError, TrainingError, RegistryError, AccessDenied, BadRange, DaysFailed) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
    alert_for(step, result, ctx.spec.name)
    # bench/ reads this line: the step's imports and run, and the task process's peak RSS
    log.info("mlpipe step %s: imports %.2fs, run %.2fs, peak RSS %.0f MB", step, imported - started,
             time.perf_counter() - imported, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result
