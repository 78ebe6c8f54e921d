"""Glue between Airflow tasks and ``mlpipe.steps``: shared defaults and error mapping.

Only Airflow is imported here; ``mlpipe.steps`` (pandas and friends) is imported inside
``run_step`` at task run time, never while a DAG file is parsed.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk.exceptions import AirflowFailException

START = dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_ARGS = {"owner": "mlpipe", "retries": 2, "retry_delay": dt.timedelta(seconds=30)}
FEATURES_URI = "mlpipe://features"


def run_step(step: str, **kwargs):
    """Run ``mlpipe.steps.<step>`` with a freshly loaded context.

    Bad input (spec, source or data-quality errors) fails the task at once without
    retries: retrying cannot fix the data. Anything else may be transient and retries.
    """
    from mlpipe import steps
    from mlpipe.errors import SourceError, SpecError, TrainingError, ValidationFailed

    try:
        return getattr(steps, step)(steps.Context.load(), **kwargs)
    except (SpecError, SourceError, ValidationFailed, TrainingError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
