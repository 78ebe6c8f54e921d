"""The Celery configuration preloads in the worker's main process and is Airflow's default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_celery_config_preloads_and_keeps_airflows_defaults():
    code = f"""
import sys
sys.path.insert(0, {str(PLUGINS)!r})
assert "colorsys" not in sys.modules
import mlpipe_celery
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
assert "colorsys" in sys.modules
assert mlpipe_celery.CELERY_CONFIG == DEFAULT_CELERY_CONFIG
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "MLPIPE_PRELOAD": "colorsys"})
    assert done.stdout.strip().endswith("ok"), done.stderr[-3000:]
