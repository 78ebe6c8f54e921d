"""LocalExecutor that imports the data stack and the backends once, before it forks its
workers (see mlpipe_preload). Use it with
``AIRFLOW__CORE__EXECUTOR=mlpipe_executor.PreloadingLocalExecutor`` (the Makefile does).
"""

from __future__ import annotations

from airflow.executors.local_executor import LocalExecutor
from mlpipe_preload import preload


class PreloadingLocalExecutor(LocalExecutor):
    def start(self) -> None:
        self.log.info("preloaded before forking workers: %s", ", ".join(preload(self.log)))
        super().start()
