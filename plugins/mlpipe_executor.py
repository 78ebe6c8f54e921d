"""LocalExecutor that imports the data stack once, before it forks its workers.

Each task process is forked from a LocalExecutor worker, so modules imported before the
workers start are already loaded in every task: pandas, pyarrow and Great Expectations
and Evidently (several seconds of imports) are paid once per scheduler instead of once per task. Use
it with ``AIRFLOW__CORE__EXECUTOR=mlpipe_executor.PreloadingLocalExecutor``; set
``MLPIPE_PRELOAD`` (comma-separated modules) to change the list, empty to disable.
Training libraries (torch, TensorFlow, MLflow) are not preloaded: they start threads
that do not survive a fork. Preloaded libraries are those of the moment the scheduler
started: restart it after upgrading them.
"""

from __future__ import annotations

import importlib
import os

from airflow.executors.local_executor import LocalExecutor

# Third-party libraries only: the project's own modules are imported fresh by each task,
# so an edit to include/mlpipe takes effect without restarting the scheduler.
DEFAULT_PRELOAD = "pandas,pyarrow.parquet,great_expectations,pydantic,yaml,evidently"


class PreloadingLocalExecutor(LocalExecutor):
    def start(self) -> None:
        for name in filter(None, os.environ.get("MLPIPE_PRELOAD", DEFAULT_PRELOAD).split(",")):
            try:
                importlib.import_module(name.strip())
            except ImportError as exc:  # a missing optional module must not stop the scheduler
                self.log.warning("preload of %s failed: %s", name, exc)
        super().start()
