"""What the Airflow benchmarks share: a fresh Airflow home and MLflow store in a temp
directory (the preloading LocalExecutor and settings ``make demo`` uses), the demo's
helpers (services, phases, run states), and per-task figures read from the metadata DB
and the task logs."""

from __future__ import annotations

import importlib.util
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """``scripts/<name>.py`` as a fresh module (the scripts are not a package): the one
    loader of the benches and the tests (tests/conftest.py puts bench/ on sys.path)."""
    loaded = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(loaded)
    sys.modules[name] = module  # dataclasses look their module up there
    loaded.loader.exec_module(module)
    return module


def setup(prefix: str, extra_dags: str | None = None, env: dict[str, str] | None = None) -> Path:
    """A temp home whose dags folder links the project's DAGs (plus ``extra_dags``, a
    module's source); exports the environment for it and returns the home."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    dags = home / "dags"
    dags.mkdir(parents=True)
    for path in (ROOT / "dags").glob("*.py"):
        (dags / path.name).symlink_to(path)
    if extra_dags:
        (dags / "bench_dags.py").write_text(extra_dags)
    os.environ.update({
        "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR", "mlpipe_executor.PreloadingLocalExecutor"),
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "4"),
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": os.environ.get(
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.2"),  # as the Makefile
        "MLPIPE_DATA_ROOT": str(home / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLPIPE_ARTIFACTS": str(home / "artifacts"), "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "plugins"), str(ROOT / "include"), os.environ.get("PYTHONPATH")])),
        **(env or {})})
    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "include")]
    return home


def start_airflow(module, port: int, dag_ids: list[str]):
    """Migrate, unpause ``dag_ids``, create the gpu pool, start an api-server; returns it."""
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{port}/execution/"
    module.airflow("db", "migrate")
    module.airflow("dags", "reserialize")
    for dag_id in dag_ids:
        module.airflow("dags", "unpause", dag_id)
    module.airflow("pools", "set", "gpu", "2", "GPU training slots")
    if not module.port_free(port):
        raise SystemExit(f"port {port} is in use: pass --port")
    api = module.Service("api-server", "api-server", "--port", str(port))
    module.wait_http(f"http://localhost:{port}/api/v2/version")
    return api


def task_rows(dag_id: str, run_id: str | None = None) -> list[dict]:
    """Successful task instances of ``dag_id`` (one run's with ``run_id``): task, start, end, queued."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.rendered_map_index,
                   TaskInstance.start_date, TaskInstance.end_date, TaskInstance.queued_dttm).where(
        TaskInstance.dag_id == dag_id, TaskInstance.state == "success")
    if run_id:
        query = query.where(TaskInstance.run_id == run_id)
    with create_session() as session:
        return [{"task": t, "map_index": m, "name": n, "start": s, "end": e, "queued": q,
                 "seconds": (e - s).total_seconds()} for t, m, n, s, e, q in session.execute(query).all()]


def log_figures(dag_id: str, pattern: str, by_map_index: bool = False) -> dict[str, list[float]]:
    """Per task id (``task[map_index]`` for mapped ones with ``by_map_index``), the numbers
    ``pattern`` (one group) matches in the DAG's task logs."""
    found: dict[str, list[float]] = {}
    for log in (Path(os.environ["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}").rglob("*.log"):
        parts = dict(p.split("=", 1) for p in log.parts if "=" in p)
        task = parts.get("task_id", "?")
        if by_map_index and parts.get("map_index", "-1") != "-1":
            task = f"{task}[{parts['map_index']}]"
        found.setdefault(task, []).extend(float(m) for m in re.findall(pattern, log.read_text(errors="replace")))
    return found


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


class S3Server:
    """A real S3-compatible server (moto's standalone server) as a process on 127.0.0.1."""

    def __init__(self, env: dict[str, str] | None = None):
        import socket
        import subprocess
        import time
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                         "-p", str(self.port)], env={**os.environ, **(env or {})},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}") from None
                time.sleep(0.2)
        # what every S3 client reads (boto3/aiobotocore, so s3fs): no credentials in any URL or spec
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new); its ``s3://`` URL."""
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": self.endpoint},
                               key="testing", secret="testing")
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
