"""Test isolation: every run gets its own Airflow home, data root and MLflow store, so
tests never touch a developer's ./data, ./mlflow or .airflow."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "bench"))  # appended: bench/'s module names never shadow an installed package
from harness import S3Server, load_script  # noqa: E402 - shared with the benches

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


def _serve_webhook():
    """A webhook on 127.0.0.1 that collects the JSON bodies posted to it; a context
    manager yielding {"url", "received"}."""
    import contextlib
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    @contextlib.contextmanager
    def serve():
        received: list[dict] = []

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = HTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield {"url": f"http://127.0.0.1:{server.server_port}/hook", "received": received}
        finally:
            server.shutdown()

    return serve()


@pytest.fixture(scope="session")
def serve_webhook():
    """``with serve_webhook() as hook:`` a local webhook (usable from fixtures of any scope)."""
    return _serve_webhook


@pytest.fixture(scope="session")
def cluster_script():
    """scripts/cluster.py loaded as a module."""
    return load_script("cluster")


@pytest.fixture(scope="session")
def s3_server():
    """One S3 server for the session, its credentials and endpoint in this process's
    environment (where s3fs looks for them, as a worker's would)."""
    server = S3Server()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_root(s3_server, request):
    """A fresh bucket for one test: ``s3://<bucket>/data`` (a data root on object storage)."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    return f"{s3_server.bucket(name)}/data"


@pytest.fixture(scope="session")
def lock_database():
    """A fresh PostgreSQL database on the local server for cross-host locks; its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"mlpipe_locks_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def strict_s3_server():
    """A second S3 server that checks credentials (moto's IAM enforcement): it knows no
    user, so every request is refused, as a bucket we may not read would be."""
    server = S3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield server
    server.stop()
