"""Live quality (monitoring.live_quality): the champion's metric on the labelled scored
days against its holdout figure, and the degradation decision that asks for a retrain.

Unit tests, in-process: real Parquet partitions in a temporary store; the registry's
holdout figure of a version is the one stand-in (``ctx.tracking.version_metrics``).
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pandas as pd
import pytest

from mlpipe import monitoring

DAY = dt.date(2024, 3, 10)
DAYS = [DAY - dt.timedelta(days=i) for i in (2, 1, 0)]
# per day: positives score 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 pairs ranked right, roc_auc 0.75
SCORES, LABELS = [0.9, 0.4, 0.5, 0.1], [1.0, 1.0, 0.0, 0.0]
LIVE_AUC = 0.75


def _ctx(spec, store, tolerance: float = 0.05):
    retrain = spec.monitoring.retrain.model_copy(update={"min_new_labelled_rows": 0})
    mon = spec.monitoring.model_copy(update={"tolerance": tolerance, "quality_days": len(DAYS), "retrain": retrain})
    return SimpleNamespace(spec=spec.model_copy(update={"monitoring": mon}), store=store, tracking=_Tracking())


class _Tracking:
    """Stands in for ``ctx.tracking``; the fixture ``holdout`` says what ``version_metrics`` reports."""

    bands: dict | None = None  # what bands_of reports for any version

    def version_metrics(self, model, version):
        raise AssertionError("no holdout figures set")

    def bands_of(self, model, version):
        return self.bands


def _scored(ctx, days=DAYS, scores=SCORES, labels=LABELS, version: str = "3") -> None:
    """Each day: the predictions of ``version`` and the features with the labels."""
    target = ctx.spec.target.name
    for n, day in enumerate(days):
        ids = [n * 100 + i for i in range(len(scores))]
        ctx.store.write("predictions", day, pd.DataFrame({
            "event_id": ids, "score": scores, "model_version": version, "challenger_score": None,
            "challenger_version": None}))
        ctx.store.write("features", day, pd.DataFrame({"event_id": ids, target: labels}))


@pytest.fixture
def holdout(monkeypatch):
    """``holdout(figures)``: the holdout metrics the registry reports for any version."""
    asked = []

    def set_figures(figures: dict[str, float]):
        monkeypatch.setattr(_Tracking, "version_metrics", lambda self, model, version: asked.append(version) or figures)
        return asked

    return set_figures


def test_live_metric_worse_than_holdout_by_more_than_the_tolerance_is_degraded(spec, store, holdout):
    ctx = _ctx(spec, store, tolerance=0.05)
    _scored(ctx)
    asked = holdout({"roc_auc": 0.85})  # live 0.75: 0.10 below
    quality = monitoring.live_quality(ctx, DAY)
    assert quality["live"] == pytest.approx(LIVE_AUC) and quality["holdout"] == 0.85
    assert quality["degraded"] is True
    assert quality["days"] == [str(d) for d in DAYS] and quality["rows"] == 12 and asked == ["3"]


def test_live_metric_within_the_tolerance_is_not_degraded(spec, store, holdout):
    ctx = _ctx(spec, store, tolerance=0.05)
    _scored(ctx)
    holdout({"roc_auc": 0.78})  # live 0.75: 0.03 below
    assert monitoring.live_quality(ctx, DAY)["degraded"] is False
    holdout({"roc_auc": 0.70})  # live better than holdout
    assert monitoring.live_quality(ctx, DAY)["degraded"] is False


def test_a_lower_is_better_metric_degrades_when_live_is_higher(regression_spec, store, holdout):
    ctx = _ctx(regression_spec, store, tolerance=0.5)
    # errors of 1 and 3 on each day: rmse sqrt(5) = 2.236
    _scored(ctx, scores=[11.0, 13.0], labels=[10.0, 10.0])
    assert ctx.spec.gate.metric == "rmse"
    holdout({"rmse": 1.5})  # live 0.74 above
    quality = monitoring.live_quality(ctx, DAY)
    assert quality["live"] == pytest.approx(5 ** 0.5) and quality["degraded"] is True
    holdout({"rmse": 2.0})  # live 0.24 above, within 0.5
    assert monitoring.live_quality(ctx, DAY)["degraded"] is False


def test_only_the_days_main_model_counts_and_unlabelled_days_say_nothing(spec, store, holdout):
    ctx = _ctx(spec, store, tolerance=0.05)
    holdout({"roc_auc": 0.78})
    assert monitoring.live_quality(ctx, DAY) is None  # nothing scored yet
    _scored(ctx, days=DAYS[:2])
    # a third day scored by a fallback version, every row wrong: left out of the version-3 figure
    _scored(ctx, days=DAYS[2:], scores=[0.1, 0.1, 0.9, 0.9], version="2")
    ctx.store.write("predictions", DAYS[2], ctx.store.read("predictions", DAYS[2]).assign(event_id=[900, 901, 902, 903]))
    ctx.store.write("features", DAYS[2], ctx.store.read("features", DAYS[2]).assign(event_id=[900, 901, 902, 903]))
    quality = monitoring.live_quality(ctx, DAY)
    assert quality["model_version"] == "3" and quality["rows"] == 8 and quality["live"] == pytest.approx(LIVE_AUC)
    assert quality["degraded"] is False


def test_a_degraded_window_asks_for_a_retrain_without_drift(spec, store, holdout):
    ctx = _ctx(spec, store, tolerance=0.05)
    _scored(ctx)
    holdout({"roc_auc": 0.85})
    summary = {"dataset_drift": False, "drifted_columns": [], "quality": monitoring.live_quality(ctx, DAY)}
    decision = monitoring.retrain_decision(ctx, DAY, summary, backfill=False, train_in_flight=False)
    assert decision["action"] == "trigger"
    assert decision["reason"].startswith("live roc_auc 0.7500 below holdout 0.8500 by more than 0.05 over 3 labelled")


def test_with_a_quality_band_live_quality_is_judged_against_windows_of_the_same_length(spec, store, holdout):
    """The pooled holdout figure (0.9) would call a 3-day window at 0.75 degraded; the band
    of the holdout's 3-day windows (bound 0.76) does not, and a bound of 0.80 does."""
    ctx = _ctx(spec, store, tolerance=0.02)
    _scored(ctx)
    holdout({"roc_auc": 0.9})
    band = {"metric": "roc_auc", "days": len(DAYS), "method": "windows", "windows": 40, "median": 0.8, "bound": 0.76}
    ctx.tracking.bands = {"quality": band}
    quality = monitoring.live_quality(ctx, DAY)
    assert quality["live"] == pytest.approx(LIVE_AUC) and quality["baseline"] == band and not quality["degraded"]
    ctx.tracking.bands = {"quality": {**band, "bound": 0.80}}
    quality = monitoring.live_quality(ctx, DAY)
    assert quality["degraded"]
    decision = monitoring.retrain_decision(ctx, DAY, {"dataset_drift": False, "drifted_columns": [], "quality": quality},
                                           backfill=True, train_in_flight=False)
    assert "below the bound 0.8000 of its holdout's 40 3-day windows by more than 0.02" in decision["reason"]


def test_a_window_shorter_than_the_bands_is_not_judged_against_it(spec, store, holdout):
    """The first day after a promotion: one labelled day is not a 3-day window."""
    ctx = _ctx(spec, store, tolerance=0.02)
    _scored(ctx, days=[DAY])
    holdout({"roc_auc": 0.9})
    ctx.tracking.bands = {"quality": {"metric": "roc_auc", "days": len(DAYS), "method": "windows", "windows": 40,
                                      "median": 0.9, "bound": 0.85},
                          "calibrator": {"x": [0.0, 1.0], "y": [0.0, 1.0]}}
    quality = monitoring.live_quality(ctx, DAY)
    assert quality["live"] == pytest.approx(LIVE_AUC) and not quality["judged"] and not quality["degraded"]
    assert not quality["estimated"]["judged"] and not quality["estimated"]["degraded"]
    _scored(ctx)
    assert monitoring.live_quality(ctx, DAY)["degraded"]  # the whole window: judged, and below the bound


def test_the_estimate_before_labels_is_reported_and_asks_for_a_retrain_only_when_configured(spec, store, holdout):
    ctx = _ctx(spec, store, tolerance=0.02)
    _scored(ctx)
    holdout({"roc_auc": 0.9})
    band = {"metric": "roc_auc", "days": len(DAYS), "method": "windows", "windows": 40, "median": 0.9, "bound": 0.87}
    ctx.tracking.bands = {"quality": band, "calibrator": {"x": [0.0, 1.0], "y": [0.0, 1.0]}}
    quality = monitoring.live_quality(ctx, DAY)
    assert 0 < quality["estimated"]["value"] < 1 and quality["estimated"]["metric"] == "roc_auc"
    estimated = monitoring.estimated_quality(ctx, DAY, "3")  # the scored days alone, no labels needed
    assert estimated["value"] == pytest.approx(quality["estimated"]["value"]) and estimated["degraded"]
    assert estimated["days"] == [str(d) for d in sorted(DAYS)]
    summary = {"dataset_drift": False, "drifted_columns": [], "quality": None, "estimated": estimated}
    assert monitoring.retrain_decision(ctx, DAY, summary, backfill=True, train_in_flight=False)["action"] == "none"
    policy = ctx.spec.monitoring.retrain.model_copy(update={"use_estimate": True})
    ctx.spec = ctx.spec.model_copy(update={"monitoring": ctx.spec.monitoring.model_copy(update={"retrain": policy})})
    decision = monitoring.retrain_decision(ctx, DAY, summary, backfill=True, train_in_flight=False)
    assert decision["action"] == "would-trigger" and "(before labels) below the version's quality band" in \
        decision["reason"]
