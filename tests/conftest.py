"""Test isolation: every run gets its own Airflow home, data root and MLflow store, so
tests never touch a developer's ./data, ./mlflow or .airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="mlpipe-tests-"))

os.environ.update({
    "AIRFLOW_HOME": str(_HOME / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "MLPIPE_DATA_ROOT": str(_HOME / "data"),
    "MLFLOW_TRACKING_URI": f"sqlite:///{_HOME / 'mlflow' / 'mlflow.db'}",
    "MLPIPE_ARTIFACTS": str(_HOME / "mlflow" / "artifacts"),
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
})
os.environ.pop("MLPIPE_SPEC", None)
