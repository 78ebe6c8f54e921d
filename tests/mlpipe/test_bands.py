"""Calibrated drift bands (in-process, real Evidently statistics): learnt from ordinary
days, clean days stay inside them, injected shifts are named."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlpipe import bands, monitoring
from mlpipe.features import PARTITION_DATE

CALIBRATION = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(40)]
MONITORED = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(12)]


def _day(factory, day: dt.date, shift: str | None = None) -> pd.DataFrame:
    rows = factory(n=800, seed=day.toordinal()).assign(**{PARTITION_DATE: day})
    if shift == "amount":  # a numeric column moved on one store
        one = rows["store"] == "s1"
        rows.loc[one, "amount"] = rows.loc[one, "amount"] + 600.0
    if shift == "channel":  # a category's share doubled (a third of the rows to two thirds)
        rows.loc[rows.sample(frac=0.5, random_state=day.toordinal()).index, "channel"] = "app"
    rows["score"] = np.random.default_rng(day.toordinal()).random(len(rows))
    return rows


@pytest.fixture
def learnt(spec, model_frame_factory):
    reference = pd.concat([_day(model_frame_factory, d) for d in CALIBRATION[::4]], ignore_index=True).sample(
        n=3000, random_state=1).reset_index(drop=True)
    calibration = pd.concat([_day(model_frame_factory, d) for d in CALIBRATION], ignore_index=True)
    ref_scores = calibration[["score", PARTITION_DATE]]
    return reference, ref_scores, bands.learn(spec, reference, calibration, ref_scores, ref_scores, "test days")


def test_clean_days_stay_inside_and_injected_shifts_are_flagged_naming_their_columns(spec, model_frame_factory,
                                                                                      learnt):
    reference, ref_scores, learnt = learnt
    assert set(learnt["columns"]) == set(spec.monitored_columns) and learnt["dataset"]["chunks"] == len(CALIBRATION)
    assert learnt["score"]["chunks"] == len(CALIBRATION) and learnt["quantile"] == 0.99
    shifts = {MONITORED[3]: "amount", MONITORED[4]: "amount", MONITORED[8]: "channel"}
    found = {}
    for day in MONITORED:
        summary, html = monitoring.drift_report(spec, reference, ref_scores, _day(model_frame_factory, day, shifts.get(day)),
                                                learnt)
        found[day] = (summary["dataset_drift"], summary["drifted_columns"])
        assert summary["calibration"]["source"] == "test days"
        assert "<html" in html.lower()
    for day, shift in shifts.items():
        assert found[day] == (True, [shift]), day
    clean = [found[d] for d in MONITORED if d not in shifts]
    assert sum(drift for drift, _ in clean) == 0, found
    assert sum(len(columns) for _, columns in clean) <= 2, found  # a column a little out, now and then


def test_the_band_is_the_test_of_each_column_in_the_report(spec, model_frame_factory, learnt):
    reference, ref_scores, learnt = learnt
    summary, _ = monitoring.drift_report(spec, reference, ref_scores, _day(model_frame_factory, MONITORED[3], "amount"),
                                         learnt)
    amount = summary["columns"]["amount"]
    assert amount["threshold"] == pytest.approx(learnt["columns"]["amount"]["band"])
    assert amount["method"] == learnt["columns"]["amount"]["test"] and amount["drifted"]
    assert summary["excess"]["amount"] > 1 and summary["drift_score"] > summary["drift_score_band"]
    uncalibrated, _ = monitoring.drift_report(spec, reference, ref_scores, _day(model_frame_factory, MONITORED[3]))
    assert uncalibrated["calibration"] is None and "drift_score" not in uncalibrated


def test_a_calibration_day_is_never_compared_with_its_own_rows(spec, model_frame_factory, monkeypatch):
    calibration = pd.concat([_day(model_frame_factory, d) for d in CALIBRATION[:6]], ignore_index=True)
    seen = []
    real = bands.statistics
    monkeypatch.setattr(bands, "statistics", lambda spec, reference, current, tests: seen.append(
        (set(reference[PARTITION_DATE]), set(current[PARTITION_DATE]))) or real(spec, reference, current, tests))
    bands.learn(spec, calibration, calibration, calibration[["score", PARTITION_DATE]],
                calibration[["score", PARTITION_DATE]], "six days")
    assert len(seen) == 12  # six feature chunks, six score chunks
    for reference_days, chunk_days in seen:
        assert not reference_days & chunk_days and len(reference_days) == 5


def test_p_value_bands_are_outside_below_and_measured_on_a_log_scale():
    band = bands._band([0.1] * 3 + [0.01] * 2, "ks", 0.99, 2.0)  # median 1 (-log10), quantile near 2
    assert band["lower_is_drift"] and band["edge"] == pytest.approx(1 + 2 * (band["spread"]))
    assert bands.outside(band, 10 ** -(band["edge"] + 0.1)) and not bands.outside(band, 0.05)
    assert bands.excess(band, 10 ** -(band["edge"] + band["spread"])) == pytest.approx(1.0)
    assert bands.excess(band, 0.5) == 0 and band["band"] == pytest.approx(10 ** -band["edge"])
    distance = bands._band([0.1] * 4 + [0.2], "wasserstein", 0.99, 2.0)
    assert not distance["lower_is_drift"] and distance["band"] == distance["edge"]
    assert bands.excess(distance, distance["edge"] + distance["spread"]) == pytest.approx(1.0)
    assert bands._band([0.1] * 4, "wasserstein", 0.99, 2.0) is None  # too few chunks: no band


def test_the_quality_band_is_the_metric_over_holdout_windows_of_quality_days(spec, model_frame_factory):
    holdout = pd.concat([_day(model_frame_factory, d) for d in CALIBRATION[:20]], ignore_index=True)
    scores = holdout["late"].to_numpy() * 0.6 + np.random.default_rng(0).random(len(holdout)) * 0.4
    band = bands.quality_band(spec, holdout, scores)
    assert band["method"] == "windows" and band["windows"] == 20 - spec.monitoring.quality_days + 1
    assert band["metric"] == spec.gate.metric
    assert band["bound"] <= band["median"] and bands.degraded(band, band["bound"] - 0.03, tolerance=0.02)
    assert not bands.degraded(band, band["bound"] - 0.01, tolerance=0.02)
    few = bands.quality_band(spec, holdout[holdout[PARTITION_DATE].isin(CALIBRATION[:8])], scores[:len(holdout)][
        holdout[PARTITION_DATE].isin(CALIBRATION[:8]).to_numpy()])
    assert few["method"] == "bootstrap" and few["windows"] == bands.BOOTSTRAP_WINDOWS


def test_the_report_draws_the_scores_and_the_columns_outside_their_bands_and_tables_all(spec, model_frame_factory,
                                                                                         learnt):
    """Columns inside their band are measured with the same statistic Evidently draws, not drawn."""
    reference, ref_scores, learnt = learnt
    day = _day(model_frame_factory, MONITORED[3], "amount")
    summary, html = monitoring.drift_report(spec, reference, ref_scores, day, learnt)
    drawn, _ = monitoring.drift_report(spec, reference, ref_scores, day)  # uncalibrated: Evidently measures all
    assert set(summary["columns"]) == set(drawn["columns"]) == set(learnt["columns"])
    for column, found in summary["columns"].items():
        assert found["score"] == pytest.approx(drawn["columns"][column]["score"]), column
    assert "Drift in column 'amount'" in html and "Drift in column 'score'" in html
    assert not any(f"Drift in column '{c}'" in html for c in summary["columns"] if c != "amount")
    table = html.index(f"dataset drift: 1 of {len(summary['columns'])} columns outside their band")
    assert html.rfind("<body") < table < html.index("<div", table + 1)  # the table of every column on top
