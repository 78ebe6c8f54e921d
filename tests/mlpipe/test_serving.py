"""Online serving's logic and its ASGI app, in-process: a toy pipeline ingested with real
Great Expectations, trained and registered in a real MLflow (SQLite) registry; the app
through FastAPI's in-process test client (the served process itself: tests/e2e)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from mlpipe import ingest, ledger, online, registry, training
from mlpipe.backends import backend_entry
from mlpipe.context import Context
from mlpipe.records import Job, LedgerEntry, Window
from mlpipe.serving.server import BadRequest, PipelineServer
from mlpipe.settings import get_settings

pytestmark = pytest.mark.integration
TAGS = {"airflow.dag_id": "train", "airflow.run_id": "manual__1"}
VERSIONS: list[str] = []  # the ctx fixture's registered versions, one per variant


@pytest.fixture
def ctx(tmp_path, spec, days):
    root = tmp_path / "data"
    settings = dataclasses.replace(get_settings(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                   artifact_root=tmp_path / "artifacts", data_root=root)
    tuned = spec.model_copy(update={"training": spec.training.model_copy(update={"min_rows": 10}), "ensemble": None})
    from mlpipe.storage import Store

    context = Context(settings, tuned, Store(root, tuned.name))
    for day in days:
        ingest.extract_day(context, day)
        ingest.validate_day(context, day)
        ingest.build_day_features(context, day)
    context.tracking.experiment(tuned.name)
    window = Window(days[0], days[4], days[-1] + dt.timedelta(days=1))
    VERSIONS[:] = [training.train_variant(context, Job(v.name, backend_entry(v.backend).family, window, "live", True),
                                          TAGS).version for v in tuned.variants]
    return context


def champion(ctx, version: str) -> None:
    current = ctx.tracking.champion_version(ctx.spec.registered_model)
    ledger.append(ctx.store, LedgerEntry(kind="rollback", pipeline="toy", model="toy", mode="live", decision="rollback",
                                         reason="test", moved=True, champion_after=version,
                                         champion_before=str(current.version) if current else None))
    ctx.tracking.move_alias(ctx.spec.registered_model, registry.CHAMPION, version,
                            str(current.version) if current else None)


def records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def test_a_request_is_scored_as_the_batch_scores_the_day_and_the_champion_is_followed(ctx, days):
    first, second = VERSIONS
    champion(ctx, first)
    server = PipelineServer(ctx)
    assert server.readiness()[0] is False
    assert server.refresh() == [f"toy: snapshot as of {days[-1]}", f"toy: champion vNone -> v{first}"]
    assert server.refresh() == []  # nothing moved
    day = days[-1]
    server.snapshot = online.load(ctx.store, day - dt.timedelta(days=1))  # what serving day D had
    answer = server.predict(records(ctx.store.read("raw", day)))
    assert (answer["model_version"], answer["role"], answer["as_of"]) == (first, "champion", str(day - dt.timedelta(days=1)))
    batch = registry.predict(ctx.tracking.load_model(registry.version_uri("toy", first)), ctx.store.read("features", day))
    got = np.array([p["score"] for p in answer["predictions"]])
    order = ctx.store.read("raw", day)["event_id"].argsort(kind="stable")  # the batch partition is in row-id order
    np.testing.assert_allclose(got[order.to_numpy()], batch, rtol=1e-12)
    assert {p["label"] for p in answer["predictions"]} <= {0, 1}

    champion(ctx, second)  # a promotion or rollback moves the alias: the next refresh swaps the model in
    assert server.refresh() == [f"toy: snapshot as of {days[-1]}",  # back to the current one
                                f"toy: champion v{first} -> v{second}"]
    assert server.predict(records(ctx.store.read("raw", day).head(1)))["model_version"] == second
    assert server.readiness(today=days[-1] + dt.timedelta(days=1))[0]
    aged = PipelineServer(ctx, max_snapshot_age_days=2)
    aged.refresh()
    ok, why = aged.readiness(today=days[-1] + dt.timedelta(days=5))
    assert not ok and "5 days old (> 2)" in why


@pytest.mark.parametrize("change, field, status, message", [
    (lambda r: r.pop("amount"), "amount", 422, "missing columns ['amount']"),
    (lambda r: r.update(amount="lots"), "amount", 422, "amount: not a number: 'lots'"),
    (lambda r: r.update(channel="fax"), "channel", 422, "channel: unknown category 'fax'"),
    (lambda r: r.update(ts="yesterday-ish"), "ts", 422, "no readable timestamp"),
])
def test_bad_rows_are_refused_naming_the_field(ctx, days, change, field, status, message):
    champion(ctx, VERSIONS[0])
    server = PipelineServer(ctx, max_rows=3)
    server.refresh()
    row = records(ctx.store.read("raw", days[-1]).head(1))[0]
    change(row)
    with pytest.raises(BadRequest) as info:
        server.predict([row])
    assert (info.value.field, info.value.status) == (field, status) and message in str(info.value)
    with pytest.raises(BadRequest, match="at most 3 a request") as info:
        server.predict(records(ctx.store.read("raw", days[-1]).head(4)))
    assert info.value.status == 413


def test_the_app_needs_the_token_names_unknown_pipelines_and_counts(ctx, days, monkeypatch):
    from fastapi.testclient import TestClient

    from mlpipe.serving.app import create_app, token_from_env

    champion(ctx, VERSIONS[0])
    row = records(ctx.store.read("raw", days[-1]).head(2))
    with TestClient(create_app({"toy": PipelineServer(ctx)}, "s3cret", poll_seconds=3600)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/toy/predict", json=row).status_code == 401
        wrong = client.post("/v1/toy/predict", json=row, headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["field"]) == (401, "Authorization")
        auth = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/nope/predict", json=row, headers=auth).status_code == 404
        ok = client.post("/v1/toy/predict", json={"rows": row}, headers=auth)
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
        one = client.post("/v1/toy/predict", json=row[0], headers=auth)
        assert one.status_code == 200 and len(one.json()["predictions"]) == 1
        bad = client.post("/v1/toy/predict", json={**row[0], "amount": "x"}, headers=auth)
        assert (bad.status_code, bad.json()["field"]) == (422, "amount")
        text = client.get("/metrics").text
    assert 'mlpipe_serving_requests_total{pipeline="toy",status="200"} 2.0' in text
    assert 'mlpipe_serving_rows_total{pipeline="toy"} 3.0' in text
    assert 'mlpipe_serving_errors_total{pipeline="toy",status="401"} 2.0' in text
    assert f'mlpipe_serving_model_version{{pipeline="toy",role="champion"}} {float(VERSIONS[0])}' in text
    monkeypatch.delenv("MLPIPE_SERVING_TOKEN", raising=False)
    monkeypatch.delenv("MLPIPE_SERVING_INSECURE", raising=False)
    with pytest.raises(SystemExit, match="refusing to serve without a bearer token"):
        token_from_env()
    monkeypatch.setenv("MLPIPE_SERVING_INSECURE", "1")
    assert token_from_env() is None
