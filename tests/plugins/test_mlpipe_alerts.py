"""Alerts: where the webhook URL comes from, what each alert says, delivery never fails a task."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

import mlpipe_alerts  # noqa: E402

from mlpipe.errors import ValidationFailed  # noqa: E402


def _conn(**kw):
    base = {"conn_type": "http", "host": None, "port": None, "schema": None, "extra_dejson": {}}
    return SimpleNamespace(**{**base, **kw})


def test_the_webhook_url_comes_from_the_connection():
    assert mlpipe_alerts.webhook_url(None) is None
    assert mlpipe_alerts.webhook_url(_conn(extra_dejson={"url": "https://hooks.example/x"})) == "https://hooks.example/x"
    assert mlpipe_alerts.webhook_url(_conn(host="http://127.0.0.1:9/a")) == "http://127.0.0.1:9/a"
    assert mlpipe_alerts.webhook_url(_conn(host="alerts.local", port=8080, schema="hook")) == \
        "http://alerts.local:8080/hook"


@pytest.fixture
def webhook(monkeypatch, serve_webhook):
    with serve_webhook() as hook:
        monkeypatch.setattr(mlpipe_alerts, "_connection", lambda conn_id: _conn(host=hook["url"])
                            if conn_id == "mlpipe_alerts" else None)
        yield hook["received"]


def test_a_validation_failure_alert_names_column_rule_rows_report_and_data_docs_page(webhook):
    failure = {"expectation": "expect_column_values_to_be_between", "column": "distance",
               "kwargs": {"min_value": 1}, "result": {"unexpected_count": 12}}
    exc = ValidationFailed("raw/date=2013-01-07.parquet: 1 of 30 data-quality rules failed", [failure], "/r/1.json",
                           "/d/validations/flights/raw/2013-01-07/20130107T000000.000000Z/raw.html")
    mlpipe_alerts.validation_alert(exc, "2013-01-07")
    (alert,) = webhook
    assert alert["kind"] == "validation_failed" and alert["report"] == "/r/1.json" and alert["day"] == "2013-01-07"
    assert alert["data_docs"] == "/d/validations/flights/raw/2013-01-07/20130107T000000.000000Z/raw.html"
    assert alert["failures"] == [{"column": "distance", "rule": "expect_column_values_to_be_between", "rows": 12,
                                  "kwargs": {"min_value": 1}}]


def test_promotion_rollback_and_fallback_alert_and_nothing_else_does(webhook):
    moved = {"moved": True, "model": "flights", "champion_before": "3", "champion_after": "5", "reason": "gain"}
    assert mlpipe_alerts.alert_for("evaluate_and_promote", moved)["kind"] == "promotion"
    assert mlpipe_alerts.alert_for("rollback", {**moved, "champion_after": "3"})["kind"] == "rollback"
    assert mlpipe_alerts.alert_for("evaluate_and_promote", {**moved, "moved": False}) is None
    assert mlpipe_alerts.alert_for("evaluate_and_promote", {**moved, "replayed": True}) is None  # a retry
    assert mlpipe_alerts.alert_for("score_day", {"day": "2013-10-02", "fallback": {"version": "2"}})["kind"] == \
        "fallback"
    assert mlpipe_alerts.alert_for("score_day", {"day": "2013-10-02", "fallback": None}) is None
    assert [a["kind"] for a in webhook] == ["promotion", "rollback", "fallback"]
    assert webhook[0]["from_version"] == "3" and webhook[0]["to_version"] == "5"


def test_an_unreachable_webhook_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setattr(mlpipe_alerts, "_connection", lambda conn_id: _conn(host="http://127.0.0.1:9/x")
                        if conn_id == "mlpipe_alerts" else None)
    message = mlpipe_alerts.send("task_failure", {"task_id": "t"}, pipeline="p")
    assert message["kind"] == "task_failure" and "not delivered" in caplog.text


def test_the_failure_notifier_sends_the_error_first_line(webhook):
    ti = SimpleNamespace(dag_id="train", task_id="plan", run_id="r", map_index=-1, try_number=3, log_url="http://l")
    mlpipe_alerts.FailureNotifier().notify({"ti": ti, "exception": ValueError("bad window\ndetails")})
    (alert,) = webhook
    assert alert["kind"] == "task_failure" and alert["error"] == "bad window" and alert["try_number"] == 3
