"""The serving process: an ASGI app (FastAPI on uvicorn: both already pinned for Airflow's
own api-server, async, typed request bodies) that serves every configured pipeline at
``POST /v1/<pipeline>/predict``, with ``/healthz``, ``/readyz`` and Prometheus
``/metrics``. Requests need ``Authorization: Bearer <MLPIPE_SERVING_TOKEN>``; without a
token configured the process refuses to start unless ``MLPIPE_SERVING_INSECURE=1`` (for
development) says otherwise. A background thread follows the registry, the online
snapshots and the canary every ``MLPIPE_SERVING_POLL_SECONDS`` (see :mod:`mlpipe.serving`).
Every answered row goes to the request log (``served/``); on SIGTERM uvicorn finishes the
requests in flight and the lifespan's end writes out what the log still buffers.

    python -m mlpipe.serving [--host 127.0.0.1] [--port 8000]     (make serve)
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mlpipe.serving.requestlog import RequestLog
from mlpipe.serving.server import BadRequest, PipelineServer

log = logging.getLogger(__name__)

INLINE_ROWS = 20  # requests of at most this many rows are scored on the event loop (about a millisecond)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mlpipe_serving_requests", "Prediction requests", ["pipeline", "status"],
                                registry=self.registry)
        self.rows = Counter("mlpipe_serving_rows", "Rows scored", ["pipeline"], registry=self.registry)
        self.latency = Histogram("mlpipe_serving_latency_seconds", "Time to answer a prediction request",
                                 ["pipeline"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.errors = Counter("mlpipe_serving_errors", "Requests refused or failed", ["pipeline", "status"],
                              registry=self.registry)
        self.version = Gauge("mlpipe_serving_model_version", "Version served per role", ["pipeline", "role"],
                             registry=self.registry)


def token_from_env() -> str | None:
    """The bearer token requests need; None only when development mode says so."""
    token = os.environ.get("MLPIPE_SERVING_TOKEN")
    if token:
        return token
    if os.environ.get("MLPIPE_SERVING_INSECURE") == "1":
        log.warning("serving without a token (MLPIPE_SERVING_INSECURE=1): development only")
        return None
    raise SystemExit("MLPIPE_SERVING_TOKEN is not set: refusing to serve without a bearer token "
                     "(set MLPIPE_SERVING_INSECURE=1 for development)")


def create_app(servers: dict[str, PipelineServer], token: str | None, poll_seconds: float = 10.0) -> FastAPI:
    """The app serving ``servers`` (pipeline name -> its server); ``token``: what a request's
    bearer token must be (None: no check)."""
    metrics = Metrics()
    app = FastAPI(title="mlpipe serving", lifespan=_following(servers, metrics, poll_seconds))
    _probes(app, servers, metrics)
    _predict(app, servers, metrics, token)
    return app


def _following(servers: dict[str, PipelineServer], metrics: Metrics, poll_seconds: float):
    """The app's lifespan: load every pipeline's models and snapshot, then follow the
    registry, the snapshots and the canaries from a background thread; at shutdown, write
    out the buffered request logs."""
    def refresh_all() -> None:
        for server in servers.values():
            try:
                server.refresh()
            except Exception:  # noqa: BLE001 - a registry or store hiccup: keep serving what is loaded
                log.exception("serving %s: refresh failed; still serving what was loaded", server.name)
            for role in server.aliases:
                served = server.models.get(role)
                metrics.version.labels(server.name, role).set(float(served.version) if served else float("nan"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        refresh_all()
        stop = threading.Event()

        def follow() -> None:
            while not stop.wait(poll_seconds):
                refresh_all()

        threading.Thread(target=follow, name="mlpipe-serving-follow", daemon=True).start()
        logs = [s.log.start() for s in servers.values() if s.log is not None]
        yield
        stop.set()  # uvicorn has finished the requests in flight (SIGTERM): write out the request logs
        for request_log in logs:
            request_log.close()

    return lifespan


def _probes(app: FastAPI, servers: dict[str, PipelineServer], metrics: Metrics) -> None:
    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        states = {name: server.readiness() for name, server in servers.items()}
        ready = bool(states) and all(ok for ok, _ in states.values())
        return JSONResponse({"ready": ready, "pipelines": {n: why for n, (_, why) in states.items()}},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _predict(app: FastAPI, servers: dict[str, PipelineServer], metrics: Metrics, token: str | None) -> None:
    def refused(pipeline: str, status: int, message: str, field: str | None = None) -> JSONResponse:
        metrics.errors.labels(pipeline, str(status)).inc()
        metrics.requests.labels(pipeline, str(status)).inc()
        return JSONResponse({"error": message, **({"field": field} if field else {})}, status_code=status)

    @app.post("/v1/{pipeline}/predict")
    async def predict(pipeline: str, request: Request,
                      authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        """A record, a list of records, or ``{"rows": [records]}`` -> one answer per row."""
        started = time.perf_counter()
        try:  # the raw body, json-decoded: a typed Body() validates every value again (ms for 1,000 rows)
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if token is not None and not hmac.compare_digest(authorization or "", f"Bearer {token}"):
            return refused(pipeline, 401, "missing or wrong bearer token", "Authorization")
        server = servers.get(pipeline)
        if server is None:
            return refused(pipeline, 404, f"unknown pipeline {pipeline!r}; served: {sorted(servers)}", "pipeline")
        records = body.get("rows", [body]) if isinstance(body, dict) else body
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return refused(pipeline, 422, "send a record, a list of records, or {\"rows\": [records]}", "rows")
        try:  # a small request on the event loop (a thread hop costs more than scoring it), a large one off it
            answer = server.predict(records) if len(records) <= INLINE_ROWS else \
                await run_in_threadpool(server.predict, records)
        except BadRequest as exc:
            return refused(pipeline, exc.status, str(exc), exc.field)
        metrics.requests.labels(pipeline, "200").inc()
        metrics.rows.labels(pipeline).inc(len(records))
        metrics.latency.labels(pipeline).observe(time.perf_counter() - started)
        return JSONResponse(answer)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from mlpipe.context import Context
    from mlpipe.pipelines import spec_files

    parser = argparse.ArgumentParser(prog="python -m mlpipe.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("MLPIPE_SERVING_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLPIPE_SERVING_PORT", "8000")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = token_from_env()
    max_age = os.environ.get("MLPIPE_SERVING_MAX_SNAPSHOT_AGE_DAYS")
    servers = {}
    for path in spec_files():
        ctx = Context.load(path)
        servers[ctx.spec.name] = PipelineServer(ctx, int(os.environ.get("MLPIPE_SERVING_MAX_ROWS", "1000")),
                                                int(max_age) if max_age else None, RequestLog(ctx.store, ctx.spec))
    app = create_app(servers, token, float(os.environ.get("MLPIPE_SERVING_POLL_SECONDS", "10")))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)

