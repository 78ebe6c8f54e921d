"""Hostname Airflow records for a task instance: ``MLPIPE_HOSTNAME`` when set, else the
FQDN (Airflow's default). Lets two Celery workers on one machine (``make cluster``) say
which of them ran a task. Use with
``AIRFLOW__CORE__HOSTNAME_CALLABLE=mlpipe_hostname.hostname``."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("MLPIPE_HOSTNAME") or socket.getfqdn()
