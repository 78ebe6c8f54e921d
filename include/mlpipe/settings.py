"""Where things live, from environment variables with project-relative defaults.

MLPIPE_PIPELINES_DIR pipeline specs: every *.yaml in it is a pipeline (default include/pipelines)
MLPIPE_SPEC          run just this one spec file, instead of the folder's (default: unset)
MLPIPE_DATA_ROOT     partitioned data and reports: a folder or any fsspec URL, e.g.
                     s3://bucket/mlpipe (default ./data; see mlpipe.storage)
MLPIPE_LOCK_URL      where cross-host locks live (default: files under a local data root;
                     see mlpipe.locks)
MLPIPE_CACHE_DIR     this host's caches: source files converted to Parquet, downloaded
                     models (default: the data root if local, else ~/.cache/mlpipe)
MLFLOW_TRACKING_URI  MLflow store         (default sqlite:///./mlflow/mlflow.db)
MLPIPE_ARTIFACTS     MLflow artifact root (default ./mlflow/artifacts; unused with an http(s)
                     tracking server, which stores artifacts where it is configured to)
MLPIPE_TASK_CPUS     threads one training task may use (default 1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlpipe.storage import Location, is_remote, location

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    pipelines_dir: Path
    only_spec: Path | None
    data_root: Location
    tracking_uri: str
    artifact_root: Path
    task_cpus: int
    cache_dir: Path | None = None  # MLPIPE_CACHE_DIR; None: see cache_root
    lock_url: str | None = None

    @property
    def cache_root(self) -> Path:
        """This host's caches: MLPIPE_CACHE_DIR, else a local data root, else ~/.cache/mlpipe."""
        if self.cache_dir is not None:
            return self.cache_dir
        return Path.home() / ".cache" / "mlpipe" if is_remote(self.data_root) else Path(self.data_root)


def get_settings() -> Settings:
    env = os.environ
    mlflow_dir = PROJECT_ROOT / "mlflow"
    return Settings(
        pipelines_dir=Path(env.get("MLPIPE_PIPELINES_DIR") or PROJECT_ROOT / "include" / "pipelines"),
        only_spec=Path(env["MLPIPE_SPEC"]) if env.get("MLPIPE_SPEC") else None,
        data_root=location(env.get("MLPIPE_DATA_ROOT") or PROJECT_ROOT / "data"),
        tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        artifact_root=Path(env.get("MLPIPE_ARTIFACTS", mlflow_dir / "artifacts")),
        task_cpus=max(1, int(env.get("MLPIPE_TASK_CPUS", "1"))),
        cache_dir=Path(env["MLPIPE_CACHE_DIR"]) if env.get("MLPIPE_CACHE_DIR") else None,
        lock_url=env.get("MLPIPE_LOCK_URL") or None,
    )
