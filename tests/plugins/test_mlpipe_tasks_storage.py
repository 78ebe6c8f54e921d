"""The step runner and object storage, in-process: credentials from an Airflow connection
reach every remote location, and refused credentials fail the task at once."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

import mlpipe_tasks  # noqa: E402
from mlpipe import steps  # noqa: E402
from mlpipe.errors import AccessDenied  # noqa: E402

FLIGHTS = str(Path(__file__).resolve().parents[2] / "include" / "pipelines" / "flights.yaml")


def test_refused_credentials_fail_without_retry(monkeypatch):
    def refused(ctx, **kwargs):
        raise AccessDenied("s3://private/data/flights/raw/date=2013-01-01.parquet: access denied")

    monkeypatch.setitem(steps.STEPS, "extract_day", refused)
    with pytest.raises(AirflowFailException, match="AccessDenied: s3://private/data"):
        mlpipe_tasks.run_step("extract_day", FLIGHTS, day=dt.date(2013, 1, 1))


@pytest.mark.integration
def test_a_storage_connection_gives_the_data_roots_credentials(monkeypatch, s3_server):
    """With no AWS_* credentials in the environment, the connection named by
    MLPIPE_STORAGE_CONN_ID (an ``aws`` connection, as AIRFLOW_CONN_* JSON) is what the task's
    writes to the S3 server use."""
    import s3fs

    bucket = s3_server.bucket("conn-creds")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MLPIPE_STORAGE_OPTIONS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_STORE", json.dumps({
        "conn_type": "aws", "login": "from-connection", "password": "secret",
        "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"}}))
    monkeypatch.setenv("MLPIPE_STORAGE_CONN_ID", "mlpipe_store")
    monkeypatch.setenv("MLPIPE_DATA_ROOT", f"{bucket}/data")
    s3fs.S3FileSystem.clear_instance_cache()
    seen = {}

    def write(ctx, day):
        path = ctx.store.write_report("probe", day, {"ok": True})
        seen.update(key=path.fs.key, endpoint=path.fs.client_kwargs.get("endpoint_url"), path=str(path))
        return {"uri": str(path)}

    monkeypatch.setitem(steps.STEPS, "extract_day", write)
    try:
        mlpipe_tasks.run_step("extract_day", FLIGHTS, day=dt.date(2013, 1, 1))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert seen["key"] == "from-connection" and seen["endpoint"] == s3_server.endpoint
    assert seen["path"] == f"{bucket}/data/flights/reports/probe/2013-01-01.json"
    assert json.loads(_object(s3_server, seen["path"])) == {"ok": True}


def _object(server, url: str) -> bytes:
    """The object at ``url``, read with the server's own test credentials."""
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, key="testing", secret="testing",
                           client_kwargs={"endpoint_url": server.endpoint})
    return fs.cat_file(url[len("s3://"):])


def test_an_unknown_storage_connection_fails_without_retry(monkeypatch):
    monkeypatch.setenv("MLPIPE_STORAGE_CONN_ID", "no_such_store")
    monkeypatch.delenv("MLPIPE_STORAGE_OPTIONS", raising=False)
    with pytest.raises(AirflowFailException, match="MLPIPE_STORAGE_CONN_ID=no_such_store: no such Airflow connection"):
        mlpipe_tasks.run_step("extract_day", FLIGHTS, day=dt.date(2013, 1, 1))
