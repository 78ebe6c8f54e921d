"""Alerts: a notifier on every task's failure callback, and the alerts tasks send for a
validation failure, a promotion or rollback, and a fallback model.

Each alert is one JSON object (``kind``, ``pipeline``, ``time`` and the kind's fields),
always written to the task log, and sent
- to a webhook through the HTTP provider's ``HttpHook`` when the Airflow connection
  ``mlpipe_alerts`` (``MLPIPE_ALERT_CONN``) exists: its host is the webhook URL (or host,
  port and ``schema`` http/https), its login/password basic auth, its extra the request
  headers (e.g. ``Authorization``) and HttpHook's options (``timeout``, ``verify``, ...);
- by e-mail through the SMTP provider's hook when the connection ``mlpipe_smtp`` exists
  (extra ``to``: the recipients; its host, port, login and password: the server).
An alert that cannot be delivered is logged and never fails the task.

This module imports no other module of ours: the pipeline's name comes from the caller.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)
SMTP_CONN = "mlpipe_smtp"
TIMEOUT_S = 10  # a slow webhook must not hold a task


def _connection(conn_id: str):
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - not configured (AirflowNotFoundException) or no API to ask
        return None


def send(kind: str, payload: dict, pipeline: str) -> dict:
    """Deliver one alert; returns the message (what the log, webhook and e-mail got)."""
    message = {"kind": kind, "pipeline": pipeline, "time": dt.datetime.now(dt.timezone.utc).isoformat(), **payload}
    log.warning("mlpipe alert: %s", json.dumps(message, default=str))
    webhook = os.environ.get("MLPIPE_ALERT_CONN", "mlpipe_alerts")
    if _connection(webhook) is not None:
        _post(webhook, kind, message)
    smtp = _connection(SMTP_CONN)
    if smtp is not None:
        _email(smtp, kind, message)
    return message


def _post(conn_id: str, kind: str, message: dict) -> None:
    from airflow.providers.http.hooks.http import HttpHook

    try:
        HttpHook(method="POST", http_conn_id=conn_id).run(
            data=json.dumps(message, default=str), headers={"Content-Type": "application/json"},
            extra_options={"timeout": TIMEOUT_S})
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the task
        log.error("alert %s not delivered through connection %s: %s", kind, conn_id, exc)


def _email(conn, kind: str, message: dict) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    to = (conn.extra_dejson or {}).get("to")
    if not to:
        log.error("connection %s has no extra 'to': alert %s not e-mailed", SMTP_CONN, kind)
        return
    try:
        with SmtpHook(smtp_conn_id=SMTP_CONN) as hook:
            hook.send_email_smtp(to=to, subject=f"[mlpipe] {message['pipeline']}: {kind}",
                                 html_content=f"<pre>{json.dumps(message, indent=2, default=str)}</pre>")
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the task
        log.error("alert %s not e-mailed: %s", kind, exc)


class FailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every task of a pipeline: a ``task_failure`` alert."""

    template_fields = ("pipeline",)

    def __init__(self, *, pipeline: str):
        super().__init__()
        self.pipeline = pipeline

    def notify(self, context) -> None:
        ti, error = context["ti"], context.get("exception")
        send("task_failure", {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id,
                              "map_index": ti.map_index, "try_number": ti.try_number,
                              "log_url": getattr(ti, "log_url", None),
                              "error": str(error).strip().splitlines()[0] if error else None}, self.pipeline)


def validation_alert(exc, day, pipeline: str) -> dict:
    """A ``validation_failed`` alert: each failed rule's column, rule and rows, the report
    and the day's Data Docs page."""
    return _validation_alert(day, str(exc), exc.failures, exc.report, exc.data_docs, pipeline)


def _validation_alert(day, message: str, failures: list[dict], report, data_docs, pipeline: str) -> dict:
    rules = [{"column": f.get("column") or ", ".join(f.get("kwargs", {}).get("column_list") or []) or None,
              "rule": f.get("expectation"), "rows": (f.get("result") or {}).get("unexpected_count"),
              "kwargs": f.get("kwargs")} for f in failures]
    return send("validation_failed", {"day": str(day) if day else None, "failures": rules, "report": report,
                                      "data_docs": data_docs, "message": message.splitlines()[0]}, pipeline)


CANARY_ALERTS = ("start", "advance", "promote", "rollback")  # every canary step but a hold


def alert_for(step: str, result, pipeline: str) -> dict | None:
    """The alert a step's result calls for: a promotion, a rollback, a canary step, a fallback model (each
    day of a score range that fell back), each day of a range ingest that failed validation,
    a drift or degradation episode that starts or ends (a live monitor run)."""
    if step == "validate_range" and isinstance(result, dict):
        sent = [_validation_alert(f["day"], f["error"].removeprefix("ValidationFailed: "), f["failures"], f["report"],
                                  f["data_docs"], pipeline) for f in result.get("failed", ()) if "failures" in f]
        return sent[-1] if sent else None
    if step in ("evaluate_and_promote", "rollback") and isinstance(result, dict) and result.get("moved") \
            and not result.get("replayed"):  # a retry returning the recorded decision alerted the first time
        kind = "promotion" if step == "evaluate_and_promote" else "rollback"
        return send(kind, {"model": result.get("model"), "from_version": result.get("champion_before"),
                           "to_version": result.get("champion_after"), "reason": result.get("reason"),
                           "run_id": result.get("run_id"), "mode": result.get("mode")}, pipeline)
    if step == "canary_step" and isinstance(result, dict) and result.get("action") in CANARY_ALERTS:
        return send(f"canary_{result['action']}", {k: result.get(k) for k in (
            "model", "reason", "champion_before", "champion_after", "challenger_after", "share", "comparison",
            "run_id")}, pipeline)
    if step == "score_day" and isinstance(result, dict) and result.get("fallback"):
        return send("fallback", {"day": result.get("day"), **result["fallback"]}, pipeline)
    if step == "monitor_day" and isinstance(result, dict):  # once when an episode starts, once when it ends
        sent = [send(e["kind"], {**e, "page": result.get("page"), "report": result.get("report")}, pipeline)
                for e in result.get("episodes", ())]
        return sent[-1] if sent else None
    if step == "score_range" and isinstance(result, dict):
        sent = [send("fallback", fallback, pipeline) for fallback in result.get("fallbacks", ())]
        return sent[-1] if sent else None
    return None
