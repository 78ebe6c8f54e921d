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


def run_step(step: str, spec: str | None = None, **kwargs):
    """Run the entry point ``step`` of ``mlpipe.steps.STEPS`` with a freshly loaded context of
    the pipeline whose spec file is ``spec`` (the DAG's; None: the only configured one);
    records in its result become dicts for XCom.

    Bad input (spec, source, data-quality, training-setup or registry requests) fails the task at
    once: retrying cannot fix the data. Anything else may be transient and retries.
    """
    started = time.perf_counter()
    from mlpipe.context import Context
    from mlpipe.errors import RegistryError, SourceError, SpecError, TrainingError, ValidationFailed
    from mlpipe.steps import STEPS

    imported = time.perf_counter()
    try:
        ctx = Context.load(spec)
        result = to_xcom(STEPS[step](ctx, **kwargs))
    except ValidationFailed as exc:
        validation_alert(exc, kwargs.get("day"), ctx.spec.name)
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
    except (SpecError, SourceError, TrainingError, RegistryError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
    alert_for(step, result, ctx.spec.name)
    # bench/ reads this line: the step's imports and run, and the task process's peak RSS
    log.info("mlpipe step %s: imports %.2fs, run %.2fs, peak RSS %.0f MB", step, imported - started,
             time.perf_counter() - imported, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result
