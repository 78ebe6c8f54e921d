"""Where things live, from environment variables with project-relative defaults.

MLPIPE_PIPELINES_DIR pipeline specs: every *.yaml in it is a pipeline (default include/pipelines)
MLPIPE_SPEC          run just this one spec file, instead of the folder's (default: unset)
MLPIPE_DATA_ROOT     partitioned data     (default ./data)
MLFLOW_TRACKING_URI  MLflow store         (default sqlite:///./mlflow/mlflow.db)
MLPIPE_ARTIFACTS     MLflow artifact root (default ./mlflow/artifacts; unused with an http(s)
                     tracking server, which stores artifacts where it is configured to)
MLPIPE_TASK_CPUS     threads one training task may use (default 1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    pipelines_dir: Path
    only_spec: Path | None
    data_root: Path
    tracking_uri: str
    artifact_root: Path
    task_cpus: int


def get_settings() -> Settings:
    env = os.environ
    mlflow_dir = PROJECT_ROOT / "mlflow"
    return Settings(
        pipelines_dir=Path(env.get("MLPIPE_PIPELINES_DIR") or PROJECT_ROOT / "include" / "pipelines"),
        only_spec=Path(env["MLPIPE_SPEC"]) if env.get("MLPIPE_SPEC") else None,
        data_root=Path(env.get("MLPIPE_DATA_ROOT") or PROJECT_ROOT / "data"),
        tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        artifact_root=Path(env.get("MLPIPE_ARTIFACTS", mlflow_dir / "artifacts")),
        task_cpus=max(1, int(env.get("MLPIPE_TASK_CPUS", "1"))),
    )
