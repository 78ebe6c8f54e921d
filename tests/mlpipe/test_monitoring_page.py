"""The monitoring page, in-process: built from the days' summaries in a temporary store."""

from __future__ import annotations

import datetime as dt

from mlpipe import monitoring, monitoring_page

DAYS = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(10)]
DRIFT = {DAYS[3], DAYS[4]}
DEGRADED = {DAYS[6]}


def _summary(day: dt.date, action: str = "none") -> dict:
    band = {"metric": "roc_auc", "days": 7, "method": "windows", "windows": 40, "median": 0.7, "bound": 0.62}
    return {"day": str(day), "model_version": "3", "rows": 100 + day.day, "dataset_drift": day in DRIFT,
            "drift_share": 0.5 if day in DRIFT else 0.0, "drift_score": 2.5 if day in DRIFT else 0.0,
            "drift_score_band": 0.0, "drifted_columns": ["amount"] if day in DRIFT else [],
            "columns": {"amount": {"score": 0.4 if day in DRIFT else 0.05, "method": "Wasserstein distance (normed)",
                                   "threshold": 0.2, "drifted": day in DRIFT},
                        "channel": {"score": 0.3, "method": "chi-square p_value", "threshold": 0.001,
                                    "drifted": False}},
            "quality": {"day": str(day - dt.timedelta(days=1)), "metric": "roc_auc", "live": 0.5 if day in DEGRADED
                        else 0.7, "degraded": day in DEGRADED, "baseline": band},
            "estimated": {"metric": "roc_auc", "value": 0.69, "degraded": False},
            "calibration": {"source": "training days", "from": "2024-01-01", "to": "2024-02-28", "quantile": 0.99,
                            "learnt_at": "2024-03-01T00:00:00+00:00"},
            "decision": {"action": action}}


def test_the_page_shows_every_monitored_day_and_lists_the_episodes(store):
    for day in DAYS:
        store.write_report("drift", day, _summary(day, "would-trigger" if day == DAYS[4] else "none"))
    png = monitoring_page.build(store, DAYS[-1])
    text = (store.report_dir("monitoring") / "index.html").read_text()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "data:image/png;base64," in text
    assert (store.report_dir("monitoring") / "monitoring.png").read_bytes() == png
    assert "<script src=" not in text and "http" not in text.replace("http-equiv", "")  # opens offline
    assert f"10 monitored day(s), {DAYS[0]} .. {DAYS[-1]}" in text
    assert f"{DAYS[3]}</a> .. {DAYS[4]} (2 day(s))" in text and f"{DAYS[6]}</a> .. {DAYS[6]} (1 day(s))" in text
    assert monitoring_page.build(store, DAYS[0] - dt.timedelta(days=1)) is None  # nothing monitored by then
    from mlpipe import report_index

    front = report_index.record(store, "day", str(DAYS[-1]), {"drift": str(store.report_path("drift", DAYS[-1]))})
    assert 'href="monitoring/index.html"' in front.read_text()  # linked once the page exists


def test_an_episode_alerts_when_it_starts_and_when_it_ends(store):
    from types import SimpleNamespace

    ctx = SimpleNamespace(store=store)
    store.write_report("drift", DAYS[2], _summary(DAYS[2]))
    started = monitoring._episodes(ctx, DAYS[3], _summary(DAYS[3]))
    assert [(e["kind"], e["state"], e["columns"]) for e in started] == [("drift", "started", ["amount"])]
    store.write_report("drift", DAYS[3], _summary(DAYS[3]))
    assert monitoring._episodes(ctx, DAYS[4], _summary(DAYS[4])) == []  # still drifting: no second alert
    store.write_report("drift", DAYS[4], _summary(DAYS[4]))
    ended = monitoring._episodes(ctx, DAYS[5], _summary(DAYS[5]))
    assert [(e["kind"], e["state"]) for e in ended] == [("drift", "ended")]
    store.write_report("drift", DAYS[5], _summary(DAYS[5]))
    degraded = monitoring._episodes(ctx, DAYS[6], _summary(DAYS[6]))
    assert [(e["kind"], e["state"], e["live"], e["bound"]) for e in degraded] == [("degradation", "started", 0.5, 0.62)]
