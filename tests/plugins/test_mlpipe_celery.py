"""The Celery configuration module preloads what tasks import in the worker's main
process (in-process: a fresh interpreter imports it, as ``airflow celery worker`` does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_importing_the_celery_config_preloads_the_named_modules():
    code = f"""
import sys
sys.path.insert(0, {str(PLUGINS)!r})
assert "colorsys" not in sys.modules
import mlpipe_celery
assert "colorsys" in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLPIPE_PRELOAD": "colorsys"})
    assert done.stdout.strip().endswith("ok"), done.stderr[-3000:]
