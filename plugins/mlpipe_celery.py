"""Celery configuration of the distributed mode: Airflow's default, after preloading
what tasks import (mlpipe_preload) in ``airflow celery worker``'s main process, before
it forks its pool. Set ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=mlpipe_celery.CELERY_CONFIG``
(docker-compose.yaml and scripts/cluster.py do).
"""

from __future__ import annotations

import logging

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from mlpipe_preload import preload

logging.getLogger(__name__).info("preloaded before forking the pool: %s", ", ".join(preload()))
CELERY_CONFIG = DEFAULT_CELERY_CONFIG
