"""Monitoring: Evidently's drift decisions on injected shifts, and the retrain guardrails."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlpipe import ledger, monitoring
from mlpipe.records import LedgerEntry, Window

DAY = dt.date(2024, 3, 10)
SHIFTED, RESHARED = {dt.date(2024, 3, 3), dt.date(2024, 3, 4)}, {dt.date(2024, 3, 6)}


def _with_monitoring(spec, **changes):
    retrain = changes.pop("retrain", {})
    mon = spec.monitoring.model_copy(update={**changes, "retrain": spec.monitoring.retrain.model_copy(update=retrain)})
    return spec.model_copy(update={"monitoring": mon})


def _day_rows(model_frame_factory, day: dt.date, shift: bool) -> pd.DataFrame:
    rows = model_frame_factory(n=800, seed=day.toordinal())
    if shift and day in SHIFTED:
        rows["amount"] = rows["amount"] + 3 * 290.0  # ~3 standard deviations of U(0, 1000)
    if shift and day in RESHARED:
        rows.loc[rows.sample(frac=0.5, random_state=0).index, "channel"] = "app"
    rows["score"] = np.random.default_rng(day.toordinal()).random(len(rows))
    return rows


@pytest.mark.parametrize("shift", [True, False])
def test_injected_shifts_drift_on_exactly_those_days_and_columns(spec, model_frame_factory, shift):
    spec = _with_monitoring(spec, drift_share=0.1)
    reference = model_frame_factory(n=5000, seed=1)[spec.monitored_columns]
    scores = pd.DataFrame({"score": np.random.default_rng(0).random(2000)})
    found = {}
    for day in (dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(7)):
        summary, html = monitoring.drift_report(spec, reference, scores, _day_rows(model_frame_factory, day, shift))
        found[day] = (summary["drifted_columns"], summary["dataset_drift"])
        assert not summary["prediction_drift"]["drifted"]
        assert "<html" in html.lower() and "<script src=" not in html  # self-contained: opens offline
    expected = {day: ((["amount"] if day in SHIFTED else ["channel"] if day in RESHARED else []), False)
                for day in found}
    expected = {d: (cols, bool(cols)) for d, (cols, _) in expected.items()} if shift else \
        {d: ([], False) for d in found}
    assert found == expected


def test_monitored_columns_default_to_features_without_calendar(spec):
    assert "day_of_week" not in spec.monitored_columns and "amount" in spec.monitored_columns
    assert "amount" not in _with_monitoring(spec, exclude=["amount"]).monitored_columns


@pytest.fixture
def ctx(spec, store):
    return SimpleNamespace(spec=_with_monitoring(spec, retrain={"drift_days": 3, "cooldown_days": 7,
                                                                "min_new_labelled_rows": 50}), store=store)


def _summary(drift: bool, degraded: bool = False) -> dict:
    quality = {"metric": "roc_auc", "live": 0.6, "holdout": 0.7, "day": str(DAY), "degraded": degraded}
    return {"dataset_drift": drift, "drifted_columns": ["amount"] if drift else [], "quality": quality}


def _drifted_days(ctx, *days: dt.date) -> None:
    for day in days:
        ctx.store.write_report(monitoring.KIND, day, {"dataset_drift": True})


def _labelled(ctx, days: list[dt.date], rows: int = 30) -> None:
    for day in days:
        ctx.store.write("features", day, pd.DataFrame({"late": np.ones(rows)}))


def _trained(ctx, end: dt.date) -> None:
    window = Window(end - dt.timedelta(days=30), end - dt.timedelta(days=7), end)
    ledger.append(ctx.store, LedgerEntry(kind="train", pipeline="toy", model="toy", mode="live", decision="promote",
                                         reason="test", window=window))


def test_sustained_drift_triggers_and_a_short_streak_does_not(ctx):
    _labelled(ctx, [DAY - dt.timedelta(days=i) for i in range(3)])
    _drifted_days(ctx, DAY - dt.timedelta(days=1))
    assert monitoring.retrain_decision(ctx, DAY, _summary(True), False, False)["action"] == "none"  # 2 days
    _drifted_days(ctx, DAY - dt.timedelta(days=2))
    decision = monitoring.retrain_decision(ctx, DAY, _summary(True), False, False)
    assert decision["action"] == "trigger" and decision["drift_streak"] == 3
    assert "amount" in decision["reason"] and decision["window_end"] == str(DAY + dt.timedelta(days=1))
    assert monitoring.retrain_decision(ctx, DAY, _summary(False), False, False)["action"] == "none"


def test_degradation_triggers_without_drift(ctx):
    _labelled(ctx, [DAY - dt.timedelta(days=i) for i in range(3)])
    decision = monitoring.retrain_decision(ctx, DAY, _summary(False, degraded=True), False, False)
    assert decision["action"] == "trigger" and "below holdout" in decision["reason"]


@pytest.mark.parametrize("guard, expected", [
    ("backfill", "would-trigger"), ("in_flight", "a train run is in flight"),
    ("cooldown", "cooldown"), ("validation", "validation of"), ("labels", "labelled rows since"),
])
def test_guardrails_hold_a_request_and_say_why(ctx, guard, expected):
    _labelled(ctx, [DAY - dt.timedelta(days=i) for i in range(3)], rows=10 if guard == "labels" else 30)
    _drifted_days(ctx, DAY - dt.timedelta(days=1), DAY - dt.timedelta(days=2))
    if guard == "cooldown":
        _trained(ctx, DAY - dt.timedelta(days=3))
    if guard == "validation":
        ctx.store.write_report("validation", DAY, {"success": False})
    decision = monitoring.retrain_decision(ctx, DAY, _summary(True), guard == "backfill", guard == "in_flight")
    if guard == "backfill":
        assert decision["action"] == "would-trigger"
    else:
        assert decision["action"] == "blocked" and expected in decision["reason"]


def test_after_the_cooldown_a_request_goes_out_again(ctx):
    _trained(ctx, DAY - dt.timedelta(days=8))
    _labelled(ctx, [DAY - dt.timedelta(days=i) for i in range(3)])
    _drifted_days(ctx, DAY - dt.timedelta(days=1), DAY - dt.timedelta(days=2))
    assert monitoring.retrain_decision(ctx, DAY, _summary(True), False, False)["action"] == "trigger"


def test_history_prints_a_table_and_a_verdict(ctx):
    row = {"day": str(DAY), "model_version": "3", "dataset_drift": True, "drift_share": 0.5,
           "prediction_drift": {"score": 0.01}, "drifted_columns": ["amount"], "columns": {},
           "quality": {"metric": "roc_auc", "live": 0.71, "holdout": 0.73},
           "decision": {"action": "blocked", "reason": "cooldown"}}
    ctx.store.write_report(monitoring.KIND, DAY, row)
    rows = monitoring.history(ctx, DAY - dt.timedelta(days=1), DAY)
    assert rows == [json.loads(json.dumps(row))]
    table = monitoring.format_history(rows)
    assert "amount" in table and "blocked" in table and "0.7100" in table
    assert monitoring.verdict(rows).startswith("monitoring: 1 of 1 days with dataset drift; live roc_auc")


def test_a_later_train_does_not_cool_down_an_earlier_backfilled_day(ctx):
    _trained(ctx, DAY + dt.timedelta(days=20))
    _labelled(ctx, [DAY - dt.timedelta(days=i) for i in range(3)])
    _drifted_days(ctx, DAY - dt.timedelta(days=1), DAY - dt.timedelta(days=2))
    assert monitoring.retrain_decision(ctx, DAY, _summary(True), True, False)["action"] == "would-trigger"
