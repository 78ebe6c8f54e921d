"""The serving process's ASGI app (mlpipe.serving.app), in-process through FastAPI's test
client, over the toy pipeline of conftest.py (the served process itself: tests/e2e)."""

from __future__ import annotations

import pytest

from mlpipe.serving.server import PipelineServer

pytestmark = pytest.mark.integration


def test_the_app_needs_the_token_names_unknown_pipelines_and_counts(ctx, days, monkeypatch, make_champion, records):
    from fastapi.testclient import TestClient

    from mlpipe.serving.app import create_app, token_from_env

    make_champion(ctx, ctx.versions[0])
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
    assert f'mlpipe_serving_model_version{{pipeline="toy",role="champion"}} {float(ctx.versions[0])}' in text
    monkeypatch.delenv("MLPIPE_SERVING_TOKEN", raising=False)
    monkeypatch.delenv("MLPIPE_SERVING_INSECURE", raising=False)
    with pytest.raises(SystemExit, match="refusing to serve without a bearer token"):
        token_from_env()
    monkeypatch.setenv("MLPIPE_SERVING_INSECURE", "1")
    assert token_from_env() is None
