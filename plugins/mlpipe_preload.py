"""What the executors import once, before they fork task processes.

Every task process is forked (LocalExecutor: from a worker of the scheduler's executor;
Celery: from a prefork child of ``airflow celery worker``), so modules imported before
the fork are already loaded in every task. Preloaded: the data stack (pandas, pyarrow,
Great Expectations, Evidently), MLflow, and what the spec's backends import to load or
train a model (``modules`` in the backend table: skops and scikit-learn, torch,
TensorFlow), for the backends of every configured pipeline. A score task then spends
its time scoring, not importing (bench/backfill.py).

None of them starts a thread or touches a GPU on import (checked in
tests/plugins/test_mlpipe_preload.py), which is what makes the fork safe.
``MLPIPE_PRELOAD`` (comma-separated modules) replaces the list; empty disables it.
Preloaded libraries are those of the moment the scheduler or worker started: restart it
after upgrading them. The project's own modules are never preloaded, so an edit to
include/mlpipe takes effect without a restart.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import warnings

# What most tasks import: the data stack, MLflow's client and SQLite store (and GitPython, which
# it calls on each new run), Evidently and the plotly it renders with, matplotlib (the evaluation and
# monitoring pages' charts: half a second to import), what parsing a DAG
# file in a task imports, and the object-store layer (s3fs: about a second to import)
DATA_STACK = ("pandas", "pyarrow.parquet", "great_expectations", "pydantic", "yaml", "evidently",
              "plotly.graph_objects", "mlflow.pyfunc", "mlflow.tracking.fluent",
              "mlflow.store.tracking.sqlalchemy_store", "git", "airflow.sdk.definitions.decorators",
              "upath", "s3fs", "matplotlib.pyplot")


def modules() -> list[str]:
    """MLPIPE_PRELOAD's modules, else the data stack and the modules of every configured
    pipeline's backends (the union: one worker runs every pipeline's tasks)."""
    configured = os.environ.get("MLPIPE_PRELOAD")
    if configured is not None:
        return [m.strip() for m in configured.split(",") if m.strip()]
    from mlpipe.backends import backend_entry
    from mlpipe.pipelines import spec_files
    from mlpipe.spec import load_spec

    backends: set[str] = set()
    try:
        paths = spec_files()
    except Exception:  # noqa: BLE001 - a bad folder fails the DAGs with its error, not the scheduler
        paths = []
    for path in paths:
        try:
            backends |= {v.backend for v in load_spec(path).variants}
        except Exception:  # noqa: BLE001 - a bad spec fails its own DAGs with the spec error
            continue
    found = [m for name in sorted(backends) for m in backend_entry(name).modules]
    return list(dict.fromkeys([*DATA_STACK, *found]))


def preload(log: logging.Logger | None = None) -> list[str]:
    """Import :func:`modules`; returns those imported. A module that fails is logged and skipped."""
    log = log or logging.getLogger(__name__)
    loaded = []
    for name in modules():
        try:
            # skops looks every scipy ufunc up across sys.modules on import, and each of
            # Airflow's deprecated-attribute shims it meets warns: silence that, here only
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional module must not stop the scheduler
            log.warning("preload of %s failed: %s", name, exc)
    # Out of the collector's reach: otherwise a full collection in a forked task walks the
    # million preloaded objects (1.5 s, measured) and copies every page they live on.
    gc.freeze()
    return loaded
