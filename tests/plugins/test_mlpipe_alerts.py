"""Alerts (in-process, against a webhook server on 127.0.0.1): the connection is read by
the HTTP provider's hook, each alert names the pipeline and says what happened, and
delivery never fails a task."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

import mlpipe_alerts  # noqa: E402
from mlpipe.errors import ValidationFailed  # noqa: E402


@pytest.fixture
def webhook(monkeypatch, serve_webhook):
    """The ``mlpipe_alerts`` connection, from the environment as Airflow reads it, pointing
    at a local webhook; its extra is sent as request headers."""
    with serve_webhook() as hook:
        conn = {"conn_type": "http", "host": hook["url"], "extra": {"Authorization": "Bearer t0ken"}}
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_ALERTS", json.dumps(conn))
        yield hook["received"]


def test_a_validation_failure_alert_names_column_rule_rows_report_and_data_docs_page(webhook):
    failure = {"expectation": "expect_column_values_to_be_between", "column": "distance",
               "kwargs": {"min_value": 1}, "result": {"unexpected_count": 12}}
    exc = ValidationFailed("raw/date=2013-01-07.parquet: 1 of 30 data-quality rules failed", [failure], "/r/1.json",
                           "/d/validations/flights/raw/2013-01-07/20130107T000000.000000Z/raw.html")
    mlpipe_alerts.validation_alert(exc, "2013-01-07", "flights")
    (alert,) = webhook
    assert alert["kind"] == "validation_failed" and alert["report"] == "/r/1.json" and alert["day"] == "2013-01-07"
    assert alert["pipeline"] == "flights"
    assert alert["data_docs"] == "/d/validations/flights/raw/2013-01-07/20130107T000000.000000Z/raw.html"
    assert alert["failures"] == [{"column": "distance", "rule": "expect_column_values_to_be_between", "rows": 12,
                                  "kwargs": {"min_value": 1}}]


def test_a_range_ingest_alerts_once_per_day_that_failed_validation(webhook):
    failure = {"expectation": "expect_column_values_to_be_in_set", "column": "carrier", "kwargs": {},
               "result": {"unexpected_count": 3}}
    failed = [{"day": "2013-01-03", "error": "ValidationFailed: raw/date=2013-01-03.parquet: 1 of 30 rules failed\n...",
               "failures": [failure], "report": "/r/3.json", "data_docs": "/d/3.html"},
              {"day": "2013-01-05", "error": "SourceError: flights.csv: no column dep_time"}]  # no validation ran
    last = mlpipe_alerts.alert_for("validate_range", {"passed": ["2013-01-04"], "failed": failed}, "flights")
    (alert,) = webhook
    assert alert == last
    assert (alert["kind"], alert["day"], alert["report"], alert["data_docs"]) == (
        "validation_failed", "2013-01-03", "/r/3.json", "/d/3.html")
    assert alert["message"] == "raw/date=2013-01-03.parquet: 1 of 30 rules failed"
    assert alert["failures"][0]["column"] == "carrier" and alert["failures"][0]["rows"] == 3
    assert mlpipe_alerts.alert_for("validate_range", {"passed": ["2013-01-04"], "failed": []}, "flights") is None


def test_promotion_rollback_and_fallback_alert_and_nothing_else_does(webhook):
    moved = {"moved": True, "model": "flights", "champion_before": "3", "champion_after": "5", "reason": "gain"}
    assert mlpipe_alerts.alert_for("evaluate_and_promote", moved, "flights")["kind"] == "promotion"
    assert mlpipe_alerts.alert_for("rollback", {**moved, "champion_after": "3"}, "flights")["kind"] == "rollback"
    assert mlpipe_alerts.alert_for("evaluate_and_promote", {**moved, "moved": False}, "flights") is None
    assert mlpipe_alerts.alert_for("evaluate_and_promote", {**moved, "replayed": True}, "flights") is None  # a retry
    fallback = {"day": "2013-10-02", "fallback": {"version": "2"}}
    assert mlpipe_alerts.alert_for("score_day", fallback, "flights")["kind"] == "fallback"
    assert mlpipe_alerts.alert_for("score_day", {"day": "2013-10-02", "fallback": None}, "flights") is None
    assert [a["kind"] for a in webhook] == ["promotion", "rollback", "fallback"]
    assert webhook[0]["from_version"] == "3" and webhook[0]["to_version"] == "5"


def test_the_connection_extra_goes_out_as_headers(serve_webhook, monkeypatch):
    """What lets a team put a webhook's token in the connection, not in the spec."""
    import http.server

    seen = {}
    original = http.server.BaseHTTPRequestHandler.send_response

    def record(handler, code, message=None):
        seen.update(handler.headers)
        return original(handler, code, message)

    monkeypatch.setattr(http.server.BaseHTTPRequestHandler, "send_response", record)
    with serve_webhook() as hook:
        conn = {"conn_type": "http", "host": hook["url"], "extra": {"Authorization": "Bearer t0ken"}}
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_ALERTS", json.dumps(conn))
        mlpipe_alerts.send("task_failure", {"task_id": "t"}, "flights")
    assert seen["Authorization"] == "Bearer t0ken" and seen["Content-Type"] == "application/json"


def test_an_unreachable_webhook_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_ALERTS", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/x"}))
    message = mlpipe_alerts.send("task_failure", {"task_id": "t"}, pipeline="p")
    assert message["kind"] == "task_failure" and "not delivered" in caplog.text


def test_no_connection_sends_nothing_and_still_logs(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_ALERTS", raising=False)
    message = mlpipe_alerts.send("fallback", {"day": "2013-10-02"}, pipeline="p")
    assert message["pipeline"] == "p" and "mlpipe alert" in caplog.text and "not delivered" not in caplog.text


def test_the_failure_notifier_sends_the_error_first_line_and_its_pipeline(webhook):
    ti = SimpleNamespace(dag_id="train", task_id="plan", run_id="r", map_index=-1, try_number=3, log_url="http://l")
    mlpipe_alerts.FailureNotifier(pipeline="flights").notify({"ti": ti, "exception": ValueError("bad window\ndetails")})
    (alert,) = webhook
    assert alert["kind"] == "task_failure" and alert["error"] == "bad window" and alert["try_number"] == 3
    assert alert["pipeline"] == "flights"


def test_a_monitor_day_alerts_once_per_episode_that_starts_or_ends(webhook):
    episodes = [{"kind": "drift", "state": "started", "day": "2013-10-02", "columns": ["temp"]},
                {"kind": "degradation", "state": "ended", "day": "2013-10-02", "metric": "roc_auc"}]
    last = mlpipe_alerts.alert_for("monitor_day", {"episodes": episodes, "page": "/p/index.html"}, "flights")
    assert [(a["kind"], a["state"]) for a in webhook] == [("drift", "started"), ("degradation", "ended")]
    assert last == webhook[-1] and webhook[0]["page"] == "/p/index.html" and webhook[0]["columns"] == ["temp"]
    assert mlpipe_alerts.alert_for("monitor_day", {"episodes": []}, "flights") is None


def test_every_canary_step_but_a_hold_alerts(webhook):
    step = {"action": "rollback", "model": "flights", "reason": "worse", "champion_before": "1", "champion_after": "1",
            "challenger_after": None, "share": 0.0, "comparison": {"p_value": 0.001, "verdict": "worse"}}
    sent = mlpipe_alerts.alert_for("canary_step", step, "flights")
    assert sent["kind"] == "canary_rollback" and sent["comparison"]["verdict"] == "worse"
    assert mlpipe_alerts.alert_for("canary_step", {**step, "action": "promote"}, "flights")["kind"] == "canary_promote"
    assert mlpipe_alerts.alert_for("canary_step", {**step, "action": "hold"}, "flights") is None
    assert mlpipe_alerts.alert_for("canary_step", {"action": "none", "reason": "no challenger"}, "flights") is None
